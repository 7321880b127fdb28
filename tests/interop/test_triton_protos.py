"""Our inference.proto against tritonclient's own generated one: every message and RPC we share
has the same fields (names, numbers, types, labels, oneofs) and the same request/response types.

Compares the descriptors as protos (DescriptorProto), dumped in each virtual environment, so it
needs .venv-triton but no server.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Prints {"messages": {name: DescriptorProto as a dict}, "methods": {name: [in, out, streams]}}.
DUMP = """
import json, sys, importlib
from google.protobuf import descriptor_pb2, json_format
module = importlib.import_module(sys.argv[1])
file = descriptor_pb2.FileDescriptorProto()
module.DESCRIPTOR.CopyToProto(file)
messages = {m.name: json_format.MessageToDict(m) for m in file.message_type}
(service,) = [s for s in file.service if s.name == "GRPCInferenceService"]
methods = {m.name: [m.input_type, m.output_type, m.client_streaming, m.server_streaming] for m in service.method}
print(json.dumps({"package": file.package, "messages": messages, "methods": methods}))
"""


def dump(python: Path | str, module: str) -> dict:
    done = subprocess.run([str(python), "-c", DUMP, module], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def theirs() -> dict:
    built = subprocess.run([str(HERE / "make_triton_venv.sh")], capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        pytest.fail(f"cannot build .venv-triton:\n{built.stdout}\n{built.stderr}")
    return dump(ROOT / ".venv-triton" / "bin" / "python", "tritonclient.grpc.service_pb2")


def test_every_shared_message_and_rpc_is_tritons(theirs: dict) -> None:
    import sys

    ours = dump(sys.executable, "digitserve.wire.proto.grpc_service_pb2")
    assert ours["package"] == theirs["package"] == "inference"
    missing = sorted(set(ours["messages"]) - set(theirs["messages"]))
    assert not missing, f"messages tritonclient does not have: {missing}"
    for name, message in ours["messages"].items():
        assert message == theirs["messages"][name], name
    for name, method in ours["methods"].items():
        assert method == theirs["methods"].get(name), name
    assert {"RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"} <= set(ours["methods"])
