"""Read MNIST without TensorFlow: the four IDX files (gzip or raw) or Keras' mnist.npz.

Where the data comes from, in order: an explicit path (`--data`), the DIGITSERVE_DATA
environment variable, the Keras cache (~/.keras/datasets/mnist.npz), and last a download of
Keras' own file into that cache, checked against the hash Keras checks (urllib, not Keras: the
client reads MNIST too and must not need TensorFlow). Every failure is a DataError naming the
file and the fix; no partial array is ever returned.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitserve.errors import DataError

DATA_ENV = "DIGITSERVE_DATA"
SPLITS = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX magic: two zero bytes, the element type (0x08 = uint8), the number of dimensions.
IDX_MAGIC = {"images": b"\x00\x00\x08\x03", "labels": b"\x00\x00\x08\x01"}
KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
FIX = f"point --data or {DATA_ENV} at a folder holding the four MNIST IDX files or mnist.npz"


@dataclass(frozen=True)
class Mnist:
    """The MNIST splits as uint8 arrays: images [N, 28, 28], labels [N]."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def sha256(self) -> str:
        """Fingerprint of the data itself, the same whichever file format it came from."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def load_mnist(path: str | os.PathLike[str] | None = None) -> Mnist:
    """Load MNIST from `path`, DIGITSERVE_DATA, the Keras cache, or a download into it."""
    chosen = path or os.environ.get(DATA_ENV)
    if chosen:
        return _load_path(Path(chosen))
    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"
    if not cached.is_file():
        _download(cached)
    return read_npz(cached)


def _load_path(path: Path) -> Mnist:
    if path.is_file():
        return read_npz(path)
    if not path.is_dir():
        raise DataError(f"MNIST data not found at {path}: {FIX}")
    if (path / "mnist.npz").is_file() and not _find_idx(path, SPLITS["x_train"]):
        return read_npz(path / "mnist.npz")
    return read_idx_folder(path)


def read_idx_folder(folder: Path) -> Mnist:
    """Read the four IDX files from `folder`, verifying SHA256SUMS when it is there."""
    expected = _read_sha256sums(folder / "SHA256SUMS")
    arrays = {}
    for key, stem in SPLITS.items():
        file = _find_idx(folder, stem)
        if file is None:
            raise DataError(f"MNIST file {stem}[.gz] is missing from {folder}: {FIX}")
        stored = _read_bytes(file)
        raw = _gunzip(file, stored) if file.suffix == ".gz" else stored
        if file.name != stem:  # a line for the .gz: the file as stored
            _verify(file, expected.get(file.name), stored)
        _verify(file, expected.get(stem), raw)
        arrays[key] = parse_idx(raw, file)
    _check_pairs(arrays, str(folder))
    return Mnist(**arrays, source=str(folder))


def read_npz(file: Path) -> Mnist:
    """Read Keras' mnist.npz (x_train, y_train, x_test, y_test), verifying SHA256SUMS beside it."""
    stored = _read_bytes(file)
    _verify(file, _read_sha256sums(file.parent / "SHA256SUMS").get(file.name), stored)
    try:
        with np.load(io.BytesIO(stored), allow_pickle=False) as npz:
            missing = [key for key in SPLITS if key not in npz.files]
            if missing:
                raise DataError(f"{file} lacks the arrays {', '.join(missing)}: it is not Keras' mnist.npz")
            arrays = {key: np.asarray(npz[key]) for key in SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{file} is not a readable .npz file ({exc}): download it again") from exc
    for key, array in arrays.items():  # check before the cast to uint8, which would wrap values
        if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255):
            raise DataError(
                f"{file}: {key} holds {array.dtype} values from {array.min()} to {array.max()}; "
                "Keras' mnist.npz holds integers 0..255: it is not that file"
            )
    arrays = {key: array.astype(np.uint8) for key, array in arrays.items()}
    _check_pairs(arrays, str(file))
    return Mnist(**arrays, source=str(file))


def parse_idx(raw: bytes, file: Path) -> np.ndarray:
    """Decode one uncompressed IDX file of uint8 images [N, 28, 28] or labels [N]."""
    kind = "labels" if "labels" in file.name else "images"
    if raw[:4] != IDX_MAGIC[kind]:
        raise DataError(
            f"{file} has magic number {raw[:4].hex() or 'none'}, expected "
            f"{IDX_MAGIC[kind].hex()} for MNIST {kind}: it is not an MNIST IDX {kind} file"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{file} is truncated inside its header: download it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header
    if len(raw) != expected:
        raise DataError(
            f"{file} holds {len(raw)} bytes but its header promises {expected} "
            f"(shape {shape}): the file is truncated or corrupt; download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise DataError(f"{file} cannot be read ({exc}): download it again") from exc


def _gunzip(file: Path, stored: bytes) -> bytes:
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{file} cannot be read ({exc}): the file is corrupt; download it again") from exc


def _read_sha256sums(file: Path) -> dict[str, str]:
    """File name as listed -> sha256; empty when there is no SHA256SUMS.

    A name ending in .gz or .npz is the hash of that file as stored; a bare IDX name is the
    hash of the uncompressed content, so one list covers the raw and the gzipped files alike.
    """
    if not file.is_file():
        return {}
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{file} cannot be read as a checksum list ({exc}): remove it or write it again "
                        "with `sha256sum FILES > SHA256SUMS`") from exc
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:  # `sha256sum` writes "HASH  NAME" (or "HASH *NAME"); ./NAME is NAME
            sums[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return sums


def _verify(file: Path, expected: str | None, content: bytes) -> None:
    """Raise DataError when `expected` is given and the sha256 of `content` differs."""
    if expected is not None and hashlib.sha256(content).hexdigest() != expected:
        raise DataError(
            f"{file} does not match its checksum in {file.parent / 'SHA256SUMS'}: "
            "the file is corrupt or was replaced; download it again"
        )


def _check_pairs(arrays: dict[str, np.ndarray], source: str) -> None:
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{source}: {split} images have shape {images.shape}, expected [N, 28, 28]")
        if not len(images):
            raise DataError(f"{source}: there are no {split} images")
        if len(images) != len(labels):
            raise DataError(
                f"{source}: {len(images)} {split} images but {len(labels)} labels; "
                "the files do not belong together"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{source}: {split} labels go up to {labels.max()}, expected 0..9")


def _download(target: Path) -> None:
    """Last resort: fetch Keras' mnist.npz into its cache, whole and verified, or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".mnist.npz.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(KERAS_URL, timeout=60) as response:
            content = response.read()
            out.write(content)
        if hashlib.sha256(content).hexdigest() != KERAS_SHA256:
            raise DataError(f"the downloaded {KERAS_URL} does not have the expected sha256: {FIX}")
        os.replace(temp, target)
    except OSError as exc:  # no network, DNS, HTTP errors (URLError is an OSError)
        raise DataError(f"no MNIST data found locally and the download failed ({exc}): {FIX}") from exc
    finally:
        Path(temp).unlink(missing_ok=True)
