"""Interoperability: Triton's `tritonclient[grpc]`, a V2 client nobody here wrote, against our server.

tritonclient needs protobuf>=6.30, so it runs in its own virtual environment (.venv-triton, built
by make_triton_venv.sh from the pinned, hashed requirements-triton.txt) as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.server import ServeProcess

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def server(exported_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("interop") / "serve.log"
    with ServeProcess.serve(["--repo", str(exported_repo)], log) as process:
        yield process.wait_serving()


def test_tritonclient_drives_health_metadata_and_infer(
    triton_python: Path, server: ServeProcess, exported_repo: Path, mnist_dir: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    from digitserve.mnist import load_mnist

    raw = load_mnist(mnist_dir).x_test[:32].reshape(-1, 784)
    pixels = raw.astype(np.float32) / np.float32(255.0)
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "uint8.npy", raw)
    done = subprocess.run(
        [str(triton_python), str(HERE / "triton_client.py"), server.target, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    assert report["live"] and report["ready"] and report["model_ready"] and report["still_ready"]
    assert report["server_metadata"]["name"] == "digitserve"
    metadata = report["model_metadata"]
    assert metadata["name"] == "digits" and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": ["-1", "784"]},
                                  {"name": "image", "datatype": "BYTES", "shape": ["-1"]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": ["-1", "10"]}]

    session = ort.InferenceSession(str(exported_repo / "digits/1/onnx/model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"pixels": pixels})[0]
    for name in ("fp32.npy", "uint8_out.npy"):
        got = np.load(tmp_path / name)
        assert got.shape == (32, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "aio.npy"), np.stack([expected] * 4), atol=1e-6)

    assert report["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert "letters" in report["unknown_model"]["message"]
    assert report["out_of_range"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "must lie in [0, 1]" in report["out_of_range"]["message"]
    assert report["wrong_shape"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "[N, 784]" in report["wrong_shape"]["message"]
