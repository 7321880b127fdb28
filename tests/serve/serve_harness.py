"""Helpers for the serving tests: a server in a thread, a server process, metrics, stubs.

`ServerThread` runs a DigitServer on its own event loop in a background thread; tests talk to it
through real gRPC channels on 127.0.0.1 and an ephemeral port. `ServeProcess` runs
`digitserve serve` as a subprocess for what needs a process (signals, exit codes).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from digitserve.serve.proto import digits_pb2_grpc, grpc_service_pb2_grpc
from digitserve.serve.server import DigitServer
from digitserve.serve.settings import ServeSettings

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Images:
    uint8: np.ndarray  # [N, 784] uint8
    pixels: np.ndarray  # [N, 784] float32 in [0, 1]
    labels: np.ndarray  # [N]


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
        with urllib.request.urlopen(f"http://127.0.0.1:{self.server.metrics_port}/metrics", timeout=10) as r:
            return str(r.read().decode())

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


def metric_value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


class Stubs:
    """Both APIs' stubs over one real channel."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.digits = digits_pb2_grpc.ClassifierStub(channel)
        self.v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)


# -- a real `digitserve serve` process ---------------------------------------------------------
class ServeProcess:
    """`digitserve serve` as a subprocess; its log goes to a file the test can read."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self._log = log_path.open("w")
        executable = VENV_BIN / "digitserve"
        command = [str(executable)] if executable.exists() else [sys.executable, "-m", "digitserve.cli"]
        self.process = subprocess.Popen(
            [*command, "serve", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the server log:\n{self.log()}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._log.close()


def copy_repo(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
