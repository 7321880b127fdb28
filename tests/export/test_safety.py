"""A failed export changes nothing: bad models, parity failures, converter crashes, interrupts."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digitserve import interrupt
from digitserve.errors import ModelRepositoryError
from digitserve.export import (
    Bounds,
    ExportError,
    ParityError,
    export_version,
    publish,
    to_onnx,
    to_tflite,
    verify,
)
from digitserve.repository import KERAS_FILE


def test_corrupt_model_keras_fails_clearly_and_changes_nothing(
    trained_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any
) -> None:
    root = copy_repo(trained_repo)
    keras_file = root / "digits/1/model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[: keras_file.stat().st_size // 2])  # truncated
    before = snapshot(root)
    with pytest.raises(ModelRepositoryError, match="cannot be loaded as a Keras model") as info:
        export_version(root, "digits", 1, data=mnist)
    assert str(keras_file) in str(info.value)
    assert snapshot(root) == before


def test_not_a_zip_at_all(trained_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any) -> None:
    root = copy_repo(trained_repo)
    (root / "digits/1/model.keras").write_text("these are not the weights you are looking for")
    before = snapshot(root)
    with pytest.raises(ModelRepositoryError, match="corrupt"):
        export_version(root, "digits", 1, formats="onnx", data=mnist)
    assert snapshot(root) == before


def test_float_parity_failure_names_the_artifact_and_keeps_the_previous_export(
    exported_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any
) -> None:
    root = copy_repo(exported_repo)
    before = snapshot(root)
    with pytest.raises(ParityError) as info:
        export_version(root, "digits", 1, formats="onnx", data=mnist,
                       bounds=Bounds(max_abs_diff=-1.0))  # nothing can meet it
    message = str(info.value)
    assert message.startswith("onnx fails parity with the Keras model in onnxruntime")
    assert "Worst: test image #" in message and "Nothing was published" in message
    assert snapshot(root) == before


def test_int8_accuracy_bound_failure(
    exported_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any
) -> None:
    root = copy_repo(exported_repo)
    before = snapshot(root)
    with pytest.raises(ParityError, match=r"^tflite-int8 fails parity .* points below Keras'"):
        export_version(root, "digits", 1, formats="tflite-int8", data=mnist,
                       bounds=Bounds(max_accuracy_drop=-0.5))
    assert snapshot(root) == before


def test_converter_crash_after_partial_output_changes_nothing(
    exported_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any, monkeypatch: Any
) -> None:
    """ONNX converts and verifies; then the TFLite converter dies having written half a file."""
    root = copy_repo(exported_repo)
    before = snapshot(root)

    def crash(saved_model: Path, path: Path, calibration: Any = None) -> dict[str, Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"TFL3 half a flatbuffer")
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(to_tflite, "convert", crash)
    with pytest.raises(ExportError, match=r"^tflite: conversion failed \(RuntimeError: converter"):
        export_version(root, "digits", 1, formats="onnx,tflite", data=mnist)
    assert snapshot(root) == before


def test_interrupt_during_verification_changes_nothing(
    trained_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any, monkeypatch: Any
) -> None:
    root = copy_repo(trained_repo)
    before = snapshot(root)

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "run_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_version(root, "digits", 1, formats="onnx", data=mnist)
    assert snapshot(root) == before
    assert not (root / "digits/1/manifest.json").exists()


def test_an_interrupt_a_converter_swallows_still_stops_the_export(
    trained_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any, monkeypatch: Any
) -> None:
    """tensorflowjs catches BaseException around its freeze step and retries: Ctrl-C then seems
    lost. The `digitserve` handler remembers it, and the export stops before publishing."""
    root = copy_repo(trained_repo)
    before = snapshot(root)
    real_convert = to_onnx.convert

    def swallowing(*args: Any) -> Any:
        try:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while converting ...
        except BaseException:  # ... caught and dropped, as that converter does
            pass
        return real_convert(*args)

    monkeypatch.setattr(to_onnx, "convert", swallowing)
    previous = signal.signal(signal.SIGINT, interrupt.handle)
    try:
        with pytest.raises(KeyboardInterrupt):
            export_version(root, "digits", 1, formats="onnx", data=mnist)
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupt.clear()
    assert snapshot(root) == before


def test_ctrl_c_during_the_tfjs_conversion_publishes_nothing(
    trained_repo: Path, copy_repo: Any, snapshot: Any, mnist_dir: Path
) -> None:
    """The user's case, for real: SIGINT while `digitserve export` runs the TF.js converter."""
    root = copy_repo(trained_repo)
    before = snapshot(root)
    process = subprocess.Popen(
        [sys.executable, "-m", "digitserve", "export", "--repo", str(root), "--formats", "tfjs",
         "--data", str(mnist_dir)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "tfjs: convert" in line:
                process.send_signal(signal.SIGINT)
                break
        rest = process.communicate(timeout=300)[1]
    finally:
        process.kill()
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    assert snapshot(root) == before


def test_failing_swap_leaves_the_version_alone(
    exported_repo: Path, copy_repo: Any, snapshot: Any, mnist: Any, monkeypatch: Any
) -> None:
    root = copy_repo(exported_repo)
    before = snapshot(root)

    def broken(first: Path, second: Path) -> None:
        raise OSError(errno.EIO, "disk on fire")

    monkeypatch.setattr(publish, "exchange", broken)
    with pytest.raises(OSError, match="disk on fire"):
        export_version(root, "digits", 1, formats="onnx", data=mnist)
    assert snapshot(root) == before


def test_publishes_with_two_renames_where_exchange_is_unsupported(
    trained_repo: Path, copy_repo: Any, mnist: Any, monkeypatch: Any
) -> None:
    root = copy_repo(trained_repo)

    def unsupported(first: Path, second: Path) -> None:
        raise OSError(errno.ENOSYS, "no renameat2 here")

    monkeypatch.setattr(publish, "exchange", unsupported)
    result = export_version(root, "digits", 1, formats="onnx", data=mnist)
    manifest = json.loads((root / "digits/1/manifest.json").read_text())
    assert manifest == result.manifest.to_json() and list(result.manifest.artifacts) == ["onnx"]
    assert (root / "digits/1/train/metrics.json").is_file()
    assert sorted(p.name for p in (root / "digits").iterdir()) == ["1"]


def test_without_train_metrics_the_model_describes_itself(
    trained_repo: Path, copy_repo: Any, mnist: Any
) -> None:
    root = copy_repo(trained_repo)
    (root / "digits/1/train/metrics.json").unlink()
    result = export_version(root, "digits", 1, formats="onnx", data=mnist)
    model = result.manifest.model
    assert model.architecture == "softmax" and model.parameters == 7850
    assert model.training is None
    parity = result.manifest.artifacts["onnx"].parity
    assert parity is not None and model.test_accuracy == pytest.approx(parity.keras_accuracy)


def test_missing_model_and_version_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="no model versions"):
        export_version(tmp_path, "digits")
    (tmp_path / "digits" / "4").mkdir(parents=True)
    with pytest.raises(ModelRepositoryError, match=r"model version 3 does not exist .*versions: 4"):
        export_version(tmp_path, "digits", 3)
    with pytest.raises(ModelRepositoryError, match=r"model.keras is missing"):
        export_version(tmp_path, "digits", 4)
    assert [p.name for p in (tmp_path / "digits").iterdir()] == ["4"]


def test_models_that_need_unsafe_deserialisation_are_refused(tmp_path: Path, mnist: Any) -> None:
    """A Lambda layer would run pickled Python on load: safe mode refuses it, export says so."""
    import keras

    pixels = keras.Input(shape=(784,), name="pixels")
    scaled = keras.layers.Lambda(lambda x: x * 1.0)(pixels)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(scaled)
    (tmp_path / "digits" / "1").mkdir(parents=True)
    keras.Model(pixels, outputs).save(tmp_path / "digits" / "1" / KERAS_FILE)
    with pytest.raises(ModelRepositoryError, match="Keras' safe mode refuses it"):
        export_version(tmp_path, "digits", 1, formats="onnx", data=mnist)
    assert sorted(p.name for p in (tmp_path / "digits" / "1").iterdir()) == [KERAS_FILE]
