"""`digitserve classify` as a user runs it: image files and --mnist-test against a real server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitserve.preprocess import load_pixels
from tests.support.commands import digitserve
from tests.support.images import Images
from tests.support.ports import free_port
from tests.support.server import ServeProcess

COUNT = 12


def draw(images: Images, folder: Path) -> list[Path]:
    """MNIST test digits as photos of paper would show them: dark ink on light, bigger, off-centre.

    Even indices become grayscale PNGs, odd ones RGB JPEGs; each is upscaled 6-9x and placed at
    a different offset on a light canvas larger than the digit.
    """
    paths = []
    for i in range(COUNT):
        digit = Image.fromarray(255 - images.uint8[i].reshape(28, 28))  # dark on light
        side = 28 * (6 + i % 4)
        canvas = Image.new("L", (side + 90, side + 60), color=255)
        canvas.paste(digit.resize((side, side), Image.Resampling.BILINEAR), (10 + 7 * i, 5 + 4 * i))
        if i % 2 == 0:
            path = folder / f"digit-{i}.png"
            canvas.save(path)
        else:
            path = folder / f"digit-{i}.jpg"
            canvas.convert("RGB").save(path, quality=92)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def drawings(tmp_path_factory: pytest.TempPathFactory, mnist_images: Images) -> list[Path]:
    return draw(mnist_images, tmp_path_factory.mktemp("drawings"))


@pytest.mark.parametrize("api", ["digits", "v2"])
def test_png_and_jpeg_files_are_classified_as_the_model_does_in_process(
    server: ServeProcess, drawings: list[Path], reference: Callable[..., np.ndarray], mnist_images: Images, api: str
) -> None:
    done = digitserve("classify", "--target", server.target, "--api", api, "--json", *map(str, drawings))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == "digits version 1" and report["api"] == api
    prepared = np.stack([load_pixels(path) for path in drawings])
    expected = reference(prepared)
    got = np.array([row["probabilities"] for row in report["images"]])
    assert [row["image"] for row in report["images"]] == list(map(str, drawings))
    assert [row["label"] for row in report["images"]] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # the preparation recovers the digits: the model is as right on the drawings as on MNIST itself
    on_mnist = int((reference(mnist_images.pixels[:COUNT]).argmax(axis=1) == mnist_images.labels[:COUNT]).sum())
    on_drawings = int((expected.argmax(axis=1) == mnist_images.labels[:COUNT]).sum())
    assert on_drawings >= on_mnist - 2, (on_drawings, on_mnist)


def test_text_output_and_uint8_encoding(
    server: ServeProcess, drawings: list[Path], reference: Callable[..., np.ndarray]
) -> None:
    done = digitserve("classify", "--target", server.target, "--encoding", "uint8", "--batch-size", "5",
                      *map(str, drawings[:7]))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 8 and "7 image(s) classified by digits version 1" in lines[-1]
    quantised = np.rint(np.stack([load_pixels(p) for p in drawings[:7]]) * 255) / 255  # what uint8 carries
    expected = reference(quantised.astype(np.float32)).argmax(axis=1)
    for line, path, label in zip(lines, drawings, expected, strict=False):
        assert re.fullmatch(rf"{re.escape(str(path))}\s+{label}\s+\(p=[01]\.\d{{3}}\)", line), line


def test_mnist_test_prints_accuracy_latency_and_throughput(
    server: ServeProcess, mnist_dir: Path, mnist_images: Images, reference: Callable[..., np.ndarray]
) -> None:
    done = digitserve("classify", "--target", server.target, "--mnist-test", "200", "--data", str(mnist_dir))
    assert done.returncode == 0, done.stderr
    correct = int((reference(mnist_images.pixels[:200]).argmax(axis=1) == mnist_images.labels[:200]).sum())
    assert f"accuracy   {correct / 200:.2%} ({correct}/200)" in done.stdout
    latency = re.search(r"latency    p50 ([\d.]+) ms, p99 ([\d.]+) ms per request", done.stdout)
    throughput = re.search(r"throughput (\d+) images/s", done.stdout)
    assert latency and throughput, done.stdout
    assert 0 < float(latency.group(1)) <= float(latency.group(2)) and int(throughput.group(1)) > 0


def test_mnist_test_json_over_v2(server: ServeProcess, mnist_dir: Path) -> None:
    done = digitserve("classify", "--target", server.target, "--api", "v2", "--encoding", "uint8",
                      "--mnist-test", "64", "--batch-size", "16", "--data", str(mnist_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["images"] == 64 and report["images_per_request"] == 16 and report["accuracy"] > 0.5


def test_unreadable_and_missing_images_get_a_clear_message(server: ServeProcess, tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    done = digitserve("classify", "--target", server.target, str(text))
    assert done.returncode == 1
    assert f"digitserve classify: error: {text}: cannot read it as an image" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    missing = digitserve("classify", "--target", server.target, str(tmp_path / "nothing.png"))
    assert missing.returncode == 1 and "nothing.png: no such file" in missing.stderr


def test_no_server_and_bad_usage(drawings: list[Path]) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    done = digitserve("classify", "--target", nobody, "--timeout", "5", str(drawings[0]))
    assert done.returncode == 1 and f"error: {nobody}: UNAVAILABLE" in done.stderr
    assert "Traceback" not in done.stderr
    both = digitserve("classify", "--mnist-test", "3", str(drawings[0]))
    assert both.returncode == 2 and "not both" in both.stderr
    assert digitserve("classify", "--target", "nowhere", str(drawings[0])).returncode == 2


def test_drawn_digits_are_dark_on_light_and_bigger_than_mnist(drawings: list[Path]) -> None:
    """The generated files really exercise inversion, cropping and scaling (guards the test data)."""
    for path in drawings:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"))
        assert gray.shape[0] > 200 and np.median(gray) > 200 and gray.min() < 60
