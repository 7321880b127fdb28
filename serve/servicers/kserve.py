"""inference.GRPCInferenceService: the KServe V2 / Open Inference Protocol over the data plane.

The model is `pixels` FP32 [N, 784] -> `probabilities` FP32 [N, 10]; UINT8 [N, 784] pixels
(0..255) are accepted too, and so, instead of `pixels`, is `image` BYTES [N]: one encoded image
file per element, which serve/images.py decodes and prepares. Data may come as typed contents
(`bytes_contents` for `image`) or as `raw_input_contents` (Triton's BYTES layout); the
response uses the same form (raw in, raw out, as Triton's clients expect). `model_name` and
`model_version` choose the served version (empty version: the newest). Triton's model repository
extension (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) is served beside it; load
and unload only under `--model-control explicit` (serve/control.py).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import numpy as np

from digitserve import __version__
from digitserve.contract import INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.errors import InvalidInput
from digitserve.serve import v2
from digitserve.serve.control import ModelControl
from digitserve.serve.dataplane import DataPlane, deadline_of
from digitserve.serve.errors import grpc_errors
from digitserve.serve.v2 import ARTIFACT_TRAILER, SERVER_NAME, version_number
from digitserve.wire.codec import packed_float_field, packed_floats
from digitserve.wire.names import IMAGE_INPUT, PLATFORM
from digitserve.wire.proto import grpc_service_pb2 as pb
from digitserve.wire.proto import grpc_service_pb2_grpc

_FP32_CONTENTS = pb.InferTensorContents.DESCRIPTOR.fields_by_name["fp32_contents"].number


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
    return v2.uint8_values(np.array(tensor.contents.uint_contents, dtype=np.int64))


def decode_infer_request(request: pb.ModelInferRequest, images: Any = None) -> np.ndarray | Awaitable[np.ndarray]:
    """The request's `pixels` as float32 [N, 784], after checking every V2 field that matters; for
    input `image`, the awaitable of them that `images` (serve/images.py ImageDecoder) returns."""
    name = v2.check_names([tensor.name for tensor in request.inputs], [output.name for output in request.outputs])
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    if name == IMAGE_INPUT:
        return images.decode(_image_files(request, tensor, shape))
    v2.check_tensor(tensor.datatype, shape)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries; it needs one "
                "per input, and the model has one input"
            )
        if _contents_fields(tensor.contents):
            raise InvalidInput("send the data either in raw_input_contents or in the input's contents, not both")
        raw = request.raw_input_contents[0]
        v2.check_bytes("raw_input_contents[0]", len(raw), tensor.datatype, shape)
        values = np.frombuffer(raw, dtype="<f4" if tensor.datatype == "FP32" else np.uint8)
    else:
        values = _typed_values(tensor)
        v2.check_count(shape, values.size)
    return v2.to_pixels(values, tensor.datatype)


def _image_files(request: pb.ModelInferRequest, tensor: Any, shape: list[int]) -> list[bytes]:
    """Input `image`'s files, from raw_input_contents (Triton's BYTES layout) or contents.bytes_contents."""
    v2.check_image_tensor(tensor.datatype, shape)
    present = _contents_fields(tensor.contents)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(
                f"raw_input_contents has {len(request.raw_input_contents)} entries; it needs one per input, "
                f"and the request has one input, {IMAGE_INPUT!r}"
            )
        if present:
            raise InvalidInput("send the data either in raw_input_contents or in the input's contents, not both")
        return v2.image_elements("raw_input_contents[0]", request.raw_input_contents[0], shape)
    if any(name != "bytes_contents" for name in present):
        raise InvalidInput(
            f"input {IMAGE_INPUT!r} is BYTES, so its files go in contents.bytes_contents (or raw_input_contents); "
            f"got {', '.join(present)}"
        )
    v2.check_image_count(shape, len(tensor.contents.bytes_contents))
    return list(tensor.contents.bytes_contents)


def build_infer_response(request: pb.ModelInferRequest, probabilities: np.ndarray, model: Any) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=model.info.name, model_version=str(model.info.version), id=request.id)
    output = response.outputs.add(name=OUTPUT_NAME, datatype="FP32", shape=[len(probabilities), NUM_CLASSES])
    if request.raw_input_contents:
        response.raw_output_contents.append(np.ascontiguousarray(probabilities, dtype="<f4").tobytes())
    else:
        output.contents.MergeFromString(packed_float_field(_FP32_CONTENTS, probabilities.ravel()))
    return response


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService over a DataPlane, with Triton's model repository extension."""

    def __init__(self, plane: DataPlane, control: ModelControl):
        self._plane = plane
        self._control = control

    @grpc_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @grpc_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._plane.ready)

    @grpc_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=v2.model_ready(self._plane, request.name, request.version))

    @grpc_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        extensions = v2.server_extensions(self._plane.registry)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=extensions)

    @grpc_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        served = self._plane.route(request.name, version_number(request.version, "version"))
        # Its message has no free field either: the artifact (onnx, onnx-int8) goes in a trailer.
        context.set_trailing_metadata(((ARTIFACT_TRAILER, served.model.info.artifact),))
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=served.name,
            versions=[str(v) for v in self._plane.registry.versions(served.name)],
            platform=PLATFORM,
            inputs=[  # one or the other per request: V2 metadata has no way to say "alternatives"
                tensor(name=INPUT_NAME, datatype="FP32", shape=v2.INPUT_SHAPE),
                tensor(name=IMAGE_INPUT, datatype=v2.IMAGE_DATATYPE, shape=v2.IMAGE_SHAPE),
            ],
            outputs=[tensor(name=OUTPUT_NAME, datatype=v2.OUTPUT_DATATYPE, shape=v2.OUTPUT_SHAPE)],
        )

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        probabilities, model = await self._plane.infer(
            request.model_name,
            version_number(request.model_version),
            lambda: decode_infer_request(request, self._plane.images),
            deadline_of(context),
        )
        return build_infer_response(request, probabilities, model)

    # -- Triton's model repository extension ----------------------------------------------------
    @grpc_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        entries = await self._control.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name, version=str(entry.version), state=entry.state, reason=entry.reason
                )
                for entry in entries
            ]
        )

    @grpc_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self._require_explicit_control("RepositoryModelLoad")
        await self._control.load(request.model_name, _pinned_version(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        self._require_explicit_control("RepositoryModelUnload")
        await self._control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    def _require_explicit_control(self, method: str) -> None:
        v2.require_explicit_control(self._control, self._plane, method)


def _pinned_version(parameters: Any) -> int | None:
    """Our extension of RepositoryModelLoad: parameters["version"] pins one version (rollback)."""
    if "version" not in parameters:
        return None
    parameter = parameters["version"]
    choice = parameter.WhichOneof("parameter_choice")
    if choice == "int64_param" and parameter.int64_param > 0:
        return int(parameter.int64_param)
    text = parameter.string_param
    if choice == "string_param" and text.isascii() and text.isdigit() and int(text) > 0:
        return int(parameter.string_param)
    raise InvalidInput('parameters["version"] must be a version number (int64_param, or digits in string_param)')
