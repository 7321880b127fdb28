"""Every error of the HTTP/REST binding: its status, `{"error": message}` saying what to fix, and the
same message gRPC gives for the same mistake. After each one the server still answers."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from digitserve.serve.errors import INTERNAL_MESSAGE
from digitserve.serve.http.app import error_response
from digitserve.wire.proto import grpc_service_pb2 as v2
from digitserve.wire.proto import grpc_service_pb2_grpc
from tests.serve.in_process import ServerThread, server_settings
from tests.serve.serve_models import random_weights, write_version

GOOD = np.full((1, 784), 0.5, dtype=np.float32)
INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def http_server(model_repo: Path) -> Iterator[ServerThread]:
    server = ServerThread(server_settings(model_repo, http_port=0))
    yield server
    server.close()


def base_url(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.server.http.port}"


@pytest.fixture
def client(http_server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url(http_server), timeout=30) as c:
        yield c


def tensor(data: Any = None, datatype: str = "FP32", shape: Any = (1, 784), **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": "pixels", "datatype": datatype, "shape": list(shape) if shape else shape, **fields}
    if data is not None:
        item["data"] = data
    return item


def request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs or [tensor(GOOD.ravel().tolist())]), **extra}).encode()


def with_binary(header: dict[str, Any], raw: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + raw, {"Inference-Header-Content-Length": str(len(text) if length is None else length)}


def flat(value: float, at: int | None = None) -> list[Any]:
    values: list[Any] = [0.5] * 784
    if at is None:
        return [value] * 784
    values[at] = value
    return values


BINARY_HEADER = {"inputs": [tensor(parameters={"binary_data_size": 3136})]}
# name: (body, extra headers, status, message pattern)
CASES: dict[str, tuple[bytes, dict[str, str], int, str]] = {
    "not JSON": (b"{bad", {}, 400, r"not valid JSON \(Expecting property name .* at line 1 column 2\): send a V2"),
    "not an object": (b"[1, 2]", {}, 400, r"must be a JSON object .*got list"),
    "text/plain": (request(), {"content-type": "text/plain"}, 400, r"Content-Type text/plain is not a V2 body"),
    "form (curl -d)": (request(), {"content-type": "application/x-www-form-urlencoded"}, 400,
                       r"send application/json \(curl: -H 'Content-Type: application/json'\)"),
    "no inputs": (b"{}", {}, 400,
                  r"expected exactly one input 'pixels' \(FP32 \[N, 784\]\) or 'image' \(BYTES \[N\].*\); got none"),
    "wrong input name": (request({"name": "x", "datatype": "FP32", "shape": [1, 784], "data": [0] * 784}), {}, 400,
                         r"got \['x'\]"),
    "wrong output name": (request(outputs=[{"name": "label"}]), {}, 400, r"unknown output 'label'"),
    "dtype": (request(tensor([0] * 784, "INT64")), {}, 400, r"datatype 'INT64'; send FP32 \(0..1\) or UINT8"),
    "shape rank": (request(tensor(flat(0.5), shape=[784])), {}, 400, r"must have shape \[N, 784\].*got \[784\]"),
    "shape 28x28": (request(tensor(flat(0.5), shape=[1, 28, 28])), {}, 400, r"got \[1, 28, 28\]"),
    "shape not integers": (request(tensor(flat(0.5), shape=["1", 784])), {}, 400,
                           r"shape must be a list of integers such as \[1, 784\]"),
    "empty batch": (request(tensor([], shape=[0, 784])), {}, 400, r"empty batch"),
    "count": (request(tensor([0.5] * 700)), {}, 400, r"has shape \[1, 784\] \(784 values\) but carries 700 values"),
    "ragged": (request(tensor([[0.5] * 784, [0.5] * 3], shape=[2, 784])), {}, 400, r"rows differ in length"),
    "nested wrongly": (request(tensor([[[0.5] * 28] * 28])), {}, 400,
                       r"nested as its shape \[1, 784\]; it is nested as"),
    "strings": (request(tensor(["0.5"] * 784)), {}, 400, r"a flat list of 784 numbers; it holds strings"),
    "nulls": (request(tensor([None] * 784)), {}, 400, r"it holds null"),
    "no data": (request(tensor()), {}, 400, r"carries no data: put its 784 values in \"data\""),
    "NaN": (request(tensor(flat(float("nan"), at=17))), {}, 400, r"must be finite; image 0 has NaN or Inf at pixel 17"),
    "Infinity": (request(tensor(flat(float("inf"), at=3))), {}, 400, r"NaN or Inf at pixel 3"),
    "out of range": (request(tensor(flat(1.5))), {}, 400,
                     r"must lie in \[0, 1\]; got min 1.5, max 1.5 — divide by 255"),
    "UINT8 above 255": (request(tensor([300] * 784, "UINT8")), {}, 400,
                        r"UINT8 pixel values must lie in 0..255; got max 300"),
    "UINT8 negative": (request(tensor([-1] * 784, "UINT8")), {}, 400, r"0..255; got min -1, max -1"),
    "UINT8 fraction": (request(tensor([0.5] * 784, "UINT8")), {}, 400, r"whole numbers 0..255; got 0.5"),
    "binary size": (*with_binary({"inputs": [tensor(parameters={"binary_data_size": 100})]}, bytes(100)), 400,
                    r"\(parameters.binary_data_size\) holds 100 bytes; shape \[1, 784\] FP32 needs 3136"),
    "binary short": (*with_binary(BINARY_HEADER, bytes(3000)), 400,
                     r"carries 3000 bytes after its JSON header .*says binary_data_size 3136"),
    "binary without header length": (with_binary(BINARY_HEADER, GOOD.tobytes())[0], {}, 400,
                                     r"needs the header Inference-Header-Content-Length"),
    "header length past the body": (*with_binary(BINARY_HEADER, b"", length=10**6), 400,
                                    r"Inference-Header-Content-Length '1000000' must be the byte length"),
    "data and binary": (*with_binary({"inputs": [tensor(flat(0.5), parameters={"binary_data_size": 3136})]},
                                     GOOD.tobytes()), 400, r"both \"data\" and parameters.binary_data_size"),
    "binary tail unannounced": (*with_binary({"inputs": [tensor(flat(0.5))]}, GOOD.tobytes()), 400,
                                r"has no parameters.binary_data_size"),
    "classification": (request(outputs=[{"name": "probabilities", "parameters": {"classification": 3}}]), {}, 400,
                       r"'classification' is not supported"),
    "binary flag": (request(parameters={"binary_data_output": "yes"}), {}, 400, r"must be true or false; got 'yes'"),
    "id type": (request(id=7), {}, 400, r"id must be a string"),
    "timeout type": (request(parameters={"timeout": "soon"}), {}, 400, r"parameters.timeout must be microseconds"),
    "encoding": (request(), {"content-encoding": "br"}, 400, r"Content-Encoding br is not supported"),
    "not gzip": (request(), {"content-encoding": "gzip"}, 400, r"not valid gzip data"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_requests_get_their_status_and_a_message_naming_the_fix(case: str, client: httpx.Client) -> None:
    body, headers, status, message = CASES[case]
    response = client.post(INFER, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(message, response.json()["error"]), response.json()["error"]
    assert client.post(INFER, content=request()).status_code == 200


PATH_CASES = {
    "unknown model": ("POST", "/v2/models/mnist/infer", 404,
                      r"unknown model 'mnist'; this server serves digits \(version 1\)"),
    "unknown version": ("POST", "/v2/models/digits/versions/7/infer", 404,
                        r"version 7 of model 'digits' is not served; it serves version 1 of it"),
    "bad version": ("POST", "/v2/models/digits/versions/latest/infer", 400,
                    r"version 'latest' is not a version number: send digits"),
    "metadata of an unknown model": ("GET", "/v2/models/mnist", 404, r"unknown model 'mnist'"),
    "metadata of an unknown version": ("GET", "/v2/models/digits/versions/3", 404, r"version 3 of model 'digits'"),
    "ready of an unknown model": ("GET", "/v2/models/mnist/ready", 404, r"unknown model 'mnist'"),
    "no such endpoint": ("GET", "/v2/model/digits", 404, r"no V2 endpoint /v2/model/digits: see /v2"),
    "wrong method": ("GET", INFER, 405, r"GET is not allowed on /v2/models/digits/infer; use POST"),
    "index body": ("POST", "/v2/repository/index", 400, r"ready must be true or false"),
}


@pytest.mark.parametrize("case", PATH_CASES)
def test_unknown_models_versions_and_endpoints(case: str, client: httpx.Client) -> None:
    method, path, status, message = PATH_CASES[case]
    body = b'{"ready": "yes"}' if "index" in path else request()
    response = client.request(method, path, content=body if method == "POST" else None)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


def grpc_error(stub: Any, request_: v2.ModelInferRequest) -> str:
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request_, timeout=10)
    return error.value.details() or ""


def proto(values: Any, datatype: str = "FP32", shape: list[int] | None = None, **fields: Any) -> v2.ModelInferRequest:
    array = np.asarray(values, dtype=np.float32 if datatype == "FP32" else np.uint8)
    message = v2.ModelInferRequest.InferInputTensor(name="pixels", datatype=datatype, shape=shape or [1, 784])
    return v2.ModelInferRequest(inputs=[message], raw_input_contents=[array.tobytes()], **fields)


def test_http_and_grpc_say_the_same_for_the_same_mistake(client: httpx.Client, http_server: ServerThread) -> None:
    nan = flat(float("nan"), at=17)
    same = {  # JSON request (path, inputs) vs the gRPC request with the same mistake
        "shape": ((INFER, tensor(flat(0.5), shape=[1, 28, 28])), proto(flat(0.5), shape=[1, 28, 28])),
        "datatype": ((INFER, tensor(flat(0.5), "FP64")), proto(flat(0.5), "FP64")),
        "NaN": ((INFER, tensor(nan)), proto(nan)),
        "range": ((INFER, tensor(flat(2.0))), proto(flat(2.0))),
        "unknown model": (("/v2/models/mnist/infer", tensor(flat(0.5))), proto(flat(0.5), model_name="mnist")),
        "unknown version": (("/v2/models/digits/versions/9/infer", tensor(flat(0.5))),
                            proto(flat(0.5), model_name="digits", model_version="9")),
        "empty": ((INFER, tensor([], shape=[0, 784])), proto([], shape=[0, 784])),
    }
    with grpc.insecure_channel(http_server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for name, ((path, item), grpc_request) in same.items():
            if not grpc_request.model_name:
                grpc_request.model_name = "digits"
            answer = client.post(path, content=request(item)).json()["error"]
            assert answer == grpc_error(stub, grpc_request), name


def test_load_and_unload_are_refused_under_poll_control_and_index_works(client: httpx.Client) -> None:
    for action in ("load", "unload"):
        response = client.post(f"/v2/repository/models/digits/{action}")
        assert response.status_code == 400
        assert response.json()["error"] == (
            f"POST /v2/repository/models/digits/{action} is off: this server follows its repository "
            "(--model-control poll); start it with --model-control explicit to load and unload models by call"
        )
    index = client.post("/v2/repository/index")
    assert index.status_code == 200 and index.json() == [{"name": "digits", "version": "1", "state": "READY",
                                                          "reason": ""}]
    assert client.post("/v2/repository/index", json={"ready": True}).json() == index.json()
    bad = client.post("/v2/repository/models/digits/load", json={"parameters": {"config": "{}"}})
    assert bad.status_code == 400 and "parameter 'config' is not supported" in bad.json()["error"]


def test_a_deadline_from_parameters_timeout_is_504(client: httpx.Client) -> None:
    response = client.post(INFER, content=request(parameters={"timeout": 1}))  # 1 µs: passes before the model runs
    assert response.status_code == 504, response.text
    assert "timeout" in response.json()["error"] or "deadline" in response.json()["error"]


def test_a_body_or_batch_above_the_limits_is_413(make_server: Callable[..., ServerThread], model_repo: Path) -> None:
    server = make_server(server_settings(model_repo, http_port=0, max_request_images=1, max_queue_images=1))
    with httpx.Client(base_url=base_url(server), timeout=30) as c:
        big = c.post(INFER, content=b" " * 200_000)  # Content-Length above the limit: refused unread
        assert big.status_code == 413
        assert re.search(r"larger than 90624 bytes, the limit that --max-request-images sets", big.json()["error"])
        streamed = c.post(INFER, content=iter([b" " * 50_000] * 4))  # chunked: refused once past the limit
        assert streamed.status_code == 413
        body, headers = with_binary({"inputs": [tensor(datatype="UINT8", shape=[2, 784],
                                                        parameters={"binary_data_size": 1568})]}, bytes(1568))
        two = c.post(INFER, content=body, headers=headers)  # small, but more images than allowed
        assert two.status_code == 413
        assert "2 images in one request; the limit is 1 (--max-request-images)" in two.json()["error"]
        assert c.post(INFER, content=request()).status_code == 200


def test_a_full_queue_is_429(make_server: Callable[..., ServerThread], slow_repo: Path) -> None:
    server = make_server(server_settings(slow_repo, http_port=0, max_batch_size=1, max_queue_images=1,
                                         max_request_images=1, grace_seconds=10))
    with httpx.Client(base_url=base_url(server), timeout=60) as c, ThreadPoolExecutor(2) as pool:
        running = pool.submit(c.post, INFER, content=request())
        server.wait_running()
        queued = pool.submit(c.post, INFER, content=request())
        server.wait_for("digitserve_queue_images", 1)
        refused = c.post(INFER, content=request())
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"].startswith("queue full")
        assert running.result().status_code == queued.result().status_code == 200


def test_a_model_failure_is_500_with_a_plain_message(
    make_server: Callable[..., ServerThread], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_version(tmp_path, 1, random_weights(0), fail_on_full_ink=True)
    server = make_server(server_settings(tmp_path, http_port=0))
    with httpx.Client(base_url=base_url(server), timeout=30) as c:
        response = c.post(INFER, content=request(tensor([1.0] * 784)))
        assert response.status_code == 500
        assert response.json() == {"error": "model execution failed; the server log has the details"}
        assert c.post(INFER, content=request()).status_code == 200
    assert "Gather" in caplog.text  # ONNX Runtime's text stays in the log


def test_an_unexpected_error_is_logged_and_answered_500_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = error_response(KeyError("secret internals"), "POST /v2/models/digits/infer")
    assert response.status_code == 500
    assert json.loads(bytes(response.body)) == {"error": INTERNAL_MESSAGE}
    assert "POST /v2/models/digits/infer failed unexpectedly" in caplog.text
    assert "KeyError: 'secret internals'" in caplog.text
