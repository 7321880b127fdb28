"""The MNIST reader: every format it accepts and every way a file can be broken."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from digitserve.errors import DataError
from digitserve.mnist import SPLITS, load_mnist, read_npz

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def small_arrays() -> dict[str, np.ndarray]:
    return {
        "x_train": RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_train": RNG.integers(0, 10, 12, dtype=np.uint8),
        "x_test": RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": RNG.integers(0, 10, 5, dtype=np.uint8),
    }


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool, sums: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, stem in SPLITS.items():
        raw = idx_bytes(arrays[key])
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
        lines.append(f"{hashlib.sha256(raw).hexdigest()}  {stem}")
    if sums:
        (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_reads_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = small_arrays()
    write_idx_folder(tmp_path, arrays, gz=gz)
    data = load_mnist(tmp_path)
    for key, expected in arrays.items():
        np.testing.assert_array_equal(getattr(data, key), expected)


def test_reads_keras_npz_and_fingerprint_ignores_format(tmp_path: Path) -> None:
    arrays = small_arrays()
    np.savez(tmp_path / "mnist.npz", **arrays)
    write_idx_folder(tmp_path / "idx", arrays, gz=True)
    from_npz = load_mnist(tmp_path / "mnist.npz")
    from_folder = load_mnist(tmp_path)  # a folder holding only mnist.npz
    np.testing.assert_array_equal(from_npz.x_test, arrays["x_test"])
    assert from_npz.sha256 == from_folder.sha256 == load_mnist(tmp_path / "idx").sha256


def test_environment_variable_points_at_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=True)
    monkeypatch.setenv("DIGITSERVE_DATA", str(tmp_path))
    assert load_mnist().x_train.shape == (12, 28, 28)


def test_shared_mnist_is_the_real_thing(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir)
    assert data.x_train.shape == (60000, 28, 28) and data.x_test.shape == (10000, 28, 28)
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(data.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_checksum_mismatch_names_the_file(tmp_path: Path) -> None:
    arrays = small_arrays()
    write_idx_folder(tmp_path, arrays, gz=False)
    arrays["y_test"] = (arrays["y_test"] + 1) % 10  # same size, other content
    (tmp_path / SPLITS["y_test"]).write_bytes(idx_bytes(arrays["y_test"]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte does not match its checksum"):
        load_mnist(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=False, sums=False)
    file = tmp_path / SPLITS["x_train"]
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte holds .* bytes but its header promises"):
        load_mnist(tmp_path)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=True, sums=False)
    file = tmp_path / f"{SPLITS['x_test']}.gz"
    file.write_bytes(file.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz cannot be read"):
        load_mnist(tmp_path)


def test_corrupt_gzip_stream(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=True, sums=False)
    file = tmp_path / f"{SPLITS['x_train']}.gz"
    data = bytearray(file.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    file.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz cannot be read .*corrupt"):
        load_mnist(tmp_path)


def test_checksums_of_the_gz_files_as_stored(tmp_path: Path) -> None:
    """A SHA256SUMS made with `sha256sum *.gz` lists the compressed files: they are checked as stored."""
    write_idx_folder(tmp_path, small_arrays(), gz=True, sums=False)
    files = sorted(tmp_path.glob("*.gz"))
    lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}" for f in files]
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert len(load_mnist(tmp_path).y_test) == 5
    # recompressing the same content at another level changes the stored bytes: caught
    label_file = tmp_path / f"{SPLITS['y_test']}.gz"
    label_file.write_bytes(gzip.compress(gzip.decompress(label_file.read_bytes()), compresslevel=1, mtime=1))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz does not match its checksum"):
        load_mnist(tmp_path)


def test_npz_checksum_is_verified(tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", **small_arrays())
    good = hashlib.sha256((tmp_path / "mnist.npz").read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{good}  mnist.npz\n")
    assert len(load_mnist(tmp_path).y_train) == 12
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  mnist.npz\n")
    with pytest.raises(DataError, match=r"mnist.npz does not match its checksum"):
        load_mnist(tmp_path)


def test_npz_values_are_checked_before_the_cast_and_splits_must_not_be_empty(tmp_path: Path) -> None:
    arrays = small_arrays()
    np.savez(tmp_path / "wrapping.npz", **{**arrays, "y_test": np.arange(5, dtype=np.int64) + 255})
    with pytest.raises(DataError, match=r"y_test holds int64 values from 255 to 259; .*integers 0..255"):
        read_npz(tmp_path / "wrapping.npz")  # 259 would have wrapped to the valid label 3
    np.savez(tmp_path / "floats.npz", **{**arrays, "x_train": arrays["x_train"] / 255.0})
    with pytest.raises(DataError, match=r"x_train holds float64 values"):
        read_npz(tmp_path / "floats.npz")
    empty = {**arrays, "x_test": arrays["x_test"][:0], "y_test": arrays["y_test"][:0]}
    np.savez(tmp_path / "empty.npz", **empty)
    with pytest.raises(DataError, match=r"empty.npz: there are no test images"):
        read_npz(tmp_path / "empty.npz")


def test_checksum_list_paths_and_unreadable_lists(tmp_path: Path) -> None:
    arrays = small_arrays()
    write_idx_folder(tmp_path, arrays, gz=False)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("  t10k", "  ./t10k"))  # names as `sha256sum ./*` writes them
    (tmp_path / SPLITS["y_test"]).write_bytes(idx_bytes((arrays["y_test"] + 1) % 10))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte does not match its checksum"):
        load_mnist(tmp_path)
    sums.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match=r"SHA256SUMS cannot be read as a checksum list"):
        load_mnist(tmp_path)


def test_wrong_magic_number(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=False, sums=False)
    # labels where images belong: a plausible file with the wrong magic
    shutil.copy(tmp_path / SPLITS["y_train"], tmp_path / SPLITS["x_train"])
    with pytest.raises(DataError, match=r"magic number 00000801, expected 00000803"):
        load_mnist(tmp_path)


def test_missing_file_and_missing_folder(tmp_path: Path) -> None:
    write_idx_folder(tmp_path, small_arrays(), gz=True)
    (tmp_path / f"{SPLITS['y_test']}.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\] is missing"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match=r"MNIST data not found at .*nowhere.*--data"):
        load_mnist(tmp_path / "nowhere")


def test_images_and_labels_must_pair_up(tmp_path: Path) -> None:
    arrays = small_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    write_idx_folder(tmp_path, arrays, gz=True)
    with pytest.raises(DataError, match=r"12 train images but 11 labels"):
        load_mnist(tmp_path)


def test_corrupt_npz(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"mnist.npz is not a readable .npz file"):
        read_npz(tmp_path / "mnist.npz")
    np.savez(tmp_path / "other.npz", images=np.zeros(3))
    with pytest.raises(DataError, match=r"lacks the arrays x_train, y_train, x_test, y_test"):
        read_npz(tmp_path / "other.npz")
