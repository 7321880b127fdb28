"""The KServe V2 HTTP/REST binding end to end: a real port, a real httpx client (and curl).

Health, readiness and metadata; inference in JSON (FP32 flat and nested, UINT8) and with Triton's
binary tensor extension both ways, gzip bodies, answers equal to in-process ONNX Runtime on the
file served, and the calls counted in the metrics that gRPC calls share.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from digitserve.wire.proto import grpc_service_pb2 as v2
from digitserve.wire.proto import grpc_service_pb2_grpc
from tests.serve.in_process import ServerThread, server_settings

HEADER_LENGTH = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def http_server(model_repo: Path) -> Iterator[ServerThread]:
    server = ServerThread(server_settings(model_repo, http_port=0))
    yield server
    server.close()


@pytest.fixture
def client(http_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{http_server.server.http.port}", timeout=30) as c:
        yield c


def pixels(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 784), dtype=np.float32)


def json_request(x: np.ndarray, datatype: str = "FP32", nested: bool = False, **extra: Any) -> dict[str, Any]:
    data = x.tolist() if nested else x.ravel().tolist()
    return {"inputs": [{"name": "pixels", "datatype": datatype, "shape": list(x.shape), "data": data}], **extra}


def binary_body(x: np.ndarray, datatype: str = "FP32", **extra: Any) -> tuple[bytes, dict[str, str]]:
    """A request whose input travels as binary after the JSON header, as tritonclient.http sends it."""
    raw = x.astype("<f4" if datatype == "FP32" else np.uint8).tobytes()
    tensor = {"name": "pixels", "datatype": datatype, "shape": list(x.shape),
              "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor], **extra}).encode()
    return header + raw, {HEADER_LENGTH: str(len(header))}


def binary_output(response: httpx.Response) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON header and the probabilities that follow it."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    split = int(response.headers[HEADER_LENGTH])
    header = json.loads(response.content[:split])
    (output,) = header["outputs"]
    raw = response.content[split:]
    assert output["parameters"] == {"binary_data_size": len(raw)} and "data" not in output
    return header, np.frombuffer(raw, "<f4").reshape(output["shape"])


def json_output(response: httpx.Response) -> tuple[dict[str, Any], np.ndarray]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    (output,) = body["outputs"]
    assert (output["name"], output["datatype"]) == ("probabilities", "FP32")
    return body, np.array(output["data"], np.float32).reshape(output["shape"])


def test_health_readiness_and_metadata(client: httpx.Client) -> None:
    assert (client.get("/v2/health/live").status_code, client.get("/v2/health/live").json()) == (200, {"live": True})
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "digitserve" and server["version"]
    assert {"model_repository", "binary_tensor_data", "execution_provider:CPUExecutionProvider",
            "artifact:onnx"} <= set(server["extensions"])
    for path in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        response = client.get(path)
        assert response.status_code == 200 and response.headers["digitserve-artifact"] == "onnx"
        assert response.json() == {
            "name": "digits", "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 784]},
                       {"name": "image", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        }
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/digits/versions/1/ready").status_code == 200
    not_served = client.get("/v2/models/digits/versions/7/ready")  # as gRPC ModelReady: ready false
    assert (not_served.status_code, not_served.json()["ready"]) == (503, False)
    assert client.get("/v2/models/letters/ready").status_code == 404


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_json_fp32_matches_onnx_runtime(client: httpx.Client, reference: Any, nested: bool) -> None:
    x = pixels(5)
    body, got = json_output(client.post("/v2/models/digits/infer", json=json_request(x, nested=nested, id="r-1")))
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "1", "r-1")
    assert got.shape == (5, 10)
    np.testing.assert_allclose(got, reference(x), atol=1e-6)


def test_json_uint8_matches_onnx_runtime(client: httpx.Client, reference: Any) -> None:
    raw = (pixels(3, seed=1) * 255).astype(np.uint8)
    _, got = json_output(client.post("/v2/models/digits/versions/1/infer", json=json_request(raw, "UINT8")))
    np.testing.assert_allclose(got, reference(raw.astype(np.float32) / np.float32(255.0)), atol=1e-6)


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_binary_in_and_out_as_tritonclient_sends_it(client: httpx.Client, reference: Any, datatype: str) -> None:
    x = pixels(7, seed=2)
    sent = x if datatype == "FP32" else (x * 255).astype(np.uint8)
    expected = reference(x if datatype == "FP32" else sent.astype(np.float32) / np.float32(255.0))
    body, headers = binary_body(sent, datatype, parameters={"binary_data_output": True})
    header, got = binary_output(client.post("/v2/models/digits/infer", content=body, headers=headers))
    assert header["model_name"] == "digits" and "id" not in header
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_binary_is_chosen_per_output_and_overrides_the_request_default(client: httpx.Client, reference: Any) -> None:
    x = pixels(2, seed=3)
    expected = reference(x)
    per_output = [{"name": "probabilities", "parameters": {"binary_data": True}}]
    _, got = binary_output(client.post("/v2/models/digits/infer", json=json_request(x, outputs=per_output)))
    np.testing.assert_allclose(got, expected, atol=1e-6)  # JSON in, binary out
    body, headers = binary_body(x)
    _, got = json_output(client.post("/v2/models/digits/infer", content=body, headers=headers))
    np.testing.assert_allclose(got, expected, atol=1e-6)  # binary in, JSON out (nothing asked for binary)
    off = [{"name": "probabilities", "parameters": {"binary_data": False}}]
    request = json_request(x, outputs=off, parameters={"binary_data_output": True})
    _, got = json_output(client.post("/v2/models/digits/infer", json=request))
    np.testing.assert_allclose(got, expected, atol=1e-6)  # the output's own choice wins


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_accepted(client: httpx.Client, reference: Any, encoding: str) -> None:
    import zlib

    x = pixels(2, seed=4)
    body, headers = binary_body(x)  # the header length counts the uncompressed JSON, as tritonclient sends it
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    response = client.post("/v2/models/digits/infer", content=packed, headers={**headers, "Content-Encoding": encoding})
    _, got = json_output(response)
    np.testing.assert_allclose(got, reference(x), atol=1e-6)


def test_http_and_grpc_calls_share_the_metrics(client: httpx.Client, http_server: ServerThread) -> None:
    labels = {"model": "digits", "version": "1"}
    before = http_server.metric("nv_inference_request_success_total", **labels)
    images_before = http_server.metric("nv_inference_count_total", **labels)
    x = pixels(3, seed=5)
    assert client.post("/v2/models/digits/infer", json=json_request(x)).status_code == 200
    tensor = v2.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[3, 784])
    request = v2.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[x.tobytes()])
    with grpc.insecure_channel(http_server.target) as channel:
        grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert http_server.metric("nv_inference_request_success_total", **labels) == before + 2
    assert http_server.metric("nv_inference_count_total", **labels) == images_before + 6
    failures = http_server.metric("nv_inference_request_failure_total", reason="INVALID_ARGUMENT")
    assert client.post("/v2/models/digits/infer", json=json_request(x * 3)).status_code == 400
    assert http_server.metric("nv_inference_request_failure_total", reason="INVALID_ARGUMENT") == failures + 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_json_and_binary(http_server: ServerThread, reference: Any, tmp_path: Path) -> None:
    """The requests of docs/http.md, as curl sends them."""
    url = f"http://127.0.0.1:{http_server.server.http.port}/v2/models/digits/infer"
    x = pixels(2, seed=6)
    (tmp_path / "request.json").write_text(json.dumps(json_request(x)))
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json", "--data-binary",
         f"@{tmp_path / 'request.json'}", url], capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = np.array(json.loads(done.stdout)["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, reference(x), atol=1e-6)

    body, headers = binary_body(x, parameters={"binary_data_output": True})
    (tmp_path / "request.bin").write_bytes(body)
    done = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/octet-stream",
         "-H", f"{HEADER_LENGTH}: {headers[HEADER_LENGTH]}", "--data-binary", f"@{tmp_path / 'request.bin'}",
         "-D", str(tmp_path / "headers.txt"), "-o", str(tmp_path / "response.bin"), url],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "headers.txt").read_text().lower().splitlines()
    split = int(next(line for line in lines if line.startswith(HEADER_LENGTH.lower())).split(":")[1])
    answer = (tmp_path / "response.bin").read_bytes()
    np.testing.assert_allclose(np.frombuffer(answer[split:], "<f4").reshape(2, 10), reference(x), atol=1e-6)

    done = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-d", "{}", url],  # curl's default form type
                          capture_output=True, text=True, timeout=30)
    body_text, code = done.stdout.rsplit("\n", 1)
    assert code == "400" and "Content-Type: application/json" in json.loads(body_text)["error"]
