"""digitserve.preprocess: the shared vectors, and each step of the MNIST-style preparation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from digitserve.errors import DigitserveError, ImageError
from digitserve.preprocess import (
    INK_THRESHOLD,
    area_weights,
    centre_offset,
    fitted_size,
    load_image,
    load_pixels,
    to_mnist,
)
from tests.web.make_vectors import decode, render
from tests.web.strokes import DIGITS, transform


def ink_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the non-zero pixels of a [784] image."""
    where = np.argwhere(pixels.reshape(28, 28) > 0)
    (top, left), (bottom, right) = where.min(0), where.max(0)
    return int(top), int(left), int(bottom - top + 1), int(right - left + 1)


def centre_of_mass(pixels: np.ndarray) -> np.ndarray:
    image = pixels.reshape(28, 28).astype(np.float64)
    rows, cols = np.indices(image.shape)
    return np.array([(image * rows).sum(), (image * cols).sum()]) / image.sum()


def test_shared_vectors(vectors: list[dict[str, Any]]) -> None:
    assert len(vectors) >= 5
    for vector in vectors:
        levels = decode(vector["levels"], vector["width"], vector["height"])
        got = to_mnist(levels)
        assert got.dtype == np.float32 and got.shape == (784,)
        np.testing.assert_array_equal(got, np.float32(vector["expected"]), err_msg=vector["name"])


def test_float_and_uint8_inputs_agree() -> None:
    levels = render(DIGITS[2])
    np.testing.assert_array_equal(to_mnist(levels), to_mnist(levels / 255.0))


def test_empty_image_gives_zeros() -> None:
    assert not to_mnist(np.zeros((280, 280))).any()
    faint = np.full((50, 50), INK_THRESHOLD - 1, np.uint8)  # only below-threshold noise
    assert not to_mnist(faint).any()


def test_tall_digit_fills_twenty_rows_keeping_its_aspect() -> None:
    image = np.zeros((280, 280), np.uint8)
    image[40:240, 120:160] = 255  # 200 x 40
    top, left, rows, cols = ink_box(to_mnist(image))
    assert (rows, cols) == (20, 4)
    wide = to_mnist(image.T.copy())
    assert ink_box(wide)[2:] == (4, 20)


def test_position_and_size_do_not_matter() -> None:
    reference = to_mnist(render(DIGITS[5]))
    moved = to_mnist(render(transform(DIGITS[5], dx=-40, dy=30)))
    np.testing.assert_array_equal(moved, reference)  # the crop removes the position exactly
    smaller = to_mnist(render(transform(DIGITS[5], scale=0.5), brush=11))
    assert np.abs(smaller - reference).mean() < 0.03


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_centre_of_mass_lands_in_the_middle(digit: int) -> None:
    pixels = to_mnist(render(DIGITS[digit]))
    assert pixels.max() == 1.0 and pixels.min() == 0.0
    np.testing.assert_allclose(centre_of_mass(pixels), [13.5, 13.5], atol=0.5)


def test_lopsided_digit_is_centred_by_mass_not_by_box() -> None:
    rows, cols = np.indices((100, 100))
    triangle = np.where(cols <= 99 - rows, 255, 0).astype(np.uint8)  # mass towards the top left
    pixels = to_mnist(triangle)
    top, left, height, width = ink_box(pixels)
    assert (height, width) == (20, 20)
    assert (top, left) == (7, 7)  # centred by its box it would start at (4, 4)
    np.testing.assert_allclose(centre_of_mass(pixels), [13.5, 13.5], atol=0.5)


def test_box_stays_inside_the_field() -> None:
    image = np.zeros((100, 100), np.uint8)
    image[0:100, 0:2] = 255
    image[0:2, 0:100] = 255  # a corner: mass far from the middle of its box
    top, left, rows, cols = ink_box(to_mnist(image))
    assert 0 <= top and top + rows <= 28 and 0 <= left and left + cols <= 28


def test_area_weights_cover_each_source_pixel_once() -> None:
    for source, target in [(280, 20), (7, 20), (33, 20), (1, 1), (20, 3)]:
        weights = area_weights(source, target)
        assert (weights.sum(axis=1) == source).all()  # every output spans `source` units
        assert (weights.sum(axis=0) == target).all()  # every source pixel is spread fully


def test_fitted_size_rounds_half_up_and_keeps_one_pixel() -> None:
    assert fitted_size(200, 200) == (20, 20)
    assert fitted_size(200, 30) == (20, 3)
    assert fitted_size(8, 4) == (20, 10)
    assert fitted_size(40, 1) == (20, 1)  # 0.5 rounds up
    assert fitted_size(400, 1) == (20, 1)  # never 0
    assert centre_offset(np.array([1, 1]), 2) == 13  # mass at 0.5 -> rows 13, 14


@settings(max_examples=40, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 60), st.integers(1, 60))))
def test_any_image_gives_valid_pixels(levels: np.ndarray) -> None:
    pixels = to_mnist(levels)
    assert pixels.shape == (784,) and pixels.dtype == np.float32
    assert pixels.min() >= 0.0
    assert pixels.max() == (1.0 if (levels >= INK_THRESHOLD).any() else 0.0)


def test_mnist_digits_stay_mnist_like(mnist_dir: Path) -> None:
    """MNIST was made this way, so preparing its digits again changes them only a little."""
    from digitserve.mnist import load_mnist

    images = load_mnist(str(mnist_dir)).x_test[:300]
    diffs = [np.abs(to_mnist(image) - image.reshape(-1) / 255.0).mean() for image in images]
    assert float(np.mean(diffs)) < 0.08


# ---- load_image -------------------------------------------------------------------------------


def save(levels: np.ndarray, path: Path, mode: str = "L") -> Path:
    Image.fromarray(levels).convert(mode).save(path)
    return path


def test_dark_ink_on_paper_is_inverted(tmp_path: Path) -> None:
    levels = render(DIGITS[3])
    white_on_black = load_pixels(save(levels, tmp_path / "a.png"))
    black_on_white = load_pixels(save(255 - levels, tmp_path / "b.png", mode="RGB"))
    np.testing.assert_array_equal(white_on_black, to_mnist(levels))  # clean: unchanged
    np.testing.assert_array_equal(black_on_white, white_on_black)


def test_grey_paper_background_is_levelled(tmp_path: Path) -> None:
    levels = render(DIGITS[8])
    photo = (200 - levels * (150 / 255)).astype(np.uint8)  # dark grey ink on light grey paper
    image = load_image(save(photo, tmp_path / "photo.jpg"))
    assert image.min() == 0.0 and image.max() == 1.0
    assert np.median(image) < 0.05
    assert np.abs(load_pixels(tmp_path / "photo.jpg") - to_mnist(levels)).mean() < 0.02


def test_transparent_background_uses_alpha_as_ink(tmp_path: Path) -> None:
    levels = render(DIGITS[6])
    rgba = np.zeros(levels.shape + (4,), np.uint8)
    rgba[..., 3] = levels  # black strokes on a transparent background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    np.testing.assert_array_equal(load_pixels(tmp_path / "t.png"), to_mnist(levels))


def test_blank_images_give_zeros(tmp_path: Path) -> None:
    for value in (0, 255):
        path = save(np.full((40, 40), value, np.uint8), tmp_path / f"blank{value}.png")
        assert not load_pixels(path).any()


def test_unreadable_files_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not a picture")
    with pytest.raises(ImageError, match="cannot read it as an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    with pytest.raises(DigitserveError, match="2-D"):
        to_mnist(np.zeros((2, 3, 4)))
