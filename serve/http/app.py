"""The KServe V2 HTTP/REST endpoints: a Starlette app over the same data plane and model control as gRPC.

Each endpoint does what its gRPC method does (serve/servicers/kserve.py), with the shared rules
of serve/v2.py, so batching, routing, readiness, the drain and the metrics are the same; only
the encoding differs (serve/http/tensors.py). Our errors become `{"error": "<message>"}` with the
HTTP status of their gRPC code (STATUS); anything unexpected is logged with its traceback and
answered 500 with a fixed message, never the exception's text. A body is read only up to its
limit (`max_body_bytes`), checked against Content-Length before reading and while streaming.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digitserve import __version__
from digitserve.contract import IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME
from digitserve.errors import InvalidInput
from digitserve.serve import v2
from digitserve.serve.control import ModelControl
from digitserve.serve.dataplane import DataPlane
from digitserve.serve.errors import DeadlineExceeded, Draining, ServeError, TooManyImages, log_unexpected, status_of
from digitserve.serve.http import tensors
from digitserve.serve.settings import MESSAGE_OVERHEAD_BYTES, ServeSettings
from digitserve.wire.names import IMAGE_INPUT, PLATFORM

log = logging.getLogger(__name__)

STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 400,  # Triton answers a failed load 400
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""HTTP status of each gRPC code our errors carry; any other (INTERNAL) is 500."""
JSON_BYTES_PER_VALUE = 32
"""Room for one pixel value in JSON text: `0.0039215688593685627, ` is 23 bytes; generous."""
RETRY_AFTER_SECONDS = "1"
PARSE_OFF_LOOP_BYTES = 256 * 1024
"""Bodies above this are parsed in a thread: json.loads of a 20 MB body takes ~0.4 s, and on the
event loop nothing else (gRPC included) would be served meanwhile; in a thread the loop gets the
GIL back every switch interval (5 ms)."""
OBJECT = "a JSON object"


