"""Regenerate the gRPC stubs in this folder from `protos/` (run after editing a .proto).

    python -m digitserve.wire.proto.generate            # rewrite src/digitserve/wire/proto/*_pb2*.py(i)
    python -m digitserve.wire.proto.generate --out DIR  # write them elsewhere (the staleness test)

protoc names generated modules after the proto's path (`digits/v1/digits_pb2.py`) and imports
them absolutely (`from digits.v1 import digits_pb2`). Here they live flat inside the package
`digitserve.wire.proto`, so the files are moved up and those imports made package-relative.
The descriptors keep their full proto paths, which is what reflection reports.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROTOS_DIR = PACKAGE_DIR.parents[3] / "protos"
PROTO_FILES = ("digits/v1/digits.proto", "inference/grpc_service.proto")
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """The mypy-protobuf plugin installed beside this interpreter (for the .pyi files)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: install the dev dependencies (mypy-protobuf)")
    return found


def generated_names() -> list[str]:
    """The file names generation writes into the package folder."""
    return [Path(proto).stem + suffix for proto in PROTO_FILES for suffix in SUFFIXES]


def generate(out_dir: Path, protos_dir: Path = PROTOS_DIR) -> list[Path]:
    """Run protoc on PROTO_FILES and write the flattened, import-fixed stubs into out_dir."""
    from grpc_tools import protoc  # a dev dependency: only needed to regenerate

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={protos_dir}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            f"--mypy_out={raw}",
            f"--mypy_grpc_out={raw}",
            *PROTO_FILES,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {', '.join(PROTO_FILES)} in {protos_dir}")
        written = []
        for proto in PROTO_FILES:
            for suffix in SUFFIXES:
                source = Path(raw) / (proto[: -len(".proto")] + suffix)
                target = out_dir / source.name
                target.write_text(_relative_imports(source.read_text()))
                written.append(target)
    return written


def _relative_imports(text: str) -> str:
    """`from digits.v1 import digits_pb2` -> `from . import digits_pb2` (both APIs sit here)."""
    stems = "|".join(re.escape(Path(proto).stem) for proto in PROTO_FILES)
    pattern = rf"^from [\w.]+ import ({stems})_pb2\b"
    text = re.sub(pattern, r"from . import \1_pb2", text, flags=re.MULTILINE)
    # mypy-protobuf's .pyi files import the module by its full path and use that path in names
    for proto in PROTO_FILES:
        dotted = proto[: -len(".proto")].replace("/", ".") + "_pb2"
        module = Path(proto).stem + "_pb2"
        text = re.sub(rf"^import {re.escape(dotted)}$", f"from . import {module}", text, flags=re.M)
        text = text.replace(dotted + ".", module + ".")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="output folder")
    parser.add_argument("--protos", type=Path, default=PROTOS_DIR, help="folder of .proto files")
    args = parser.parse_args()
    for path in generate(args.out, args.protos):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
