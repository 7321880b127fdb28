"""The server's errors and the gRPC status each one becomes.

    DigitserveError (digitserve.errors)       status sent to the client
    ├── InvalidInput                          INVALID_ARGUMENT
    ├── ModelRepositoryError                  (start/reload only: logged, never sent)
    └── ServeError                            its `code`
        ├── ModelNotFound                     NOT_FOUND          unknown model name or version
        ├── LoadFailed                        FAILED_PRECONDITION an explicit load could not load a version
        ├── ControlDisabled                   FAILED_PRECONDITION load/unload without --model-control explicit
        ├── TooManyVersions                   RESOURCE_EXHAUSTED more versions than --max-loaded-versions
        ├── TooManyImages                     RESOURCE_EXHAUSTED one request above the limit
        ├── QueueFull                         RESOURCE_EXHAUSTED the batcher's queue is full
        ├── NotReady                          UNAVAILABLE        no model loaded and warmed yet
        ├── Draining                          UNAVAILABLE        shutting down
        ├── DeadlineExceeded                  DEADLINE_EXCEEDED  the deadline passed while queued
        ├── DeviceUnavailable                 (start only)       --device cuda without CUDA
        └── GraceExpired                      (exit 3)           calls left unanswered at shutdown

`grpc_errors` wraps a unary servicer method: our errors abort the call with their status and
message; anything unexpected is logged with its traceback and reaches the client as a plain
INTERNAL, never with the exception's text.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from digitserve.errors import DigitserveError, InvalidInput

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal server error; the server log has the details"


class ServeError(DigitserveError):
    """An error of the serving path that maps to one gRPC status code."""

    code = grpc.StatusCode.INTERNAL


class ModelNotFound(ServeError):
    code = grpc.StatusCode.NOT_FOUND


class LoadFailed(ServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ControlDisabled(ServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class TooManyVersions(ServeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyImages(ServeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class QueueFull(ServeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(ServeError):
    code = grpc.StatusCode.UNAVAILABLE


class Draining(ServeError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class DeviceUnavailable(ServeError):
    """The requested execution device cannot be used (a start-up error, exit 1)."""


class GraceExpired(ServeError):
    """The shutdown's grace period ran out with calls unanswered (exit 3, the log says how many)."""

    exit_code = 3


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception raised while serving a call."""
    if isinstance(exc, InvalidInput):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, ServeError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE


def is_expected(exc: BaseException) -> bool:
    """True for errors caused by the request or the server's state, not by a bug."""
    return isinstance(exc, (InvalidInput, ServeError))


def log_unexpected(exc: BaseException, method: str) -> None:
    if not is_expected(exc):
        log.error("%s failed unexpectedly", method, exc_info=exc)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: Handler) -> Handler:
    """Turn the errors of an async unary servicer method into gRPC statuses (see module doc)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise  # the method aborted the call itself
        except Exception as exc:
            log_unexpected(exc, method.__qualname__)
            code, message = status_of(exc)
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
