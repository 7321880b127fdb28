"""The slow fuzz (`make test-slow`): hypothesis against ONE live server, real ports, many examples.

One in-process server (gRPC, HTTP/REST and metrics on ephemeral ports of 127.0.0.1) takes:

- 2,000 malformed HTTP/REST inference requests (POST /v2/models/NAME[/versions/V]/infer):
  random JSON values; valid requests (pixels FP32 or UINT8 as JSON or binary, image files as
  base64 or binary) with fields set to random values, removed, given wrong types, datatypes or
  huge, negative and wrong shapes; broken UTF-8 and truncated bodies; gzip that is and is not;
  binary bodies whose Inference-Header-Content-Length lies. Every answer is 400, 404 or 413 with a
  JSON `{"error": "..."}` body, 200 for a request that stayed valid (504 only when it set a
  parameters.timeout), never 500, never a dropped connection.
- 2,000 requests of malformed image files (damaged PNG, JPEG, BMP, GIF and WebP files, headers
  that lie about their size, random bytes, empty and oversized files; 1-3 per request) over
  digits.v1 `ClassifyRequest.images`, and 2,000 over HTTP (`image` BYTES, base64 JSON and
  binary). The oracle is this process's own decoder with the server's settings: every answer is
  OK with the probabilities of the pixels prepared here, or INVALID_ARGUMENT / 400 with exactly
  the message for the first bad file here ("image 1 of 3 is ..."), never INTERNAL / 500.

After every example (CHECK_EVERY) the server is asked its gRPC health (SERVING) and classifies
MNIST test images over gRPC and HTTP with the reference's answers; at the end no call failed
INTERNAL. The quick versions of these fuzzes run in `make test` (test_fuzz.py, test_images_fuzz.py).
"""

from __future__ import annotations

import base64
import copy
import gzip
import io
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitserve.errors import InvalidInput
from digitserve.serve.images import FORMATS, ImageDecoder
from digitserve.serve.settings import ServeSettings
from digitserve.wire.codec import pack_bytes_elements
from digitserve.wire.proto import digits_pb2 as d
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.support.images import Images, ink_on_paper
from tests.web.strokes import DIGITS

pytestmark = [
    pytest.mark.slow,
    # hostile headers reach Pillow (then our checks refuse them): its warnings say so, harmlessly
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin"),
]

EXAMPLES = 2000
CHECK_EVERY = 1
MAX_FILES = 16  # --max-request-images: the body limit is then 16 x 784 x 32 + 64 KiB = 466,944 bytes
MAX_IMAGE_BYTES = 48 * 1024
MAX_IMAGE_PIXELS = 300_000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
INFER = "/v2/models/digits/infer"
CLIENT_ERRORS = {400, 404, 413}


# -- one server for the module, and the checks of its health -----------------------------------
@pytest.fixture(scope="module")
def fuzz_settings(model_repo: Path) -> ServeSettings:
    return server_settings(model_repo, http_port=0, max_request_images=MAX_FILES, max_image_bytes=MAX_IMAGE_BYTES,
                           max_image_pixels=MAX_IMAGE_PIXELS)


@pytest.fixture(scope="module")
def fuzz_server(fuzz_settings: ServeSettings) -> Iterator[ServerThread]:
    server = ServerThread(fuzz_settings)
    yield server
    server.close()


@pytest.fixture(scope="module")
def local_decoder(fuzz_settings: ServeSettings) -> Iterator[ImageDecoder]:
    """The oracle: the server's decoder, with its settings, in this process."""
    decoder = ImageDecoder(fuzz_settings)
    yield decoder
    decoder.close()


@pytest.fixture(scope="module")
def stubs(fuzz_server: ServerThread) -> Iterator[Stubs]:
    with grpc.insecure_channel(fuzz_server.target) as channel:
        yield Stubs(channel)


@pytest.fixture(scope="module")
def http(fuzz_server: ServerThread) -> Iterator[httpx.Client]:
    """One client (a kept-alive connection) for the whole fuzz: a dropped connection raises."""
    with httpx.Client(base_url=f"http://127.0.0.1:{fuzz_server.server.http.port}", timeout=30) as client:
        yield client


