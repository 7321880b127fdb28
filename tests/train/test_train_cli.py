"""`digitserve train` from the shell: bad options fail fast with a clear message and exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def digitserve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digitserve", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--epochs", "-3"], "--epochs: must be a positive integer, got -3"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["--validation-split", "1.5"], "--validation-split must lie in [0, 1), got 1.5"),
        (["--learning-rate", "0"], "--learning-rate must be positive, got 0.0"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = digitserve("train", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()


def test_subset_larger_than_the_data(tmp_path: Path, mnist_dir: Path) -> None:
    result = digitserve("train", "--subset", "70000", "--data", str(mnist_dir), cwd=tmp_path)
    assert result.returncode == 2
    assert "--subset 70000 is larger than the 60000 training images" in result.stderr
    assert not list((tmp_path / "models").glob("digits/*"))


def test_missing_data_is_one_clear_message(tmp_path: Path) -> None:
    result = digitserve("train", "--data", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"MNIST data not found at {tmp_path / 'nowhere'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_supplies_options(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "digitserve", "train"], cwd=tmp_path, capture_output=True, text=True,
        env={**__import__("os").environ, "DIGITSERVE_EPOCHS": "zero"}, timeout=60,
    )
    assert result.returncode == 2
    assert "DIGITSERVE_EPOCHS='zero'" in result.stderr


def test_help_lists_every_stage(tmp_path: Path) -> None:
    result = digitserve("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("train", "export", "serve", "classify", "web", "bench"):
        assert command in result.stdout
    train_help = digitserve("train", "--help", cwd=tmp_path)
    assert "--validation-split" in train_help.stdout and "DIGITSERVE" not in train_help.stderr
