"""Turn a picture of a digit into the 784 floats a model expects, the way MNIST was made.

    load_image(path)  -> float64 [H, W] in [0, 1], ink high (white digit on black)
    to_mnist(gray)    -> float32 [784]: crop to the ink, fit in 20x20 keeping the aspect
                         ratio, centre by centre of mass in 28x28, brightest pixel 1.0
    load_pixels(path) -> to_mnist(load_image(path))
    gray_of(image)    -> what load_image returns, from an opened Pillow image (the server's
                         uploads, serve/images.py, go through it, so both sides prepare alike)

The drawing page runs the same steps in JavaScript (web/static/preprocess.js). To make the two
agree to the bit, `to_mnist` works on 8-bit ink levels with integer arithmetic only:

1. levels = round(gray * 255); levels below INK_THRESHOLD count as background (0).
2. Crop to the bounding box of the remaining ink (h x w). No ink: 784 zeros.
3. Fit: the longer side becomes 20, the other round(side * 20 / longer side), at least 1.
4. Resample by area averaging (a box filter): output pixel i of m covers source interval
   [i*n/m, (i+1)*n/m). Measured in units of 1/m of a source pixel every overlap is an integer,
   so each output value is an exact integer sum of weight * level.
5. Centre of mass (cy, cx) of those sums; put the box at top = floor(14 - cy) (that is, the
   centre of mass rounded to the middle of the 28x28 field), clamped so the box stays inside.
6. Divide by the largest sum, so the brightest pixel is 1.0 (like MNIST's full-ink strokes).

Every intermediate value is an integer below 2**53, so numpy and JavaScript doubles compute
them exactly; the only rounding is the final division and the cast to float32, which IEEE 754
defines identically in both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitserve.contract import IMAGE_SIDE, IMAGE_SIZE
from digitserve.errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

BOX = 20  # MNIST fits each digit in a 20x20 box inside the 28x28 field
INK_THRESHOLD = 32  # 8-bit levels below this are background: anti-aliasing fringe, paper noise
_MAX_EXACT = 2**53  # doubles hold every integer up to here


def load_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """The 784 model inputs for an image file: `to_mnist(load_image(path))`."""
    return to_mnist(load_image(path))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as grayscale float64 [H, W] in [0, 1] with the ink high.

    - Transparent pixels present (a drawing on a transparent background): the alpha channel
      is the ink, whatever the strokes' colour.
    - Otherwise luminance; inverted when the border is mostly light (dark ink on paper).
    - Then the border's median level is taken as the background and the image stretched so
      that background is 0 and the brightest ink 1 (an image that is already white on pure
      black, as the drawing page saves it, comes through unchanged).

    Raises ImageError naming the file when it is missing or not a readable image.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # Pillow is the `images` extra, not the core
        raise ImageError(
            "reading images needs Pillow: install the 'images' extra "
            "(uv sync --locked --extra images, or pip install 'digitserve[images]')"
        ) from exc

    file = Path(path)
    if not file.exists():
        raise ImageError(f"{file}: no such file")
    if not file.is_file():
        raise ImageError(f"{file}: not a file; give the path of a PNG, JPEG or other image")
    try:
        with Image.open(file) as image:
            return gray_of(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"{file}: cannot read it as an image ({exc}); give a PNG, JPEG, BMP or GIF file"
        ) from exc


def gray_of(image: Image.Image) -> np.ndarray:
    """`load_image`'s result for an opened Pillow image: its first frame, turned upright by its
    EXIF orientation, ink from alpha or luminance, the background levelled to 0."""
    from PIL import ImageOps

    image.seek(0)  # first frame of an animation
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation aside
    return _level_background(_ink_from_image(image))


def _ink_from_image(image: Image.Image) -> np.ndarray:
    """Grayscale float64 [H, W] in [0, 1], ink high, from a Pillow image."""
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        alpha = np.asarray(image.convert("RGBA"), dtype=np.float64)[..., 3] / 255.0
        if alpha.min() < 1.0:
            return alpha
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        wide = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        gray = np.clip(wide / top, 0.0, 1.0)
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    if gray.size and _border(gray).mean() > 0.5:
        gray = 1.0 - gray  # dark digit on light paper: MNIST wants white on black
    return gray


def _border(gray: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels (where the background is, if anywhere)."""
    if min(gray.shape) <= 2:
        return gray.reshape(-1)
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def _level_background(gray: np.ndarray) -> np.ndarray:
    """Stretch so that the border's median level is 0 and the brightest pixel 1."""
    if gray.size == 0:
        return gray
    background = float(np.median(_border(gray)))
    top = float(gray.max())
    if top <= background:
        return np.zeros_like(gray)
    if background == 0.0 and top == 1.0:
        return gray  # already clean: keep the levels exactly (parity with the page)
    return np.clip((gray - background) / (top - background), 0.0, 1.0)


