"""The errors the digitserve client raises, and the one place gRPC errors become them.

    DigitserveError (digitserve.errors)
    └── ClientError            any failed call; `.code` (grpc.StatusCode) and `.details` (the
        │                      server's message, verbatim); INTERNAL, CANCELLED, UNAUTHENTICATED...
        ├── InvalidArgument    INVALID_ARGUMENT: the server rejected the pixels (shape, range, NaN),
        │                      or the client could not encode them (never sent); also InvalidInput
        ├── NotFound           NOT_FOUND: unknown model name or version (both APIs, and the
        │                      model repository calls)
        ├── FailedPrecondition FAILED_PRECONDITION: the server refuses the call in its present
        │                      state (say, a model load or unload without explicit model control)
        ├── ResourceExhausted  RESOURCE_EXHAUSTED: queue full, too many images in one request,
        │                      no room to load another model
        ├── Unimplemented      UNIMPLEMENTED: the server has no such call (an older server, or one
        │                      without the model repository extension)
        ├── Unavailable        UNAVAILABLE: no server, not ready yet, draining: retry elsewhere/later
        └── DeadlineExceeded   DEADLINE_EXCEEDED: the call's deadline passed

`translate_errors(target)` wraps every call of the sync and the async client alike
(grpc.aio's AioRpcError is a grpc.RpcError): `raise Ours(message) from exc`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from digitserve.errors import DigitserveError, InvalidInput


class ClientError(DigitserveError):
    """A call to a digitserve server failed; `code` and `details` say how, as the server said."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details or message


class InvalidArgument(ClientError, InvalidInput):
    """The pixels break the input contract; the message says what to fix."""


class NotFound(ClientError):
    """The server does not serve the model name or version asked for."""


class FailedPrecondition(ClientError):
    """The server will not do this in its present state; the message says what stands in the way."""


class ResourceExhausted(ClientError):
    """The server's queue is full or the request holds too many images: back off, or split."""


class Unimplemented(ClientError):
    """The server does not implement this call (for example the model repository extension)."""


class Unavailable(ClientError):
    """No server answered, or it is not ready yet or shutting down: retry later or elsewhere."""


class DeadlineExceeded(ClientError):
    """The call did not complete before its deadline."""


BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_from_rpc(exc: grpc.RpcError, target: str) -> ClientError:
    """Our exception for a failed gRPC call: the class of its status code, the server's message."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or ""
    cls = BY_CODE.get(code, ClientError)
    return cls(f"{target}: {code.name}: {details or 'no details'}", code, details)


def local_invalid(message: str) -> InvalidArgument:
    """An InvalidArgument for pixels the client cannot put on the wire (nothing was sent)."""
    return InvalidArgument(message, grpc.StatusCode.INVALID_ARGUMENT, message)


@contextlib.contextmanager
def translate_errors(target: str) -> Iterator[None]:
    """Re-raise any grpc.RpcError inside the block as our ClientError (see module doc)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc, target) from exc
