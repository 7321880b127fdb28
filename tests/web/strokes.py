"""Hand-made pen strokes of digits on the page's 280x280 canvas, for the browser tests and the
shared preprocessing vectors: each digit is a list of strokes, each a list of (x, y) points."""

from __future__ import annotations

import math

Stroke = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float,
         steps: int = 24) -> Stroke:
    """Points on an ellipse from angle `start` to `end` (degrees, 0 = right, 90 = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * i / steps for i in range(steps + 1))
    ]


def transform(strokes: list[Stroke], scale: float = 1.0, dx: float = 0.0,
              dy: float = 0.0) -> list[Stroke]:
    """The strokes scaled about the canvas centre (140, 140), then moved by (dx, dy)."""
    return [[(140 + (x - 140) * scale + dx, 140 + (y - 140) * scale + dy) for x, y in stroke]
            for stroke in strokes]


DIGITS: dict[int, list[Stroke]] = {
    0: [_arc(140, 140, 62, 92, -90, 270, steps=36)],
    1: [[(132, 52), (146, 40), (146, 236)]],
    2: [_arc(140, 100, 58, 52, 190, 360, steps=16) + [(182, 150), (84, 236), (204, 236)]],
    3: [_arc(136, 92, 54, 46, 200, 450, steps=16) + _arc(136, 186, 62, 52, 270, 520, steps=18)],
    4: [[(160, 44), (80, 176), (210, 176)], [(170, 110), (170, 238)]],
    5: [[(196, 46), (100, 46), (92, 126)] + _arc(136, 172, 64, 58, 220, 490, steps=18)],
    6: [[(178, 44), (112, 120)] + _arc(140, 180, 58, 56, 200, 560, steps=28)],
    7: [[(76, 48), (204, 48), (124, 238)]],
    8: [_arc(140, 94, 48, 48, 90, 450, steps=24), _arc(140, 186, 60, 52, -90, 270, steps=28)],
    9: [_arc(138, 96, 54, 50, 0, 360, steps=24) + [(192, 96), (176, 238)]],
}