class Health:
    """Every `every` calls: gRPC health SERVING, and a good request answered right over gRPC and HTTP."""

    def __init__(self, stubs: Stubs, http: httpx.Client, images: Images, reference: Callable[..., np.ndarray]):
        self.stubs, self.http = stubs, http
        self.health = health_pb2_grpc.HealthStub(stubs.channel)
        self.uint8 = images.uint8[:4]
        self.expected = reference(images.pixels[:4])
        self.calls = self.checks = 0

    def after_example(self, every: int = CHECK_EVERY) -> None:
        self.calls += 1
        if self.calls % every == 0:
            self.check()

    def check(self) -> None:
        for service in ("", "digits.v1.Classifier"):
            answer = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        response = self.stubs.digits.Classify(d.ClassifyRequest(uint8=self.uint8.tobytes()), timeout=10)
        got = np.float32([list(p.probabilities) for p in response.predictions])
        np.testing.assert_allclose(got, self.expected, atol=1e-6)
        tensor = {"name": "pixels", "datatype": "UINT8", "shape": [4, 784], "data": self.uint8.ravel().tolist()}
        answer = self.http.post(INFER, json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(np.float32(answer.json()["outputs"][0]["data"]).reshape(4, 10), self.expected,
                                   atol=1e-6)
        self.checks += 1


@pytest.fixture(scope="module")
def health(stubs: Stubs, http: httpx.Client, mnist_images: Images, reference: Callable[..., np.ndarray]) -> Health:
    return Health(stubs, http, mnist_images, reference)


# -- (a) malformed HTTP/REST inference requests ------------------------------------------------
KEYS = ["inputs", "outputs", "id", "parameters", "name", "datatype", "shape", "data", "binary_data_size",
        "binary_data", "binary_data_output", "content_type", "timeout", "classification"]
BIG_INTS = [2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**30, 10**400, -(2**63), -(10**400)]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-300, 300), st.sampled_from(BIG_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["pixels", "image", "FP32", "UINT8", "BYTES", "base64", "probabilities", "²", "\ud800"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=12,
)
DATATYPES = ["FP32", "UINT8", "BYTES", "INT64", "FP64", "FP16", "BOOL", "fp32", "", None, 1, ["FP32"]]
SHAPES = [[-1, 784], [0, 784], [1, -784], [2**63, 784], [10**30, 784], [1, 10**20], [10**400, 784], [], [784],
          [1, 28, 28], [1, 784, 1], [1.0, 784], ["1", 784], [True, 784], None, "1,784", [-1], [0], [10**30],
          [1, 1], [1, 2], [17], [17, 1], [2, 784], [17, 784]]
TIMEOUTS = [0, 1, 10**12, 2**63, 10**30, 10**400, -1, 0.5, "1", True, None, float("inf")]
CONTENT_TYPES = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/JSON",
                 "application/json; charset=utf-16", "", "*/*"]
PATHS = ["/v2/models/mnist/infer", "/v2/models/digits/versions/1/infer", "/v2/models/digits/versions/2/infer",
         "/v2/models/digits/versions/0/infer", "/v2/models/digits/versions/-1/infer",
         "/v2/models/digits/versions/%C2%B2/infer", "/v2/models/digits/versions/1%20/infer",
         "/v2/models/%00/infer", "/v2/models/digits%2Fx/infer", "/v2/models/DIGITS/infer"]


def _tiny_png() -> bytes:
    buffer = io.BytesIO()
    pixels = np.zeros((20, 16), np.uint8)
    pixels[3:17, 7:10] = 255
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


