"""The V2 inference request and response as HTTP bodies: JSON, and Triton's binary tensor extension.

A request body is a JSON object, optionally followed by binary tensor data: then the header
`Inference-Header-Content-Length` gives the JSON's length, and each input sent that way says
its size in `parameters.binary_data_size` (the data follow in the order of the inputs). The
response is JSON too; its output is binary (after the JSON, with the same header) when the request
asks for it, per output (`outputs[].parameters.binary_data`) or for all (`parameters.binary_data_output`),
as tritonclient.http does by default. `parse_infer` reads the envelope (framing, JSON, id,
parameters, outputs) before the call is routed; `InferRequest.pixels` checks and decodes the input
inside the data plane's call, with the rules and messages gRPC uses (serve/v2.py). Input `image`
(BYTES, encoded image files) comes as binary data in Triton's BYTES layout (each element a
4-byte little-endian length, then its bytes), or in "data" as base64 strings: V2's JSON BYTES
are text, an image file is not, and base64 is how MLServer (`parameters.content_type:
"base64"`, accepted and implied) and TF Serving (`{"b64": ...}`) carry binary in JSON.

Written by hand because no library does it on the server side: tritonclient is a client only;
MLServer's and KServe's codecs come inside their own servers, as pydantic models of every V2 type,
which build a Python object per value of a 784-value image where numpy reads the list in one call;
and the format is a JSON object plus a byte offset, with only the checks of one model to make.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from digitserve.contract import INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.errors import InvalidInput
from digitserve.serve import v2
from digitserve.wire.names import IMAGE_INPUT

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
EXAMPLE = '{"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 784], "data": [...]}]}'
BASE64 = "base64"
"""MLServer's parameters.content_type for BYTES elements sent as base64 strings: how `image` files travel in JSON."""
UNSUPPORTED_OUTPUT_PARAMETERS = {
    "classification": "the output is the 10 probabilities; the label is their argmax",
    "shared_memory_region": "send the output inline (JSON or binary)",
}


