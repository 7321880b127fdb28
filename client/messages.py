"""Pixels to request messages and response messages to numpy, for both APIs (the client's codec).

Encodings (how the pixels travel):
- "float32":    digits.v1 `float32` (packed repeated float) / V2 FP32 typed `fp32_contents`
                or `raw_input_contents` (the V2 default, as Triton's clients send);
- "float32_le": digits.v1 `float32_le` bytes (the cheapest float form to build and parse);
                over V2 it is the same as "float32" with raw_input_contents;
- "uint8":      digits.v1 `uint8` bytes / V2 UINT8 [N, 784]: a quarter of the bytes.

Pixel arrays: [N, 784], [784], [N, 28, 28], [28, 28] or [N, 28, 28, 1]. Float arrays are the
contract's 0..1 values; uint8 arrays are raw 0..255 pixels, divided by 255 for a float encoding
and sent as they are for "uint8"; float pixels sent as "uint8" are rounded to 0..255. Range and
shape are the server's to check (its messages say what to fix); the client only refuses what
it cannot encode.

Image files (`classify_images`): encoded files (PNG, JPEG, BMP, GIF, WebP) sent as they are, for
the server to decode and prepare as `digitserve classify` prepares files locally: digits.v1
`images.files`, V2 input `image` BYTES [N] (one file per element; raw_input_contents in Triton's
layout of 4-byte little-endian lengths, or typed `bytes_contents`). No Pillow is needed.

Routing: digits.v1 names the model in ClassifyRequest.model / .version (empty / 0: the server's
default model, its newest version); V2 in ModelInferRequest.model_name / .model_version (a
decimal string, empty for the newest). The model repository calls (index, load, unload) are
built and read here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from digitserve.client.errors import ClientError, local_invalid
from digitserve.contract import IMAGE_SIDE, IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.wire.codec import pack_bytes_elements, packed_float_field, packed_floats
from digitserve.wire.names import IMAGE_INPUT
from digitserve.wire.proto import digits_pb2
from digitserve.wire.proto import grpc_service_pb2 as v2

_FP32_CONTENTS = v2.InferTensorContents.DESCRIPTOR.fields_by_name["fp32_contents"].number


@dataclass(frozen=True)
class Classification:
    """The answer for one request: per image its label and probabilities, and who answered."""

    labels: np.ndarray
    """int64 [N]: the most probable digit of each image."""
    probabilities: np.ndarray
    """float32 [N, 10]: class probabilities for digits 0..9, rows summing to 1."""
    model_name: str
    model_version: int

    def __len__(self) -> int:
        return len(self.labels)


def to_batch(pixels: Any) -> np.ndarray:
    """The pixels as a 2-D [N, values] array (one image per row) without judging its size."""
    array = np.asarray(pixels)
    if array.ndim >= 2 and array.shape[-2:] == (IMAGE_SIDE, IMAGE_SIDE):
        return array.reshape(-1, IMAGE_SIZE)
    if array.ndim >= 3 and array.shape[-3:] == (IMAGE_SIDE, IMAGE_SIDE, 1):
        return array.reshape(-1, IMAGE_SIZE)
    if array.ndim == 1:
        return array.reshape(-1, IMAGE_SIZE) if array.size and array.size % IMAGE_SIZE == 0 else array.reshape(1, -1)
    if array.ndim == 0:
        return array.reshape(1, 1)
    return array.reshape(array.shape[0], int(np.prod(array.shape[1:])))


def encode_float32(batch: np.ndarray) -> np.ndarray:
    """Little-endian float32 values; uint8 pixels (0..255) are divided by 255."""
    if batch.dtype == np.uint8:
        return (batch.astype(np.float32) / np.float32(255.0)).astype("<f4")
    if batch.dtype.kind not in "fiub":
        raise local_invalid(f"pixels must be numbers (float 0..1 or uint8 0..255); got dtype {batch.dtype}")
    return np.ascontiguousarray(batch, dtype="<f4")


def encode_uint8(batch: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255: integers as they are, floats in [0, 1] scaled by 255 and rounded."""
    if batch.dtype == np.uint8:
        return np.ascontiguousarray(batch)
    if batch.dtype.kind in "iub":
        if batch.size and (batch.min() < 0 or batch.max() > 255):
            raise local_invalid(
                f"uint8 encoding carries 0..255; got integers from {batch.min()} to {batch.max()}"
            )
        return batch.astype(np.uint8)
    if batch.dtype.kind != "f":
        raise local_invalid(f"pixels must be numbers (float 0..1 or uint8 0..255); got dtype {batch.dtype}")
    if batch.size and (not np.isfinite(batch).all() or batch.min() < 0.0 or batch.max() > 1.0):
        raise local_invalid(
            "uint8 encoding needs float pixels in [0, 1] (they are scaled by 255) or uint8 0..255; "
            f"got values from {np.nanmin(batch):g} to {np.nanmax(batch):g}"
        )
    return np.rint(batch.astype(np.float32) * np.float32(255.0)).astype(np.uint8)


