"""The export stage's small parts, without TensorFlow: formats, the swap, renames, the table."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from digitserve.errors import UsageError
from digitserve.export import publish
from digitserve.export.report import format_size, format_table
from digitserve.export.targets import EXPORT_FOLDERS, FORMATS, TARGETS, parse_formats
from digitserve.export.to_tfjs import rename_signature_nodes
from digitserve.manifest import Artifact, Manifest, ModelSummary, Parity
from digitserve.repository import KERAS_FILE, ModelRepository


def test_parse_formats_orders_and_rejects() -> None:
    assert parse_formats("tflite-int8, ONNX") == ("onnx", "tflite-int8")
    assert parse_formats("tfjs,tfjs") == ("tfjs",)
    with pytest.raises(UsageError, match="unknown export format 'onnx2', 'pt'"):
        parse_formats("onnx2,pt")


def test_quantised_targets() -> None:
    assert TARGETS["tflite-int8"].is_quantised(None)
    assert not TARGETS["tflite"].is_quantised(None)
    assert not TARGETS["tfjs"].is_quantised("none") and TARGETS["tfjs"].is_quantised("float16")
    assert not TARGETS["tflite"].is_quantised("float16")  # --tfjs-quantization is TF.js's alone


def test_every_target_is_one_complete_entry() -> None:
    """A format is one table entry: its file, converter and runtime; the ONNX ones skip the SavedModel
    (onnx-int8 quantises the float ONNX file)."""
    assert FORMATS == ("onnx", "tfjs", "tflite", "tflite-int8")
    assert EXPORT_FOLDERS == ("onnx", "tfjs", "tflite")
    for key, target in TARGETS.items():
        assert target.key == key and callable(target.convert) and callable(target.run)
        assert target.path == f"{target.folder}/{target.filename}"
    assert [key for key, target in TARGETS.items() if not target.from_saved_model] == ["onnx", "onnx-int8"]


def test_exchange_swaps_two_folders_atomically(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old").write_text("old")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "new").write_text("new")
    publish.exchange(tmp_path / "b", tmp_path / "a")
    assert os.listdir(tmp_path / "a") == ["new"] and os.listdir(tmp_path / "b") == ["old"]


def test_staged_copy_links_everything_but_what_export_owns(tmp_path: Path) -> None:
    version = tmp_path / "digits" / "1"
    (version / "train").mkdir(parents=True)
    (version / KERAS_FILE).write_bytes(b"weights")
    (version / "train" / "metrics.json").write_text("{}")
    (version / "onnx").mkdir()
    (version / "manifest.json").write_text("{}")
    with publish.staged_copy(version, skip=("onnx", "manifest.json")) as stage:
        assert stage.parent == version.parent and stage.name.startswith(".1.export-")
        assert sorted(p.name for p in stage.iterdir()) == [KERAS_FILE, "train"]
        assert (stage / KERAS_FILE).stat().st_ino == (version / KERAS_FILE).stat().st_ino
        assert (stage / "train" / "metrics.json").read_text() == "{}"
    assert not stage.exists()


def test_rename_signature_nodes_rewrites_references() -> None:
    topology = {
        "signature": {"inputs": {"pixels": {"name": "serving_pixels:0"}},
                      "outputs": {"probabilities": {"name": "Identity:0"}}},
        "modelTopology": {"node": [
            {"name": "serving_pixels", "op": "Placeholder"},
            {"name": "dense", "op": "MatMul", "input": ["serving_pixels", "^serving_pixels"]},
            {"name": "Identity", "op": "Identity", "input": ["dense:0"]},
        ]},
    }
    rename_signature_nodes(topology)
    nodes = topology["modelTopology"]["node"]
    assert [n["name"] for n in nodes] == ["pixels", "dense", "probabilities"]
    assert nodes[1]["input"] == ["pixels", "^pixels"]
    assert topology["signature"]["outputs"]["probabilities"]["name"] == "probabilities:0"
    with pytest.raises(ValueError, match="expected \\['probabilities'\\]"):
        rename_signature_nodes({"signature": {"inputs": {"pixels": {"name": "pixels:0"}},
                                              "outputs": {"output_0": {"name": "Identity:0"}}},
                                "modelTopology": {"node": []}})


def test_table_reads_like_the_manifest() -> None:
    parity = Parity(runtime="LiteRT", images=10_000, accuracy=0.9231, keras_accuracy=0.9232,
                    top1_agreement=0.9987, label_disagreements=13, max_abs_diff=0.031,
                    mean_abs_diff=0.001, worst_image=7, seconds=0.4)
    manifest = Manifest("digits", 1, ModelSummary(test_accuracy=0.9232), artifacts={
        "tflite-int8": Artifact(path="tflite/model_int8.tflite", sha256="ab" * 32, bytes=10_000,
                                conversion_seconds=1.25, parity=parity)})
    text = format_table(manifest)
    assert text.splitlines()[3].split() == ["tflite-int8", "tflite/model_int8.tflite", "9.8", "KB",
                                            "0.9231", "99.87%", "3.1e-02", "1.2", "s", "0.4", "s"]
    assert "max \\|Δp\\|" in format_table(manifest, markdown=True)
    assert format_size(512) == "512 B" and format_size(3 * 1024 * 1024) == "3.0 MB"


def test_staging_left_by_a_killed_writer_is_removed_by_the_next(tmp_path: Path) -> None:
    """Only this host's folders whose process is gone: a live writer's, or another host's on a
    shared volume, are left alone."""
    host = socket.gethostname()
    killed = subprocess.Popen(["sleep", "60"])
    killed.kill()
    killed.wait()
    repository = ModelRepository(tmp_path, "digits")
    version_dir = repository.path(1)
    version_dir.mkdir(parents=True)
    left = {prefix: repository.model_dir / f"{prefix}{host}.{killed.pid}-x1"
            for prefix in (".staging-", ".1.export-")}
    kept = [repository.model_dir / f".staging-{host}.{os.getpid()}-x2",  # a writer still running
            repository.model_dir / f".staging-other-host.{killed.pid}-x3"]  # not ours to judge
    for folder in [*left.values(), *kept]:
        (folder / "train").mkdir(parents=True)
    with repository.staging_dir() as staged:
        assert staged.name.startswith(f".staging-{host}.{os.getpid()}-")
        assert not left[".staging-"].exists() and left[".1.export-"].exists()
    with publish.staged_copy(version_dir, skip=()):
        assert not left[".1.export-"].exists()
    assert all(folder.is_dir() for folder in kept)
