"""Write tests/data/preprocess_vectors.json: stroke images and the 784 floats each must become.

Both the Python tests and the browser test (web/static/preprocess.js) check every vector, so
the two implementations cannot drift apart. Run it only when the preprocessing is meant to
change, and say why in the commit:

    .venv/bin/python tests/web/make_vectors.py
"""

from __future__ import annotations

import base64
import json
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "data" / "preprocess_vectors.json"
SUPERSAMPLE = 4  # draw 4x larger, then average down: anti-aliased edges like a canvas's
BRUSH = 22

sys.path.insert(0, str(HERE.parents[1]))  # run as a script: `tests` from the checkout
from tests.web.strokes import DIGITS, Stroke, transform  # noqa: E402


def render(strokes: list[Stroke], width: int = 280, height: int = 280,
           brush: float = BRUSH) -> np.ndarray:
    """uint8 [height, width]: white round-capped strokes on black, anti-aliased."""
    big = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(big)
    radius = brush * SUPERSAMPLE / 2
    for stroke in strokes:
        points = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=round(brush * SUPERSAMPLE), joint="curve")
        for x, y in points:  # round caps and joins
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(big.resize((width, height), Image.Resampling.BOX), dtype=np.uint8)


def cases() -> dict[str, np.ndarray]:
    """Named uint8 images covering each branch of the preprocessing."""
    rng = np.random.default_rng(7)
    noisy = render(transform(DIGITS[4], scale=0.7, dx=20), width=300, height=200)
    specks = rng.integers(0, 32, size=noisy.shape, dtype=np.uint8)  # below the ink threshold
    noisy = np.where(noisy > 0, noisy, specks * (rng.random(noisy.shape) < 0.2)).astype(np.uint8)
    dot = np.zeros((280, 280), np.uint8)
    dot[100:105, 200:203] = [[40, 120, 200], [90, 255, 160], [60, 255, 255], [30, 200, 90], [0, 64, 32]]
    return {
        "seven": render(DIGITS[7]),
        "one-tall-thin": render(DIGITS[1]),
        "zero-small-corner": render(transform(DIGITS[0], scale=0.35, dx=-80, dy=85)),
        "three-right-heavy": render(transform(DIGITS[3], scale=0.8, dx=50)),
        "dash-wide": render([[(30, 150), (250, 150)]], brush=12),
        "four-noisy-300x200": noisy,
        "tiny-dot-upscaled": dot,
        "empty": np.zeros((280, 280), np.uint8),
    }


def encode(levels: np.ndarray) -> str:
    """zlib-compressed row-major bytes, base64: the browser inflates them with
    DecompressionStream('deflate')."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(levels).tobytes(), 9)).decode()


def decode(text: str, width: int, height: int) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(text))
    return np.frombuffer(raw, dtype=np.uint8).reshape(height, width)


def main() -> None:
    from digitserve.preprocess import to_mnist

    vectors = []
    for name, levels in cases().items():
        expected = to_mnist(levels)
        vectors.append({
            "name": name,
            "width": int(levels.shape[1]),
            "height": int(levels.shape[0]),
            "levels": encode(levels),
            "expected": [float(v) for v in expected],  # float32 values, exact as doubles
        })
    document = {
        "about": "8-bit ink images (zlib, base64, row-major) and the float32 [784] that "
                 "digitserve.preprocess.to_mnist and web/static/preprocess.js must make of "
                 "them; written by tests/web/make_vectors.py",
        "vectors": vectors,
    }
    VECTORS.parent.mkdir(parents=True, exist_ok=True)
    VECTORS.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    print(f"wrote {len(vectors)} vectors to {VECTORS} ({VECTORS.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
