"""Over real channels, both APIs and every encoding give in-process ONNX Runtime's predictions."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from digitserve.wire.codec import prediction_messages
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs
from tests.support.images import Images

BATCH = 64
Tensor = v2.ModelInferRequest.InferInputTensor


def batches(images: Images) -> list[slice]:
    return [slice(start, start + BATCH) for start in range(0, len(images.labels), BATCH)]


def digits_probabilities(response: d.ClassifyResponse) -> np.ndarray:
    if response.packed_probabilities:
        return np.frombuffer(response.packed_probabilities, "<f4").reshape(-1, 10)
    return np.array([list(p.probabilities) for p in response.predictions], dtype=np.float32)


DIGITS_ENCODINGS: dict[str, Callable[[Images, slice], d.ClassifyRequest]] = {
    "float32": lambda im, s: d.ClassifyRequest(float32=d.Float32Pixels(values=im.pixels[s].ravel())),
    "float32_le": lambda im, s: d.ClassifyRequest(float32_le=im.pixels[s].astype("<f4").tobytes()),
    "uint8": lambda im, s: d.ClassifyRequest(uint8=im.uint8[s].tobytes()),
    "packed-output": lambda im, s: d.ClassifyRequest(uint8=im.uint8[s].tobytes(), output_format=d.OUTPUT_FORMAT_PACKED),
}


@pytest.mark.parametrize("encoding", DIGITS_ENCODINGS)
def test_digits_api_matches_onnxruntime(
    encoding: str, stubs: Stubs, mnist_images: Images, reference: Callable[..., np.ndarray]
) -> None:
    expected = reference(mnist_images.pixels)
    got, labels = [], []
    for part in batches(mnist_images):
        request = DIGITS_ENCODINGS[encoding](mnist_images, part)
        request.request_id = f"batch-{part.start}"
        response = stubs.digits.Classify(request, timeout=30)
        assert (response.model_name, response.model_version) == ("digits", 1)
        assert response.request_id == f"batch-{part.start}"
        got.append(digits_probabilities(response))
        if response.packed_labels:
            labels.extend(response.packed_labels)
        else:
            labels.extend(p.label for p in response.predictions)
    probabilities = np.concatenate(got)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    assert labels == expected.argmax(axis=1).tolist()
    assert np.mean(np.array(labels) == mnist_images.labels) > 0.8  # a real classifier


def v2_request(images: Images, part: slice, datatype: str, raw: bool) -> v2.ModelInferRequest:
    data = images.pixels[part] if datatype == "FP32" else images.uint8[part]
    tensor = Tensor(name="pixels", datatype=datatype, shape=list(data.shape))
    request = v2.ModelInferRequest(model_name="digits", id=f"r{part.start}", inputs=[tensor])
    if raw:
        request.raw_input_contents.append(data.tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(data.ravel())
    else:
        tensor.contents.uint_contents.extend(data.ravel().tolist())
    request.inputs[0].CopyFrom(tensor)
    return request


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_v2_api_matches_onnxruntime(
    datatype: str,
    raw: bool,
    stubs: Stubs,
    mnist_images: Images,
    reference: Callable[..., np.ndarray],
) -> None:
    expected = reference(mnist_images.pixels)
    got = []
    for part in batches(mnist_images):
        response = stubs.v2.ModelInfer(v2_request(mnist_images, part, datatype, raw), timeout=30)
        assert (response.model_name, response.model_version, response.id) == (
            "digits",
            "1",
            f"r{part.start}",
        )
        (output,) = response.outputs
        assert (output.name, output.datatype) == ("probabilities", "FP32")
        rows = part.stop - part.start
        assert list(output.shape) == [rows, 10]
        if raw:
            assert len(response.raw_output_contents) == 1 and not output.contents.fp32_contents
            got.append(np.frombuffer(response.raw_output_contents[0], "<f4").reshape(rows, 10))
        else:
            assert not response.raw_output_contents
            got.append(np.array(output.contents.fp32_contents, np.float32).reshape(rows, 10))
    np.testing.assert_allclose(np.concatenate(got), expected, rtol=0, atol=1e-6)


def test_classify_stream_answers_in_order_and_survives_a_bad_request(
    stubs: Stubs, mnist_images: Images, reference: Callable[..., np.ndarray]
) -> None:
    im = mnist_images
    requests = [d.ClassifyRequest(uint8=im.uint8[i : i + 3].tobytes(), request_id=str(i)) for i in range(0, 60, 3)]
    requests.insert(5, d.ClassifyRequest(float32_le=b"\x00" * 10, request_id="bad"))
    answers = list(stubs.digits.ClassifyStream(iter(requests), timeout=30))
    assert [a.response.request_id or a.error.request_id for a in answers] == [r.request_id for r in requests]
    bad = answers[5]
    assert bad.WhichOneof("result") == "error"
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a whole number of 4-byte float32 values" in bad.error.message
    good = [a.response for a in answers if a.WhichOneof("result") == "response"]
    np.testing.assert_allclose(
        np.concatenate([digits_probabilities(r) for r in good]),
        reference(im.pixels[:60]),
        atol=1e-6,
    )


def test_prediction_wire_bytes_equal_the_plain_protobuf_encoding() -> None:
    probabilities = np.random.default_rng(0).dirichlet(np.ones(10), size=7).astype(np.float32)
    fast = d.ClassifyResponse()
    fast.MergeFromString(prediction_messages(1, probabilities))
    plain = d.ClassifyResponse()
    for row in probabilities:
        plain.predictions.add(label=int(row.argmax()), probabilities=row.tolist())
    assert fast == plain and fast.SerializeToString() == plain.SerializeToString()


def test_v2_health_and_metadata(stubs: Stubs, shared_server: ServerThread) -> None:
    assert stubs.v2.ServerLive(v2.ServerLiveRequest()).live
    assert stubs.v2.ServerReady(v2.ServerReadyRequest()).ready
    assert stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits")).ready
    assert stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits", version="1")).ready
    assert not stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits", version="2")).ready
    server = stubs.v2.ServerMetadata(v2.ServerMetadataRequest())
    assert server.name == "digitserve" and "execution_provider:CPUExecutionProvider" in server.extensions
    meta = stubs.v2.ModelMetadata(v2.ModelMetadataRequest(name="digits"))
    assert (meta.name, list(meta.versions), meta.platform) == ("digits", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("pixels", "FP32", [-1, 784]), ("image", "BYTES", [-1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("probabilities", "FP32", [-1, 10])]
    assert shared_server.metric("digitserve_execution_provider", provider="CPUExecutionProvider") == 1
    assert shared_server.metric("digitserve_execution_provider", provider="CUDAExecutionProvider") == 0


def test_grpc_health_reports_each_service(stubs: Stubs) -> None:
    health = health_pb2_grpc.HealthStub(stubs.channel)
    for service in ("", "digits.v1.Classifier", "inference.GRPCInferenceService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as error:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services_and_serves_their_files(stubs: Stubs) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService"),
    ]
    listed, files = list(reflection.ServerReflectionInfo(iter(requests)))
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "digits.v1.Classifier",
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
    } <= names
    assert files.file_descriptor_response.file_descriptor_proto  # grpcurl can describe the API