class BodyTooLarge(ServeError):
    """A request body above max_body_bytes (413)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


TOO_LARGE = (BodyTooLarge, TooManyImages)
"""Errors that say the request is too big, which a retry cannot mend: 413, not 429."""


def max_body_bytes(settings: ServeSettings) -> int:
    """The largest body accepted: --max-request-images images as JSON text, plus the envelope."""
    return settings.max_request_images * IMAGE_SIZE * JSON_BYTES_PER_VALUE + MESSAGE_OVERHEAD_BYTES


def error_response(exc: BaseException, where: str) -> Response:
    """`{"error": message}` with the status that says what the client can do (see module doc)."""
    log_unexpected(exc, where)
    code, message = status_of(exc)
    status = 413 if isinstance(exc, TOO_LARGE) else STATUS.get(code, 500)
    headers = {}
    if status == 503:
        headers["retry-after"] = RETRY_AFTER_SECONDS
    if isinstance(exc, Draining):
        headers["connection"] = "close"  # this server is going away: reconnect elsewhere
    return JSONResponse({"error": message}, status, headers)


Endpoint = Callable[[Any, Request], Awaitable[Response]]


def v2_errors(endpoint: Endpoint) -> Endpoint:
    """Turn the errors of an endpoint method into V2 error responses (see module doc)."""

    @functools.wraps(endpoint)
    async def wrapper(self: Any, request: Request) -> Response:
        try:
            return await endpoint(self, request)
        except Exception as exc:
            return error_response(exc, f"{request.method} {request.url.path}")

    return wrapper


def check_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind not in (tensors.JSON_TYPE, tensors.BINARY_TYPE):
        raise InvalidInput(
            f"Content-Type {kind} is not a V2 body: send {tensors.JSON_TYPE} (curl: -H 'Content-Type: "
            f"{tensors.JSON_TYPE}'), or {tensors.BINARY_TYPE} for JSON followed by binary tensor data"
        )


INFER_LIMIT = (
    "the limit that --max-request-images sets (that many images as JSON): split the batch, or send "
    "binary tensor data (4 bytes a value)"
)


async def read_body(request: Request, limit: int, why: str = INFER_LIMIT) -> bytes:
    """The request body (decompressed if sent gzip or deflate), refused once it passes `limit` bytes."""
    check_content_type(request)
    too_large = BodyTooLarge(f"the request body is larger than {limit} bytes, {why}")
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # nobody will read the answer; say so in case a proxy does
        raise InvalidInput("the client went away before it sent the whole body") from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"Content-Encoding {encoding} is not supported: send identity, gzip or deflate")
    inflate = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        body = inflate.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding} data ({exc})") from None
    if len(body) > limit or inflate.unconsumed_tail:
        raise too_large
    return body


def create_app(settings: ServeSettings, plane: DataPlane, control: ModelControl) -> Starlette:
    """The V2 routes over `plane` (inference, health, metadata) and `control` (the repository)."""
    endpoints = Endpoints(plane, control, max_body_bytes(settings))
    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2", endpoints.server_metadata, methods=["GET"]),
        Route("/v2/health/live", endpoints.live, methods=["GET"]),
        Route("/v2/health/ready", endpoints.ready, methods=["GET"]),
        *(Route(path, endpoints.model_metadata, methods=["GET"]) for path in (model, version)),
        *(Route(f"{path}/ready", endpoints.model_ready, methods=["GET"]) for path in (model, version)),
        *(Route(f"{path}/infer", endpoints.infer, methods=["POST"]) for path in (model, version)),
        Route("/v2/repository/index", endpoints.index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", endpoints.load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", endpoints.unload, methods=["POST"]),
    ]
    if settings.web:  # the drawing page of `digitserve web` beside /v2, on this port (docs/web.md)
        from digitserve.web.app import WebConfig, page_routes

        routes += page_routes(WebConfig.find(settings.repo, settings.page_model, server_api=True))
    return Starlette(routes=routes, exception_handlers={HTTPException: no_such_endpoint})


async def no_such_endpoint(request: Request, exc: Exception) -> Response:
    """404 and 405 of the router, in the V2 error form."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = {key.lower(): value for key, value in (exc.headers or {}).items()}.get("allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
    elif exc.status_code == 404:
        message = (
            f"no V2 endpoint {request.url.path}: see /v2, /v2/health/ready, /v2/models/NAME[/versions/V][/ready], "
            "POST /v2/models/NAME[/versions/V]/infer, POST /v2/repository/index (docs/http.md)"
        )
    else:
        message = str(exc.detail)
    return JSONResponse({"error": message}, exc.status_code, exc.headers)


