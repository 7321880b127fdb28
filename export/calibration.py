"""The images int8 quantisers calibrate on: training images, never the test images that prove them.

Both int8 targets (TFLite and ONNX) take the same fixed choice, so their ranges come from the
same data and their accuracies compare.
"""

from __future__ import annotations

import numpy as np

CALIBRATION_IMAGES = 500


def calibration_pixels(train_pixels: np.ndarray, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """`count` training images spread evenly over the set (every digit, fixed choice)."""
    index = np.linspace(0, len(train_pixels) - 1, num=min(count, len(train_pixels))).astype(int)
    return np.ascontiguousarray(train_pixels[index], dtype=np.float32)
