"""The serving tests' in-process server: a DigitServer on its own event loop in a thread.

Tests talk to it through real gRPC channels on 127.0.0.1 and an ephemeral port, and can call
its coroutines (reload, stop) directly. What needs a real process (signals, exit codes) uses
tests.support.server.ServeProcess instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc

from digitserve.serve.server import DigitServer
from digitserve.serve.settings import ServeSettings
from digitserve.wire.proto import digits_pb2_grpc, grpc_service_pb2_grpc
from tests.support.metrics import metric_value, scrape

T = TypeVar("T")


def server_settings(repo: Path, **changes: Any) -> ServeSettings:
    """Settings for an in-process test server: ephemeral ports, CPU, no polling."""
    base: dict[str, Any] = dict(
        repo=repo,
        port=0,
        metrics_port=0,
        device="cpu",
        poll_seconds=0,
        grace_seconds=2.0,
        intra_op_threads=1,
    )
    base.update(changes)
    return ServeSettings(**base)


class ServerThread:
    """A DigitServer running on its own event loop in a daemon thread."""

    def __init__(self, settings: ServeSettings, load: bool = True):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: DigitServer = self.call(self._create(settings))
        self.call(self.server.start())
        if load:
            self.call(self.server.load())

    @staticmethod
    async def _create(settings: ServeSettings) -> DigitServer:
        return DigitServer(settings)  # built on the loop: its asyncio objects belong there

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.submit(coroutine).result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def metrics_text(self) -> str:
        assert self.server.metrics_port is not None, "this server serves no metrics"
        return scrape(self.server.metrics_port)

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        return metric_value(self.metrics_text(), name, **labels)

    def wait_for(self, name: str, value: float, timeout: float = 30, **labels: str) -> None:
        """Wait until metric `name` equals `value` (for example: calls have reached the server)."""
        deadline = time.monotonic() + timeout
        while (current := self.metric(name, **labels)) != value:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed {current}, expected {value}")
            time.sleep(0.01)

    def wait_running(self, in_flight: int = 1) -> None:
        """Wait until `in_flight` calls have arrived and none is left in the queue."""
        self.wait_for("digitserve_inflight_calls", in_flight)
        self.wait_for("digitserve_queue_images", 0)

    def close(self) -> None:
        if self.loop.is_running():
            self.call(self.server.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


class Stubs:
    """Both APIs' stubs over one real channel."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.digits = digits_pb2_grpc.ClassifierStub(channel)
        self.v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
