"""One picture, three paths, the same 784 floats: the drawing page (web/static/preprocess.js),
`digitserve classify` (digitserve.preprocess on the client) and the server's image input
(serve/images.py, the same digitserve.preprocess) prepare a file alike, so all give one answer.

- Drawings saved from the page (headless Chromium, the canvas as PNG): the page's floats equal
  `load_pixels` of the saved file bit for bit, and the server's answer for the file sent as an
  image (digits.v1 `images`, V2 `image` over gRPC and over HTTP, base64 and binary) equals, within
  1e-6 and with the same label, its answer for the page's floats sent as float32 (the page's own
  HTTP request and digits.v1 float32). The server has no debug path for its floats, so the
  answers stand in for them; a one-pixel shift of the floats moves the answer far more than 1e-6.
- Photos of ink on paper made here (tests/support/images.py `ink_on_paper`: uneven light paper,
  blurred slanted strokes of varying thickness, JPEG, RGB and gray, 56x56 to 800x600): the
  server's answer for the file as an image equals its answer for `load_pixels` of the file sent
  as float32, and `digitserve classify --server-side` prints what `digitserve classify` prints.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from digitserve.client import Client
from digitserve.preprocess import load_pixels
from digitserve.wire.codec import pack_bytes_elements
from tests.support.commands import digitserve
from tests.support.images import ink_on_paper
from tests.support.server import ServeProcess, Servers
from tests.web.page import Page
from tests.web.strokes import DIGITS, transform

SAME = 1e-6  # the same floats through the same model: equal answers up to batching's rounding

# digit -> (where it is drawn on the page's canvas: transform() arguments)
DRAWINGS: dict[int, dict[str, float]] = {
    0: {"scale": 0.7, "dx": -30, "dy": 20}, 1: {}, 2: {"scale": 0.6, "dx": 40, "dy": -30},
    3: {"scale": 0.9}, 4: {"scale": 0.5, "dx": -50, "dy": -50}, 5: {"dx": 12, "dy": 8},
    6: {"scale": 0.8, "dx": 20}, 7: {"scale": 0.55, "dx": 50, "dy": 45}, 8: {"scale": 0.85, "dy": -10},
    9: {"scale": 0.75, "dx": -25},
}

# digit -> (width x height, ink_on_paper options, JPEG quality or None for PNG)
PHOTOS: dict[int, tuple[tuple[int, int], dict[str, Any], int | None]] = {
    0: ((400, 300), {"slant": 0.25}, 85),
    1: ((300, 400), {"slant": -0.1, "rgb": False, "thickness": 0.08}, 70),
    2: ((640, 480), {"slant": 0.15, "thickness": 0.1, "blur": 2.5}, 60),
    3: ((400, 300), {"slant": 0.3, "thickness": 0.035, "blur": 1.0}, None),
    4: ((120, 90), {"slant": 0.2, "blur": 0.8, "rgb": False}, 80),
    5: ((56, 56), {"slant": 0.1, "blur": 0.6, "thickness": 0.09}, 90),
    6: ((800, 600), {"slant": 0.05, "thickness": 0.03, "blur": 1.2}, 90),
    7: ((400, 300), {"slant": -0.2, "thickness": 0.06, "blur": 3.0, "rgb": False}, 75),
    8: ((350, 350), {"slant": 0.35, "thickness": 0.07}, 65),
    9: ((500, 280), {"slant": 0.1, "blur": 2.0}, 80),
}


@pytest.fixture(scope="module")
def served(drawing_model_repo: Path, session_servers: Servers) -> Iterator[ServeProcess]:
    """`digitserve serve --http-port 0 --web` on the browser tests' model (ONNX and TF.js)."""
    process = session_servers.serve("--repo", str(drawing_model_repo), "--http-port", "0", "--web",
                                    "--no-metrics")
    yield process.wait_serving()
    process.close()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("ink-on-paper")
    paths = []
    for digit, (size, options, quality) in PHOTOS.items():
        picture = Image.fromarray(ink_on_paper(DIGITS[digit], size, seed=digit, **options))
        path = folder / f"photo-of-a-{digit}.{'jpg' if quality else 'png'}"
        picture.save(path, **({"quality": quality} if quality else {}))
        paths.append(path)
    return paths


def as_pixels(server: ServeProcess, pixels: np.ndarray) -> np.ndarray:
    """The server's probabilities for these floats, sent as float32 over digits.v1."""
    with Client(server.target, encoding="float32") as client:
        return client.classify(pixels).probabilities


