"""A hypothesis fuzz of malformed requests to both APIs: a client error each, never INTERNAL."""

from __future__ import annotations

from typing import Any

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs
from tests.serve.test_errors import EXPECTED_CODES, still_serving

Tensor = v2.ModelInferRequest.InferInputTensor
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
digits_requests = st.one_of(
    st.builds(lambda b: d.ClassifyRequest(uint8=b), st.binary(max_size=2400)),
    st.builds(lambda b: d.ClassifyRequest(float32_le=b), st.binary(max_size=6400)),
    st.builds(
        lambda n, v: d.ClassifyRequest(float32=d.Float32Pixels(values=[v] * n)),
        st.sampled_from([0, 1, 783, 784, 1568, 1569]),
        floats,
    ),
)


@st.composite
def v2_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    datatype = draw(st.sampled_from(["FP32", "UINT8", "INT64", "FP64", "BYTES", ""]))
    shape = draw(st.lists(st.integers(-2, 1600), max_size=3))
    tensor = Tensor(name=draw(st.sampled_from(["pixels", "x", ""])), datatype=datatype, shape=shape)
    request = v2.ModelInferRequest(
        model_name=draw(st.sampled_from(["digits", "digits", "", "other"])),
        model_version=draw(st.sampled_from(["", "", "1", "2", "latest"])),
        inputs=[tensor] * draw(st.integers(0, 2)),
    )
    how = draw(st.sampled_from(["raw", "fp32", "uint", "fp64", "both", "none"]))
    size = draw(st.integers(0, 1600))
    if how in ("raw", "both"):
        request.raw_input_contents.append(draw(st.binary(min_size=size, max_size=size)))
    if how in ("fp32", "both") and request.inputs:
        request.inputs[0].contents.fp32_contents.extend([draw(floats)] * size)
    if how == "uint" and request.inputs:
        request.inputs[0].contents.uint_contents.extend([draw(st.integers(0, 2**32 - 1))] * size)
    if how == "fp64" and request.inputs:
        request.inputs[0].contents.fp64_contents.extend([0.5] * size)
    return request


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=st.one_of(digits_requests, v2_requests()))
def test_fuzz_malformed_requests_get_a_client_error_never_internal(stubs: Stubs, request: Any) -> None:
    call = stubs.digits.Classify if isinstance(request, d.ClassifyRequest) else stubs.v2.ModelInfer
    try:
        call(request, timeout=10)
    except grpc.RpcError as error:
        assert error.code() in EXPECTED_CODES, (error.code(), error.details())
        assert error.details()


def test_server_still_serves_after_the_fuzz(stubs: Stubs, shared_server: ServerThread) -> None:
    still_serving(stubs)
    assert shared_server.metric("nv_inference_request_failure_total", reason="INTERNAL") == 0