@dataclass
class InferRequest:
    """A V2 inference request whose envelope has been read; its input is decoded by `pixels`."""

    header: dict[str, Any]
    binary: memoryview
    """The bytes after the JSON header (Triton's binary tensor data), empty when there are none."""
    id: str = ""
    binary_output: bool = False
    deadline: float | None = None
    """A time.monotonic() instant, from Triton's parameters.timeout (microseconds); None: none."""
    output_names: list[str] = field(default_factory=list)

    def pixels(self, images: Any = None) -> np.ndarray | Awaitable[np.ndarray]:
        """The input `pixels` as float32 [N, 784], after the checks gRPC makes (serve/v2.py); for
        input `image`, the awaitable of them that `images` (serve/images.py ImageDecoder) returns."""
        inputs = _list_of_objects(self.header.get("inputs", []), "inputs")
        name = v2.check_names([str(tensor.get("name", "")) for tensor in inputs], self.output_names)
        tensor = inputs[0]
        datatype = tensor.get("datatype", "")
        shape = tensor.get("shape")
        example = '"BYTES"' if name == IMAGE_INPUT else '"FP32"'
        if not isinstance(datatype, str):
            raise InvalidInput(f"input {name!r} datatype must be a string such as {example}; got {datatype!r}")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
            example = "[1]" if name == IMAGE_INPUT else "[1, 784]"
            raise InvalidInput(f"input {name!r} shape must be a list of integers such as {example}; got {shape!r}")
        if name == IMAGE_INPUT:
            return images.decode(self._image_files(tensor, datatype, shape))
        count = v2.check_tensor(datatype, shape)
        size = _parameters(tensor, f"input {INPUT_NAME!r}").get("binary_data_size")
        if size is not None:
            values = self._binary_values(tensor, size, datatype, shape)
        elif self.binary:
            raise InvalidInput(
                f"the body carries {len(self.binary)} bytes after its JSON header, but input {INPUT_NAME!r} has "
                "no parameters.binary_data_size: give it, or send the data in \"data\""
            )
        elif "data" not in tensor:
            raise InvalidInput(
                f"input {INPUT_NAME!r} carries no data: put its {count} values in \"data\" (flat, row-major, or "
                f"nested as the shape), or send them as binary with parameters.binary_data_size"
            )
        else:
            values = _json_values(tensor["data"], datatype, shape)
            v2.check_count(shape, values.size)
        return v2.to_pixels(values, datatype)

    def _binary_values(self, tensor: dict[str, Any], size: Any, datatype: str, shape: list[int]) -> np.ndarray:
        def check(size: int) -> None:
            v2.check_bytes(f"input {INPUT_NAME!r} (parameters.binary_data_size)", size, datatype, shape)

        data = self._binary(tensor, size, INPUT_NAME, check)
        return np.frombuffer(data, dtype="<f4" if datatype == "FP32" else np.uint8)

    def _binary(
        self, tensor: dict[str, Any], size: Any, name: str, check: Callable[[int], None] | None = None
    ) -> memoryview:
        """The binary data of input `name`, once `parameters.binary_data_size` and the body agree."""
        if "data" in tensor:
            raise InvalidInput(
                f"input {name!r} has both \"data\" and parameters.binary_data_size: send the data one way"
            )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input {name!r} parameters.binary_data_size must be a byte count; got {size!r}")
        if check is not None:
            check(size)
        if len(self.binary) != size:
            raise InvalidInput(
                f"the body carries {len(self.binary)} bytes after its JSON header ({HEADER_LENGTH}), "
                f"but input {name!r} says binary_data_size {size}"
            )
        return self.binary

    def _image_files(self, tensor: dict[str, Any], datatype: str, shape: list[int]) -> list[bytes]:
        """Input `image`'s files: binary data in Triton's BYTES layout, or base64 strings in "data"."""
        v2.check_image_tensor(datatype, shape)
        parameters = _parameters(tensor, f"input {IMAGE_INPUT!r}")
        content_type = parameters.get("content_type", BASE64)
        if content_type != BASE64:
            raise InvalidInput(
                f"input {IMAGE_INPUT!r} parameters.content_type {content_type!r} is not supported: its files travel "
                f"as base64 strings in \"data\" (content_type {BASE64!r}, the default) or as binary data"
            )
        size = parameters.get("binary_data_size")
        if size is not None:
            raw = bytes(self._binary(tensor, size, IMAGE_INPUT))
            return v2.image_elements(f"input {IMAGE_INPUT!r}'s binary data", raw, shape)
        if self.binary:
            raise InvalidInput(
                f"the body carries {len(self.binary)} bytes after its JSON header, but input {IMAGE_INPUT!r} has "
                "no parameters.binary_data_size: give it, or send the files base64-encoded in \"data\""
            )
        if "data" not in tensor:
            raise InvalidInput(
                f"input {IMAGE_INPUT!r} carries no data: put its files in \"data\" as base64 strings, or send them "
                "as binary data (each a 4-byte little-endian length, then the file) with parameters.binary_data_size"
            )
        return _base64_files(tensor["data"], shape)


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """Split the body into its JSON header and binary data, and read the request's envelope."""
    view = memoryview(body)
    if header_length is None:
        split = len(body)
    elif header_length.strip().isascii() and header_length.strip().isdigit() and int(header_length) <= len(body):
        split = int(header_length)
    else:
        raise InvalidInput(
            f"{HEADER_LENGTH} {header_length!r} must be the byte length of the JSON header, at most the "
            f"body's {len(body)} bytes"
        )
    text = body if split == len(body) else bytes(view[:split])
    header = parse_object(text, "a V2 inference request", EXAMPLE, binary_hint=header_length is None)
    binary = view[split:]
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInput(f"id must be a string; got {request_id!r}")
    parameters = _parameters(header, "the request")
    binary_all = _flag(parameters, "binary_data_output", "the request's parameters")
    outputs = _list_of_objects(header.get("outputs", []), "outputs")
    names = [str(output.get("name", "")) for output in outputs]
    binary_output = binary_all
    for output, name in zip(outputs, names, strict=True):
        options = _parameters(output, f"output {name!r}")
        for option, hint in UNSUPPORTED_OUTPUT_PARAMETERS.items():
            if option in options:
                raise InvalidInput(f"output parameter {option!r} is not supported: {hint}")
        if "binary_data" in options:
            binary_output = _flag(options, "binary_data", f"output {name!r} parameters")
    return InferRequest(header, binary, request_id, binary_output, _deadline(parameters), names)