def as_images(server: ServeProcess, files: list[bytes]) -> dict[str, np.ndarray]:
    """The server's probabilities for the files sent as images, on every API and encoding."""
    answers = {}
    for api, raw in (("digits", True), ("v2", True), ("v2", False)):
        with Client(server.target, api=api, v2_raw=raw) as client:
            answers[f"gRPC {api}{' raw' if api == 'v2' and raw else ''}"] = client.classify_images(files).probabilities
    url = f"{server.http_url}/v2/models/digits/infer"
    data = [base64.b64encode(file).decode() for file in files]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)], "data": data}]}
    response = httpx.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    answers["HTTP base64"] = np.float32(response.json()["outputs"][0]["data"]).reshape(-1, 10)
    raw = pack_bytes_elements(files)
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(files)], "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    response = httpx.post(url, content=header + raw, timeout=30,
                          headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code == 200, response.text
    offset = int(response.headers["inference-header-content-length"])
    answers["HTTP binary"] = np.frombuffer(response.content[offset:], "<f4").reshape(-1, 10)
    return answers


def assert_same_answer(expected: np.ndarray, got: dict[str, np.ndarray]) -> None:
    for path, probabilities in got.items():
        assert probabilities.shape == expected.shape, path
        np.testing.assert_array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1), err_msg=path)
        np.testing.assert_allclose(probabilities, expected, rtol=0, atol=SAME, err_msg=path)


def assert_the_clis_agree(server: ServeProcess, paths: list[Path], expected: np.ndarray) -> None:
    """`digitserve classify --server-side` prints what `digitserve classify` prints, and that is `expected`."""
    files = [str(path) for path in paths]
    for output in ((), ("--json",)):
        local = digitserve("classify", "--target", server.target, *output, *files)
        remote = digitserve("classify", "--target", server.target, "--server-side", *output, *files)
        assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
        if not output:
            assert remote.stdout == local.stdout
            continue
        for rows in (json.loads(local.stdout)["images"], json.loads(remote.stdout)["images"]):
            assert [row["image"] for row in rows] == files
            assert [row["label"] for row in rows] == expected.argmax(axis=1).tolist()
            np.testing.assert_allclose([row["probabilities"] for row in rows], expected, rtol=0, atol=SAME + 5e-7)


@pytest.mark.browser
def test_drawings_saved_from_the_page_are_the_page_floats_on_every_path(
    browser: Any, served: ServeProcess, tmp_path: Path
) -> None:
    started = time.perf_counter()
    page = Page(browser, served.http_url + "/", viewport={"width": 900, "height": 800})
    paths, floats, page_server = [], [], []
    try:
        for digit, where in DRAWINGS.items():
            page.page.click("#clear")
            page.draw(transform(DIGITS[digit], **where))
            page.settle()
            floats.append(page.prepared())
            page_server.append(page.page.evaluate("window.digitserve.answers().server"))  # its HTTP FP32 request
            data_url = page.page.evaluate("document.getElementById('pad').toDataURL('image/png')")
            paths.append(tmp_path / f"drawn-{digit}.png")
            paths[-1].write_bytes(base64.b64decode(data_url.split(",", 1)[1]))
        assert page.errors == []
    finally:
        page.close()
    drawn = time.perf_counter()
    pixels = np.stack(floats)
    for path, prepared in zip(paths, pixels, strict=True):  # the page and the client: bit for bit
        np.testing.assert_array_equal(load_pixels(path), prepared, err_msg=path.name)

    expected = as_pixels(served, pixels)
    files = [path.read_bytes() for path in paths]
    assert_same_answer(expected, {"the page's own request (HTTP FP32)": np.float32(page_server),
                                  **as_images(served, files)})
    labels = expected.argmax(axis=1).tolist()
    print(f"\n{len(paths)} drawings saved from the page, read as {labels} on every path")
    assert sum(label == digit for label, digit in zip(labels, DRAWINGS, strict=True)) >= 8

    # the comparison has teeth: the same floats one pixel to the right get another answer (by
    # 3e-5 to 0.2 when measured; a confident digit moves least), far outside SAME
    shifted = as_pixels(served, np.roll(pixels.reshape(-1, 28, 28), 1, axis=2).reshape(-1, 784))
    assert np.abs(shifted - expected).max(axis=1).min() > 10 * SAME

    checked = time.perf_counter()
    assert_the_clis_agree(served, paths, expected)
    print(f"drawing {drawn - started:.1f} s, the API paths {checked - drawn:.1f} s, "
          f"the two CLIs {time.perf_counter() - checked:.1f} s")


def test_photos_of_ink_on_paper_get_one_answer_on_every_path(served: ServeProcess, photos: list[Path]) -> None:
    started = time.perf_counter()
    expected = as_pixels(served, np.stack([load_pixels(path) for path in photos]))  # prepared here
    assert_same_answer(expected, as_images(served, [path.read_bytes() for path in photos]))  # there
    labels = expected.argmax(axis=1).tolist()
    print(f"\n{len(photos)} photos of ink on paper ({', '.join(p.suffix for p in photos)}), read as {labels}")
    # they look like digits: 8 of 10 read right when measured (the thinnest 6 and the most slanted 8 not)
    assert sum(label == digit for label, digit in zip(labels, PHOTOS, strict=True)) >= 6
    assert_the_clis_agree(served, photos, expected)
    print(f"photos: {time.perf_counter() - started:.1f} s")
