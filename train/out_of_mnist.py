"""Digits that are not from MNIST: a seeded check set of pen drawings, for what users send.

MNIST's test set says little about the drawing page and `digitserve classify`, which read
mouse drawings and photos of paper. This set makes both, from stroke templates (several
styles per digit) bent by a random slant, rotation, aspect, size and a smooth wobble:

- `page`: white strokes of the page's 22-pixel brush on its black 280x280 canvas, prepared by
  `to_mnist` exactly as the page's preprocess.js does;
- `paper`: dark ink of any pen width on uneven grey paper, blurred, noisy, saved as JPEG and
  read back through `load_pixels`, exactly as `digitserve classify photo.jpg` reads a file.

No model is involved in making it, so it scores models side by side: `make_check_set(seed)`
is the same 784-float images and labels on every machine.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitserve.preprocess import load_pixels, to_mnist

Stroke = list[tuple[float, float]]
CANVAS = 280  # the page's canvas side, and the templates' coordinates
PAGE_BRUSH = 22  # the page's BRUSH_WIDTH (web/static/app.js)
SUPERSAMPLE = 4  # draw larger, then average down: anti-aliased edges
RENDERINGS = ("page", "paper")


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 24) -> Stroke:
    """Points on an ellipse from angle `start` to `end` (degrees, 0 = right, 90 = down)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in (start + (end - start) * i / steps for i in range(steps + 1))]


def _figure_eight(cx: float, cy: float, rx: float, ry: float, steps: int = 48) -> Stroke:
    """One continuous stroke crossing itself at the centre, as many people write an 8."""
    return [(cx - rx * math.sin(2 * t), cy - ry * math.cos(t))
            for t in (2 * math.pi * i / steps for i in range(steps + 1))]


# Several ways of writing each digit, on the 280x280 canvas (y grows downwards).
STYLES: dict[int, list[list[Stroke]]] = {
    0: [[_arc(140, 140, 62, 92, -90, 270, steps=36)],
        [_arc(140, 140, 48, 96, -100, 280, steps=36)],
        [_arc(140, 140, 80, 88, -80, 290, steps=36)]],
    1: [[[(146, 40), (146, 236)]],
        [[(116, 76), (150, 40), (150, 236)]],
        [[(118, 72), (148, 40), (148, 236)], [(112, 236), (184, 236)]]],
    2: [[_arc(140, 100, 58, 52, 190, 360, steps=16) + [(182, 150), (84, 236), (204, 236)]],
        [_arc(140, 96, 56, 50, 200, 380, steps=16) + [(96, 226)] + _arc(110, 222, 18, 16, 180, 360, steps=8)
         + [(210, 232)]],
        [[(86, 52), (196, 52), (84, 236), (206, 236)]]],
    3: [[_arc(136, 92, 54, 46, 200, 450, steps=16) + _arc(136, 186, 62, 52, 270, 520, steps=18)],
        [[(84, 48), (196, 48), (128, 126)] + _arc(136, 180, 62, 56, 280, 520, steps=18)],
        [_arc(140, 96, 50, 50, 210, 440, steps=16) + _arc(140, 190, 58, 48, 280, 500, steps=18)]],
    4: [[[(160, 44), (80, 176), (210, 176)], [(170, 110), (170, 238)]],
        [[(176, 238), (176, 40), (76, 170), (214, 170)]],
        [[(100, 44), (92, 150), (204, 150)], [(186, 48), (186, 238)]]],
    5: [[[(196, 46), (100, 46), (92, 126)] + _arc(136, 172, 64, 58, 220, 490, steps=18)],
        [[(102, 46), (94, 128)] + _arc(136, 174, 62, 56, 220, 490, steps=18), [(100, 46), (200, 42)]],
        [[(190, 50), (108, 50), (100, 118)] + _arc(142, 170, 60, 66, 230, 470, steps=18)]],
    6: [[[(178, 44), (112, 120)] + _arc(140, 180, 58, 56, 200, 560, steps=28)],
        [_arc(190, 150, 100, 110, 250, 180, steps=10) + _arc(142, 186, 52, 50, 180, 540, steps=24)],
        [[(164, 40), (96, 180)] + _arc(140, 192, 46, 44, 180, 540, steps=24)]],
    7: [[[(76, 48), (204, 48), (124, 238)]],
        [[(76, 52), (204, 48), (136, 238)], [(114, 146), (190, 142)]],
        [[(80, 60), (86, 46), (200, 50), (186, 90), (170, 132), (156, 176), (146, 238)]]],
    8: [[_arc(140, 94, 48, 48, 90, 450, steps=24), _arc(140, 186, 60, 52, -90, 270, steps=28)],
        [_figure_eight(140, 140, 58, 96)],
        [_arc(140, 96, 54, 52, 90, 450, steps=24), _arc(140, 188, 54, 50, -90, 270, steps=28)]],
    9: [[_arc(138, 96, 54, 50, 0, 360, steps=24) + [(192, 96), (176, 238)]],
        [_arc(136, 98, 52, 52, 0, 360, steps=24) + [(188, 110), (188, 238)]],
        [_arc(140, 94, 52, 48, 10, 370, steps=24) + _arc(80, 110, 112, 128, 0, 80, steps=10)]],
}


@dataclass(frozen=True)
class CheckSet:
    """Prepared images (float32 [N, 784]), their labels (int64 [N]) and renderings ([N] str)."""

    pixels: np.ndarray
    labels: np.ndarray
    rendering: np.ndarray

    def accuracy(self, predicted: np.ndarray) -> dict[str, float]:
        """Accuracy overall and per rendering, from predicted labels [N]."""
        right = np.asarray(predicted) == self.labels
        scores = {"all": float(right.mean())}
        for kind in RENDERINGS:
            scores[kind] = float(right[self.rendering == kind].mean())
        return scores


