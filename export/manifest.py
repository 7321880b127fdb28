"""The manifest: what one exported version is, written last so that its presence means "complete".

Schema version 1 (see /work/notes/common.md and DESIGN.md). Readers rely on `version`,
`model.test_accuracy`, `contract` and, per artifact, `path` and `sha256`; export may add keys,
never remove them. Beyond the documented keys each artifact lists its `files` (relative to the
artifact's folder) with `file_sha256` for every one, so TF.js weight shards are covered too.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from digitserve import __version__
from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.export.source import sha256_file
from digitserve.export.targets import Target
from digitserve.repository import MANIFEST, MANIFEST_SCHEMA_VERSION, write_json_atomic

CONTRACT = {
    "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, IMAGE_SIZE],
              "range": [0.0, 1.0], "layout": "28x28 row-major, 0.0 background, 1.0 full ink"},
    "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, NUM_CLASSES]},
}


def artifact_entry(
    target: Target, version_dir: Path, facts: dict[str, Any], conversion_seconds: float
) -> dict[str, Any]:
    """Path, format, sizes and checksums of an artifact already written under `version_dir`."""
    folder = version_dir / target.folder
    files = list(facts.pop("files", [target.filename]))
    hashes = {name: sha256_file(folder / name) for name in files}
    return {
        "path": f"{target.folder}/{target.filename}",
        "format": target.format,
        **facts,
        "files": files,
        "bytes": sum((folder / name).stat().st_size for name in files),
        "sha256": hashes[target.filename],
        "file_sha256": hashes,
        "conversion_seconds": round(conversion_seconds, 2),
    }


def build_manifest(
    name: str,
    version: int,
    model: dict[str, Any],
    artifacts: dict[str, dict[str, Any]],
    export_info: dict[str, Any],
) -> dict[str, Any]:
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": model,
        "contract": CONTRACT,
        "artifacts": artifacts,
        "export": {"digitserve": __version__, **export_info},
    }


def write_manifest(version_dir: Path, manifest: dict[str, Any]) -> Path:
    path = version_dir / MANIFEST
    write_json_atomic(path, manifest)
    return path


def files_match(version_dir: Path, entry: dict[str, Any]) -> bool:
    """Whether every file of a manifest entry is there with the checksum the manifest records."""
    folder = (version_dir / entry["path"]).parent
    hashes = entry.get("file_sha256") or {Path(entry["path"]).name: entry.get("sha256")}
    return all(
        (folder / name).is_file() and sha256_file(folder / name) == digest
        for name, digest in hashes.items()
    )
