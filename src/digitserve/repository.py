"""The model repository: `<root>/<name>/<integer version>/`, as TF Serving and Triton lay it out.

This module owns the layout (the version folders, the file names inside one, the staging
folders) and is the only reader and writer of manifest.json, whose schema is manifest.py.
A version is complete once its manifest.json exists (export writes it last). Every stage
builds a version in a staging folder and renames it into place, and writes JSON through
`write_json_atomic`, so a reader never sees half a version or half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from digitserve.errors import ModelRepositoryError
from digitserve.manifest import SCHEMA_VERSION, Manifest

MANIFEST = "manifest.json"  # written last: its presence means the version is complete
KERAS_FILE = "model.keras"  # the trained model every export starts from
TRAIN_DIR = "train"  # train's reports: metrics.json, history.json and the pictures
METRICS_FILE = f"{TRAIN_DIR}/metrics.json"
MANIFEST_SCHEMA_VERSION = SCHEMA_VERSION
DEFAULT_REPO = "models"
DEFAULT_NAME = "digits"


class ModelRepository:
    """One model's folder of integer versions."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_REPO, name: str = DEFAULT_NAME):
        self.root = Path(root)
        self.name = name
        self.model_dir = self.root / name

    def versions(self) -> list[int]:
        """All version numbers present, complete or not, ascending."""
        if not self.model_dir.is_dir():
            return []
        names = (p.name for p in self.model_dir.iterdir() if p.is_dir())
        return sorted(int(name) for name in names if name.isascii() and name.isdigit())  # not '²'

    def complete_versions(self) -> list[int]:
        """Versions whose manifest.json exists, ascending."""
        return [v for v in self.versions() if (self.path(v) / MANIFEST).is_file()]

    def path(self, version: int) -> Path:
        return self.model_dir / str(version)

    def next_version(self) -> int:
        return max(self.versions(), default=0) + 1

    def latest_version(self) -> int:
        """The newest version of any state (what export works on by default)."""
        versions = self.versions()
        if not versions:
            raise ModelRepositoryError(
                f"no model versions in {self.model_dir}: run `digitserve train` first"
            )
        return versions[-1]

    def latest_complete_version(self) -> int:
        """The newest version with a manifest (what the server and the web page use)."""
        complete = self.complete_versions()
        if not complete:
            raise ModelRepositoryError(
                f"no exported model version in {self.model_dir} (none has a {MANIFEST}): "
                "run `digitserve train` and `digitserve export` first"
            )
        return complete[-1]

    def require(self, version: int) -> Path:
        """The folder of `version`, or a clear error listing the versions there are."""
        path = self.path(version)
        if not path.is_dir():
            have = ", ".join(map(str, self.versions())) or "none"
            raise ModelRepositoryError(
                f"model version {version} does not exist in {self.model_dir} (versions: {have})"
            )
        return path

    @contextmanager
    def staging_dir(self) -> Iterator[Path]:
        """A temporary folder inside the model folder for a version being built; removed on error."""
        self.model_dir.mkdir(parents=True, exist_ok=True)
        temp = make_staging(self.model_dir, ".staging-")
        os.chmod(temp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the version from a server user
        try:
            yield temp
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # gone already once published

    def publish(self, staged: Path) -> int:
        """Rename a fully written staging folder to the next free version number; return it."""
        while True:
            version = self.next_version()
            try:
                os.rename(staged, self.path(version))
                return version
            except OSError:
                if not self.path(version).exists():
                    raise
                # another writer took this number between our look and our rename: take the next

    def require_keras_file(self, version: int) -> Path:
        """The version's model.keras, or a ModelRepositoryError saying it is missing."""
        path = self.require(version) / KERAS_FILE
        if not path.is_file():
            raise ModelRepositoryError(
                f"{path} is missing: version {version} has no trained model; "
                "run `digitserve train` (or pick another --version)"
            )
        return path

    def manifest_file(self, version: int) -> Path:
        return self.path(version) / MANIFEST

    def read_manifest(self, version: int) -> Manifest:
        """The version's manifest, checked against the schema; any problem names the file."""
        file = self.require(version) / MANIFEST
        try:
            data = json.loads(file.read_text())
        except FileNotFoundError as exc:
            raise ModelRepositoryError(
                f"{file} is missing: version {version} is not exported; run `digitserve export`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise ModelRepositoryError(f"{file} is not valid JSON ({exc}): export again") from exc
        return Manifest.from_json(data, source=file)


def write_manifest(version_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest of a version being built (a staging folder), atomically."""
    path = version_dir / MANIFEST
    write_json_atomic(path, manifest.to_json())
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # readable like any other file, not mkstemp's 0600
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_staging(parent: Path, prefix: str) -> Path:
    """A new hidden staging folder in `parent`, named after this host and process, after
    removing the ones writers on this host left when they were killed (SIGKILL, power loss)."""
    host = socket.gethostname()
    for entry in parent.glob(prefix + "*"):
        owner_host, _, pid = entry.name[len(prefix):].rpartition("-")[0].rpartition(".")
        if owner_host == host and pid.isascii() and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{host}.{os.getpid()}-", dir=parent))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True

