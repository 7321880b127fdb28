"""A small Python client for digitserve: classify images over digits.v1 or the KServe V2 API.

    from digitserve.client import Client, AsyncClient

    with Client("127.0.0.1:50051") as client:              # api="digits" | "v2"
        result = client.classify(pixels)                   # [N, 784] floats 0..1, or uint8 0..255
        client.classify_images([Path("7.png").read_bytes()])  # files the server decodes (no Pillow here)
        result.labels, result.probabilities, result.model_version
        client.classify(pixels, model="digits", version=2)  # a model and version of the repository

    async with AsyncClient("127.0.0.1:50051", api="v2", encoding="uint8") as client:
        result = await client.aclassify(pixels, timeout=2.0)

    with Client("127.0.0.1:50051") as client:              # operators: the model repository extension
        client.repository_index()                          # [{"name", "version", "state", "reason"}]
        client.load_model("digits", version=2)             # the server needs --model-control explicit
        client.unload_model("digits")

Needs grpc and numpy only (no ONNX Runtime, no TensorFlow). Every failed call raises a
`ClientError` subclass carrying the gRPC status code and the server's message (see
`digitserve.client.errors`); the encodings and pixel layouts are described in `digitserve.client.messages`.
`TLS` is digitserve.wire.tls.TLS, the one TLS description of both sides.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from digitserve.client.errors import (
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    translate_errors,
)
from digitserve.client.messages import (
    Classification,
    check_version,
    digits_images_request,
    digits_request,
    digits_result,
    image_files,
    load_request,
    repository_index_request,
    repository_index_result,
    to_batch,
    unload_request,
    v2_images_request,
    v2_request,
    v2_result,
)
from digitserve.client.retries import RetryPolicy, channel_options
from digitserve.errors import DigitserveError
from digitserve.wire.names import APIS, DEFAULT_TARGET, ENCODINGS, SERVICE_OF_API
from digitserve.wire.proto import digits_pb2_grpc, grpc_service_pb2, grpc_service_pb2_grpc
from digitserve.wire.tls import TLS

__all__ = [
    "APIS",
    "ENCODINGS",
    "AsyncClient",
    "Classification",
    "Client",
    "ClientError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "TLS",
    "Unavailable",
    "Unimplemented",
]

DEFAULT_TIMEOUT = 10.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # what the client sends and accepts: ~20,000 float images


class _Default:
    """The marker for 'the client's own timeout' (None means no deadline at all)."""


DEFAULT: Any = _Default()


def _credentials(tls: TLS) -> grpc.ChannelCredentials:
    """The channel's TLS credentials; unreadable PEM files or half a key pair raise ClientError."""
    try:
        return tls.credentials()
    except DigitserveError as exc:
        raise ClientError(str(exc)) from exc