class Endpoints:
    """The endpoints, each the counterpart of a GRPCInferenceService method."""

    def __init__(self, plane: DataPlane, control: ModelControl, limit: int):
        self.plane = plane
        self.control = control
        self.limit = limit

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        """200 once every planned model is loaded and warm, 503 while loading and from the drain on."""
        return JSONResponse({"ready": self.plane.ready}, 200 if self.plane.ready else 503)

    @v2_errors
    async def server_metadata(self, request: Request) -> Response:
        extensions = v2.server_extensions(self.plane.registry, "binary_tensor_data")
        return JSONResponse({"name": v2.SERVER_NAME, "version": __version__, "extensions": extensions})

    @v2_errors
    async def model_metadata(self, request: Request) -> Response:
        name, text = request.path_params["name"], request.path_params.get("version", "")
        served = self.plane.route(name, v2.version_number(text, "version"))
        metadata = {
            "name": served.name,
            "versions": [str(v) for v in self.plane.registry.versions(served.name)],
            "platform": PLATFORM,
            "inputs": [  # one or the other per request (docs/http.md)
                {"name": INPUT_NAME, "datatype": "FP32", "shape": v2.INPUT_SHAPE},
                {"name": IMAGE_INPUT, "datatype": v2.IMAGE_DATATYPE, "shape": v2.IMAGE_SHAPE},
            ],
            "outputs": [{"name": OUTPUT_NAME, "datatype": v2.OUTPUT_DATATYPE, "shape": v2.OUTPUT_SHAPE}],
        }
        return JSONResponse(metadata, headers={v2.ARTIFACT_TRAILER: served.model.info.artifact})

    @v2_errors
    async def model_ready(self, request: Request) -> Response:
        """200 when the version (default: any) is served and the server ready, else 503 (as V2's ModelReady)."""
        name = request.path_params["name"]
        ready = v2.model_ready(self.plane, name, request.path_params.get("version", ""))
        return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)

    @v2_errors
    async def infer(self, request: Request) -> Response:
        name = request.path_params["name"]
        version = v2.version_number(request.path_params.get("version", ""), "version")
        body, header_length = await read_body(request, self.limit), request.headers.get(tensors.HEADER_LENGTH)
        if len(body) > PARSE_OFF_LOOP_BYTES:  # a big JSON text holds the GIL for long: let the loop interleave
            parsed = await asyncio.to_thread(tensors.parse_infer, body, header_length)
        else:
            parsed = tensors.parse_infer(body, header_length)
        call = self.plane.infer(name, version, lambda: parsed.pixels(self.plane.images), parsed.deadline)
        if parsed.deadline is None:
            probabilities, model = await call
        else:  # as gRPC cancels a call at its deadline
            try:
                async with asyncio.timeout(max(0.0, parsed.deadline - time.monotonic())):
                    probabilities, model = await call
            except TimeoutError:
                raise DeadlineExceeded(
                    "the request's parameters.timeout passed before it was answered; allow a longer timeout"
                ) from None
        body, headers = tensors.encode_infer(parsed, probabilities, model)
        return Response(body, headers=headers)

    # -- Triton's model repository extension ----------------------------------------------------
    @v2_errors
    async def index(self, request: Request) -> Response:
        body = await self._object(request, '{"ready": true} (or no body)')
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput(f"ready must be true or false; got {ready!r}")
        entries = await self.control.index(ready_only=ready)
        return JSONResponse(
            [{"name": e.name, "version": str(e.version), "state": e.state, "reason": e.reason} for e in entries]
        )

    @v2_errors
    async def load(self, request: Request) -> Response:
        """Load a model per its policy; our extension: parameters.version pins one version (rollback)."""
        parameters = await self._parameters(request, '{"parameters": {"version": 4}} (or no body)', {"version"})
        name = request.path_params["name"]
        v2.require_explicit_control(self.control, self.plane, f"POST /v2/repository/models/{name}/load")
        await self.control.load(name, _pinned_version(parameters.get("version")))
        return JSONResponse({})

    @v2_errors
    async def unload(self, request: Request) -> Response:
        await self._parameters(request, '{"parameters": {"unload_dependents": false}} (or no body)',
                               {"unload_dependents"})
        name = request.path_params["name"]
        v2.require_explicit_control(self.control, self.plane, f"POST /v2/repository/models/{name}/unload")
        await self.control.unload(name)
        return JSONResponse({})

    async def _object(self, request: Request, example: str) -> dict[str, Any]:
        """The body as a JSON object; no body is {}."""
        body = await read_body(request, MESSAGE_OVERHEAD_BYTES, "the limit of a repository call's body")
        return tensors.parse_object(body, OBJECT, example) if body.strip() else {}

    async def _parameters(self, request: Request, example: str, known: set[str]) -> dict[str, Any]:
        parameters = (await self._object(request, example)).get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInput(f"parameters must be a JSON object, as in {example}")
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise InvalidInput(
                f"parameter {unknown[0]!r} is not supported here (only {', '.join(sorted(known))}): digitserve "
                "serves the exported versions in its repository; configs and uploaded files are not taken"
            )
        return parameters


def _pinned_version(value: Any) -> int | None:
    """parameters.version of a load: a version number (int, or digits in a string) or absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) > 0:
        return int(value)
    raise InvalidInput(f"parameters.version must be a version number such as 4 or \"4\"; got {value!r}")