def digits_request(
    batch: np.ndarray, encoding: str, packed_output: bool, model: str = "", version: int = 0
) -> digits_pb2.ClassifyRequest:
    """A digits.v1 ClassifyRequest for a 2-D batch, for `model` version `version` ("" / 0: the default)."""
    output = digits_pb2.OUTPUT_FORMAT_PACKED if packed_output else digits_pb2.OUTPUT_FORMAT_PREDICTIONS
    request = digits_pb2.ClassifyRequest(output_format=output, model=model, version=version)
    if encoding == "uint8":
        request.uint8 = encode_uint8(batch).tobytes()
    elif encoding == "float32_le":
        request.float32_le = encode_float32(batch).tobytes()
    else:
        # proto3 packs repeated floats: building the field's wire bytes with numpy is exact and
        # about 20 times faster than extending the field value by value.
        request.float32.MergeFromString(packed_float_field(1, encode_float32(batch).ravel()))
    return request


def image_files(files: Any) -> list[bytes]:
    """The encoded files as a list of bytes; refuses what is not a sequence of bytes-like objects."""
    if isinstance(files, (bytes, bytearray, memoryview, str)) or not hasattr(files, "__iter__"):
        raise local_invalid(
            f"classify_images takes a sequence of image files' bytes (e.g. [Path('7.png').read_bytes()]); "
            f"got {type(files).__name__}"
        )
    found = list(files)
    for index, file in enumerate(found):
        if not isinstance(file, (bytes, bytearray, memoryview)):
            raise local_invalid(
                f"image {index} is a {type(file).__name__}, not the bytes of an image file "
                "(read it with Path.read_bytes())"
            )
    return [bytes(file) for file in found]


def digits_images_request(
    files: list[bytes], packed_output: bool, model: str = "", version: int = 0
) -> digits_pb2.ClassifyRequest:
    """A digits.v1 ClassifyRequest carrying encoded image files (`images`)."""
    output = digits_pb2.OUTPUT_FORMAT_PACKED if packed_output else digits_pb2.OUTPUT_FORMAT_PREDICTIONS
    return digits_pb2.ClassifyRequest(
        images=digits_pb2.EncodedImages(files=files), output_format=output, model=model, version=version
    )


def v2_images_request(files: list[bytes], raw: bool, model_name: str, model_version: str) -> v2.ModelInferRequest:
    """A KServe V2 ModelInferRequest: input `image` BYTES [N], one encoded file per element."""
    request = v2.ModelInferRequest(model_name=model_name, model_version=model_version)
    request.outputs.add(name=OUTPUT_NAME)
    tensor = request.inputs.add(name=IMAGE_INPUT, datatype="BYTES", shape=[len(files)])
    if raw:
        request.raw_input_contents.append(pack_bytes_elements(files))
    else:
        tensor.contents.bytes_contents.extend(files)
    return request


