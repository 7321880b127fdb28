"""Fixtures for the export tests: MNIST loaded once, repository copies, and a tree fingerprint.

The session-wide `trained_repo` and `exported_repo` (tests/conftest.py) are shared with other
stages' tests: every test here that writes works on a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from digitserve.manifest import Manifest
from digitserve.mnist import Mnist, load_mnist
from digitserve.repository import ModelRepository


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path) -> Mnist:
    return load_mnist(mnist_dir)


@pytest.fixture
def copy_repo(tmp_path: Path) -> Callable[[Path], Path]:
    """Copy a repository root into this test's tmp_path and return the copy's root."""

    def copy(root: Path) -> Path:
        target = tmp_path / f"repo-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(root, target, symlinks=True)
        return target

    return copy


@pytest.fixture(scope="session")
def manifest_json(exported_repo: Path) -> dict[str, Any]:
    """The exported manifest as it is on disk, for the tests of the file format itself."""
    return dict(json.loads((exported_repo / "digits" / "1" / "manifest.json").read_text()))


@pytest.fixture(scope="session")
def manifest(exported_repo: Path) -> Manifest:
    return ModelRepository(exported_repo, "digits").read_manifest(1)


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[Any, ...]]]:
    return take_snapshot


def take_snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `root`, hidden ones included: kind, inode, mode, and content hash.

    Equal snapshots mean nothing was added, removed, replaced (the inode) or rewritten.
    """
    entries: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            entries[str(path.relative_to(root))] = (
                "dir" if path.is_dir() else "file", info.st_ino, info.st_mode, digest)
    return entries
