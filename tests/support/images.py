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


FILE_KINDS = ("png", "jpg", "bmp", "gif", "webp", "rgba.png")
"""The image files `write_digit_files` makes, in turn: grayscale PNG, RGB JPEG, BMP, GIF, WebP,
and a PNG whose ink is its alpha channel (a drawing on a transparent background)."""


def write_digit_files(images: Images, folder: Path, count: int) -> list[Path]:
    """MNIST test digits 0..count-1 as the files a user would send: dark ink on a light canvas,
    upscaled 3-6x, placed off-centre, in each of FILE_KINDS in turn (the transparent one keeps
    the light digit as its alpha)."""
    from PIL import Image

    paths = []
    for i in range(count):
        side = 28 * (3 + i % 4)
        ink = Image.fromarray(images.uint8[i].reshape(28, 28)).resize((side, side), Image.Resampling.BILINEAR)
        size, where = (side + 40, side + 30), (5 + 3 * i % 30, 4 + 2 * i % 20)
        kind = FILE_KINDS[i % len(FILE_KINDS)]
        path = folder / f"digit-{i}.{kind}"
        if kind == "rgba.png":
            canvas = Image.new("RGBA", size, (20, 40, 200, 0))
            alpha = Image.new("L", size, 0)
            alpha.paste(ink, where)
            canvas.putalpha(alpha)
            canvas.save(path)
        else:
            canvas = Image.new("L", size, 255)
            canvas.paste(Image.eval(ink, lambda v: 255 - v), where)
            if kind in ("jpg", "webp"):
                canvas.convert("RGB").save(path, quality=92)
            else:
                canvas.save(path)
        paths.append(path)
    return paths


def ink_on_paper(
    strokes: list[list[tuple[float, float]]],
    size: tuple[int, int] = (400, 300),
    *,
    seed: int = 0,
    slant: float = 0.2,
    thickness: float = 0.05,
    blur: float = 1.5,
    rgb: bool = True,
) -> np.ndarray:
    """A photo of a digit written in ink on paper: uint8 [H, W, 3] (or [H, W] unless `rgb`).

    `strokes` are polylines on the drawing page's 280 x 280 canvas (tests/web/strokes.py). The
    paper is light and uneven (a lighting gradient, a warm tint, grain); the ink is dark (blue-black),
    slanted (`slant`: the top leans right by that fraction of the height), of a thickness that
    varies along each stroke around `thickness` (a fraction of the digit's height), and blurred
    (`blur`: pixels of Gaussian blur, as a phone camera's focus does). The digit fills 55-80% of
    the shorter side, off-centre; `seed` decides those choices. Save it as JPEG for the
    compression. The gradient and grain stay below the ink threshold of digitserve.preprocess
    (levels under 32 of 255 after its levelling), as paper in a fair photo does.
    """
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    width, height = size
    side = min(width, height) * rng.uniform(0.55, 0.8)
    centre_x = width / 2 + rng.uniform(-0.12, 0.12) * width
    centre_y = height / 2 + rng.uniform(-0.08, 0.08) * height

    def place(x: float, y: float) -> tuple[float, float]:
        u, v = (x - 140) / 280, (y - 140) / 280
        return centre_x + (u - slant * v) * side, centre_y + v * side

    mask = Image.new("L", size, 0)
    pen = ImageDraw.Draw(mask)
    phase = rng.uniform(0, 2 * np.pi)
    for stroke in strokes:
        points = [place(x, y) for x, y in stroke]
        for i, (start, end) in enumerate(zip(points, points[1:], strict=False)):
            nib = max(1.0, thickness * side * (1 + 0.35 * np.sin(phase + 0.4 * i)))  # pressure varies
            pen.line([start, end], fill=255, width=round(nib))
            for x, y in (start, end):  # round joints
                pen.ellipse([x - nib / 2, y - nib / 2, x + nib / 2, y + nib / 2], fill=255)
    ink = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float64) / 255.0
    ink *= rng.uniform(0.8, 0.95)  # ink is dark, never quite black

    rows, cols = np.mgrid[0:height, 0:width]
    tilt_x, tilt_y = rng.uniform(-1, 1, size=2)
    light = tilt_x * cols / max(width - 1, 1) + tilt_y * rows / max(height - 1, 1)
    light = (light - light.min()) / max(float(np.ptp(light)), 1e-9)  # 0..1 across the sheet
    paper = 0.84 + 0.07 * light + rng.uniform(-0.02, 0.02, size=(height, width))  # uneven, grainy
    tint = np.array([1.0, 0.98, 0.93])  # warm paper
    ink_colour = np.array([0.10, 0.12, 0.22])  # blue-black
    picture = paper[..., None] * tint * (1 - ink[..., None]) + ink_colour * ink[..., None]
    picture = np.clip(np.rint(picture * 255), 0, 255).astype(np.uint8)
    return picture if rgb else np.asarray(Image.fromarray(picture).convert("L"))
