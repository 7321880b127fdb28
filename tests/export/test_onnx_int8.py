"""The int8 ONNX (`--formats onnx-int8`): a real export of the session's small model, its bound,
what the manifest records, and that a plain export leaves it out."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from digitserve.contract import images_to_pixels
from digitserve.export import ParityError, export_version, verify
from digitserve.export.pipeline import ExportResult
from digitserve.export.targets import ALL_FORMATS, FORMATS, TARGETS, Bounds, parse_formats
from digitserve.mnist import Mnist
from digitserve.repository import ModelRepository


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory: pytest.TempPathFactory, exported_repo: Path, mnist: Mnist) -> ExportResult:
    """A copy of the exported repository with onnx-int8 added by a second export of it alone."""
    root = tmp_path_factory.mktemp("int8-repo")
    shutil.copytree(exported_repo, root, dirs_exist_ok=True, symlinks=True)
    return export_version(root, "digits", 1, formats="onnx-int8", data=mnist)


def test_a_plain_export_leaves_it_out_and_naming_it_builds_it() -> None:
    assert "onnx-int8" not in FORMATS and ALL_FORMATS.index("onnx-int8") == ALL_FORMATS.index("onnx") + 1
    assert parse_formats("onnx-int8,onnx") == ("onnx", "onnx-int8")
    assert TARGETS["onnx-int8"].is_quantised(None) and TARGETS["onnx-int8"].path == "onnx/model_int8.onnx"


def test_adding_it_keeps_every_other_artifact(int8_export: ExportResult, exported_repo: Path) -> None:
    manifest = int8_export.manifest
    assert list(manifest.artifacts) == ["onnx", "onnx-int8", "tfjs", "tflite", "tflite-int8"]
    assert manifest.export["formats"] == ["onnx-int8"]
    assert manifest.export["kept_from_previous_export"] == ["onnx", "tfjs", "tflite", "tflite-int8"]
    before = ModelRepository(exported_repo, "digits").read_manifest(1).artifacts
    assert {key: before[key].sha256 for key in before} == {
        key: manifest.artifacts[key].sha256 for key in before}
    # quantised from the float file it is published beside, the one --artifact onnx serves
    assert manifest.artifacts["onnx-int8"].facts["quantized_from"]["sha256"] == before["onnx"].sha256


def test_parity_in_onnxruntime_on_every_test_image_within_the_int8_bound(int8_export: ExportResult) -> None:
    parity = int8_export.manifest.artifacts["onnx-int8"].parity
    assert parity is not None and parity.images == 10_000 and "onnxruntime" in parity.runtime
    assert parity.bound == {"max_accuracy_drop": 0.005}
    assert parity.keras_accuracy - parity.accuracy <= 0.005


def test_the_manifest_records_calibration_and_the_speedup(int8_export: ExportResult) -> None:
    artifact = int8_export.manifest.artifacts["onnx-int8"]
    facts = artifact.facts
    assert artifact.path == "onnx/model_int8.onnx" and artifact.format == "onnx"
    assert facts["quantization"] == "int8" and facts["kept_float"] == ["Softmax"]
    assert facts["calibration_data"] == "training images" and facts["calibration_images"] == 500
    assert facts["input"]["shape"] == ["batch", 784] and facts["output"]["shape"] == ["batch", 10]
    speed = facts["speedup_over_float"]
    assert speed["batch_size"] == 64 and speed["speedup"] > 0 and speed["cpus"] >= 1
    assert speed["float_ms_per_call"] > 0 and speed["int8_ms_per_call"] > 0
    assert artifact.speedup == speed["speedup"]


def test_the_file_is_quantised_per_channel_and_smaller(int8_export: ExportResult) -> None:
    folder = int8_export.path
    int8 = onnx.load(str(folder / "onnx" / "model_int8.onnx"))
    ops = [node.op_type for node in int8.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    weights = [t for t in int8.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 2]
    assert weights, "no int8 weight matrix"
    scales = {node.input[1] for node in int8.graph.node
              if node.op_type == "DequantizeLinear" and node.input[0] in {w.name for w in weights}}
    initializers = {t.name: t for t in int8.graph.initializer}
    assert any(len(initializers[s].dims) == 1 and initializers[s].dims[0] > 1 for s in scales), "not per channel"
    manifest = int8_export.manifest
    assert manifest.artifacts["onnx-int8"].bytes < manifest.artifacts["onnx"].bytes


def test_an_accuracy_loss_beyond_the_bound_is_refused(int8_export: ExportResult, mnist: Mnist) -> None:
    """The same check export runs, with a bound no int8 model meets: it names the artifact."""
    folder = int8_export.path / "onnx"
    pixels, labels = images_to_pixels(mnist.x_test), mnist.y_test.astype(np.int64)
    reference, _ = verify.run_onnx(folder / "model.onnx", pixels)  # the float file stands in for Keras
    strict = Bounds(max_accuracy_drop=-0.01)
    with pytest.raises(ParityError, match=r"^onnx-int8 fails parity .* points below Keras'"):
        verify.verify(TARGETS["onnx-int8"], folder / "model_int8.onnx", pixels, labels, reference, True, strict)
