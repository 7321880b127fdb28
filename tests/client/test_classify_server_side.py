"""`digitserve classify --server-side`: the files go as they are, the server prepares them, and
the output is the output of the local preparation, also from a client install without Pillow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitserve.client.classify_cli import file_batches
from tests.client.test_client_install import client_venv, run  # noqa: F401  (a fixture, and its runner)
from tests.support.commands import digitserve
from tests.support.images import Images, write_digit_files
from tests.support.server import ServeProcess


@pytest.fixture(scope="module")
def drawings(tmp_path_factory: pytest.TempPathFactory, mnist_images: Images) -> list[Path]:
    return write_digit_files(mnist_images, tmp_path_factory.mktemp("server-side"), 12)


@pytest.mark.parametrize(("api", "output"), [("digits", "text"), ("digits", "json"), ("v2", "json")])
def test_server_side_prints_what_local_preparation_prints(
    server: ServeProcess, drawings: list[Path], api: str, output: str
) -> None:
    common = ("classify", "--target", server.target, "--api", api, "--batch-size", "5",
              *(("--json",) if output == "json" else ()))
    local = digitserve(*common, *map(str, drawings))
    remote = digitserve(*common, "--server-side", *map(str, drawings))
    assert local.returncode == remote.returncode == 0, local.stderr + remote.stderr
    if output == "text":
        assert remote.stdout == local.stdout
        assert remote.stdout.splitlines()[-1].startswith("# 12 image(s) classified by digits version 1")
        return
    mine, theirs = json.loads(local.stdout), json.loads(remote.stdout)
    assert [row["label"] for row in mine["images"]] == [row["label"] for row in theirs["images"]]
    for a, b in zip(mine["images"], theirs["images"], strict=True):
        assert a["image"] == b["image"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=2e-6)


def test_server_side_needs_no_pillow(client_venv: Path, server: ServeProcess, drawings: list[Path],  # noqa: F811
                                     tmp_path: Path) -> None:
    expected = digitserve("classify", "--target", server.target, *map(str, drawings[:4]))
    done = run(client_venv, "digitserve", "classify", "--target", server.target, "--server-side",
               *map(str, drawings[:4]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.stdout
    no_pillow = run(client_venv, "python", "-c", "import importlib.util; print(importlib.util.find_spec('PIL'))",
                    cwd=tmp_path)
    assert no_pillow.stdout.strip() == "None"


def test_a_file_the_server_cannot_read_names_it_and_exits_1(
    server: ServeProcess, drawings: list[Path], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.png"
    notes.write_text("not a picture")
    done = digitserve("classify", "--target", server.target, "--server-side", str(drawings[0]), str(notes))
    assert done.returncode == 1 and done.stdout == ""
    assert "INVALID_ARGUMENT: image 1 of 2 is not an image file Pillow can read as PNG, JPEG" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_file_stops_the_run_before_the_server_is_asked(tmp_path: Path) -> None:
    done = digitserve("classify", "--target", "127.0.0.1:1", "--server-side", str(tmp_path / "gone.png"))
    assert (done.returncode, done.stdout) == (1, "")
    assert f"{tmp_path / 'gone.png'}: no such file" in done.stderr
    mixed = digitserve("classify", "--server-side", "--mnist-test", "5")
    assert mixed.returncode == 2 and "--server-side sends image files" in mixed.stderr


def test_files_are_batched_by_count_and_by_bytes() -> None:
    files = [bytes(n) for n in (10, 10, 10, 30, 5, 5)]
    assert [len(batch) for batch in file_batches(files, 2, size=1000)] == [2, 2, 2]
    assert [[len(f) for f in batch] for batch in file_batches(files, 64, size=25)] == [[10, 10], [10], [30], [5, 5]]
