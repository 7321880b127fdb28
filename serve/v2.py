"""The KServe V2 rules that the gRPC and HTTP/REST bindings share, so that both say the same thing.

Each binding reads its own encoding (protobuf fields; JSON text and Triton's binary tensors) and
hands what it read to these checks: the one input (`pixels`, or `image`: BYTES, one encoded
image file per element) and output, the datatype, the shape, the count of values, the size of
binary data, the UINT8 range and the float pixel contract, the version string, whether a model
is ready, the server metadata's extensions, and the guard of explicit model control. A message
written here reaches the client unchanged over either protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, validate_pixels
from digitserve.errors import InvalidInput
from digitserve.serve.errors import ControlDisabled, NotReady
from digitserve.wire.codec import unpack_bytes_elements
from digitserve.wire.names import IMAGE_INPUT

SERVER_NAME = "digitserve"
ITEM_BYTES = {"FP32": 4, "UINT8": 1}
"""The input datatypes accepted, with their size in bytes."""
INPUT_SHAPE = [-1, IMAGE_SIZE]
OUTPUT_SHAPE = [-1, NUM_CLASSES]
OUTPUT_DATATYPE = "FP32"
IMAGE_DATATYPE = "BYTES"
IMAGE_SHAPE = [-1]
"""Input `image`, the alternative to `pixels`: [N] (also [N, 1]) encoded image files."""
INPUTS = f"{INPUT_NAME!r} (FP32 [N, {IMAGE_SIZE}]) or {IMAGE_INPUT!r} (BYTES [N], one encoded image file each)"
ARTIFACT_TRAILER = "digitserve-artifact"
"""The gRPC trailer (and HTTP header) of ModelMetadata naming the artifact served: V2 has no field for it."""


def version_number(text: str, field: str = "model_version") -> int | None:
    """A V2 version string as an integer; "" (the newest served) is None."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):  # str.isdigit takes '²', which int() refuses
        raise InvalidInput(f"{field} {text!r} is not a version number: send digits such as \"3\", or leave it empty")
    return int(text)


def check_names(inputs: Sequence[str], outputs: Sequence[str]) -> str:
    """The one input's name, `pixels` or `image`; outputs, if named, only `probabilities`."""
    if sorted(inputs) == sorted([INPUT_NAME, IMAGE_INPUT]):
        raise InvalidInput(
            f"send either input {INPUT_NAME!r} or input {IMAGE_INPUT!r}, not both: a request carries one kind of input"
        )
    if len(inputs) != 1 or inputs[0] not in (INPUT_NAME, IMAGE_INPUT):
        raise InvalidInput(f"expected exactly one input {INPUTS}; got {list(inputs) or 'none'}")
    for name in outputs:
        if name != OUTPUT_NAME:
            raise InvalidInput(f"unknown output {name!r}; the model's output is {OUTPUT_NAME!r}")
    return inputs[0]


