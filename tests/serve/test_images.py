"""Image files as input, on a real server: digits.v1 `images`, V2 `image` BYTES over gRPC and HTTP.

The answers equal those for the pixels digitserve.preprocess makes of the same files here; every
limit and every bad file gets a status and a message saying what to fix, and the server goes on
serving; decoding runs off the event loop and counts as in flight for the drain.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from digitserve.client import AsyncClient, Client, InvalidArgument, ResourceExhausted
from digitserve.preprocess import load_pixels
from digitserve.wire.codec import pack_bytes_elements
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.serve.test_errors import still_serving
from tests.support.images import Images, write_digit_files

Tensor = v2.ModelInferRequest.InferInputTensor
MAX_FILES = 64
INVALID, EXHAUSTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.fixture(scope="module")
def digit_paths(tmp_path_factory: pytest.TempPathFactory, mnist_images: Images) -> list[Path]:
    return write_digit_files(mnist_images, tmp_path_factory.mktemp("digit-files"), 12)


@pytest.fixture(scope="module")
def files(digit_paths: list[Path]) -> list[bytes]:
    return [path.read_bytes() for path in digit_paths]


@pytest.fixture(scope="module")
def expected(digit_paths: list[Path], reference: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """What the model answers for the pixels the client's own preparation makes of the files."""
    return reference(np.stack([load_pixels(path) for path in digit_paths]))


@pytest.fixture(scope="module")
def image_server(model_repo: Path) -> Iterator[ServerThread]:
    server = ServerThread(server_settings(model_repo, http_port=0, max_request_images=MAX_FILES))
    yield server
    server.close()


