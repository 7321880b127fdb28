"""End to end: `digitserve train` on a subset of the real MNIST, and what it publishes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import keras
import numpy as np
import pytest

from digitserve.mnist import load_mnist
from digitserve.repository import ModelRepository
from digitserve.train.trainer import TrainConfig, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_publishes_a_complete_version(trained_repo: Path, mnist_dir: Path) -> None:
    version_dir = trained_repo / "digits" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["model.keras", "train"]
    assert not [p for p in (trained_repo / "digits").iterdir() if p.name.startswith(".")]

    metrics = json.loads((version_dir / "train" / "metrics.json").read_text())
    assert metrics["model"] == "softmax" and metrics["subset"] == 5000
    assert metrics["test_accuracy"] > 0.80, "well above the 10% of chance"
    assert metrics["test_images"] == 10000
    assert metrics["epochs_run"] == 3 and metrics["seed"] == 42
    assert metrics["data_sha256"] == load_mnist(mnist_dir).sha256
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    assert sum(c["support"] for c in metrics["per_class"].values()) == 10000
    assert {"tensorflow", "keras", "numpy", "python"} <= set(metrics["libraries"])
    assert np.asarray(metrics["confusion_matrix"]).trace() == round(metrics["test_accuracy"] * 10000)

    history = json.loads((version_dir / "train" / "history.json").read_text())
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    for picture in ("learning_curves.png", "confusion_matrix.png", "misclassified.png"):
        width, height = png_size(version_dir / "train" / picture)
        assert width >= 400 and height >= 300

    # The saved model reloads in safe mode and reproduces the recorded accuracy.
    model = keras.models.load_model(version_dir / "model.keras", safe_mode=True)
    data = load_mnist(mnist_dir)
    predicted = model.predict(data.x_test.reshape(-1, 784) / 255.0, verbose=0).argmax(axis=1)
    assert (predicted == data.y_test).mean() == pytest.approx(metrics["test_accuracy"], abs=1e-4)


def test_same_seed_same_accuracy_and_next_version(tmp_path: Path, mnist_dir: Path) -> None:
    config = TrainConfig(model="softmax", epochs=2, subset=3000, data=str(mnist_dir), repo=str(tmp_path))
    assert train(config) == 1
    assert train(config) == 2
    accuracies = [
        json.loads((tmp_path / "digits" / str(v) / "train" / "metrics.json").read_text())["test_accuracy"]
        for v in (1, 2)
    ]
    assert abs(accuracies[0] - accuracies[1]) <= 0.001
    assert ModelRepository(tmp_path).versions() == [1, 2]


def test_cnn_with_augmentation_and_validation_learns(tmp_path: Path, mnist_dir: Path) -> None:
    config = TrainConfig(model="cnn", epochs=2, subset=3000, data=str(mnist_dir), repo=str(tmp_path))
    train(config)
    metrics = json.loads((tmp_path / "digits" / "1" / "train" / "metrics.json").read_text())
    assert metrics["augment"] is True and metrics["validation_images"] == 150
    assert metrics["test_accuracy"] > 0.8
    history = json.loads((tmp_path / "digits" / "1" / "train" / "history.json").read_text())
    assert "val_loss" in history


def test_published_version_is_readable_by_other_users(trained_repo: Path) -> None:
    """A server running as another user (a container's) must be able to read the version."""
    version_dir = trained_repo / "digits" / "1"
    assert version_dir.stat().st_mode & 0o005 == 0o005
    assert (version_dir / "train" / "metrics.json").stat().st_mode & 0o004