def encode_infer(request: InferRequest, probabilities: np.ndarray, model: Any) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or JSON then the probabilities as binary."""
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": v2.OUTPUT_DATATYPE,
                              "shape": [len(probabilities), NUM_CLASSES]}
    raw = b""
    if request.binary_output:
        raw = np.ascontiguousarray(probabilities, dtype="<f4").tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = probabilities.ravel().tolist()
    response: dict[str, Any] = {"model_name": model.info.name, "model_version": str(model.info.version)}
    if request.id:
        response["id"] = request.id
    response["outputs"] = [output]
    header = dumps(response)
    if not raw:
        return header, {"content-type": JSON_TYPE}
    return header + raw, {"content-type": BINARY_TYPE, HEADER_LENGTH.lower(): str(len(header))}


def parse_object(text: bytes, what: str, example: str, binary_hint: bool = False) -> dict[str, Any]:
    """A JSON object, or InvalidInput saying what was expected (`binary_hint`: and how to send
    binary data after it, when trailing bytes may be what broke it)."""
    try:
        value = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        if isinstance(exc, json.JSONDecodeError):
            reason, trailing = f"{exc.msg} at line {exc.lineno} column {exc.colno}", exc.msg == "Extra data"
        else:
            reason, trailing = "not UTF-8 text", True
        hint = (
            f"; binary tensor data after the JSON needs the header {HEADER_LENGTH}: <bytes of the JSON>"
            if binary_hint and trailing else ""
        )
        raise InvalidInput(f"the body is not valid JSON ({reason}): send {what}, {example}{hint}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"the body must be a JSON object ({what}, {example}); got {type(value).__name__}")
    return value


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _json_values(data: Any, datatype: str, shape: list[int]) -> np.ndarray:
    """`data` (flat, or nested as `shape`) as a numpy array, in one numpy call for the whole list."""
    if not isinstance(data, list):
        raise InvalidInput(f"input {INPUT_NAME!r} data must be an array of numbers; got {type(data).__name__}")
    nested = bool(data) and isinstance(data[0], list)
    expected = f"nested as its shape {shape}" if nested else f"a flat list of {math.prod(shape)} numbers"
    try:
        values = np.array(data)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"input {INPUT_NAME!r} data must be {expected}; its rows differ in length") from None
    if values.dtype.kind not in "iuf":
        found = {"b": "true/false", "U": "strings"}.get(values.dtype.kind, "null, objects or mixed values")
        raise InvalidInput(f"input {INPUT_NAME!r} data must be {expected}; it holds {found}")
    if (nested and list(values.shape) != shape) or (not nested and values.ndim != 1):
        raise InvalidInput(f"input {INPUT_NAME!r} data must be {expected}; it is nested as {list(values.shape)}")
    if datatype == "UINT8":
        if values.dtype.kind == "f":
            whole = np.isfinite(values) & (values == np.floor(values))
            if not whole.all():
                bad = values.ravel()[int(np.flatnonzero(~whole.ravel())[0])]
                raise InvalidInput(f"input {INPUT_NAME!r} is UINT8: its values must be whole numbers 0..255; got {bad}")
            values = values.astype(np.int64)
        return v2.uint8_values(values.ravel())
    return values.ravel().astype(np.float32)


def _base64_files(data: Any, shape: list[int]) -> list[bytes]:
    """The files of input `image` from "data": base64 strings, flat (or nested as [N, 1])."""
    if isinstance(data, list) and all(isinstance(row, list) and len(row) == 1 for row in data) and len(shape) == 2:
        data = [row[0] for row in data]
    if not isinstance(data, list):
        raise InvalidInput(f"input {IMAGE_INPUT!r} data must be an array of base64 strings, one image file each")
    v2.check_image_count(shape, len(data))
    files = []
    for index, text in enumerate(data):
        if not isinstance(text, str):
            raise InvalidInput(
                f"input {IMAGE_INPUT!r} data[{index}] must be a string, the file's bytes base64-encoded; "
                f"got {type(text).__name__}"
            )
        try:
            files.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                f"input {IMAGE_INPUT!r} data[{index}] is not base64 ({exc}): send the file's bytes base64-encoded "
                "(RFC 4648 standard alphabet, with padding)"
            ) from None
    return files


def _parameters(item: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{what}'s parameters must be a JSON object; got {type(parameters).__name__}")
    return parameters


def _flag(parameters: dict[str, Any], name: str, what: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{what}: {name} must be true or false; got {value!r}")
    return value


def _list_of_objects(value: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidInput(f"{name} must be a list of JSON objects, each with a \"name\"; got {value!r:.80}")
    return value


MAX_TIMEOUT_US = 86_400_000_000


def _deadline(parameters: dict[str, Any]) -> float | None:
    """Triton's per-request timeout, in microseconds (tritonclient.http's `timeout=`); 0 or absent: none."""
    timeout = parameters.get("timeout")
    if timeout is None or timeout == 0:
        return None
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT_US:
        raise InvalidInput(
            f"parameters.timeout must be microseconds, a whole number up to {MAX_TIMEOUT_US} (a day); got {timeout!r}"
        )
    return time.monotonic() + timeout / 1e6
