"""The serving core both APIs share: readiness, routing, and one inference path.

A servicer hands `infer` the model and version its request names and a function that decodes
and validates the request into float32 [N, 784] pixels (or into an awaitable of them, for image
files: serve/images.py decodes those in its own threads); the data plane checks readiness, routes
to a served version (serve/registry.py) and pins it, applies the per-request image limit, queues
the pixels on that version's batcher and records the outcome in the metrics. Routing happens on
the event loop in one step, so every call sees a version either before or after a reload, and
keeps the one it pinned until it is answered.

The states follow the drain (serve/server.py): LOADING and SERVING as their names say; DRAINING
reports not-ready but still computes every call, so nothing sent before the drain is refused;
CLOSED refuses new calls with UNAVAILABLE. The plane counts calls in flight and the time of the
last arrival or answer, which is how the drain knows the transport's backlog has been answered.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from digitserve.serve.batcher import DEADLINE_SLACK, deadline_passed
from digitserve.serve.errors import Draining, NotReady, TooManyImages, status_of
from digitserve.serve.metrics import Metrics
from digitserve.serve.registry import Registry, ServedVersion

log = logging.getLogger(__name__)


class State(enum.Enum):
    LOADING = "loading"
    SERVING = "serving"
    DRAINING = "draining"
    CLOSED = "closed"


class DataPlane:
    """Readiness plus the one inference path (see module doc)."""

    def __init__(self, registry: Registry, metrics: Metrics, max_request_images: int):
        self.registry = registry
        self.metrics = metrics
        self.max_request_images = max_request_images
        self.state = State.LOADING
        self.draining = asyncio.Event()
        """Set when the drain proper begins (after the lame-duck delay); streams watch it to end."""
        self.images: Any = None
        """The image-file decoder (serve/images.py ImageDecoder) the servicers hand files to; the server sets it."""
        self.calls_in_flight = 0
        self.last_arrival = self.last_activity = time.monotonic()
        """time.monotonic() of the newest inference call's arrival, and of its arrival or end."""

    @property
    def ready(self) -> bool:
        return self.state is State.SERVING

    def loaded(self) -> None:
        """The start plan is in service: report ready."""
        if self.state is State.LOADING:
            self.state = State.SERVING
        self.metrics.ready.set(1 if self.ready else 0)

    def report_not_ready(self) -> None:
        """Shutdown began: readiness says no (ServerReady, ModelReady, the metric); calls still run."""
        if self.state is not State.CLOSED:
            self.state = State.DRAINING
        self.metrics.ready.set(0)

    def end_streams(self) -> None:
        """Streams answer what they have read, then end UNAVAILABLE."""
        self.report_not_ready()
        self.draining.set()

    def close(self) -> None:
        """Refuse new calls with UNAVAILABLE (the calls in flight go on)."""
        self.end_streams()
        self.state = State.CLOSED

    def since_arrival(self) -> float:
        """Seconds since an inference call last arrived."""
        return time.monotonic() - self.last_arrival

    def idle_for(self) -> float:
        """Seconds since a call last arrived or ended, 0 while any call is in flight."""
        return 0.0 if self.calls_in_flight else time.monotonic() - self.last_activity

    def route(self, name: str, version: int | None) -> ServedVersion:
        """The served version a call asks for, or the error that says why there is none."""
        if self.state is State.CLOSED:
            raise Draining("the server is shutting down; retry on another replica")
        if self.state is State.LOADING:
            raise NotReady("the models are still loading; retry shortly (watch grpc.health.v1)")
        return self.registry.resolve(name, version)

    async def infer(
        self,
        name: str,
        version: int | None,
        decode: Callable[[], np.ndarray | Awaitable[np.ndarray]],
        deadline: float | None,
    ) -> tuple[np.ndarray, Any]:
        """Probabilities [N, 10] for the pixels `decode()` returns, and the model that computed them.

        `name` ("" = the default model) and `version` (None = its newest) choose the served
        version; the call pins it, so a reload that withdraws it meanwhile waits for this call.
        `decode` raises InvalidInput for a bad request; it may return an awaitable of the pixels
        instead (image files, decoded off the loop: serve/images.py), awaited as part of the call.
        `deadline` is a time.monotonic() instant.
        """
        started = self.last_arrival = self.last_activity = time.monotonic()
        model = served = None
        self.calls_in_flight += 1
        self.metrics.in_flight.inc()
        try:
            served = self.route(name, version)
            served.pin()
            model = served.model
            decoded = decode()
            # image files come as an awaitable: decoded in a thread pool while the call counts in flight
            pixels = decoded if isinstance(decoded, np.ndarray) else await decoded
            check_request_images(len(pixels), self.max_request_images)
            probabilities = await served.batcher.submit(pixels, model, deadline)
        except asyncio.CancelledError:
            # gRPC cancels the handler when the deadline passes: count that as the deadline.
            reason = "DEADLINE_EXCEEDED" if deadline_passed(deadline, slack=DEADLINE_SLACK) else "CANCELLED"
            self.metrics.call_failed(model, reason)
            raise
        except Exception as exc:
            self.metrics.call_failed(model, status_of(exc)[0].name)
            raise
        finally:
            if served is not None:
                served.unpin()
            self.calls_in_flight -= 1
            self.last_activity = time.monotonic()
            self.metrics.in_flight.dec()
        self.metrics.call_succeeded(model, time.monotonic() - started)
        return probabilities, model


def check_request_images(count: int, limit: int) -> None:
    """TooManyImages when one request carries more than --max-request-images images (or files)."""
    if count > limit:
        raise TooManyImages(
            f"{count} images in one request; the limit is {limit} (--max-request-images): split the batch"
        )


def deadline_of(context: Any) -> float | None:
    """The call's deadline as a time.monotonic() instant, or None when the client set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining
