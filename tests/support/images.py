"""MNIST test images in the three forms the tests compare: bytes, floats and labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COUNT = 512


@dataclass(frozen=True)
class Images:
    uint8: np.ndarray  # [N, 784] uint8, as MNIST stores them
    pixels: np.ndarray  # [N, 784] float32 in [0, 1]: what the model takes
    labels: np.ndarray  # [N]


def load_test_images(mnist_dir: Path, count: int = COUNT) -> Images:
    """The first `count` MNIST test images."""
    from digitserve.mnist import load_mnist

    data = load_mnist(mnist_dir)
    raw = data.x_test[:count].reshape(-1, 784)
    return Images(raw, raw.astype(np.float32) / np.float32(255.0), data.y_test[:count])