def to_levels(gray: np.ndarray) -> np.ndarray:
    """8-bit ink levels (uint8 [H, W]) from uint8 levels or floats in [0, 1]."""
    array = np.asarray(gray)
    if array.ndim != 2:
        raise ImageError(f"expected a 2-D grayscale image, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageError("the image holds NaN or infinite values")
    # round half up, as JavaScript's Math.round does, so both sides quantise alike
    return np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """MNIST-style float32 [784] (28x28 row-major, 0 background, 1 ink) from a 2-D image.

    `gray`: uint8 levels 0..255 or floats in [0, 1], ink high (see `load_image`). An image
    without ink gives 784 zeros. See the module docstring for the exact steps.
    """
    levels = to_levels(gray).astype(np.int64)
    levels[levels < INK_THRESHOLD] = 0
    rows = np.flatnonzero(levels.any(axis=1))
    cols = np.flatnonzero(levels.any(axis=0))
    if rows.size == 0:
        return np.zeros(IMAGE_SIZE, dtype=np.float32)
    crop = levels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    if height * width * 255 * BOX * BOX * IMAGE_SIDE >= _MAX_EXACT:  # the centre-of-mass moment
        raise ImageError(f"image of {height}x{width} ink pixels is too large to prepare")
    fit_h, fit_w = fitted_size(height, width)

    # Weights and levels are integers and every partial sum stays below 2**53, so this
    # float64 product is exact whatever order BLAS adds in.
    rows_w = area_weights(height, fit_h).astype(np.float64)
    cols_w = area_weights(width, fit_w).astype(np.float64)
    sums = np.rint(rows_w @ crop.astype(np.float64) @ cols_w.T).astype(np.int64)

    top = centre_offset(sums.sum(axis=1), fit_h)
    left = centre_offset(sums.sum(axis=0), fit_w)
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float64)
    field[top : top + fit_h, left : left + fit_w] = sums / float(sums.max())
    return field.reshape(IMAGE_SIZE).astype(np.float32)


def fitted_size(height: int, width: int) -> tuple[int, int]:
    """(rows, cols) of the ink box scaled so its longer side is 20, each side at least 1."""
    longer = max(height, width)
    # round(side * BOX / longer), half up, in integers
    return (
        max(1, (2 * BOX * height + longer) // (2 * longer)),
        max(1, (2 * BOX * width + longer) // (2 * longer)),
    )


def area_weights(source: int, target: int) -> np.ndarray:
    """int64 [target, source]: how much of source pixel j output pixel i covers, in 1/target units.

    Output i spans [i*source, (i+1)*source) and source j spans [j*target, (j+1)*target) on a
    common integer axis; each row sums to `source`.
    """
    out = np.arange(target, dtype=np.int64)[:, None]
    src = np.arange(source, dtype=np.int64)[None, :]
    overlap = np.minimum((out + 1) * source, (src + 1) * target) - np.maximum(
        out * source, src * target
    )
    return np.maximum(overlap, 0)


def centre_offset(profile: np.ndarray, length: int) -> int:
    """Where a box of `length` starts in the 28-pixel field so its centre of mass is central.

    `profile`: the box's integer mass per row (or column). The centre of mass c (in pixel
    indices) lands at the field's middle, 13.5, rounded half up: start = floor(14 - c),
    computed in exact integers, then clamped so the box stays inside the field.
    """
    masses = [int(v) for v in profile]
    total = sum(masses)
    moment = sum(index * mass for index, mass in enumerate(masses))
    start = (IMAGE_SIDE // 2 * total - moment) // total
    return min(max(start, 0), IMAGE_SIDE - length)
