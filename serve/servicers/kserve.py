"""inference.GRPCInferenceService: the KServe V2 / Open Inference Protocol over the data plane.

The model is `pixels` FP32 [N, 784] -> `probabilities` FP32 [N, 10]; UINT8 [N, 784] pixels
(0..255) are accepted too. Data may come as typed contents or as `raw_input_contents`; the
response uses the same form (raw in, raw out, as Triton's clients expect).
"""

from __future__ import annotations

import math
from typing import Any

import grpc
import numpy as np

from digitserve import __version__
from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, validate_pixels
from digitserve.errors import InvalidInput
from digitserve.serve.dataplane import DataPlane, deadline_of
from digitserve.serve.errors import ModelNotFound, grpc_errors
from digitserve.wire.codec import packed_float_field, packed_floats
from digitserve.wire.names import PLATFORM
from digitserve.wire.proto import grpc_service_pb2 as pb
from digitserve.wire.proto import grpc_service_pb2_grpc

SERVER_NAME = "digitserve"
ARTIFACT_TRAILER = "digitserve-artifact"
ITEM_BYTES = {"FP32": 4, "UINT8": 1}
_FP32_CONTENTS = pb.InferTensorContents.DESCRIPTOR.fields_by_name["fp32_contents"].number


def check_model(model: Any, name: str, version: str) -> None:
    """NOT_FOUND unless (name, version) names the model in service ("" = the served version)."""
    if name != model.info.name:
        raise ModelNotFound(f"unknown model {name!r}; this server serves {model.info.name!r}")
    if version not in ("", str(model.info.version)):
        raise ModelNotFound(
            f"version {version!r} of model {name!r} is not served; the server serves version "
            f"{model.info.version} (send an empty model_version for the served one)"
        )


def _contents_fields(contents: pb.InferTensorContents) -> list[str]:
    return [field.name for field, _ in contents.ListFields()]


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> np.ndarray:
    expected = "fp32_contents" if tensor.datatype == "FP32" else "uint_contents"
    present = _contents_fields(tensor.contents)
    if any(name != expected for name in present):
        raise InvalidInput(
            f"input {INPUT_NAME!r} is {tensor.datatype}, so its data goes in contents.{expected} "
            f"(or raw_input_contents); got {', '.join(present)}"
        )
    if tensor.datatype == "FP32":
        values = packed_floats(tensor.contents.SerializeToString(), _FP32_CONTENTS)
        return values if values is not None else np.array(tensor.contents.fp32_contents, np.float32)
    ints = np.array(tensor.contents.uint_contents, dtype=np.int64)
    if ints.size and ints.max() > 255:
        raise InvalidInput(f"UINT8 pixel values must lie in 0..255; got max {int(ints.max())}")
    return ints.astype(np.uint8)


def decode_infer_request(request: pb.ModelInferRequest, model: Any) -> np.ndarray:
    """The request's `pixels` as float32 [N, 784], after checking every V2 field that matters."""
    check_model(model, request.model_name, request.model_version)
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT_NAME]:
        raise InvalidInput(f"expected exactly one input {INPUT_NAME!r} (FP32 [N, {IMAGE_SIZE}]); got {names or 'none'}")
    for output in request.outputs:
        if output.name != OUTPUT_NAME:
            raise InvalidInput(f"unknown output {output.name!r}; the model's output is {OUTPUT_NAME!r}")
    tensor = request.inputs[0]
    if tensor.datatype not in ITEM_BYTES:
        raise InvalidInput(
            f"input {INPUT_NAME!r} has datatype {tensor.datatype or 'unset'!r}; send FP32 (0..1) or UINT8 (0..255)"
        )
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != IMAGE_SIZE or shape[0] < 0:
        raise InvalidInput(
            f"input {INPUT_NAME!r} must have shape [N, {IMAGE_SIZE}] (N images of 28x28 pixels); got {shape}"
        )
    if shape[0] == 0:
        raise InvalidInput("empty batch: shape [0, 784]; send at least one image")
    count = math.prod(shape)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries; it needs one "
                "per input, and the model has one input"
            )
        if _contents_fields(tensor.contents):
            raise InvalidInput("send the data either in raw_input_contents or in the input's contents, not both")
        raw = request.raw_input_contents[0]
        needed = count * ITEM_BYTES[tensor.datatype]
        if len(raw) != needed:
            raise InvalidInput(
                f"raw_input_contents[0] holds {len(raw)} bytes; shape {shape} {tensor.datatype} needs {needed}"
            )
        values = np.frombuffer(raw, dtype="<f4" if tensor.datatype == "FP32" else np.uint8)
    else:
        values = _typed_values(tensor)
        if values.size != count:
            raise InvalidInput(
                f"input {INPUT_NAME!r} has shape {shape} ({count} values) but carries {values.size} values"
            )
    if tensor.datatype == "UINT8":
        return values.astype(np.float32).reshape(-1, IMAGE_SIZE) / np.float32(255.0)
    return validate_pixels(values)


def build_infer_response(request: pb.ModelInferRequest, probabilities: np.ndarray, model: Any) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model.info.name, model_version=str(model.info.version), id=request.id)
    output = response.outputs.add(name=OUTPUT_NAME, datatype="FP32", shape=[len(probabilities), NUM_CLASSES])
    if request.raw_input_contents:
        response.raw_output_contents.append(np.ascontiguousarray(probabilities, dtype="<f4").tobytes())
    else:
        output.contents.MergeFromString(packed_float_field(_FP32_CONTENTS, probabilities.ravel()))
    return response


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over a DataPlane."""

    def __init__(self, plane: DataPlane):
        self._plane = plane

    @grpc_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready)

    @grpc_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        model = self._plane.model
        if model is None:
            return pb.ModelReadyResponse(ready=False)
        if request.name != model.info.name:
            raise ModelNotFound(f"unknown model {request.name!r}; this server serves {model.info.name!r}")
        served = request.version in ("", str(model.info.version))
        return pb.ModelReadyResponse(ready=served and self._plane.ready)

    @grpc_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        model = self._plane.model
        # V2 has no field for the execution device or the artifact: extension-style entries.
        extensions = ([f"execution_provider:{model.info.provider}", f"artifact:{model.info.artifact}"]
                      if model is not None else [])
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=extensions)

    @grpc_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        model = self._plane.require_model()
        check_model(model, request.name, request.version)
        # Its message has no free field either: the artifact (onnx, onnx-int8) goes in a trailer.
        context.set_trailing_metadata(((ARTIFACT_TRAILER, model.info.artifact),))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=model.info.name,
            versions=[str(model.info.version)],
            platform=PLATFORM,
            inputs=[tensor(name=INPUT_NAME, datatype="FP32", shape=[-1, IMAGE_SIZE])],
            outputs=[tensor(name=OUTPUT_NAME, datatype="FP32", shape=[-1, NUM_CLASSES])],
        )

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        probabilities, model = await self._plane.infer(
            lambda pinned: decode_infer_request(request, pinned), deadline_of(context)
        )
        return build_infer_response(request, probabilities, model)
