"""Fixtures shared by every stage's tests: the MNIST folder and a small trained model.

The rest of what the folders share (server processes, certificates, images) is the plugin
tests/support/fixtures.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("DIGITSERVE_DATA") or ROOT.parent / "shared" / "data" / "mnist")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no DIGITSERVE_* settings from the shell; they pass what they need."""
    for key in list(os.environ):
        if key.startswith("DIGITSERVE_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST not found at {MNIST_DIR}: set DIGITSERVE_DATA to the IDX folder")
    return MNIST_DIR


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A model repository holding digits/1: a softmax model trained on 5,000 images (not exported)."""
    from digitserve.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("trained-repo")
    train(TrainConfig(model="softmax", epochs=3, subset=5000, data=str(mnist_dir), repo=str(root)))
    return root


@pytest.fixture(scope="session")
def exported_repo(
    tmp_path_factory: pytest.TempPathFactory, trained_repo: Path, mnist_dir: Path
) -> Path:
    """A repository root whose digits/1 (the softmax above) is exported to every format.

    Shared by the whole session: copy it before changing anything in it.
    """
    from digitserve.export.pipeline import export_version

    root = tmp_path_factory.mktemp("exported-repo")
    shutil.copytree(trained_repo, root, dirs_exist_ok=True)
    export_version(root, "digits", 1, data=str(mnist_dir))
    return root
