"""Every bad input of docs/serving.md's error table gets its status and a message naming the problem.

After each one the server still answers a good request (test_fuzz.py does the same with
random requests). Failures of the model or of our code reach the client as a plain INTERNAL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from digitserve.serve.errors import INTERNAL_MESSAGE, grpc_errors
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.serve.serve_models import random_weights, write_version

Tensor = v2.ModelInferRequest.InferInputTensor
GOOD = np.full((1, 784), 0.5, dtype=np.float32)
EXPECTED_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def fp32(values: np.ndarray, shape: list[int] | None = None, **fields: Any) -> v2.ModelInferRequest:
    values = np.asarray(values, dtype=np.float32)
    tensor = Tensor(name="pixels", datatype="FP32", shape=shape or [values.size // 784, 784])
    request = v2.ModelInferRequest(model_name="digits", inputs=[tensor], **fields)
    request.raw_input_contents.append(values.tobytes())
    return request


def still_serving(stubs: Stubs) -> None:
    response = stubs.digits.Classify(d.ClassifyRequest(float32_le=GOOD.tobytes()), timeout=10)
    assert len(response.predictions) == 1
    response2 = stubs.v2.ModelInfer(fp32(GOOD), timeout=10)
    assert list(response2.outputs[0].shape) == [1, 10]


def nan_image() -> np.ndarray:
    image = GOOD.copy()
    image[0, 17] = np.nan
    return image


DIGITS_CASES: dict[str, tuple[d.ClassifyRequest, grpc.StatusCode, str]] = {
    "no pixels": (d.ClassifyRequest(), grpc.StatusCode.INVALID_ARGUMENT, "carries no pixels"),
    "empty batch": (d.ClassifyRequest(uint8=b""), grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
    "empty float32": (
        d.ClassifyRequest(float32=d.Float32Pixels()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty batch",
    ),
    "short image": (
        d.ClassifyRequest(float32_le=np.zeros(700, np.float32).tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "got 700 pixel values, which is not a multiple of 784",
    ),
    "uint8 length": (
        d.ClassifyRequest(uint8=bytes(785)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a multiple of 784",
    ),
    "not float32 bytes": (
        d.ClassifyRequest(float32_le=bytes(3137)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "4-byte float32",
    ),
    "0..255 floats": (
        d.ClassifyRequest(float32_le=(GOOD * 255).tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must lie in \\[0, 1\\]; got min 127.5, max 127.5 — divide by 255",
    ),
    "negative": (
        d.ClassifyRequest(float32=d.Float32Pixels(values=(GOOD - 1).ravel())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must lie in \\[0, 1\\]; got min -0.5",
    ),
    "NaN": (
        d.ClassifyRequest(float32_le=nan_image().tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must be finite; image 0 has NaN or Inf at pixel 17",
    ),
    "too many images": (
        d.ClassifyRequest(uint8=bytes(784 * 1025)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "1025 images in one request; the limit is 1024",
    ),
    "message too large": (
        d.ClassifyRequest(float32_le=np.zeros((1400, 784), np.float32).tobytes()),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "larger than max",
    ),
}


@pytest.mark.parametrize("case", DIGITS_CASES)
def test_digits_bad_input(case: str, stubs: Stubs) -> None:
    request, code, message = DIGITS_CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        stubs.digits.Classify(request, timeout=10)
    assert error.value.code() == code
    assert error.value.details() is not None
    assert re.search(message, error.value.details()), error.value.details()
    still_serving(stubs)


def typed(datatype: str, **contents: Any) -> v2.ModelInferRequest:
    tensor = Tensor(
        name="pixels",
        datatype=datatype,
        shape=[1, 784],
        contents=v2.InferTensorContents(**contents),
    )
    return v2.ModelInferRequest(model_name="digits", inputs=[tensor])


def uint8_raw(count: int) -> v2.ModelInferRequest:
    tensor = Tensor(name="pixels", datatype="UINT8", shape=[count, 784])
    return v2.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[bytes(784 * count)])


def raw_and_typed() -> v2.ModelInferRequest:
    request = fp32(GOOD)
    request.inputs[0].contents.fp32_contents.extend([0.5] * 784)
    return request


V2_CASES: dict[str, tuple[Callable[[], v2.ModelInferRequest], grpc.StatusCode, str]] = {
    "unknown model": (
        lambda: v2.ModelInferRequest(model_name="mnist"),
        grpc.StatusCode.NOT_FOUND,
        "unknown model 'mnist'; this server serves digits \\(version 1\\)",
    ),
    "a version that only looks like digits": (
        lambda: fp32(GOOD, model_version="²"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model_version '²' is not a version number",
    ),
    "unknown version": (
        lambda: fp32(GOOD, model_version="7"),
        grpc.StatusCode.NOT_FOUND,
        "version 7 of model 'digits' is not served; it serves version 1 of it",
    ),
    "no inputs": (
        lambda: v2.ModelInferRequest(model_name="digits"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expected exactly one input 'pixels'",
    ),
    "wrong input name": (
        lambda: v2.ModelInferRequest(model_name="digits", inputs=[Tensor(name="x", datatype="FP32", shape=[1, 784])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "got \\['x'\\]",
    ),
    "wrong output name": (
        lambda: fp32(GOOD, outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(name="label")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown output 'label'",
    ),
    "dtype": (
        lambda: typed("INT64", int64_contents=[0] * 784),
        grpc.StatusCode.INVALID_ARGUMENT,
        "datatype 'INT64'; send FP32",
    ),
    "shape rank": (
        lambda: fp32(GOOD, shape=[784]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must have shape \\[N, 784\\].*got \\[784\\]",
    ),
    "shape 28x28": (
        lambda: fp32(GOOD, shape=[1, 28, 28]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "got \\[1, 28, 28\\]",
    ),
    "empty batch": (
        lambda: fp32(np.zeros(0, np.float32), shape=[0, 784]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty batch",
    ),
    "raw size": (
        lambda: fp32(GOOD, shape=[2, 784]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "holds 3136 bytes; shape \\[2, 784\\] FP32 needs 6272",
    ),
    "typed count": (
        lambda: typed("FP32", fp32_contents=[0.5] * 700),
        grpc.StatusCode.INVALID_ARGUMENT,
        "carries 700 values",
    ),
    "wrong typed field": (
        lambda: typed("FP32", fp64_contents=[0.5] * 784),
        grpc.StatusCode.INVALID_ARGUMENT,
        "goes in contents.fp32_contents .*got fp64_contents",
    ),
    "raw and typed": (
        raw_and_typed,
        grpc.StatusCode.INVALID_ARGUMENT,
        "not both",
    ),
    "UINT8 above 255": (
        lambda: typed("UINT8", uint_contents=[300] * 784),
        grpc.StatusCode.INVALID_ARGUMENT,
        "0..255",
    ),
    "Inf": (
        lambda: fp32(np.where(np.arange(784) == 3, np.inf, 0.5)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN or Inf at pixel 3",
    ),
    "out of range": (
        lambda: fp32(GOOD * 3),
        grpc.StatusCode.INVALID_ARGUMENT,
        "got min 1.5, max 1.5",
    ),
    "too many images": (
        lambda: uint8_raw(1025),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "1025 images in one request; the limit is 1024",
    ),
}


@pytest.mark.parametrize("case", V2_CASES)
def test_v2_bad_input(case: str, stubs: Stubs) -> None:
    build, code, message = V2_CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        stubs.v2.ModelInfer(build(), timeout=10)
    assert error.value.code() == code, error.value.details()
    assert re.search(message, error.value.details() or ""), error.value.details()
    still_serving(stubs)


def test_v2_metadata_of_unknown_model_is_not_found(stubs: Stubs) -> None:
    for request in (
        v2.ModelMetadataRequest(name="nope"),
        v2.ModelMetadataRequest(name="digits", version="3"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            stubs.v2.ModelMetadata(request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as error:
        stubs.v2.ModelReady(v2.ModelReadyRequest(name="nope"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_failures_are_counted_by_reason(stubs: Stubs, shared_server: ServerThread) -> None:
    before = shared_server.metric("nv_inference_request_failure_total", reason="INVALID_ARGUMENT")
    with pytest.raises(grpc.RpcError):
        stubs.digits.Classify(d.ClassifyRequest(uint8=b"1"))
    after = shared_server.metric("nv_inference_request_failure_total", reason="INVALID_ARGUMENT")
    assert after == before + 1


def test_a_model_failure_is_logged_and_answered_with_a_plain_internal(
    make_server: Callable[..., ServerThread],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_version(tmp_path, 1, random_weights(0), fail_on_full_ink=True)
    server = make_server(server_settings(tmp_path))
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(d.ClassifyRequest(uint8=bytes([255]) * 784), timeout=10)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert error.value.details() == "model execution failed; the server log has the details"
        with pytest.raises(grpc.RpcError) as error:
            stubs.v2.ModelInfer(fp32(np.ones((1, 784), np.float32)), timeout=10)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert "Gather" not in (error.value.details() or "")  # ORT's text stays in the log
        still_serving(stubs)
    assert "the model failed on a batch of 1 images" in caplog.text
    assert "Traceback" in caplog.text and "Gather" in caplog.text
    assert server.metric("nv_inference_request_failure_total", reason="INTERNAL") == 2


def test_an_unexpected_error_is_logged_with_its_traceback_and_sent_as_plain_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Context:  # the one method grpc_errors uses, recording instead of raising
        aborted: tuple[grpc.StatusCode, str] | None = None

        async def abort(self, code: grpc.StatusCode, message: str) -> None:
            self.aborted = (code, message)

    class Servicer:
        @grpc_errors
        async def Broken(self, request: object, context: object) -> None:
            raise KeyError("secret internals")

    context = Context()
    asyncio.run(Servicer().Broken(None, context))
    assert context.aborted == (grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
    assert "secret internals" not in INTERNAL_MESSAGE
    assert "Broken failed unexpectedly" in caplog.text and "KeyError: 'secret internals'" in caplog.text