@pytest.fixture
def image_stubs(image_server: ServerThread) -> Iterator[Stubs]:
    with grpc.insecure_channel(image_server.target) as channel:
        yield Stubs(channel)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (its CRC mended), the pixel data left as it was."""
    patched = bytearray(data)
    patched[16:24] = struct.pack(">II", width, height)
    patched[29:33] = struct.pack(">I", zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


def tiff(data: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, "TIFF")
    return buffer.getvalue()


# case -> (files from the good ones, status, message)
BAD_FILES: dict[str, tuple[Callable[[list[bytes]], list[bytes]], grpc.StatusCode, str]] = {
    "not an image": (
        lambda good: [good[0], b"digit seven, trust me", good[2]], INVALID,
        r"^image 1 of 3 is not an image file Pillow can read as PNG, JPEG, BMP, GIF or WebP$",
    ),
    "a format off the allow-list (TIFF)": (
        lambda good: [tiff(good[0])], INVALID, r"^image 0 is not an image file Pillow can read as PNG, JPEG",
    ),
    "truncated PNG": (
        lambda good: [good[0], good[0][: len(good[0]) // 2]], INVALID,
        r"^image 1 of 2 is a PNG file that is truncated or corrupt: send the whole, unmodified file$",
    ),
    "header declares 30000 x 30000": (
        lambda good: [with_header_size(good[0], 30000, 30000)], INVALID,
        r"^image 0 declares more pixels than Pillow's decompression-bomb limit .*; the limit is 4,000,000 "
        r"\(--max-image-pixels\): send a smaller picture$",
    ),
    "3000 x 2000 pixels": (
        lambda good: [good[0], png(Image.new("1", (3000, 2000)))], INVALID,  # 1-bit: a tiny file
        r"^image 1 of 2 is 3000 x 2000 pixels \(6,000,000\); the limit is 4,000,000 \(--max-image-pixels\): "
        r"send a smaller picture$",
    ),
    "header declares 0 x 5": (
        lambda good: [with_header_size(good[0], 0, 5)], INVALID, r"^image 0 is not an image file Pillow can read",
    ),
    "over --max-image-bytes": (
        lambda good: [good[0] + bytes(1_100_000)], INVALID,
        r"^image 0 is 1,10\d,\d{3} bytes; the limit is 1,048,576 \(--max-image-bytes\): send a smaller file$",
    ),
    "an empty file": (
        lambda good: [good[0], b""], INVALID, r"^image 1 of 2 is empty \(0 bytes\): send the whole file$",
    ),
    "no files": (lambda good: [], INVALID, r"^the request carries no image files: send at least one encoded image"),
    "too many files": (
        lambda good: good[:1] * (MAX_FILES + 1), EXHAUSTED,
        rf"^{MAX_FILES + 1} images in one request; the limit is {MAX_FILES} \(--max-request-images\): split the batch$",
    ),
}


@pytest.mark.parametrize("api", ["digits", "v2"])
def test_image_files_get_the_answers_of_the_pixels_prepared_locally(
    image_server: ServerThread, files: list[bytes], expected: np.ndarray, api: str
) -> None:
    before = image_server.metric("nv_inference_count_total")
    for raw in (True, False):  # over V2: raw_input_contents in Triton's layout, then typed bytes_contents
        with Client(image_server.target, api=api, v2_raw=raw) as client:
            result = client.classify_images(files)
        assert (result.model_name, result.model_version) == ("digits", 1)
        assert result.labels.tolist() == expected.argmax(axis=1).tolist()
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    assert image_server.metric("nv_inference_count_total") == before + 2 * len(files)  # the one batcher


def test_the_asyncio_client_sends_files_too(
    image_server: ServerThread, files: list[bytes], expected: np.ndarray
) -> None:
    import asyncio

    async def both() -> list[Any]:
        async with AsyncClient(image_server.target) as digits, AsyncClient(image_server.target, api="v2") as kserve:
            return list(await asyncio.gather(digits.aclassify_images(files[:5]), kserve.aclassify_images(files[5:])))

    first, second = asyncio.run(both())
    np.testing.assert_allclose(np.concatenate([first.probabilities, second.probabilities]), expected, atol=1e-6)


@pytest.mark.parametrize("api", ["digits", "v2"])
@pytest.mark.parametrize("case", BAD_FILES)
def test_each_bad_file_and_limit_is_refused_with_what_to_fix(
    image_server: ServerThread, image_stubs: Stubs, files: list[bytes], case: str, api: str
) -> None:
    build, code, message = BAD_FILES[case]
    with Client(image_server.target, api=api) as client:
        with pytest.raises((InvalidArgument, ResourceExhausted)) as error:
            client.classify_images(build(files))
        assert error.value.code == code, error.value.details
        assert re.search(message, error.value.details or ""), error.value.details
        assert len(client.classify_images(files[:2])) == 2  # and it goes on serving
    still_serving(image_stubs)


def image_request(*tensors: Tensor, raw: list[bytes] | None = None) -> v2.ModelInferRequest:
    return v2.ModelInferRequest(model_name="digits", inputs=list(tensors), raw_input_contents=raw or [])


def raw_images(files: list[bytes], shape: list[int], datatype: str = "BYTES") -> v2.ModelInferRequest:
    return image_request(Tensor(name="image", datatype=datatype, shape=shape), raw=[pack_bytes_elements(files)])


def typed(name: str, datatype: str, shape: list[int], **contents: Any) -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=shape, contents=v2.InferTensorContents(**contents))


V2_CASES: dict[str, tuple[Callable[[list[bytes]], v2.ModelInferRequest], str]] = {
    "a datatype other than BYTES": (
        lambda good: raw_images(good[:1], [1], datatype="UINT8"),
        r"input 'image' has datatype 'UINT8'; it carries encoded image files: send BYTES, one file per element",
    ),
    "both pixels and image": (
        lambda good: image_request(
            typed("pixels", "UINT8", [1, 784], uint_contents=[0] * 784),
            typed("image", "BYTES", [1], bytes_contents=good[:1]),
        ),
        r"send either input 'pixels' or input 'image', not both",
    ),
    "a pixel shape": (
        lambda good: raw_images(good[:1], [1, 784]),
        r"input 'image' must have shape \[N\] \(or \[N, 1\]\): N image files; got \[1, 784\]",
    ),
    "fewer files than the shape says": (
        lambda good: raw_images(good[:2], [3, 1]),
        r"input 'image' has shape \[3, 1\] \(3 files\) but carries 2",
    ),
    "raw data not in the BYTES layout": (
        lambda good: image_request(Tensor(name="image", datatype="BYTES", shape=[1]), raw=[b"\x40\x00\x00\x00short"]),
        r"raw_input_contents\[0\] is not in the BYTES layout .*element 0 declares 64 bytes",
    ),
    "files in the wrong typed field": (
        lambda good: image_request(typed("image", "BYTES", [1], uint_contents=[1])),
        r"its files go in contents.bytes_contents",
    ),
}


@pytest.mark.parametrize("case", V2_CASES)
def test_v2_image_input_mistakes_are_invalid_argument(image_stubs: Stubs, files: list[bytes], case: str) -> None:
    build, message = V2_CASES[case]
    with pytest.raises(grpc.RpcError) as error:
        image_stubs.v2.ModelInfer(build(files), timeout=10)
    assert error.value.code() == INVALID, error.value.details()
    assert re.search(message, error.value.details() or ""), error.value.details()
    still_serving(image_stubs)


def test_model_metadata_lists_image_as_the_alternative_input(image_stubs: Stubs) -> None:
    meta = image_stubs.v2.ModelMetadata(v2.ModelMetadataRequest(name="digits"))
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("pixels", "FP32", [-1, 784]), ("image", "BYTES", [-1])
    ]


# -- HTTP/REST: base64 strings in JSON, or binary data in Triton's BYTES layout -------------------
def http_url(server: ServerThread) -> str:
    return f"http://127.0.0.1:{server.server.http.port}/v2/models/digits/infer"


def image_json(files: list[bytes], **fields: Any) -> dict[str, Any]:
    data = [base64.b64encode(file).decode() for file in files]
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(files)], "data": data, **fields}]}


def test_http_takes_base64_json_and_binary_bytes(
    image_server: ServerThread, files: list[bytes], expected: np.ndarray
) -> None:
    url = http_url(image_server)
    mlserver_style = image_json(files, parameters={"content_type": "base64"})
    for body in (image_json(files), mlserver_style):
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == 200, response.text
        got = np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(-1, 10)
        np.testing.assert_allclose(got, expected, atol=1e-6)

    raw = pack_bytes_elements(files)
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(files)], "parameters": {"binary_data_size": len(raw)}}
    output = {"name": "probabilities", "parameters": {"binary_data": True}}
    header = json.dumps({"inputs": [tensor], "outputs": [output]}).encode()
    length = {"Inference-Header-Content-Length": str(len(header))}
    response = httpx.post(url, content=header + raw, headers=length, timeout=30)
    assert response.status_code == 200, response.text
    offset = int(response.headers["inference-header-content-length"])
    np.testing.assert_allclose(np.frombuffer(response.content[offset:], "<f4").reshape(-1, 10), expected, atol=1e-6)


HTTP_CASES: dict[str, tuple[Callable[[list[bytes]], dict[str, Any]], int, str]] = {
    "not base64": (lambda good: {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]},
                   400, r"input 'image' data\[0\] is not base64"),
    "another content_type": (lambda good: image_json(good[:1], parameters={"content_type": "pil_image"}),
                             400, r"content_type 'pil_image' is not supported"),
    "not an image": (lambda good: image_json([good[0], b"\x89PNG nope"]),
                     400, r"image 1 of 2 is not an image file Pillow can read"),
    "FP32 datatype": (lambda good: {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [0.5]}]},
                      400, r"input 'image' has datatype 'FP32'"),
    "too many files": (lambda good: image_json(good[:1] * (MAX_FILES + 1)), 413, r"the limit is 64"),
}


@pytest.mark.parametrize("case", HTTP_CASES)
def test_http_image_mistakes_get_400_or_413(image_server: ServerThread, files: list[bytes], case: str) -> None:
    build, status, message = HTTP_CASES[case]
    response = httpx.post(http_url(image_server), json=build(files), timeout=30)
    assert response.status_code == status, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]
    assert httpx.post(http_url(image_server), json=image_json(files[:1]), timeout=30).status_code == 200


# -- off the event loop, and in flight for the drain ------------------------------------------------
class Gate:
    """Holds every decoding thread of `server` at its start until `open()`: the decode is then
    under way in the pool, and whatever else answers meanwhile was not blocked by it."""

    def __init__(self, server: ServerThread):
        self.decoder = server.server.plane.images
        self.started, self.released = threading.Event(), threading.Event()
        decode_chunk = self.decoder.decode_chunk

        def held(files: Any, start: int, stop: int) -> np.ndarray:
            self.started.set()
            self.released.wait(30)
            return decode_chunk(files, start, stop)

        self.decoder.decode_chunk = held

    def open(self) -> None:
        self.released.set()
        del self.decoder.decode_chunk  # the class's own again


def test_decoding_does_not_block_the_event_loop(
    image_server: ServerThread, image_stubs: Stubs, files: list[bytes], expected: np.ndarray
) -> None:
    gate = Gate(image_server)
    try:
        request = d.ClassifyRequest(images=d.EncodedImages(files=files * 4))
        call = image_stubs.digits.Classify.future(request, timeout=60)
        assert gate.started.wait(30)
        health = health_pb2_grpc.HealthStub(image_stubs.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        still_serving(image_stubs)  # pixels are classified meanwhile: loop and batcher are free
        assert image_server.metric("digitserve_inflight_calls") == 1  # the decoding call
    finally:
        gate.open()
    labels = [p.label for p in call.result(60).predictions]
    assert labels == expected.argmax(axis=1).tolist() * 4


def test_the_drain_waits_for_a_call_that_is_decoding(
    make_server: Callable[..., ServerThread], model_repo: Path, files: list[bytes], expected: np.ndarray
) -> None:
    server = make_server(server_settings(model_repo, grace_seconds=10.0))
    gate = Gate(server)
    with grpc.insecure_channel(server.target) as channel:
        try:
            call = Stubs(channel).digits.Classify.future(d.ClassifyRequest(images=d.EncodedImages(files=files)))
            assert gate.started.wait(30)
            stopping = server.submit(server.server.stop())
            with pytest.raises(TimeoutError):  # without the call it would stop after 2 x 0.25 s of quiet
                stopping.result(timeout=1.0)
        finally:
            gate.open()
        response = call.result(30)
    assert [p.label for p in response.predictions] == expected.argmax(axis=1).tolist()
    stopping.result(30)
    assert server.server.unanswered is None
