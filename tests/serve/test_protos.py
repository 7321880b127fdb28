"""The committed stubs match protos/, and the V2 proto keeps the public protocol's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from digitserve.wire.proto import digits_pb2, generate
from digitserve.wire.proto import grpc_service_pb2 as v2

PROTO_PACKAGE = Path(generate.__file__).parent


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generate.generated_names())
    stale = [p.name for p in written if p.read_bytes() != (PROTO_PACKAGE / p.name).read_bytes()]
    assert not stale, (
        f"stale generated stubs {stale}: run `python -m digitserve.wire.proto.generate` and commit the result"
    )


def test_generated_imports_are_package_relative() -> None:
    for name in generate.generated_names():
        text = (PROTO_PACKAGE / name).read_text()
        assert "from digits.v1" not in text and "import inference." not in text, name


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (v2.ModelInferRequest, "model_name", 1),
        (v2.ModelInferRequest, "model_version", 2),
        (v2.ModelInferRequest, "id", 3),
        (v2.ModelInferRequest, "parameters", 4),
        (v2.ModelInferRequest, "inputs", 5),
        (v2.ModelInferRequest, "outputs", 6),
        (v2.ModelInferRequest, "raw_input_contents", 7),
        (v2.ModelInferRequest.InferInputTensor, "contents", 5),
        (v2.ModelInferResponse, "outputs", 5),
        (v2.ModelInferResponse, "raw_output_contents", 6),
        (v2.InferTensorContents, "uint_contents", 4),
        (v2.InferTensorContents, "fp32_contents", 6),
        (v2.InferTensorContents, "bytes_contents", 8),
        (v2.InferParameter, "string_param", 3),
        (v2.ModelMetadataResponse, "outputs", 5),
        (v2.ModelMetadataResponse.TensorMetadata, "shape", 3),
        (v2.ServerMetadataResponse, "extensions", 3),
        (v2.ModelReadyRequest, "version", 2),
    ],
)
def test_v2_field_numbers_match_the_public_protocol(message: type, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_service_names() -> None:
    assert v2.DESCRIPTOR.package == "inference"
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    classifier = digits_pb2.DESCRIPTOR.services_by_name["Classifier"]
    assert classifier.full_name == "digits.v1.Classifier"
    stream = classifier.methods_by_name["ClassifyStream"]
    assert stream.client_streaming and stream.server_streaming
