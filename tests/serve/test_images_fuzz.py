"""A hypothesis fuzz of the image decoder: any bytes give 784 pixels in [0, 1] or an InvalidInput
naming the image, never another exception (which would reach a client as INTERNAL)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from digitserve.errors import InvalidInput
from digitserve.serve.images import FORMATS, ImageDecoder
from digitserve.serve.settings import ServeSettings


def sample(image_format: str) -> bytes:
    """A small digit-like picture (a bar on a gradient) in `image_format`."""
    pixels = np.tile(np.arange(24, dtype=np.uint8) * 10, (20, 1))
    pixels[4:16, 10:13] = 255
    image = Image.fromarray(pixels).convert("RGB" if image_format in ("JPEG", "WEBP") else "L")
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    return buffer.getvalue()


SAMPLES = [sample(name) for name in FORMATS]
DECODER = ImageDecoder(ServeSettings(image_threads=1, max_image_pixels=200_000))


@pytest.fixture(scope="module", autouse=True)
def _close_decoder() -> Iterator[None]:
    yield
    DECODER.close()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid file of one format, truncated, overwritten in places, or with bytes inserted."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if how == "truncate":
            del data[where:]
        elif how == "overwrite":
            data[where : where + len(chunk)] = chunk
        else:
            data[where:where] = chunk
    return bytes(data)


magic = st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 "])
files = st.one_of(st.binary(max_size=512), st.builds(bytes.__add__, magic, st.binary(max_size=512)), damaged())


@settings(max_examples=400, deadline=None)
@given(data=files)
def test_any_bytes_give_pixels_or_a_message_naming_the_image(data: bytes) -> None:
    try:
        pixels = DECODER.prepare(data, "image 0")
    except InvalidInput as exc:
        assert str(exc).startswith("image 0 ")
    else:
        assert pixels.shape == (784,) and pixels.dtype == np.float32
        assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0


@pytest.mark.parametrize("image_format", FORMATS)
def test_the_undamaged_samples_decode(image_format: str) -> None:
    pixels = asyncio.run(DECODER.decode([SAMPLES[FORMATS.index(image_format)]]))
    assert pixels.shape == (1, 784) and pixels.max() == 1.0
