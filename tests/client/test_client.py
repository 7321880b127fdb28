"""The Python client (sync and asyncio) against a real server: both APIs, every encoding, errors, TLS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from digitserve.client import (
    TLS,
    AsyncClient,
    Client,
    ClientError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from digitserve.errors import DigitserveError, InvalidInput
from tests.support.certs import Certificates
from tests.support.images import Images
from tests.support.ports import free_port
from tests.support.server import ServeProcess, Servers

APIS = ("digits", "v2")
ENCODINGS = ("float32", "float32_le", "uint8")


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sync_predictions_equal_in_process_onnx_runtime(
    server: ServeProcess, mnist_images: Images, reference: Callable[..., np.ndarray], api: str, encoding: str
) -> None:
    expected = reference(mnist_images.pixels[:100])
    with Client(server.target, api=api, encoding=encoding) as client:
        from_floats = client.classify(mnist_images.pixels[:100])
        from_bytes = client.classify(mnist_images.uint8[:100])  # uint8 arrays are 0..255 pixels for every encoding
    for result in (from_floats, from_bytes):
        assert result.probabilities.shape == (100, 10) and result.probabilities.dtype == np.float32
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
        assert (result.labels == expected.argmax(axis=1)).all()
        assert (result.model_name, result.model_version) == ("digits", 1)


@pytest.mark.parametrize(("api", "option"), [("digits", {"packed_output": False}), ("v2", {"v2_raw": False})])
@pytest.mark.parametrize("encoding", ["float32", "uint8"])
def test_one_message_per_image_and_typed_v2_contents(
    server: ServeProcess, mnist_images: Images, reference: Callable[..., np.ndarray], api: str, option: dict,
    encoding: str,
) -> None:
    with Client(server.target, api=api, encoding=encoding, **option) as client:
        result = client.classify(mnist_images.uint8[:20])
    np.testing.assert_allclose(result.probabilities, reference(mnist_images.pixels[:20]), atol=1e-5)
    assert result.labels.tolist() == reference(mnist_images.pixels[:20]).argmax(axis=1).tolist()


@pytest.mark.parametrize("api", APIS)
def test_async_concurrent_calls_each_get_their_own_answer(
    server: ServeProcess, mnist_images: Images, reference: Callable[..., np.ndarray], api: str
) -> None:
    expected = reference(mnist_images.pixels[:48])

    async def main() -> list[np.ndarray]:
        async with AsyncClient(server.target, api=api, encoding="uint8") as client:
            assert await client.aready()
            results = await asyncio.gather(*(client.aclassify(mnist_images.uint8[i]) for i in range(48)))
        return [r.probabilities[0] for r in results]

    np.testing.assert_allclose(np.stack(asyncio.run(main())), expected, atol=1e-5)


def test_image_layouts_and_float_pixels_sent_as_uint8(server: ServeProcess, mnist_images: Images) -> None:
    with Client(server.target) as client:
        flat = client.classify(mnist_images.pixels[:5])
        square = client.classify(mnist_images.pixels[:5].reshape(5, 28, 28))
        one = client.classify(mnist_images.pixels[3].reshape(28, 28))
        assert client.ready()
        provider = client.server_metadata()["extensions"]
    np.testing.assert_array_equal(flat.probabilities, square.probabilities)
    np.testing.assert_allclose(one.probabilities[0], flat.probabilities[3], atol=1e-6)
    assert "execution_provider:CPUExecutionProvider" in provider
    with Client(server.target, encoding="uint8") as client:
        rounded = client.classify(mnist_images.pixels[:5])  # floats in [0, 1] are scaled and rounded to bytes
    np.testing.assert_allclose(rounded.probabilities, flat.probabilities, atol=1e-5)


BAD_INPUTS = [
    (np.full((2, 784), 255.0, np.float32), "divide by 255"),
    (np.zeros((0, 784), np.float32), "empty batch"),
    (np.full((1, 784), np.nan, np.float32), "NaN"),
]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("pixels", "fragment"), BAD_INPUTS)
def test_bad_input_is_invalid_argument_with_the_servers_message(
    server: ServeProcess, api: str, pixels: np.ndarray, fragment: str
) -> None:
    with Client(server.target, api=api) as client:
        with pytest.raises(InvalidArgument) as caught:
            client.classify(pixels)
        assert client.classify(np.zeros(784, np.float32)).labels.shape == (1,)  # still serving
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.details and fragment in str(error)
    assert server.target in str(error)
    assert isinstance(error.__cause__, grpc.RpcError)  # raise Ours(...) from exc
    assert isinstance(error, (ClientError, InvalidInput, DigitserveError))


@pytest.mark.parametrize(("api", "fragment"), [("digits", "not a multiple of 784"), ("v2", "[N, 784]")])
def test_wrong_length_names_the_shape_both_apis(server: ServeProcess, api: str, fragment: str) -> None:
    async def main() -> InvalidArgument:
        async with AsyncClient(server.target, api=api) as client:
            with pytest.raises(InvalidArgument) as caught:
                await client.aclassify(np.zeros(100, np.float32))
            return caught.value

    error = asyncio.run(main())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and fragment in error.details


def test_unknown_v2_model_is_not_found(server: ServeProcess, mnist_images: Images) -> None:
    with Client(server.target, api="v2", model="letters") as client, pytest.raises(NotFound) as caught:
        client.classify(mnist_images.pixels[:1])
    assert caught.value.code == grpc.StatusCode.NOT_FOUND and "letters" in caught.value.details
    with Client(server.target, api="v2", model_version=7) as client, pytest.raises(NotFound, match=r"version '?7'?"):
        client.classify(mnist_images.pixels[:1])


def test_deadline_and_no_server(mnist_images: Images) -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with Client(f"127.0.0.1:{silent.getsockname()[1]}") as client, pytest.raises(DeadlineExceeded) as caught:
            client.classify(mnist_images.pixels[:1], timeout=0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    nobody = f"127.0.0.1:{free_port()}"
    with Client(nobody, timeout=5) as client:
        with pytest.raises(Unavailable) as unavailable:
            client.classify(mnist_images.pixels[:1])
        assert unavailable.value.code == grpc.StatusCode.UNAVAILABLE
        # pixels the client cannot encode fail before anything is sent (else: Unavailable)
        with pytest.raises(InvalidArgument, match="uint8 encoding needs float pixels in"):
            Client(nobody, encoding="uint8").classify(np.full(784, 2.0))
        with pytest.raises(Unavailable, match="not SERVING within"):
            client.wait_ready(0.3)


def test_bad_client_settings_are_clear() -> None:
    with pytest.raises(ClientError, match="api must be one of digits, v2"):
        Client(api="v3")
    with pytest.raises(ClientError, match="encoding must be one of"):
        AsyncClient(encoding="float16")
    with pytest.raises(ClientError, match="go together"):
        Client(tls=TLS(client_certificate=b"x"))


def test_mutual_tls_sync_and_async(
    session_servers: Servers, repo: Path, certificates: Certificates, mnist_images: Images
) -> None:
    c = certificates
    server = session_servers.serve("--repo", str(repo), "--tls-cert", str(c.server_cert), "--tls-key",
                                   str(c.server_key), "--tls-client-ca", str(c.ca)).wait_serving()
    tls = TLS(c.ca, c.client_cert, c.client_key.read_bytes())
    with Client(server.target, tls=tls) as client:
        assert client.classify(mnist_images.pixels[:3]).labels.shape == (3,)
    renamed = TLS(c.ca, c.client_cert, c.client_key, server_name="localhost")

    async def main() -> int:
        async with AsyncClient(server.target, tls=renamed, api="v2") as client:
            return len(await client.aclassify(mnist_images.uint8[:4]))

    assert asyncio.run(main()) == 4
    with Client(server.target, tls=TLS(c.ca)) as client, pytest.raises(Unavailable):
        client.classify(mnist_images.pixels[:1])  # no client certificate: the handshake is refused
    with Client(server.target) as client, pytest.raises(Unavailable):
        client.classify(mnist_images.pixels[:1])  # plaintext against a TLS port
