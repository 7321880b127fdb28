"""Interoperability of the model repository API: Triton's unchanged `tritonclient[grpc]` lists,
unloads and loads models of a digitserve server started with `--model-control explicit`.

Like test_tritonclient.py, the client runs in .venv-triton (its own protobuf) as a subprocess,
through tests/interop/triton_repository_client.py; the repository is written by the serving
tests' builders (softmax 1, 2 and cnn 1).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serve.repository_fixtures import (
    CNN,
    EXPLICIT,
    SERVING,
    SOFTMAX,
    Client,
    Reference,
    make_repository,
    wait_until,
)
from tests.support.server import ServeProcess

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("triton-repo"), softmax=(1, 2), cnn=(1,))


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("interop-repository") / "serve.log"
    with ServeProcess.serve(["--repo", str(repo), *EXPLICIT], log) as process:
        process.wait_listening(120)
        with Client(process.target) as client:
            wait_until(lambda: client.health("") == SERVING, "health SERVING", process, 120)
        yield process


def entries(index: list[dict[str, str]]) -> dict[tuple[str, int], dict[str, str]]:
    return {(entry["name"], int(entry["version"])): entry for entry in index}


def test_tritonclient_lists_unloads_and_loads_models(
    triton_python: Path, server: ServeProcess, repo: Path, tmp_path: Path
) -> None:
    pixels = np.random.default_rng(5).random((4, 784), dtype=np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    done = subprocess.run(
        [str(triton_python), str(HERE / "triton_repository_client.py"), server.target, str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"{done.stderr}\n--- server log ---\n{server.log()}"
    report = json.loads(done.stdout)

    before = entries(report["index_before"])
    assert set(before) == {(SOFTMAX, 1), (SOFTMAX, 2), (CNN, 1)}, report["index_before"]
    assert before[(SOFTMAX, 2)]["state"] == "READY" and before[(CNN, 1)]["state"] == "READY"
    assert before[(SOFTMAX, 1)]["state"] == "UNAVAILABLE" and before[(SOFTMAX, 1)].get("reason")
    assert set(entries(report["ready_before"])) == {(SOFTMAX, 2), (CNN, 1)}
    assert report["softmax_2_ready"] is True and report["softmax_1_ready"] is False and report["cnn_ready"] is True

    assert report["unload"] == {"value": None}, report["unload"]  # unload_dependents=False is accepted
    assert report["softmax_ready_after_unload"].get("value") is not True, report["softmax_ready_after_unload"]
    assert report["infer_after_unload"]["status"] == "StatusCode.NOT_FOUND", report["infer_after_unload"]
    assert report["cnn_ready_after_unload"] is True
    after_unload = entries(report["index_after_unload"])
    assert {after_unload[(SOFTMAX, v)]["state"] for v in (1, 2)} <= {"UNAVAILABLE", "UNLOADING"}, after_unload
    assert after_unload[(CNN, 1)]["state"] == "READY"

    assert report["load"] == {"value": None}, report["load"]
    assert report["softmax_2_ready_after_load"] is True and report["softmax_ready_after_load"] is True
    assert entries(report["index_after_load"])[(SOFTMAX, 2)]["state"] == "READY"
    expected = Reference(repo)(SOFTMAX, 2, pixels)
    np.testing.assert_allclose(np.load(tmp_path / "after_load.npy"), expected, atol=1e-6)
    assert report["load_unknown"]["status"] == "StatusCode.NOT_FOUND", report["load_unknown"]
    assert "letters" in report["load_unknown"]["message"]