def check_image_tensor(datatype: str, shape: Sequence[int]) -> int:
    """The number of files that input `image` of this datatype and shape carries, once both are right."""
    if datatype != IMAGE_DATATYPE:
        raise InvalidInput(
            f"input {IMAGE_INPUT!r} has datatype {datatype or 'unset'!r}; it carries encoded image files: send "
            f"{IMAGE_DATATYPE}, one file per element (or send pixels as input {INPUT_NAME!r})"
        )
    shape = list(shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise InvalidInput(f"input {IMAGE_INPUT!r} must have shape [N] (or [N, 1]): N image files; got {shape}")
    return shape[0]


def image_elements(what: str, raw: bytes, shape: Sequence[int]) -> list[bytes]:
    """The files of `image` binary data (`what` names it) in Triton's BYTES layout, as many as `shape` says."""
    try:
        files = unpack_bytes_elements(raw)
    except ValueError as exc:
        raise InvalidInput(
            f"{what} is not in the BYTES layout (each element a 4-byte little-endian length, then its bytes): {exc}"
        ) from None
    check_image_count(shape, len(files))
    return files


def check_image_count(shape: Sequence[int], carried: int) -> None:
    if carried != shape[0]:
        raise InvalidInput(
            f"input {IMAGE_INPUT!r} has shape {list(shape)} ({shape[0]} files) but carries {carried}"
        )


def check_tensor(datatype: str, shape: Sequence[int]) -> int:
    """The number of values that `pixels` of this datatype and shape carries, once both are right."""
    if datatype not in ITEM_BYTES:
        raise InvalidInput(
            f"input {INPUT_NAME!r} has datatype {datatype or 'unset'!r}; send FP32 (0..1) or UINT8 (0..255)"
        )
    shape = list(shape)
    if len(shape) != 2 or shape[1] != IMAGE_SIZE or shape[0] < 0:
        raise InvalidInput(
            f"input {INPUT_NAME!r} must have shape [N, {IMAGE_SIZE}] (N images of 28x28 pixels); got {shape}"
        )
    if shape[0] == 0:
        raise InvalidInput("empty batch: shape [0, 784]; send at least one image")
    return math.prod(shape)


def check_bytes(what: str, size: int, datatype: str, shape: Sequence[int]) -> None:
    """Binary data (`what` holds `size` bytes) must be exactly what shape x datatype needs."""
    needed = math.prod(shape) * ITEM_BYTES[datatype]
    if size != needed:
        raise InvalidInput(f"{what} holds {size} bytes; shape {list(shape)} {datatype} needs {needed}")


def check_count(shape: Sequence[int], carried: int) -> None:
    count = math.prod(shape)
    if carried != count:
        raise InvalidInput(
            f"input {INPUT_NAME!r} has shape {list(shape)} ({count} values) but carries {carried} values"
        )


def uint8_values(ints: np.ndarray) -> np.ndarray:
    """Integer pixel values as uint8, once each lies in 0..255."""
    if ints.size:
        low, high = int(ints.min()), int(ints.max())
        if low < 0 or high > 255:
            got = f"min {low}, max {high}" if low < 0 else f"max {high}"
            raise InvalidInput(f"UINT8 pixel values must lie in 0..255; got {got}")
    return ints.astype(np.uint8)


def to_pixels(values: np.ndarray, datatype: str) -> np.ndarray:
    """Float32 [N, 784] in [0, 1]: UINT8 values divided by 255, FP32 values checked against the contract."""
    if datatype == "UINT8":
        return values.astype(np.float32).reshape(-1, IMAGE_SIZE) / np.float32(255.0)
    return validate_pixels(values)


def model_ready(plane: Any, name: str, version_text: str) -> bool:
    """ModelReady: False while the server is not ready or the version is not served; NOT_FOUND for
    a model that is not served at all (as Triton answers)."""
    if not plane.ready:
        return False
    served = plane.registry.resolve(name, None)
    version = version_number(version_text, "version")
    return version is None or version in plane.registry.versions(served.name)


def server_extensions(registry: Any, *protocol: str) -> list[str]:
    """ServerMetadata.extensions: Triton's model repository, the binding's own (`protocol`), and
    extension-style entries for what V2 has no field for (the execution device, the artifact)."""
    extensions = ["model_repository", *protocol]
    models = list(registry)
    if models:
        info = models[0].model.info
        extensions += [f"execution_provider:{info.provider}", f"artifact:{info.artifact}"]
    return extensions


def require_explicit_control(control: Any, plane: Any, method: str) -> None:
    """Load and unload by call only under --model-control explicit, and only while the server is ready."""
    if not control.explicit:
        raise ControlDisabled(
            f"{method} is off: this server follows its repository (--model-control poll); start it with "
            "--model-control explicit to load and unload models by call"
        )
    if not plane.ready:
        raise NotReady("the server is starting or shutting down; retry once it is ready")