TINY_PNG = _tiny_png()


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A valid V2 request (its JSON header and binary data): pixels or image files, JSON or binary."""
    kind = draw(st.sampled_from(["fp32", "uint8", "fp32-nested", "fp32-binary", "uint8-binary", "image",
                                 "image-binary"]))
    count = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    uint8 = rng.integers(0, 256, size=(count, 784), dtype=np.uint8)
    header: dict[str, Any] = {"inputs": []}
    binary = b""
    if kind.startswith("image"):
        files = [TINY_PNG] * count
        tensor: dict[str, Any] = {"name": "image", "datatype": "BYTES", "shape": [count]}
        if kind == "image":
            tensor["data"] = [base64.b64encode(f).decode() for f in files]
        else:
            binary = pack_bytes_elements(files)
            tensor["parameters"] = {"binary_data_size": len(binary)}
    else:
        datatype = "UINT8" if kind.startswith("uint8") else "FP32"
        values = uint8 if datatype == "UINT8" else uint8.astype(np.float32) / np.float32(255.0)
        tensor = {"name": "pixels", "datatype": datatype, "shape": [count, 784]}
        if kind.endswith("binary"):
            binary = values.astype("<f4" if datatype == "FP32" else np.uint8).tobytes()
            tensor["parameters"] = {"binary_data_size": len(binary)}
        else:
            tensor["data"] = values.tolist() if kind == "fp32-nested" else values.ravel().tolist()
    header["inputs"].append(tensor)
    if draw(st.booleans()):
        header["outputs"] = [{"name": "probabilities", "parameters": {"binary_data": draw(st.booleans())}}]
    if draw(st.booleans()):
        header["id"] = draw(st.text(max_size=8))
    if draw(st.booleans()):
        header["parameters"] = {"binary_data_output": draw(st.booleans())}
    return header, binary


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, container) in a JSON value: where a mutation can set or delete a key or item."""
    if isinstance(value, dict):
        yield path, value
        for key, item in value.items():
            if key != "data" or not isinstance(item, list) or len(item) < 20:
                yield from _places(item, (*path, key))
    elif isinstance(value, list) and len(value) < 20:
        yield path, value
        for index, item in enumerate(value):
            yield from _places(item, (*path, index))


def _tensor(header: dict[str, Any]) -> dict[str, Any] | None:
    inputs = header.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        return inputs[0]
    return None


