"""A full export of a small trained model: every artifact written, checksummed and within bounds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from digitserve.export import FORMATS, export_version
from digitserve.manifest import Manifest
from digitserve.repository import ModelRepository


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_format_is_published_with_a_complete_manifest(
    exported_repo: Path, manifest_json: dict[str, Any]
) -> None:
    """The file as other tools read it (schema version 1), and its typed reading round-trips."""
    manifest = manifest_json
    repository = ModelRepository(exported_repo, "digits")
    assert repository.complete_versions() == [1]
    assert repository.read_manifest(1).to_json() == manifest
    assert manifest["schema_version"] == 1
    assert manifest["name"] == "digits" and manifest["version"] == 1
    assert list(manifest["artifacts"]) == list(FORMATS)
    paths = {key: entry["path"] for key, entry in manifest["artifacts"].items()}
    assert paths == {"onnx": "onnx/model.onnx", "tfjs": "tfjs/model.json",
                     "tflite": "tflite/model.tflite", "tflite-int8": "tflite/model_int8.tflite"}
    assert manifest["contract"]["input"]["name"] == "pixels"
    assert manifest["contract"]["output"]["shape"] == [-1, 10]
    assert {"architecture", "parameters", "keras_sha256", "test_accuracy", "training"} <= set(manifest["model"])
    for key, entry in manifest["artifacts"].items():  # the keys docs/design.md documents
        assert {"path", "format", "bytes", "sha256", "files", "file_sha256", "conversion_seconds",
                "parity"} <= set(entry), key
        assert {"runtime", "images", "accuracy", "keras_accuracy", "top1_agreement",
                "label_disagreements", "max_abs_diff", "mean_abs_diff", "worst_image",
                "bound"} <= set(entry["parity"]), key
    # no staging folder or half-export left behind beside the version
    assert sorted(p.name for p in (exported_repo / "digits").iterdir()) == ["1"]


def test_model_section_comes_from_train_metrics(exported_repo: Path, manifest: Manifest) -> None:
    metrics = json.loads((exported_repo / "digits/1/train/metrics.json").read_text())
    model = manifest.model
    assert model.architecture == "softmax"
    assert model.parameters == 7850
    assert model.keras_sha256 == sha256(exported_repo / "digits/1/model.keras")
    assert model.test_accuracy == pytest.approx(metrics["test_accuracy"])
    assert model.training is not None and model.training["epochs"] == 3
    assert (model.training["subset"], model.training["train_images"]) == (5000, metrics["train_images"])
    assert "augment" in model.training and "validation_split" in model.training
    assert model.training["data_sha256"] == metrics["data_sha256"]


def test_manifest_checksums_and_sizes_match_the_files(exported_repo: Path, manifest: Manifest) -> None:
    version = exported_repo / "digits" / "1"
    for key, artifact in manifest.artifacts.items():
        folder = version / artifact.folder
        assert artifact.sha256 == sha256(version / artifact.path), key
        assert set(artifact.file_sha256) == set(artifact.files), key
        for name, digest in artifact.file_sha256.items():
            assert sha256(folder / name) == digest, f"{key}: {name}"
        assert artifact.bytes == sum((folder / name).stat().st_size for name in artifact.files)
        assert artifact.files_match(version), key
    shards = manifest.artifacts["tfjs"].files
    assert shards[0] == "model.json" and len(shards) >= 2
    assert sorted(p.name for p in (version / "tfjs").iterdir()) == sorted(shards)


def test_parity_figures_meet_the_bounds_on_all_test_images(manifest: Manifest) -> None:
    artifacts = manifest.artifacts
    parities = {key: artifact.parity for key, artifact in artifacts.items() if artifact.parity}
    assert set(parities) == set(FORMATS)
    for key in ("onnx", "tfjs", "tflite"):
        parity = parities[key]
        assert parity.images == 10_000, key
        assert parity.top1_agreement == 1.0 and parity.label_disagreements == 0, key
        assert 0 <= parity.max_abs_diff <= 1e-4, key
        assert parity.accuracy == parity.keras_accuracy, key
        assert parity.bound == {"max_abs_diff": 1e-4, "top1_agreement": 1.0}
    int8 = artifacts["tflite-int8"]
    assert int8.facts["quantization"] == "int8" and int8.facts["calibration_images"] == 500
    assert parities["tflite-int8"].keras_accuracy - parities["tflite-int8"].accuracy <= 0.005
    assert int8.bytes is not None and artifacts["tflite"].bytes is not None
    assert int8.bytes < artifacts["tflite"].bytes / 2.5
    assert "onnxruntime" in parities["onnx"].runtime
    assert "@tensorflow/tfjs" in parities["tfjs"].runtime
    assert "ai-edge-litert" in parities["tflite-int8"].runtime


def test_re_export_of_some_formats_keeps_the_others(
    exported_repo: Path, copy_repo: Any, mnist: Any, manifest: Manifest
) -> None:
    """Re-exporting TF.js with uint8 weights replaces tfjs/ and keeps the other three as they are."""
    root = copy_repo(exported_repo)
    result = export_version(root, "digits", 1, formats="tfjs", data=mnist,
                            tfjs_quantization="uint8")
    after = result.manifest.artifacts
    assert list(after) == list(FORMATS)
    assert result.manifest.export is not None
    assert result.manifest.export["kept_from_previous_export"] == ["onnx", "tflite", "tflite-int8"]
    for key in ("onnx", "tflite", "tflite-int8"):
        assert after[key] == manifest.artifacts[key]
    tfjs = after["tfjs"]
    assert tfjs.facts["weight_quantization"] == "uint8"
    assert tfjs.parity is not None and tfjs.parity.bound == {"max_accuracy_drop": 0.005}
    assert tfjs.parity.keras_accuracy - tfjs.parity.accuracy <= 0.005
    assert tfjs.bytes is not None and manifest.artifacts["tfjs"].bytes is not None
    assert tfjs.bytes < manifest.artifacts["tfjs"].bytes / 2
    on_disk = json.loads((root / "digits/1/manifest.json").read_text())
    assert on_disk == result.manifest.to_json()
    assert sha256(root / "digits/1/tfjs/model.json") == tfjs.sha256