def digits_result(response: digits_pb2.ClassifyResponse) -> Classification:
    if response.packed_probabilities or response.packed_labels:
        probabilities = np.frombuffer(response.packed_probabilities, dtype="<f4").reshape(-1, NUM_CLASSES)
        labels = np.frombuffer(response.packed_labels, dtype=np.uint8).astype(np.int64)
    else:
        probabilities = np.array([p.probabilities for p in response.predictions], dtype=np.float32)
        probabilities = probabilities.reshape(-1, NUM_CLASSES)
        labels = np.array([p.label for p in response.predictions], dtype=np.int64)
    return Classification(labels, probabilities, response.model_name, int(response.model_version))


def v2_request(
    batch: np.ndarray, encoding: str, raw: bool, model_name: str, model_version: str
) -> v2.ModelInferRequest:
    """A KServe V2 ModelInferRequest: input `pixels` [N, 784] FP32 (or UINT8), output `probabilities`."""
    request = v2.ModelInferRequest(model_name=model_name, model_version=model_version)
    request.outputs.add(name=OUTPUT_NAME)
    uint8 = encoding == "uint8"
    values = encode_uint8(batch) if uint8 else encode_float32(batch)
    tensor = request.inputs.add(name=INPUT_NAME, datatype="UINT8" if uint8 else "FP32", shape=list(batch.shape))
    if raw or encoding == "float32_le":
        request.raw_input_contents.append(values.tobytes())
    elif uint8:
        tensor.contents.uint_contents.extend(values.ravel().tolist())
    else:
        tensor.contents.MergeFromString(packed_float_field(_FP32_CONTENTS, values.ravel()))
    return request


def v2_result(response: v2.ModelInferResponse) -> Classification:
    names = [output.name for output in response.outputs]
    if OUTPUT_NAME not in names:
        message = f"the server's response has no output {OUTPUT_NAME!r} (outputs: {names})"
        raise ClientError(message, grpc.StatusCode.INTERNAL, message)
    index = names.index(OUTPUT_NAME)
    output = response.outputs[index]
    if response.raw_output_contents:
        probabilities = np.frombuffer(response.raw_output_contents[index], dtype="<f4")
    else:
        found = packed_floats(output.contents.SerializeToString(), _FP32_CONTENTS)
        probabilities = found if found is not None else np.array(output.contents.fp32_contents, dtype=np.float32)
    probabilities = probabilities.reshape(-1, NUM_CLASSES)
    labels = np.argmax(probabilities, axis=1).astype(np.int64)
    text = response.model_version
    version = int(text) if text.isascii() and text.isdigit() else -1
    return Classification(labels, probabilities, response.model_name, version)


def check_version(version: int | None) -> int | None:
    """A model version as given by a caller: None or a whole number >= 0 (0, like None: the newest)."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ClientError(f"a model version is a whole number >= 1 (0 or None: the newest); got {version!r}")
    return int(version)


def repository_index_request(ready: bool) -> v2.RepositoryIndexRequest:
    return v2.RepositoryIndexRequest(ready=ready)


def repository_index_result(response: v2.RepositoryIndexResponse) -> list[dict[str, str]]:
    """One dict per entry, in the server's order: name, version (a string, may be empty), state, reason."""
    return [
        {"name": entry.name, "version": entry.version, "state": entry.state, "reason": entry.reason}
        for entry in response.models
    ]


def load_request(name: str, version: int | None) -> v2.RepositoryModelLoadRequest:
    """RepositoryModelLoad for `name`; a version travels as parameters["version"] (int64_param),
    digitserve's way of pinning one (without it the server loads the newest)."""
    request = v2.RepositoryModelLoadRequest(model_name=name)
    if version:
        request.parameters["version"].int64_param = version
    return request


def unload_request(name: str) -> v2.RepositoryModelUnloadRequest:
    return v2.RepositoryModelUnloadRequest(model_name=name)