def make_check_set(seed: int = 13, per_digit: int = 40) -> CheckSet:
    """`per_digit` page drawings and as many paper ones of each digit, the same for a seed."""
    rng = np.random.default_rng(seed)
    pixels, labels, rendering = [], [], []
    with tempfile.TemporaryDirectory(prefix="out-of-mnist-") as folder:
        for kind in RENDERINGS:
            for digit in range(10):
                for index in range(per_digit):
                    strokes = STYLES[digit][index % len(STYLES[digit])]
                    if kind == "page":
                        image = to_mnist(draw_page(distort(strokes, rng, small=True), rng))
                    else:
                        path = Path(folder) / f"{digit}-{index}.jpg"
                        draw_paper(distort(strokes, rng, small=False), rng, path)
                        image = load_pixels(path)
                    pixels.append(image)
                    labels.append(digit)
                    rendering.append(kind)
    return CheckSet(np.stack(pixels).astype(np.float32), np.asarray(labels, np.int64), np.asarray(rendering))


def distort(strokes: list[Stroke], rng: np.random.Generator, small: bool) -> list[Stroke]:
    """The strokes slanted, rotated, squeezed, scaled, moved and wobbled about the centre.

    `small`: allow drawings down to 30% of the canvas (on the page a small digit means a thick
    stroke after the fit into 20x20); paper digits stay large and get their own pen widths.
    """
    angle = math.radians(rng.uniform(-20, 20))
    slant = rng.uniform(-0.5, 0.5)  # x moves by slant per unit of height above the centre
    size = rng.uniform(0.3, 1.0) if small else rng.uniform(0.7, 1.0)
    aspect = rng.uniform(0.6, 1.4)
    sx, sy = size * min(1.0, aspect), size * min(1.0, 1 / aspect)
    room = (1.0 - size) * 110
    dx, dy = rng.uniform(-room, room, size=2) + rng.uniform(-10, 10, size=2)
    # A smooth wobble: two random sine waves per axis, up to ~12 canvas pixels.
    waves = rng.uniform(0.008, 0.03, size=(2, 2)), rng.uniform(0, 2 * math.pi, size=(2, 2))
    amplitude = rng.uniform(2.0, 12.0)
    cos, sin = math.cos(angle), math.sin(angle)
    out = []
    for stroke in strokes:
        moved = []
        for x, y in _densify(stroke, step=6.0):
            u, v = x - CANVAS / 2, y - CANVAS / 2
            u = u - slant * v
            u, v = u * sx, v * sy
            u, v = cos * u - sin * v, sin * u + cos * v
            wobble_x = amplitude * math.sin(waves[0][0, 0] * y + waves[1][0, 0]) * math.cos(
                waves[0][0, 1] * x + waves[1][0, 1])
            wobble_y = amplitude * math.sin(waves[0][1, 0] * x + waves[1][1, 0]) * math.cos(
                waves[0][1, 1] * y + waves[1][1, 1])
            moved.append((CANVAS / 2 + u + dx + wobble_x, CANVAS / 2 + v + dy + wobble_y))
        out.append(moved)
    return out


def _densify(stroke: Stroke, step: float) -> Stroke:
    """The stroke with points every `step` pixels or closer, so a wobble bends straight lines."""
    points = [stroke[0]]
    for (x0, y0), (x1, y1) in zip(stroke, stroke[1:], strict=False):
        pieces = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / step))
        points += [(x0 + (x1 - x0) * i / pieces, y0 + (y1 - y0) * i / pieces) for i in range(1, pieces + 1)]
    return points


def _ink(strokes: list[Stroke], side: int, width: float, scale: float = 1.0) -> np.ndarray:
    """uint8 [side, side]: round-capped strokes of `width` pixels, anti-aliased."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    factor = scale * SUPERSAMPLE
    radius = width * SUPERSAMPLE / 2
    for stroke in strokes:
        points = [(x * factor, y * factor) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(width * SUPERSAMPLE)), joint="curve")
        for x, y in points:  # round caps and joins
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(big.resize((side, side), Image.Resampling.BOX), dtype=np.uint8)


def draw_page(strokes: list[Stroke], rng: np.random.Generator) -> np.ndarray:
    """The page's canvas: white strokes of its brush on black, uint8 [280, 280]."""
    del rng  # the page's brush is fixed; the variety is in the drawing
    return _ink(strokes, CANVAS, PAGE_BRUSH)


def draw_paper(strokes: list[Stroke], rng: np.random.Generator, path: Path) -> None:
    """A photo of ink on paper: any pen width, blur, uneven light and noise, saved as JPEG."""
    from PIL import Image, ImageFilter

    side = int(rng.integers(140, 360))  # the photo's resolution
    scale = side / CANVAS
    pen = rng.uniform(5, 48) * scale  # a fine liner to a marker, in the photo's pixels
    ink = _ink(strokes, side, pen, scale).astype(np.float64) / 255.0
    blurred = Image.fromarray(np.round(ink * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.0, 4.0) * scale))
    ink = np.asarray(blurred, dtype=np.float64) / 255.0
    paper = rng.uniform(0.72, 0.95)
    dark = rng.uniform(0.05, 0.35)  # pencil-grey to black ink
    ys, xs = np.mgrid[0:side, 0:side] / side - 0.5
    light = paper + rng.uniform(-0.04, 0.04) * xs + rng.uniform(-0.04, 0.04) * ys  # a gentle shade
    gray = light * (1 - ink) + dark * ink + rng.normal(0, rng.uniform(0.002, 0.012), size=ink.shape)
    photo = Image.fromarray(np.round(np.clip(gray, 0, 1) * 255).astype(np.uint8))
    photo.save(path, quality=int(rng.integers(60, 92)))