@st.composite
def mutated(draw: st.DrawFn, header: dict[str, Any]) -> dict[str, Any]:
    """`header` with one mutation: a value set, a key removed, or a field of the tensor made wrong."""
    header = copy.deepcopy(header)
    tensor = _tensor(header)
    how = draw(st.sampled_from(["set", "delete", "datatype", "shape", "name", "data", "size", "timeout",
                                "content_type", "outputs", "inputs", "id"]))
    if how in ("set", "delete") or tensor is None:
        places = list(_places(header))
        _, container = places[draw(st.integers(0, len(places) - 1))]
        if isinstance(container, dict):
            key = draw(st.sampled_from(sorted(container) or KEYS) if how == "delete" else st.sampled_from(KEYS))
            if how == "delete":
                container.pop(key, None)
            else:
                container[key] = draw(json_values)
        elif container:
            index = draw(st.integers(0, len(container) - 1))
            if how == "delete":
                del container[index]
            else:
                container[index] = draw(json_values)
        return header
    parameters = tensor.setdefault("parameters", {}) if isinstance(tensor.get("parameters", {}), dict) else {}
    if how == "datatype":
        tensor["datatype"] = draw(st.sampled_from(DATATYPES))
    elif how == "shape":
        tensor["shape"] = draw(st.sampled_from(SHAPES) | st.lists(st.integers(-(2**70), 2**70), max_size=3))
    elif how == "name":
        tensor["name"] = draw(st.sampled_from(["pixels", "image", "", "PIXELS", "x", None, 7]))
    elif how == "data":
        data = tensor.get("data")
        change = draw(st.sampled_from(["shorter", "longer", "strings", "bools", "nested", "out of range", "nan",
                                       "not base64", "object", "huge ints"]))
        if change == "shorter" and isinstance(data, list):
            tensor["data"] = data[: draw(st.integers(0, max(0, len(data) - 1)))]
        elif change == "longer" and isinstance(data, list):
            tensor["data"] = data + data[:1] * draw(st.integers(1, 800))
        elif change == "strings":
            tensor["data"] = [str(v) for v in data] if isinstance(data, list) else "0.5"
        elif change == "bools":
            tensor["data"] = [True] * 784
        elif change == "nested":
            tensor["data"] = [[[0.5] * 28] * 28]
        elif change == "out of range":
            tensor["data"] = [draw(st.sampled_from([-0.5, 1.5, 256, -1, 1e300, 2**64]))] * 784
        elif change == "nan":
            tensor["data"] = [float("nan")] * 784
        elif change == "not base64":
            tensor["data"] = [draw(st.sampled_from(["%%%", "iVBORw0KGgo", "aGk", "-_-_", "aGk=\n", "\u00e9t\u00e9",
                                                    "\ud800", ""]))]
        elif change == "object":
            tensor["data"] = draw(json_values)
        else:
            tensor["data"] = [draw(st.sampled_from(BIG_INTS))] * 784
    elif how == "size":
        parameters["binary_data_size"] = draw(st.sampled_from([0, 1, -1, 3135, 3137, 2**63, 10**400, "3136", None,
                                                               1.5, True]))
    elif how == "timeout":
        header.setdefault("parameters", {})
        if isinstance(header["parameters"], dict):
            header["parameters"]["timeout"] = draw(st.sampled_from(TIMEOUTS))
    elif how == "content_type":
        parameters["content_type"] = draw(st.sampled_from(["base64", "pil_image", "str", "", None, 1]))
    elif how == "outputs":
        header["outputs"] = draw(st.sampled_from([
            [{"name": "label"}], [{"name": "probabilities", "parameters": {"classification": 3}}],
            [{"name": "probabilities", "parameters": {"binary_data": "yes"}}], [{}], "probabilities", [[]],
            [{"name": "probabilities", "parameters": {"shared_memory_region": "x"}}],
        ]))
    elif how == "inputs":
        other = copy.deepcopy(tensor)
        other["name"] = draw(st.sampled_from(["pixels", "image", "x"]))
        header["inputs"] = [tensor, other]
    else:
        header["id"] = draw(json_values)
    return header


@dataclass(frozen=True)
class Sent:
    """An HTTP inference request of the fuzz; its repr (in a failure's report) shows the body's start."""

    path: str
    body: bytes
    headers: dict[str, str]
    valid: bool  # a valid request, which must get 200
    times_out: bool  # it sets parameters.timeout, so 504 is a right answer too

    def __repr__(self) -> str:
        more = f"... ({len(self.body):,} bytes)" if len(self.body) > 400 else ""
        return (f"Sent(path={self.path!r}, headers={self.headers!r}, valid={self.valid}, "
                f"times_out={self.times_out}, body={self.body[:400]!r}{more})")


