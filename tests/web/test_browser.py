"""The drawing page in headless Chromium: drawing, live prediction, preprocessing parity with
Python, TF.js parity with ONNX Runtime, phones, pens, keyboards, and the error messages."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digitserve.preprocess import load_pixels
from digitserve.web.app import WebConfig
from tests.web.in_process import RunningServer
from tests.web.page import Page
from tests.web.strokes import DIGITS, transform

pytestmark = pytest.mark.browser
PARITY_IMAGES = 1000


@pytest.fixture(scope="module")
def site(drawing_model_repo: Path, tfjs_dist: Path) -> Iterator[RunningServer]:
    server = RunningServer(WebConfig(repo=drawing_model_repo, name="digits", tfjs_dist=tfjs_dist))
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any, site: RunningServer) -> Iterator[Page]:
    opened = Page(browser, site.url + "/", viewport={"width": 900, "height": 620})
    yield opened
    opened.close()


def test_page_loads_the_newest_model_without_console_errors(page: Page) -> None:
    status = page.page.inner_text("#model-status")
    assert "Model digits version 1" in status
    assert "test accuracy 9" in status  # the manifest's accuracy, e.g. 93.74%
    assert page.page.get_attribute("body", "data-state") == "ready"
    assert page.page.is_hidden("#message")
    assert page.page.locator("#bars li").count() == 10
    page.draw(DIGITS[4])
    assert page.settle() == "4"
    assert page.errors == []


def test_plain_web_shows_no_server_answer(page: Page) -> None:
    """Only `serve --web` has a server to ask: `digitserve web` shows no server answer."""
    asked: list[str] = []
    page.page.on("request", lambda r: "/v2" in r.url and asked.append(r.url))
    page.draw(DIGITS[7])
    assert page.settle() == "7"
    assert page.page.is_hidden("#server")
    assert page.page.evaluate("window.digitserve.answers().server") is None
    assert "nothing you draw leaves the page" in page.page.inner_text("footer")
    assert asked == [] and page.errors == []


@pytest.mark.parametrize("digit", [1, 0, 7])
def test_drawn_digits_are_recognised(page: Page, digit: int, artifacts: Path) -> None:
    for variant in ({"scale": 0.6, "dx": -40, "dy": 35}, {}):
        page.page.click("#clear")
        page.draw(transform(DIGITS[digit], **variant))
        assert page.settle() == str(digit), variant
        best = page.page.locator("#bars li.best")
        assert best.count() == 1 and best.inner_text().startswith(str(digit))
    shot = artifacts / f"page-digit-{digit}.png"
    page.page.screenshot(path=str(shot))
    print(f"\nscreenshot of the page with a drawn {digit}: {shot}")
    assert page.errors == []


def test_prediction_is_live_while_drawing(page: Page) -> None:
    page.draw(DIGITS[1], release=False)  # the mouse button is still down
    page.page.wait_for_function("document.getElementById('label').textContent === '1'")
    page.page.mouse.up()


def test_the_small_image_shows_what_the_model_sees(page: Page) -> None:
    page.draw(DIGITS[2])
    page.settle()
    shown = page.page.evaluate("""() => {
        const data = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        return Array.from(data.filter((_, i) => i % 4 === 0));
    }""")
    np.testing.assert_array_equal(np.uint8(shown), np.uint8(np.round(page.prepared() * 255)))


def test_undo_and_clear_from_mouse_and_keyboard(page: Page) -> None:
    page.draw(DIGITS[7])
    assert page.settle() == "7"
    page.draw([[(60, 250), (230, 250)]])  # an extra stroke changes the picture
    after_extra = page.prepared()
    page.page.click("#undo")
    page.settle()
    assert not np.array_equal(page.prepared(), after_extra) and page.settle() == "7"

    page.page.keyboard.press("Control+z")  # undo the 7 itself: nothing left
    assert page.settle() == "–"
    page.draw(DIGITS[0])
    assert page.settle() == "0"
    page.page.focus("#undo")
    page.page.keyboard.press("Tab")  # keyboard focus moves to Clear ...
    assert page.page.evaluate("document.activeElement.id") == "clear"
    page.page.keyboard.press("Enter")  # ... and Enter presses it
    assert page.settle() == "–"
    assert not page.prepared().any()
    assert page.page.inner_text("#confidence") == ""
    assert all(text == "" for text in page.page.locator(".bar-value").all_inner_texts())

    page.draw(DIGITS[7])
    page.settle()
    page.page.keyboard.press("Escape")
    assert page.settle() == "–" and not page.prepared().any()
    assert page.errors == []


def test_preprocess_vectors_match_in_javascript(page: Page, vectors: list[dict[str, Any]]) -> None:
    got = page.page.evaluate("""async (vectors) => {
        const { toMnist } = await import('/static/preprocess.js');
        const results = {};
        for (const v of vectors) {
            const packed = Uint8Array.from(atob(v.levels), (c) => c.charCodeAt(0));
            const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream('deflate'));
            const levels = new Uint8Array(await new Response(stream).arrayBuffer());
            results[v.name] = Array.from(toMnist(levels, v.width, v.height).pixels);
        }
        return results;
    }""", vectors)
    worst = 0.0
    for vector in vectors:
        diff = np.abs(np.float32(got[vector["name"]]) - np.float32(vector["expected"]))
        worst = max(worst, float(diff.max()))
    print(f"\n{len(vectors)} preprocessing vectors, JS vs Python: max |diff| {worst:g}")
    assert worst <= 1e-6


def test_canvas_saved_as_png_prepares_alike_in_python(page: Page, tmp_path: Path) -> None:
    """A drawing saved from the page and given to the Python client becomes the same input."""
    page.draw(transform(DIGITS[9], scale=0.8, dx=15))
    page.settle()
    data_url = page.page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    png = tmp_path / "drawn.png"
    png.write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
    np.testing.assert_array_equal(load_pixels(png), page.prepared())


def test_tfjs_agrees_with_onnx_runtime(page: Page, drawing_model_repo: Path,
                                       mnist_dir: Path) -> None:
    import onnxruntime

    from digitserve.contract import images_to_pixels
    from digitserve.mnist import load_mnist

    images = load_mnist(str(mnist_dir)).x_test[:PARITY_IMAGES]
    version = drawing_model_repo / "digits" / "1"
    onnx_path = version / json.loads((version / "manifest.json").read_text())[
        "artifacts"]["onnx"]["path"]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"pixels": images_to_pixels(images)})[0]

    result = page.page.evaluate("""async (packed) => {
        const bytes = Uint8Array.from(atob(packed), (c) => c.charCodeAt(0));
        const pixels = Float32Array.from(bytes, (b) => b / 255);
        const probabilities = await window.digitserve.classify(pixels);
        return { probabilities: Array.from(probabilities), backend: tf.getBackend() };
    }""", base64.b64encode(images.tobytes()).decode())
    got = np.float32(result["probabilities"]).reshape(PARITY_IMAGES, 10)
    worst = float(np.abs(got - expected).max())
    print(f"\nTF.js ({result['backend']}) vs ONNX Runtime on {PARITY_IMAGES} MNIST test images: "
          f"max |dp| {worst:.2e}, labels equal: {(got.argmax(1) == expected.argmax(1)).all()}")
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    assert worst <= 1e-4


def test_phone_viewport_touch_and_pen(browser: Any, site: RunningServer, artifacts: Path) -> None:
    phone = Page(browser, site.url + "/", viewport={"width": 360, "height": 740},
                 device_scale_factor=3, is_mobile=True, has_touch=True)
    try:
        fits = phone.page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth"
            " && document.getElementById('pad').getBoundingClientRect().right <= window.innerWidth")
        assert fits, "the page must not scroll sideways on a 360 px wide phone"
        phone.page.evaluate("""() => { window.pointerTypes = [];
            document.getElementById('pad').addEventListener('pointerdown',
                (e) => window.pointerTypes.push(e.pointerType)); }""")
        left, top, scale = phone.pad_origin()
        cdp = phone.context.new_cdp_session(phone.page)

        def at(x: float, y: float) -> dict[str, float]:
            return {"x": left + x * scale, "y": top + y * scale}

        stroke = DIGITS[1][0]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [at(*stroke[0])]})
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:], strict=False):
            for step in range(1, 9):
                t = step / 8
                cdp.send("Input.dispatchTouchEvent", {
                    "type": "touchMove", "touchPoints": [at(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        assert phone.settle() == "1"
        assert phone.page.evaluate("window.scrollY") == 0  # drawing did not scroll the page

        phone.page.click("#clear")
        for stroke in DIGITS[7]:
            pen = {"button": "left", "pointerType": "pen", "clickCount": 1}
            cdp.send("Input.dispatchMouseEvent", {"type": "mousePressed", **at(*stroke[0]), **pen})
            for x, y in stroke[1:]:
                cdp.send("Input.dispatchMouseEvent",
                         {"type": "mouseMoved", **at(x, y), **pen, "buttons": 1})
            cdp.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **at(*stroke[-1]), **pen})
        assert phone.settle() == "7"
        assert phone.page.evaluate("window.pointerTypes") == ["touch", "pen"]
        phone.page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
        assert phone.errors == []
    finally:
        phone.close()


def open_broken(browser: Any, repo: Path, tfjs_dist: Path | None) -> Page:
    server = RunningServer(WebConfig(repo=repo, name="digits", tfjs_dist=tfjs_dist))
    opened = Page(browser, server.url + "/", viewport={"width": 900, "height": 800})
    opened.context.on("close", lambda _: server.stop())
    return opened


@pytest.mark.parametrize("breakage", ["no model", "corrupt model.json", "missing weights",
                                      "no TF.js"])
def test_a_missing_or_broken_model_says_so(browser: Any, drawing_model_repo: Path,
                                           tfjs_dist: Path, tmp_path: Path,
                                           breakage: str) -> None:
    repo = tmp_path / "models"
    expected = {
        "no model": "No model to load: no exported model version",
        "corrupt model.json": "could not be loaded",
        "missing weights": "could not be loaded",
        "no TF.js": "TensorFlow.js did not load",
    }[breakage]
    if breakage != "no model":
        shutil.copytree(drawing_model_repo, repo)
    tfjs = repo / "digits" / "1" / "tfjs"
    if breakage == "corrupt model.json":
        (tfjs / "model.json").write_text('{"modelTopology": ')
    elif breakage == "missing weights":
        for shard in tfjs.glob("*.bin"):
            shard.unlink()
    broken = open_broken(browser, repo, None if breakage == "no TF.js" else tfjs_dist)
    try:
        assert broken.page.get_attribute("body", "data-state") == "error"
        assert broken.page.is_visible("#message")
        assert expected in broken.page.inner_text("#message")
        assert "No model loaded" in broken.page.inner_text("#model-status")
        broken.draw(DIGITS[3])  # the canvas still works and still shows the 28x28 image
        assert broken.settle() == "–" and broken.prepared().any()
    finally:
        broken.close()