@dataclass
class _Config:
    """What both clients share: where to connect and how to encode (see Client)."""

    target: str = DEFAULT_TARGET
    api: str = "digits"
    encoding: str = "float32"
    model: str | None = None
    model_version: int | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    tls: TLS | None = None
    packed_output: bool = True
    v2_raw: bool = True
    retries: RetryPolicy | bool | None = True
    wait_for_ready: bool = False
    options: list[tuple[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.retries is True:
            self.retries = RetryPolicy()
        elif self.retries is False:
            self.retries = None
        if self.api not in APIS:
            raise ClientError(f"api must be one of {', '.join(APIS)}; got {self.api!r}")
        if self.encoding not in ENCODINGS:
            raise ClientError(f"encoding must be one of {', '.join(ENCODINGS)}; got {self.encoding!r}")
        self.model = _check_model(self.model)
        self.model_version = check_version(self.model_version)

    def open_channel(self, api: Any) -> Any:
        """A channel made by `api`, grpc (blocking) or grpc.aio: plaintext, or TLS when `tls` is set."""
        options = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            *(self.tls.options() if self.tls else []),
            *channel_options(self.target, self.retries or None, self.wait_for_ready),
            *self.options,
        ]
        if self.tls is None:
            return api.insecure_channel(self.target, options=options)
        return api.secure_channel(self.target, _credentials(self.tls), options=options)

    def deadline(self, timeout: Any) -> float | None:
        return self.timeout if isinstance(timeout, _Default) else timeout

    def route(self, model: str | None, version: int | None) -> tuple[str, int]:
        """The model and version a call asks for ("" / 0: the server's default); a call's own win."""
        model = _check_model(model)
        version = check_version(version)
        model = model if model is not None else self.model
        version = version if version is not None else self.model_version
        return model or "", version or 0

    def request(self, pixels: Any, model: str | None = None, version: int | None = None) -> Any:
        """The API's request for the pixels; a call's model/version win over the client's own."""
        model, version = self.route(model, version)
        batch = to_batch(pixels)
        if self.api == "digits":
            return digits_request(batch, self.encoding, self.packed_output, model, version)
        return v2_request(batch, self.encoding, self.v2_raw, model, str(version or ""))

    def images_request(self, files: Any, model: str | None = None, version: int | None = None) -> Any:
        """The API's request for encoded image files (digits.v1 `images`, V2 `image` BYTES)."""
        found = image_files(files)
        model, version = self.route(model, version)
        if self.api == "digits":
            return digits_images_request(found, self.packed_output, model, version)
        return v2_images_request(found, self.v2_raw, model, str(version or ""))

    def result(self, response: Any) -> Classification:
        return digits_result(response) if self.api == "digits" else v2_result(response)

    def health_request(self) -> health_pb2.HealthCheckRequest:
        return health_pb2.HealthCheckRequest(service=SERVICE_OF_API[self.api])


def _check_model(model: str | None) -> str | None:
    if model is not None and not isinstance(model, str):
        raise ClientError(f"a model name is a string (None: the server's default model); got {model!r}")
    return model


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ClientError(f"name the model to load or unload (a non-empty string); got {name!r}")
    return name


class _Stubs:
    def __init__(self, channel: Any, api: str):
        v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        if api == "digits":
            self.classify = digits_pb2_grpc.ClassifierStub(channel).Classify
        else:
            self.classify = v2.ModelInfer
        self.health = health_pb2_grpc.HealthStub(channel).Check
        self.metadata = v2.ServerMetadata
        self.index = v2.RepositoryIndex
        self.load = v2.RepositoryModelLoad
        self.unload = v2.RepositoryModelUnload


def _metadata(reply: grpc_service_pb2.ServerMetadataResponse) -> dict[str, Any]:
    return {"name": reply.name, "version": reply.version, "extensions": list(reply.extensions)}


class Client:
    """A blocking client over one gRPC channel; thread-safe, reuse it for many calls.

    target: "host:port". api: "digits" (digits.v1) or "v2" (KServe V2 ModelInfer).
    encoding: "float32", "float32_le" or "uint8" (see messages.py). model / model_version: the
    model of the server's repository, and its version, that calls ask for unless a call names
    its own (None: the server's default model, "digits" over V2; its newest version). timeout:
    default deadline in seconds per call (None: none). tls: a TLS, or None for plaintext.
    packed_output: ask digits.v1 for packed bytes rather than one message per image. v2_raw:
    send V2 data as raw_input_contents rather than typed contents. retries: a RetryPolicy, True
    (the default policy: UNAVAILABLE retried up to 5 attempts with backoff, Classify and
    ModelInfer only) or False. wait_for_ready: calls wait for a connection up to their deadline instead of failing
    UNAVAILABLE at once (rides through a restart). options: extra grpc channel options.
    """

    def __init__(self, target: str = DEFAULT_TARGET, **config: Any):
        self._config = _Config(target=target, **config)
        self._channel = self._config.open_channel(grpc)
        self._stubs = _Stubs(self._channel, self._config.api)

    @property
    def target(self) -> str:
        return self._config.target

    def classify(
        self, pixels: Any, *, model: str | None = None, version: int | None = None, timeout: float | None = DEFAULT
    ) -> Classification:
        """Labels [N] and probabilities [N, 10] for the images; raises a ClientError subclass.

        model / version: which model of the server's repository answers, and which of its versions
        (None: the client's model / model_version; unknown ones raise NotFound).
        """
        request = self._config.request(pixels, model, version)
        with translate_errors(self.target):
            response = self._stubs.classify(request, timeout=self._config.deadline(timeout))
        return self._config.result(response)

    def classify_images(
        self, files: Sequence[bytes], *, model: str | None = None, version: int | None = None,
        timeout: float | None = DEFAULT,
    ) -> Classification:
        """Labels and probabilities for encoded image files (PNG, JPEG, BMP, GIF, WebP; one digit
        each), which the server decodes and prepares as `digitserve classify` prepares files.

        The bytes are sent as they are: no Pillow is needed here. A file the server cannot read,
        or one above its limits, raises InvalidArgument naming the file's index. model / version
        as in classify.
        """
        request = self._config.images_request(files, model, version)
        with translate_errors(self.target):
            response = self._stubs.classify(request, timeout=self._config.deadline(timeout))
        return self._config.result(response)

    def ready(self, *, timeout: float | None = DEFAULT) -> bool:
        """True when the server's health service reports this client's API SERVING."""
        with translate_errors(self.target):
            reply = self._stubs.health(self._config.health_request(), timeout=self._config.deadline(timeout))
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout: float) -> None:
        """Wait until `ready()`, at most `timeout` seconds; raises Unavailable when it never is."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if self.ready(timeout=max(0.05, min(1.0, remaining))):
                    return
            except (Unavailable, DeadlineExceeded):
                pass
            if remaining <= 0:
                raise Unavailable(f"{self.target}: not SERVING within {timeout:g} s", grpc.StatusCode.UNAVAILABLE)
            time.sleep(min(0.1, max(0.0, remaining)))

    def server_metadata(self, *, timeout: float | None = DEFAULT) -> dict[str, Any]:
        """The V2 ServerMetadata: name, version and extensions (the execution provider is one)."""
        with translate_errors(self.target):
            request = grpc_service_pb2.ServerMetadataRequest()
            reply = self._stubs.metadata(request, timeout=self._config.deadline(timeout))
        return _metadata(reply)

    # -- operators: the V2 model repository extension (Triton's RepositoryIndex/ModelLoad/ModelUnload)
    def repository_index(self, ready: bool = False, *, timeout: float | None = DEFAULT) -> list[dict[str, str]]:
        """The models in the server's repository: dicts of name, version, state and reason (all
        strings, as the server gave them). ready=True: only those ready for inference."""
        with translate_errors(self.target):
            reply = self._stubs.index(repository_index_request(ready), timeout=self._config.deadline(timeout))
        return repository_index_result(reply)

    def load_model(self, name: str, version: int | None = None, *, timeout: float | None = DEFAULT) -> None:
        """Load (or reload) model `name`, at `version` if given (else the newest). The server must
        run with explicit model control; otherwise it refuses (a ClientError with its message)."""
        request = load_request(_check_name(name), check_version(version))
        with translate_errors(self.target):
            self._stubs.load(request, timeout=self._config.deadline(timeout))

    def unload_model(self, name: str, *, timeout: float | None = DEFAULT) -> None:
        """Unload model `name` (explicit model control, like load_model)."""
        request = unload_request(_check_name(name))
        with translate_errors(self.target):
            self._stubs.unload(request, timeout=self._config.deadline(timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio twin of Client (same arguments); `aclassify` may run concurrently.

    The channel opens on first use, inside the running event loop, and closes with `aclose()`
    or `async with`.
    """

    def __init__(self, target: str = DEFAULT_TARGET, **config: Any):
        self._config = _Config(target=target, **config)
        if self._config.tls is not None:
            _credentials(self._config.tls)  # bad TLS settings fail here, not at the first call
        self._channel: grpc.aio.Channel | None = None
        self._stubs: _Stubs | None = None

    @property
    def target(self) -> str:
        return self._config.target

    def _open(self) -> _Stubs:
        if self._stubs is None:
            self._channel = self._config.open_channel(grpc.aio)
            self._stubs = _Stubs(self._channel, self._config.api)
        return self._stubs

    async def aclassify(
        self, pixels: Any, *, model: str | None = None, version: int | None = None, timeout: float | None = DEFAULT
    ) -> Classification:
        """Labels [N] and probabilities [N, 10] for the images; raises a ClientError subclass.
        model / version as in Client.classify."""
        request = self._config.request(pixels, model, version)
        stubs = self._open()
        with translate_errors(self.target):
            response = await stubs.classify(request, timeout=self._config.deadline(timeout))
        return self._config.result(response)

    async def aclassify_images(
        self, files: Sequence[bytes], *, model: str | None = None, version: int | None = None,
        timeout: float | None = DEFAULT,
    ) -> Classification:
        """As Client.classify_images."""
        request = self._config.images_request(files, model, version)
        stubs = self._open()
        with translate_errors(self.target):
            response = await stubs.classify(request, timeout=self._config.deadline(timeout))
        return self._config.result(response)

    async def aready(self, *, timeout: float | None = DEFAULT) -> bool:
        """True when the server's health service reports this client's API SERVING."""
        stubs = self._open()
        with translate_errors(self.target):
            reply = await stubs.health(self._config.health_request(), timeout=self._config.deadline(timeout))
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def aserver_metadata(self, *, timeout: float | None = DEFAULT) -> dict[str, Any]:
        """The V2 ServerMetadata: name, version and extensions (the execution provider is one)."""
        stubs = self._open()
        with translate_errors(self.target):
            request = grpc_service_pb2.ServerMetadataRequest()
            reply = await stubs.metadata(request, timeout=self._config.deadline(timeout))
        return _metadata(reply)

    async def arepository_index(self, ready: bool = False, *, timeout: float | None = DEFAULT) -> list[dict[str, str]]:
        """As Client.repository_index."""
        stubs = self._open()
        with translate_errors(self.target):
            reply = await stubs.index(repository_index_request(ready), timeout=self._config.deadline(timeout))
        return repository_index_result(reply)

    async def aload_model(self, name: str, version: int | None = None, *, timeout: float | None = DEFAULT) -> None:
        """As Client.load_model."""
        request = load_request(_check_name(name), check_version(version))
        stubs = self._open()
        with translate_errors(self.target):
            await stubs.load(request, timeout=self._config.deadline(timeout))

    async def aunload_model(self, name: str, *, timeout: float | None = DEFAULT) -> None:
        """As Client.unload_model."""
        request = unload_request(_check_name(name))
        stubs = self._open()
        with translate_errors(self.target):
            await stubs.unload(request, timeout=self._config.deadline(timeout))

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._stubs = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
