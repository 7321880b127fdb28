"""The manifest as typed objects: written and read back whole, other schemas refused, newer keys
kept, and a broken file named in the error. No TensorFlow: the files here are written by hand."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from digitserve.errors import ModelRepositoryError
from digitserve.manifest import Artifact, Manifest, ModelSummary, Parity
from digitserve.repository import MANIFEST, ModelRepository, write_manifest


def exported(root: Path, version: int = 1) -> tuple[ModelRepository, Manifest]:
    """A version with a two-file artifact on disk, its manifest written by the repository."""
    repository = ModelRepository(root, "digits")
    folder = repository.path(version) / "tfjs"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text('{"format": "graph-model"}')
    (folder / "group1-shard1of1.bin").write_bytes(bytes(range(256)))
    artifact = Artifact.from_files(repository.path(version), "tfjs/model.json", "tfjs-graph-model",
                                   {"weight_quantization": None}, 1.234,
                                   ["model.json", "group1-shard1of1.bin"])
    parity = Parity(runtime="TF.js", images=3, accuracy=1.0, keras_accuracy=1.0, top1_agreement=1.0,
                    label_disagreements=0, max_abs_diff=1e-7, mean_abs_diff=1e-8, worst_image=2,
                    bound={"max_abs_diff": 1e-4, "top1_agreement": 1.0}, seconds=0.5)
    model = ModelSummary(test_accuracy=0.9123, architecture="softmax", parameters=7850,
                         keras_sha256="ef" * 32, training={"epochs": 3})
    manifest = Manifest("digits", version, model, {"tfjs": replace(artifact, parity=parity)},
                        export={"formats": ["tfjs"]})
    write_manifest(repository.path(version), manifest)
    return repository, manifest


def rewrite(repository: ModelRepository, change: Any) -> None:
    file = repository.manifest_file(1)
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def test_written_and_read_back_whole(tmp_path: Path) -> None:
    repository, manifest = exported(tmp_path)
    assert repository.complete_versions() == [1]
    read = repository.read_manifest(1)
    assert read == manifest
    assert read.to_json() == json.loads((repository.path(1) / MANIFEST).read_text())
    artifact = read.artifacts["tfjs"]
    assert artifact.files == ("model.json", "group1-shard1of1.bin")
    assert artifact.bytes == 25 + 256 and artifact.conversion_seconds == 1.23
    assert artifact.sha256 == artifact.file_sha256["model.json"]
    assert artifact.files_match(repository.path(1))
    (repository.path(1) / "tfjs" / "group1-shard1of1.bin").write_bytes(b"replaced")
    assert not artifact.files_match(repository.path(1))


def test_the_file_keeps_schema_version_1s_keys(tmp_path: Path) -> None:
    repository, _ = exported(tmp_path)
    data = json.loads(repository.manifest_file(1).read_text())
    assert list(data) == ["schema_version", "name", "version", "created", "model", "contract",
                          "artifacts", "export"]
    assert data["schema_version"] == 1 and data["contract"]["input"]["name"] == "pixels"
    assert list(data["model"]) == ["architecture", "parameters", "keras_sha256", "test_accuracy",
                                   "training"]
    assert list(data["artifacts"]["tfjs"]) == ["path", "format", "weight_quantization", "files",
                                               "bytes", "sha256", "file_sha256",
                                               "conversion_seconds", "parity"]
    assert data["artifacts"]["tfjs"]["parity"]["disagreeing_images"] == []


def test_another_schema_version_is_refused(tmp_path: Path) -> None:
    repository, _ = exported(tmp_path)
    rewrite(repository, lambda data: data.update(schema_version=2))
    with pytest.raises(ModelRepositoryError, match=r"manifest.json has schema_version 2; this "
                                                   r"digitserve reads 1") as info:
        repository.read_manifest(1)
    assert str(repository.manifest_file(1)) in str(info.value)


def test_unknown_keys_are_tolerated_and_kept(tmp_path: Path) -> None:
    """What a newer digitserve adds reads fine and survives a rewrite."""
    repository, manifest = exported(tmp_path)

    def add(data: dict[str, Any]) -> None:
        data["signed_by"] = "ci"
        data["model"]["dataset"] = "mnist"
        data["artifacts"]["tfjs"]["opset_hint"] = 5
        data["artifacts"]["tfjs"]["parity"]["p99_latency_ms"] = 1.5

    rewrite(repository, add)
    read = repository.read_manifest(1)
    assert read.extra == {"signed_by": "ci"} and read.model.extra == {"dataset": "mnist"}
    assert read.artifacts["tfjs"].facts["opset_hint"] == 5
    assert read.artifacts["tfjs"].parity == manifest.artifacts["tfjs"].parity
    written = read.to_json()
    assert written["signed_by"] == "ci" and written["artifacts"]["tfjs"]["opset_hint"] == 5


@pytest.mark.parametrize(("change", "dotted"), [
    (lambda data: data.pop("version"), "version"),
    (lambda data: data["model"].pop("test_accuracy"), "model.test_accuracy"),
    (lambda data: data["artifacts"]["tfjs"].pop("sha256"), "artifacts.tfjs.sha256"),
    (lambda data: data["artifacts"]["tfjs"]["parity"].pop("runtime"), "artifacts.tfjs.parity.runtime"),
])
def test_a_missing_required_key_names_the_file_and_the_key(tmp_path: Path, change: Any, dotted: str) -> None:
    repository, _ = exported(tmp_path)
    rewrite(repository, change)
    with pytest.raises(ModelRepositoryError) as info:
        repository.read_manifest(1)
    message = str(info.value)
    assert message.startswith(f"{repository.manifest_file(1)} has no '{dotted}'"), message
    assert "export this version again" in message


def test_a_wrong_type_is_refused(tmp_path: Path) -> None:
    repository, _ = exported(tmp_path)
    rewrite(repository, lambda data: data["artifacts"].update(tfjs=["tfjs/model.json"]))
    with pytest.raises(ModelRepositoryError, match="where artifacts.tfjs should be an object"):
        repository.read_manifest(1)
    rewrite(repository, lambda data: data.update(version="1", artifacts={}))
    with pytest.raises(ModelRepositoryError, match="has version = '1', of the wrong type"):
        repository.read_manifest(1)


def test_a_minimal_hand_written_manifest_reads(tmp_path: Path) -> None:
    """The keys readers rely on are enough; an artifact without `files` is its one file."""
    folder = tmp_path / "digits" / "1"
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({
        "schema_version": 1, "name": "digits", "version": 1, "model": {"test_accuracy": None},
        "artifacts": {"onnx": {"path": "onnx/model.onnx", "sha256": "ab" * 32}}}))
    manifest = ModelRepository(tmp_path, "digits").read_manifest(1)
    onnx = manifest.artifacts["onnx"]
    assert manifest.model.test_accuracy is None and manifest.contract is None
    assert onnx.files == ("model.onnx",) and onnx.file_sha256 == {"model.onnx": "ab" * 32}
    assert onnx.parity is None and not onnx.files_match(folder)
