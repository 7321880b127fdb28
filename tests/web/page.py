"""The drawing page in a Playwright page, for the browser tests (test_browser.py, test_serve_page.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.web.strokes import Stroke


class Page:
    """A Playwright page on the drawing page, recording every console error and failed load."""

    def __init__(self, browser: Any, url: str, **context_options: Any):
        self.context = browser.new_context(**context_options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url}"))
        self.page.on("response", lambda r: r.status >= 400 and self.errors.append(
            f"{r.status}: {r.url}"))
        self.page.goto(url)
        self.page.evaluate("window.digitserve.ready")

    def pad_origin(self) -> tuple[float, float, float]:
        box = self.page.locator("#pad").bounding_box()
        assert box is not None
        return box["x"], box["y"], box["width"] / 280

    def draw(self, strokes: list[Stroke], release: bool = True) -> None:
        """Draw with the mouse, in canvas coordinates (0..280)."""
        left, top, scale = self.pad_origin()
        mouse = self.page.mouse
        for index, stroke in enumerate(strokes):
            mouse.move(left + stroke[0][0] * scale, top + stroke[0][1] * scale)
            mouse.down()
            for x, y in stroke[1:]:
                mouse.move(left + x * scale, top + y * scale, steps=4)
            if release or index < len(strokes) - 1:
                mouse.up()

    def settle(self) -> str:
        """The label shown once every scheduled prediction has run."""
        self.page.evaluate("window.digitserve.whenIdle()")
        return self.page.inner_text("#label")

    def prepared(self) -> np.ndarray:
        return np.float32(self.page.evaluate("Array.from(window.digitserve.prepare())"))

    def close(self) -> None:
        self.context.close()
