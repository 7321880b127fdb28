"""The input/output contract shared by every artifact and every API (docs/design.md).

One image is 784 float32 values, row-major 28x28, 0.0 background and 1.0 full ink.
A model maps `pixels` [N, 784] to `probabilities` [N, 10].
"""

from __future__ import annotations

import numpy as np

from digitserve.errors import InvalidInput

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
IMAGE_SIDE = 28
IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10


def images_to_pixels(images: np.ndarray) -> np.ndarray:
    """MNIST uint8 images [N, 28, 28] (or [N, 784]) -> contract float32 [N, 784] in [0, 1]."""
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, IMAGE_SIZE)


def validate_pixels(values: np.ndarray) -> np.ndarray:
    """Check float pixels against the contract and return them as float32 [N, 784].

    Raises InvalidInput with a message that says what to fix.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        raise InvalidInput("empty batch: send at least one image of 784 pixels")
    if flat.size % IMAGE_SIZE:
        raise InvalidInput(
            f"got {flat.size} pixel values, which is not a multiple of {IMAGE_SIZE}; "
            f"each image must be {IMAGE_SIZE} values (28x28, row-major)"
        )
    low, high = float(flat.min()), float(flat.max())
    if 0.0 <= low and high <= 1.0:  # the common case, in two passes; NaN fails both comparisons
        return flat.reshape(-1, IMAGE_SIZE)
    finite = np.isfinite(flat)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise InvalidInput(
            f"pixel values must be finite; image {bad // IMAGE_SIZE} has NaN or Inf "
            f"at pixel {bad % IMAGE_SIZE}"
        )
    if low < 0.0 or high > 1.0:
        hint = " — divide by 255 or send uint8 bytes" if high > 1.0 else ""
        raise InvalidInput(
            f"pixel values must lie in [0, 1]; got min {low:g}, max {high:g}{hint}"
        )
    return flat.reshape(-1, IMAGE_SIZE)


def decode_uint8(raw: bytes) -> np.ndarray:
    """Raw uint8 pixel bytes (0..255) -> float32 [N, 784] in [0, 1]."""
    if len(raw) == 0:
        raise InvalidInput("empty batch: send at least one image of 784 pixels")
    if len(raw) % IMAGE_SIZE:
        raise InvalidInput(
            f"got {len(raw)} uint8 pixel bytes, which is not a multiple of {IMAGE_SIZE}; "
            f"each image must be {IMAGE_SIZE} bytes (28x28, row-major)"
        )
    return images_to_pixels(np.frombuffer(raw, dtype=np.uint8))
