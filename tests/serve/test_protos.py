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
        # the model repository extension (Triton's grpc_service.proto)
        (v2.ModelRepositoryParameter, "bool_param", 1),
        (v2.ModelRepositoryParameter, "int64_param", 2),
        (v2.ModelRepositoryParameter, "string_param", 3),
        (v2.ModelRepositoryParameter, "bytes_param", 4),
        (v2.RepositoryIndexRequest, "repository_name", 1),
        (v2.RepositoryIndexRequest, "ready", 2),
        (v2.RepositoryIndexResponse, "models", 1),
        (v2.RepositoryIndexResponse.ModelIndex, "name", 1),
        (v2.RepositoryIndexResponse.ModelIndex, "version", 2),
        (v2.RepositoryIndexResponse.ModelIndex, "state", 3),
        (v2.RepositoryIndexResponse.ModelIndex, "reason", 4),
        (v2.RepositoryModelLoadRequest, "repository_name", 1),
        (v2.RepositoryModelLoadRequest, "model_name", 2),
        (v2.RepositoryModelLoadRequest, "parameters", 3),
        (v2.RepositoryModelUnloadRequest, "repository_name", 1),
        (v2.RepositoryModelUnloadRequest, "model_name", 2),
        (v2.RepositoryModelUnloadRequest, "parameters", 3),
    ],
)
def test_v2_field_numbers_match_the_public_protocol(message: type, field: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_repository_messages_have_tritons_shape() -> None:
    assert {f.name for f in v2.ModelRepositoryParameter.DESCRIPTOR.oneofs_by_name["parameter_choice"].fields} == {
        "bool_param", "int64_param", "string_param", "bytes_param"
    }
    for request in (v2.RepositoryModelLoadRequest, v2.RepositoryModelUnloadRequest):
        entry = request.DESCRIPTOR.fields_by_name["parameters"].message_type
        assert entry.GetOptions().map_entry
        assert entry.fields_by_name["value"].message_type.name == "ModelRepositoryParameter"
    assert not v2.RepositoryModelLoadResponse.DESCRIPTOR.fields
    assert not v2.RepositoryModelUnloadResponse.DESCRIPTOR.fields
    service = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method, request, response in [
        ("RepositoryIndex", "RepositoryIndexRequest", "RepositoryIndexResponse"),
        ("RepositoryModelLoad", "RepositoryModelLoadRequest", "RepositoryModelLoadResponse"),
        ("RepositoryModelUnload", "RepositoryModelUnloadRequest", "RepositoryModelUnloadResponse"),
    ]:
        found = service.methods_by_name[method]
        assert found.input_type.full_name == f"inference.{request}"
        assert found.output_type.full_name == f"inference.{response}"
        assert not (found.client_streaming or found.server_streaming)


def test_classify_request_routes_by_model_and_version() -> None:
    fields = digits_pb2.ClassifyRequest.DESCRIPTOR.fields_by_name
    assert (fields["model"].number, fields["model"].type) == (6, fields["model"].TYPE_STRING)
    assert (fields["version"].number, fields["version"].type) == (7, fields["version"].TYPE_INT64)
    assert fields["model"].containing_oneof is None and fields["version"].containing_oneof is None
    # absent means the server's default: an old client's request reads as model "" and version 0
    old = digits_pb2.ClassifyRequest(uint8=bytes(784), request_id="r").SerializeToString()
    parsed = digits_pb2.ClassifyRequest.FromString(old)
    assert (parsed.model, parsed.version) == ("", 0)


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
