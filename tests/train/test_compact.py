"""The compact model: a --model choice with its own recipe, under a quarter of the cnn's
multiply-adds on the exported ONNX graph, and it learns on a small subset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitserve.macs import count_macs
from digitserve.train.models import build_model
from digitserve.train.recipes import MODEL_DEFAULTS, MODELS
from digitserve.train.trainer import TrainConfig, train


def test_is_a_model_choice_with_its_own_recipe() -> None:
    assert "compact" in MODELS
    recipe = MODEL_DEFAULTS["compact"]
    assert recipe["augment"] is True and recipe["optimizer"] == "adam"


def test_a_quarter_of_the_cnns_multiply_adds_on_the_onnx_graph(tmp_path: Path) -> None:
    from digitserve.export.to_onnx import convert

    counts = {}
    for name in ("cnn", "compact"):
        convert(build_model(name), tmp_path / f"{name}.onnx")
        counts[name] = count_macs(tmp_path / f"{name}.onnx")
    assert counts["cnn"].total == 9_837_952  # the issue's ~9.8 M, by hand from the layer shapes
    assert counts["compact"].total <= counts["cnn"].total / 4


def test_learns_on_a_subset(tmp_path: Path, mnist_dir: Path) -> None:
    config = TrainConfig(model="compact", epochs=2, subset=3000, data=str(mnist_dir), repo=str(tmp_path))
    train(config)
    metrics = json.loads((tmp_path / "digits" / "1" / "train" / "metrics.json").read_text())
    assert metrics["model"] == "compact" and metrics["augment"] is True
    assert metrics["test_accuracy"] > 0.8


@pytest.mark.slow
def test_reaches_its_recorded_accuracy_on_all_of_mnist(tmp_path: Path, mnist_dir: Path) -> None:
    """Seed 42 recorded 99.50% (seeds 7 and 1234: 99.59%, 99.58%): short of issue 13's 99.6%
    bar, which is why cnn stays the default."""
    version = train(TrainConfig(model="compact", data=str(mnist_dir), repo=str(tmp_path)))
    metrics = json.loads((tmp_path / "digits" / str(version) / "train" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.995
    print(f"compact: {metrics['test_accuracy']:.4f} in {metrics['wall_seconds']} s")
