"""Interoperability of the HTTP/REST binding: Triton's unchanged `tritonclient.http` (and its asyncio
client) against `digitserve serve --http-port`: health, metadata, inference with binary tensors and
JSON, UINT8, gzip bodies, errors, and the model repository calls under `--model-control explicit`.

Like test_tritonclient.py, the client runs in .venv-triton as a subprocess (tests/interop/
triton_http_client.py). The model is the serving tests' ONNX softmax (no TensorFlow needed).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.serve.serve_models import random_weights, write_version
from tests.support.server import ServeProcess

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("http-interop-repo")
    write_version(root, 1, random_weights(11))
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    log = tmp_path_factory.mktemp("interop-http") / "serve.log"
    args = ["--repo", str(repo), "--http-port", "0", "--model-control", "explicit"]
    with ServeProcess.serve(args, log) as process:
        yield process.wait_serving()


def test_tritonclient_http_drives_health_metadata_infer_and_the_repository(
    triton_python: Path, server: ServeProcess, repo: Path, tmp_path: Path
) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(12)
    raw = rng.integers(0, 256, (16, 784), dtype=np.uint8)
    pixels = raw.astype(np.float32) / np.float32(255.0)
    np.save(tmp_path / "pixels.npy", pixels)
    np.save(tmp_path / "uint8.npy", raw)
    target = f"127.0.0.1:{server.http_port}"
    done = subprocess.run(
        [str(triton_python), str(HERE / "triton_http_client.py"), target, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, f"{done.stderr}\n--- server log ---\n{server.log()}"
    report = json.loads(done.stdout)

    assert report["live"] and report["ready"] and report["model_ready"]
    assert report["version_7_ready"] is False
    assert report["server_metadata"]["name"] == "digitserve"
    assert {"model_repository", "binary_tensor_data"} <= set(report["server_metadata"]["extensions"])
    assert report["model_metadata"]["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 784]},
                                                  {"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert report["response"]["id"] == "req-7" and report["response"]["model_version"] == "1"

    session = ort.InferenceSession(str(repo / "digits/1/onnx/model.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(["probabilities"], {"pixels": pixels})[0]
    for name in ("binary", "json", "uint8_out", "gzip", "after_load"):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.shape == (16, 10) and got.dtype == np.float32, name
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(np.load(tmp_path / "aio.npy"), np.stack([expected] * 4), atol=1e-6)

    assert report["unknown_model"]["status"] == "404" and "letters" in report["unknown_model"]["message"]
    assert report["out_of_range"]["status"] == "400"
    assert "must lie in [0, 1]" in report["out_of_range"]["message"]
    assert report["wrong_shape"]["status"] == "400" and "[N, 784]" in report["wrong_shape"]["message"]

    assert report["index"] == [{"name": "digits", "version": "1", "state": "READY", "reason": ""}]
    assert report["unload"] == {"value": None} and report["ready_after_unload"] is False
    assert report["infer_after_unload"]["status"] == "404"
    assert report["load"] == {"value": None} and report["ready_after_load"] is True
    assert report["load_unknown"]["status"] == "404" and "letters" in report["load_unknown"]["message"]
