"""Image files as input: bounded, safe decoding off the event loop (docs/serving.md, "Images as input").

    decoder = ImageDecoder(settings)
    pixels = await decoder.decode(files)   # float32 [N, 784], prepared as `digitserve classify` does
    decoder.close()                        # with the server, once no call is left

Every file is judged before Pillow decodes a pixel of it: its length (--max-image-bytes), then
its format (only FORMATS are tried: Image.open(formats=...)) and its width x height as its header
declares them (--max-image-pixels). Pillow's own decompression-bomb check
(Image.MAX_IMAGE_PIXELS) stays on behind ours, and a truncated file is refused, never padded
(ImageFile.LOAD_TRUNCATED_IMAGES stays False). Then digitserve.preprocess prepares it exactly as
the client prepares a file it reads. A request's files are decoded in at most `image_threads`
contiguous chunks on a pool of that many threads, so the event loop never decodes; the error of
the lowest-numbered bad file is the one reported, whatever the chunks' timing.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, features

from digitserve.contract import IMAGE_SIZE
from digitserve.errors import ImageError, InvalidInput
from digitserve.preprocess import gray_of, to_mnist
from digitserve.serve.dataplane import check_request_images

log = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "BMP", "GIF", *(("WEBP",) if features.check("webp") else ()))
"""The formats Pillow may try, in this order; nothing else is ever parsed."""
FORMAT_NAMES = ", ".join(name.replace("WEBP", "WebP") for name in FORMATS[:-1]) + " or " + (
    FORMATS[-1].replace("WEBP", "WebP")
)


class ImageDecoder:
    """Decodes a request's image files into model pixels on a bounded thread pool (module doc)."""

    def __init__(self, settings: Any):
        self.max_bytes: int = settings.max_image_bytes
        self.max_pixels: int = settings.max_image_pixels
        self.max_files: int = settings.max_request_images
        self.threads: int = settings.image_threads
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="digitserve-images")

    async def decode(self, files: Sequence[bytes]) -> np.ndarray:
        """Float32 [N, 784] for N encoded files; InvalidInput (or TooManyImages) saying what to fix."""
        files = list(files)
        self.check(files)
        loop = asyncio.get_running_loop()
        bounds = np.linspace(0, len(files), min(self.threads, len(files)) + 1).astype(int)
        chunks = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self.decode_chunk, files, start, stop)
              for start, stop in zip(bounds[:-1], bounds[1:], strict=True)),
            return_exceptions=True,
        )
        pixels = []
        for chunk in chunks:  # in file order: the first failed chunk holds the first bad file
            if isinstance(chunk, BaseException):
                raise chunk
            pixels.append(chunk)
        return np.concatenate(pixels)

    def check(self, files: Sequence[bytes]) -> None:
        """What can be judged without parsing: the number of files and each one's length."""
        if not files:
            raise InvalidInput(
                f"the request carries no image files: send at least one encoded image ({FORMAT_NAMES}) of a digit"
            )
        check_request_images(len(files), self.max_files)
        for index, data in enumerate(files):
            if not data:
                raise InvalidInput(f"{_which(index, len(files))} is empty (0 bytes): send the whole file")
            if len(data) > self.max_bytes:
                raise InvalidInput(
                    f"{_which(index, len(files))} is {len(data):,} bytes; the limit is {self.max_bytes:,} "
                    "(--max-image-bytes): send a smaller file"
                )

    def decode_chunk(self, files: Sequence[bytes], start: int, stop: int) -> np.ndarray:
        """Pixels [stop - start, 784] of files[start:stop] (runs on the pool; stops at the first bad file)."""
        pixels = np.empty((stop - start, IMAGE_SIZE), dtype=np.float32)
        for index in range(start, stop):
            pixels[index - start] = self.prepare(files[index], _which(index, len(files)))
        return pixels

    def prepare(self, data: bytes, which: str) -> np.ndarray:
        """Float32 [784] for one file; `which` ("image 2 of 3") starts every error message."""
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as exc:
            raise InvalidInput(
                f"{which} declares more pixels than Pillow's decompression-bomb limit "
                f"({2 * (Image.MAX_IMAGE_PIXELS or 0):,}); the limit is {self.max_pixels:,} (--max-image-pixels): "
                "send a smaller picture"
            ) from exc
        except Exception as exc:  # UnidentifiedImageError, and many other kinds on hostile headers
            raise InvalidInput(f"{which} is not an image file Pillow can read as {FORMAT_NAMES}") from exc
        with image:
            width, height = image.size
            if width == 0 or height == 0:
                raise InvalidInput(f"{which} is {width} x {height} pixels: it has none; send a picture of the digit")
            if width * height > self.max_pixels:
                raise InvalidInput(
                    f"{which} is {width} x {height} pixels ({width * height:,}); the limit is {self.max_pixels:,} "
                    "(--max-image-pixels): send a smaller picture"
                )
            try:
                image.load()
                gray = gray_of(image)
            except Exception as exc:  # truncated or corrupt data: Pillow's decoders raise OSError, SyntaxError, ...
                log.debug("%s could not be decoded", which, exc_info=exc)
                raise InvalidInput(
                    f"{which} is a {image.format} file that is truncated or corrupt: send the whole, unmodified file"
                ) from exc
        try:
            return to_mnist(gray)
        except ImageError as exc:
            raise InvalidInput(f"{which}: {exc}") from exc

    def close(self) -> None:
        """Stop the threads (the server calls it once no call is left; queued work is dropped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _which(index: int, count: int) -> str:
    return f"image {index}" if count == 1 else f"image {index} of {count}"