@st.composite
def http_requests(draw: st.DrawFn) -> Sent:
    """An HTTP inference request: valid, or made wrong in one of the ways of the module doc."""
    path = INFER if draw(st.integers(0, 9)) else draw(st.sampled_from(PATHS))
    valid = path in (INFER, "/v2/models/digits/versions/1/infer")
    source = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "twice", "random"]))
    binary = b""
    if source == "random":
        header: Any = draw(json_values)
        valid = False
    else:
        header, binary = draw(valid_requests())
        for _ in range({"valid": 0, "mutated": 1, "twice": 2}[source]):
            header = draw(mutated(header))
            valid = False
    text = json.dumps(header, allow_nan=True).encode()
    headers = {"content-type": "application/octet-stream" if binary else "application/json"}
    if binary:
        headers["inference-header-content-length"] = str(len(text))
    body = text + binary

    damage = draw(st.sampled_from(["none"] * 6 + ["utf-8", "truncate", "lie", "lie", "content-type", "gzip",
                                               "not gzip", "pad", "big int", "utf-16"]))
    if damage != "none":
        valid = False
    if damage == "utf-8":
        where = draw(st.integers(0, len(text)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x00",
                                    b"\xef\xbb\xbf"]))
        body = text[:where] + bad + text[where:] + binary
    elif damage == "truncate":
        body = body[: draw(st.integers(0, max(0, len(body) - 1)))]
    elif damage == "lie":  # Inference-Header-Content-Length that is not the JSON's length
        real = len(text)
        lie = draw(st.sampled_from([real - 1, real + 1, 0, len(body), len(body) + 1, 1, real // 2]))
        headers["inference-header-content-length"] = draw(st.sampled_from(
            [str(lie), str(lie), "-1", "10" * 20, "abc", "", "1 2", "+5", "1e3", "0x10", "²", "١٢"]))
        if not binary and draw(st.booleans()):
            body = text + draw(st.binary(min_size=1, max_size=64))
    elif damage == "content-type":
        headers["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
    elif damage == "gzip":
        headers["content-encoding"] = draw(st.sampled_from(["gzip", "deflate"]))
        body = gzip.compress(body) if headers["content-encoding"] == "gzip" else zlib.compress(body)
        valid = source == "valid" and path in (INFER, "/v2/models/digits/versions/1/infer")
    elif damage == "not gzip":
        headers["content-encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "identity, gzip"]))
    elif damage == "pad":  # valid JSON, larger than the body limit: 413
        body = text + b" " * draw(st.sampled_from([500_000, 1_000_000])) + binary
    elif damage == "big int":  # more digits than Python's int parser takes
        body = b'{"id": 1' + b"1" * 5000 + b', "inputs": []}'
    elif damage == "utf-16":
        body = json.dumps(header, allow_nan=True).encode("utf-16") + binary
    times_out = isinstance(header, dict) and isinstance(header.get("parameters"), dict) and isinstance(
        header["parameters"].get("timeout"), int) and not isinstance(header["parameters"]["timeout"], bool)
    return Sent(path, body, headers, valid, times_out)


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as raw bytes: Latin-1 where it can ('²' is the byte 0xb2, which servers decode back
    to '²'), else UTF-8 ('١٢'), as a careless client sends them."""

    def raw(text: str) -> bytes:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            return text.encode()

    return [(raw(key), raw(value)) for key, value in headers.items()]


def assert_v2_error_body(response: httpx.Response) -> str:
    assert response.headers.get("content-type") == "application/json", response.headers
    error = response.json()["error"]
    assert isinstance(error, str) and error, response.text
    return error


def check_http_answer(response: httpx.Response, valid: bool, times_out: bool) -> None:
    status = response.status_code
    event(f"HTTP {status}")  # pytest --hypothesis-show-statistics lists how often each came
    if status == 200:
        if response.headers["content-type"] == "application/octet-stream":
            length = int(response.headers["inference-header-content-length"])
            answer = json.loads(response.content[:length])
            assert len(response.content) - length == answer["outputs"][0]["parameters"]["binary_data_size"]
        else:
            answer = response.json()
        assert answer["model_name"] == "digits" and answer["outputs"][0]["name"] == "probabilities"
        return
    assert not valid, f"a valid request got {status}: {response.text}"
    allowed = CLIENT_ERRORS | ({504} if times_out else set())
    assert status in allowed, f"{status}: {response.text}"
    assert_v2_error_body(response)


@FUZZ
@given(sent=http_requests())
def test_malformed_http_bodies_get_a_client_error_never_500(sent: Sent, http: httpx.Client, health: Health) -> None:
    response = http.post(sent.path, content=sent.body, headers=encode_headers(sent.headers))
    check_http_answer(response, sent.valid, sent.times_out)
    health.after_example()


# -- (b) malformed image files over digits.v1 and over HTTP -------------------------------------
def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def seed_files() -> list[bytes]:
    """Valid files of every format and of the modes and features their decoders branch on."""
    bar = np.tile(np.arange(24, dtype=np.uint8) * 10, (20, 1))
    bar[4:16, 10:13] = 255
    gray = Image.fromarray(bar)
    photo = Image.fromarray(ink_on_paper(DIGITS[7], (64, 48), seed=7, thickness=0.1, blur=0.8))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(255 - np.asarray(photo.convert("L"))))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: ImageOps.exif_transpose turns it
    seeds = [
        encode(gray, "PNG"), encode(photo, "PNG"), encode(rgba, "PNG"), encode(gray.convert("1"), "PNG"),
        encode(gray.convert("LA"), "PNG"), encode(palette, "PNG", transparency=0),
        encode(Image.fromarray(bar.astype(np.uint16) * 257), "PNG"),  # 16-bit
        encode(photo, "JPEG", quality=80), encode(gray, "JPEG"), encode(photo, "JPEG", progressive=True),
        encode(photo.convert("CMYK"), "JPEG"), encode(photo, "JPEG", exif=exif),
        encode(gray, "BMP"), encode(photo, "BMP"), encode(palette, "BMP"),
        encode(palette, "GIF"), encode(gray, "GIF", save_all=True, append_images=[photo.convert("L")], duration=50),
    ]
    if "WEBP" in FORMATS:
        seeds += [encode(photo, "WEBP", quality=80), encode(rgba, "WEBP", lossless=True)]
    return seeds


SEEDS = seed_files()


def mend_png(data: bytes) -> bytes:
    """The PNG's chunk CRCs recomputed where its chunk structure still holds (damage reaches the decoder)."""
    out, position = bytearray(data), 8
    while position + 12 <= len(out):
        length = struct.unpack(">I", out[position : position + 4])[0]
        end = position + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[position + 4 : end])))
        position = end + 4
    return bytes(out)


def with_size(data: bytes, width: int, height: int) -> bytes:
    """The file's header made to declare width x height (PNG, GIF, BMP; others unchanged)."""
    patched = bytearray(data)
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        patched[16:24] = struct.pack(">II", width % 2**32, height % 2**32)
        return mend_png(bytes(patched))
    if data.startswith(b"GIF") and len(data) >= 10:
        patched[6:10] = struct.pack("<HH", width % 2**16, height % 2**16)
    elif data.startswith(b"BM") and len(data) >= 26:
        patched[18:26] = struct.pack("<ii", max(-(2**31), min(width, 2**31 - 1)),
                                     max(-(2**31), min(height, 2**31 - 1)))
    return bytes(patched)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    """A seed truncated, overwritten, bit-flipped, with bytes inserted or repeated; PNG CRCs sometimes mended."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["truncate", "overwrite", "overwrite", "insert", "flip", "repeat"]))
        if how == "truncate":
            del data[max(1, where):]
        elif how == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[where : where + len(chunk)] = chunk
        elif how == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif how == "flip" and where < len(data):
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif how == "repeat":
            data[where:where] = data[where : where + draw(st.integers(1, 64))]
    if data.startswith(b"\x89PNG") and draw(st.booleans()):
        return mend_png(bytes(data))
    return bytes(data)


sizes = st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, -1, -(2**31), 548, 10_000]) | st.integers(
    0, 3000)
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"BM", b"GIF89a", b"GIF87a",
         b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\xff\xff\xff\x7fWEBPVP8L", b"II*\x00", b"%PDF-1.4"]
image_files = st.one_of(
    damaged_files(),
    damaged_files(),
    damaged_files(),
    st.builds(with_size, st.sampled_from(SEEDS), sizes, sizes),
    st.builds(bytes.__add__, st.sampled_from(MAGIC), st.binary(max_size=256)),
    st.binary(max_size=256),
    st.sampled_from(SEEDS),
    st.just(b""),
    st.builds(lambda seed, extra: seed + bytes(MAX_IMAGE_BYTES - len(seed) + extra), st.sampled_from(SEEDS),
              st.integers(-1, 64)),  # at the byte limit and past it
)
image_requests = st.lists(image_files, min_size=1, max_size=3)


def which(index: int, count: int) -> str:
    return f"image {index}" if count == 1 else f"image {index} of {count}"


def expected_outcome(decoder: ImageDecoder, files: list[bytes]) -> tuple[np.ndarray | None, str | None]:
    """What the server must answer: (pixels, None), or (None, the message for the first bad file)."""
    try:
        decoder.check(files)  # lengths first, for every file, as the server does
        pixels = np.stack([decoder.prepare(data, which(i, len(files))) for i, data in enumerate(files)])
    except InvalidInput as exc:
        kind = re.sub(r"^image \d+( of \d+)? (is (an? )?)?", "", str(exc)).split(":")[0].split(";")[0]
        event(f"refused: {re.sub(r'[0-9][0-9,]*', 'N', kind)[:60]}")
        return None, str(exc)
    event("classified")
    return pixels, None


NAMES_AN_IMAGE = re.compile(r"^image \d+( of \d+)? ")


@FUZZ
@given(files=image_requests)
def test_malformed_image_files_over_digits_v1_are_invalid_argument_never_internal(
    files: list[bytes], stubs: Stubs, local_decoder: ImageDecoder, reference: Callable[..., np.ndarray],
    health: Health,
) -> None:
    pixels, message = expected_outcome(local_decoder, files)
    try:
        response = stubs.digits.Classify(d.ClassifyRequest(images=d.EncodedImages(files=files)), timeout=30)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
        assert error.details() == message, (error.details(), message)
        assert NAMES_AN_IMAGE.match(error.details() or ""), error.details()
    else:
        assert pixels is not None, f"answered OK; expected {message!r}"
        got = np.float32([list(p.probabilities) for p in response.predictions])
        np.testing.assert_allclose(got, reference(pixels), atol=1e-6)
    health.after_example()


@st.composite
def http_image_requests(draw: st.DrawFn) -> tuple[list[bytes], str]:
    return draw(image_requests), draw(st.sampled_from(["base64", "base64", "binary", "binary", "broken base64",
                                                       "lying layout"]))


def image_body(files: list[bytes], how: str, draw_index: int) -> tuple[bytes, dict[str, str]]:
    """The HTTP body and headers that carry `files` as input `image` (`how`: the encoding, or a mistake in it)."""
    tensor: dict[str, Any] = {"name": "image", "datatype": "BYTES", "shape": [len(files)]}
    if how in ("binary", "lying layout"):
        raw = pack_bytes_elements(files)
        if how == "lying layout":  # the first element's length says more bytes than follow
            raw = struct.pack("<I", len(raw)) + raw[4:]
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = json.dumps({"inputs": [tensor]}).encode()
        return header + raw, {"content-type": "application/octet-stream",
                              "inference-header-content-length": str(len(header))}
    data = [base64.b64encode(file).decode() for file in files]
    if how == "broken base64":
        index = draw_index % len(data)
        data[index] = data[index][:-1] + "%" if data[index] else "="
    tensor["data"] = data
    return json.dumps({"inputs": [tensor]}).encode(), {"content-type": "application/json"}


@FUZZ
@given(sent=http_image_requests(), index=st.integers(0, 2))
def test_malformed_image_files_over_http_are_400_never_500(
    sent: tuple[list[bytes], str], index: int, http: httpx.Client, local_decoder: ImageDecoder,
    reference: Callable[..., np.ndarray], health: Health,
) -> None:
    files, how = sent
    body, headers = image_body(files, how, index)
    response = http.post(INFER, content=body, headers=headers)
    if how in ("broken base64", "lying layout"):
        assert response.status_code == 400, response.text
        assert "input 'image'" in assert_v2_error_body(response)
    else:
        pixels, message = expected_outcome(local_decoder, files)
        if pixels is None:
            assert response.status_code == 400, response.text
            assert assert_v2_error_body(response) == message
            assert NAMES_AN_IMAGE.match(message or ""), message
        else:
            assert response.status_code == 200, response.text
            got = np.float32(response.json()["outputs"][0]["data"]).reshape(-1, 10)
            np.testing.assert_allclose(got, reference(pixels), atol=1e-6)
    health.after_example()


def test_the_server_is_healthy_and_nothing_failed_internally(fuzz_server: ServerThread, health: Health) -> None:
    health.check()
    print(f"\n{health.calls} fuzz examples, {health.checks} health checks")
    assert fuzz_server.metric("nv_inference_request_failure_total", reason="INTERNAL") == 0
