"""The out-of-MNIST check set: reproducible, balanced, prepared like the page and classify do,
and labelled right (a model-free nearest-mean classifier built from MNIST reads it well)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from digitserve.contract import images_to_pixels
from digitserve.mnist import load_mnist
from digitserve.preprocess import to_mnist
from digitserve.train.out_of_mnist import CANVAS, RENDERINGS, STYLES, distort, draw_page, make_check_set


@pytest.fixture(scope="module")
def check_set():
    return make_check_set(seed=3, per_digit=4)


def test_same_seed_same_images(check_set) -> None:
    again = make_check_set(seed=3, per_digit=4)
    np.testing.assert_array_equal(check_set.pixels, again.pixels)
    other = make_check_set(seed=4, per_digit=4)
    assert not np.array_equal(check_set.pixels, other.pixels)


def test_balanced_and_prepared_as_mnist(check_set) -> None:
    assert check_set.pixels.shape == (80, 784) and check_set.pixels.dtype == np.float32
    for kind in RENDERINGS:
        labels = check_set.labels[check_set.rendering == kind]
        assert np.bincount(labels, minlength=10).tolist() == [4] * 10
    # to_mnist's output: ink in [0, 1] with a full-ink pixel, fitted into a 20x20 box
    assert check_set.pixels.min() == 0.0
    np.testing.assert_allclose(check_set.pixels.max(axis=1), 1.0)
    for image in check_set.pixels.reshape(-1, 28, 28):
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20


def test_every_style_of_every_digit_stays_on_the_canvas() -> None:
    rng = np.random.default_rng(0)
    for digit, styles in STYLES.items():
        assert len(styles) >= 2, f"{digit}: more than one way of writing it"
        for strokes in styles:
            for _ in range(5):
                points = np.concatenate([np.asarray(s) for s in distort(strokes, rng, small=True)])
                margin = 11  # half the page's brush
                assert (points >= margin).all() and (points <= CANVAS - margin).all(), digit


def test_page_rendering_is_what_to_mnist_sees() -> None:
    canvas = draw_page(STYLES[7][0], np.random.default_rng(0))
    assert canvas.shape == (CANVAS, CANVAS) and canvas.dtype == np.uint8 and canvas.max() == 255
    assert to_mnist(canvas).reshape(28, 28)[4:24, 4:24].any()


def test_labels_agree_with_a_model_free_reader(check_set, mnist_dir: Path) -> None:
    """Nearest class mean of MNIST's training images: ~78% on MNIST's test set, well above the
    10% of chance here too, so no style is drawn as the wrong digit wholesale."""
    data = load_mnist(mnist_dir)
    pixels, labels = images_to_pixels(data.x_train), data.y_train
    means = np.stack([pixels[labels == digit].mean(axis=0) for digit in range(10)])
    predicted = ((check_set.pixels[:, None, :] - means[None]) ** 2).sum(axis=-1).argmin(axis=1)
    scores = check_set.accuracy(predicted)
    assert set(scores) == {"all", *RENDERINGS}
    assert scores["all"] > 0.45, scores
