"""`digitserve export` from the command line: the table on success, clear errors and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digitserve.cli import main


def digitserve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "digitserve", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--formats", "onnx,coreml"], "unknown export format 'coreml'; choose from onnx, tfjs"),
        (["--formats", ","], "--formats is empty"),
        (["--tfjs-quantization", "int4"], "invalid choice: 'int4'"),
        (["--version", "0"], "must be a positive integer, got 0"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = digitserve("export", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_versions_and_models_exit_1(tmp_path: Path) -> None:
    result = digitserve("export", "--repo", "models", cwd=tmp_path)
    assert result.returncode == 1
    assert "no model versions in models/digits" in result.stderr
    (tmp_path / "models" / "digits" / "2").mkdir(parents=True)
    result = digitserve("export", "--version", "5", cwd=tmp_path)
    assert result.returncode == 1
    assert "model version 5 does not exist in models/digits (versions: 2)" in result.stderr
    result = digitserve("export", cwd=tmp_path)
    assert result.returncode == 1
    assert "models/digits/2/model.keras is missing" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_model_exits_1(trained_repo: Path, copy_repo: Any, mnist_dir: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_repo(trained_repo)
    (root / "digits/1/model.keras").write_bytes(b"PK\x03\x04 broken")
    code = main(["export", "--repo", str(root), "--data", str(mnist_dir)])
    err = capsys.readouterr().err
    assert code == 1
    assert "digitserve export: error:" in err and "cannot be loaded as a Keras model" in err
    assert "FAILED" in err  # the progress display marks the step that failed
    assert not (root / "digits/1/manifest.json").exists()


def test_exports_the_newest_version_and_prints_the_table(
    trained_repo: Path, copy_repo: Any, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_repo(trained_repo)
    shutil.copytree(root / "digits/1", root / "digits/2")
    code = main(["export", "--repo", str(root), "--formats", "tflite,onnx",
                 "--data", str(mnist_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["format", "file", "size", "accuracy", "top-1", "agreement",
                                "max", "|Δp|", "convert", "verify"]
    assert [line.split()[0] for line in lines[2:5]] == ["keras", "onnx", "tflite"]
    assert "100.00%" in lines[3] and "100.00%" in lines[4]
    assert "exported digits version 2 in" in out
    assert "[1/9] load MNIST" in err and "[9/9] publish" in err
    assert (root / "digits/2/manifest.json").is_file()
    assert not (root / "digits/1/manifest.json").exists()  # only the newest was exported
