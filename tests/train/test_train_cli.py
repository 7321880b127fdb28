"""`digitserve train` from the shell: bad options fail fast with a clear message and exit code."""

from __future__ import annotations

import os
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
        (["--validation-split", "1.5"], "--validation-split: must lie in [0, 1), got 1.5"),
        (["--learning-rate", "0"], "--learning-rate: must be more than zero, got 0"),
        (["--patience", "-1"], "--patience: must be zero or more, got -1"),
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
        env={**os.environ, "DIGITSERVE_EPOCHS": "zero"}, timeout=60,
    )
    assert result.returncode == 2
    assert "DIGITSERVE_EPOCHS='zero'" in result.stderr


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"DIGITSERVE_AUGMENT": "maybe"}, "DIGITSERVE_AUGMENT='maybe': expected one of 1, true"),
        ({"DIGITSERVE_MODEL": "resnet"}, "DIGITSERVE_MODEL='resnet': expected one of softmax, mlp, cnn"),
        ({"DIGITSERVE_LOG_LEVEL": "loud"}, "DIGITSERVE_LOG_LEVEL='loud': expected one of DEBUG"),
        ({"DIGITSERVE_SERVER_PROCESSES": "0"}, "DIGITSERVE_SERVER_PROCESSES='0': must be a positive"),
    ],
)
def test_environment_values_are_checked_like_flags(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    nested = "SERVER_PROCESSES" in next(iter(variables))  # an option of `bench serve`
    command = ["bench", "serve"] if nested else ["train"]
    result = subprocess.run(
        [sys.executable, "-m", "digitserve", *command], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, **variables}, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_flags_and_log_level_are_read(tmp_path: Path) -> None:
    """DIGITSERVE_AUGMENT=false and a lower-case level are honoured, not mistaken or crashing."""
    from digitserve.cli import build_parser

    env = {"DIGITSERVE_AUGMENT": "false", "DIGITSERVE_LOG_LEVEL": "debug", "DIGITSERVE_SUBSET": "64"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        args = build_parser("train").parse_args(["train"])
    assert (args.augment, args.log_level, args.subset) == (False, "DEBUG", 64)


def test_help_lists_every_stage(tmp_path: Path) -> None:
    result = digitserve("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("train", "export", "serve", "classify", "web", "bench"):
        assert command in result.stdout
    train_help = digitserve("train", "--help", cwd=tmp_path)
    assert "--validation-split" in train_help.stdout and "DIGITSERVE" not in train_help.stderr


def test_help_states_each_models_defaults(tmp_path: Path) -> None:
    """train --help mirrors MODEL_DEFAULTS (kept out of the CLI module so --help needs no Keras)."""
    from digitserve.train.trainer import MODEL_DEFAULTS

    def shown(value: object) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(
            value, float) else str(value)

    text = " ".join(digitserve("train", "--help", cwd=tmp_path).stdout.split())
    for key in ("epochs", "batch_size", "optimizer", "learning_rate", "validation_split", "augment", "patience"):
        expected = " / ".join(shown(MODEL_DEFAULTS[model][key]) for model in MODEL_DEFAULTS)
        assert f"(default: {expected})" in text, f"--{key.replace('_', '-')}: {expected}"

