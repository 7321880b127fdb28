"""Closed-loop gRPC and HTTP load, bounded in time and count, from processes of its own.

The benchmark's server and its load must not share a GIL, so the load runs in spawned worker
processes (`LoadGenerator`). Each worker opens `channels` channels to 127.0.0.1 (each its own
TCP connection, so SO_REUSEPORT servers share the load) and runs `concurrency` callers that
send pre-serialised requests back to back and time each reply. Requests and replies stay raw
bytes (no protobuf on the client side), so the load costs the same whatever server answers:
the real one or the bare echo. `LoadSpec.models` spreads the requests round robin over several
models of one server, each with requests serialised once for it (naming it), so addressing a
model costs nothing per call; one model or several, every call takes the same path.
`LoadSpec(protocol="http")` runs the HTTP/1.1 load of bench/http_load.py in the same workers,
with the same clock and the same result: one keep-alive connection per caller, prebuilt
requests, replies parsed by h11.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LoadSpec:
    """One measurement: who to call, with what, how hard, for how long."""

    target: str
    method: str
    """The gRPC method path; for HTTP, the path POSTed to."""
    payloads: tuple[bytes, ...]
    """Serialised requests, sent in turn (when `models` is empty); for HTTP, the request bodies."""
    images_per_request: int
    concurrency: int
    seconds: float
    warmup_seconds: float = 1.0
    max_requests: int = 1_000_000
    """Per worker process: the load stops at this count even if time remains."""
    channels: int = 1
    timeout: float = 30.0
    start_at: float = 0.0
    """time.monotonic() instant when every worker starts (the clock is system-wide on Linux)."""
    models: tuple[tuple[str, tuple[bytes, ...]], ...] = ()
    """Round robin over models: (name, its serialised requests) each; request n goes to
    models[n % len(models)]. Empty: every request comes from `payloads`, counted under ""."""
    protocol: str = "grpc"
    """"grpc", or "http": HTTP/1.1 POSTs of `payloads` to the path `method` (bench/http_load.py)."""
    headers: tuple[tuple[str, str], ...] = ()
    """HTTP: the headers of every request besides Host and Content-Length (Content-Type, ...)."""

    def groups(self) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
        return self.models or (("", self.payloads),)


@dataclass
class LoadResult:
    spec: LoadSpec
    latencies: np.ndarray
    """Seconds per measured request (those sent after the warm-up)."""
    seconds: float
    errors: dict[str, int]
    reply_bytes: int
    completed: int
    """Requests answered in the whole run, warm-up included (for CPU per request)."""
    cpu_seconds: float
    """CPU time the load processes spent over the whole run."""
    by_model: dict[str, int] | None = None
    """Measured requests answered per model (with `LoadSpec.models`)."""

    def summary(self) -> dict[str, Any]:
        requests = len(self.latencies)
        ms = self.latencies * 1000.0 if requests else np.zeros(1)
        return {
            "concurrency": self.spec.concurrency,
            "images_per_request": self.spec.images_per_request,
            "requests": requests,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(requests * self.spec.images_per_request / self.seconds, 1) if self.seconds else 0.0,
            "requests_per_s": round(requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "errors": self.errors,
            **({"requests_by_model": self.by_model} if self.spec.models and self.by_model is not None else {}),
        }


async def _drive(spec: LoadSpec) -> dict[str, Any]:
    import grpc

    options = [
        ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel
        ("grpc.max_send_message_length", 64 << 20),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    channels = [grpc.aio.insecure_channel(spec.target, options=options) for _ in range(spec.channels)]
    calls = [channel.unary_unary(spec.method) for channel in channels]  # bytes in, bytes out
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), 30)
    measure_from = spec.start_at + spec.warmup_seconds
    stop_at = measure_from + spec.seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}
    groups = spec.groups()
    by_model = dict.fromkeys((name for name, _ in groups), 0)
    reply_bytes = 0
    sent = completed = 0
    last_done = measure_from

    async def caller(index: int) -> None:
        nonlocal sent, completed, reply_bytes, last_done
        call = calls[index % len(calls)]
        while sent < spec.max_requests:
            began = time.monotonic()
            if began >= stop_at:
                return
            model, payloads = groups[sent % len(groups)]
            payload = payloads[(sent // len(groups)) % len(payloads)]
            sent += 1
            try:
                reply = await call(payload, timeout=spec.timeout)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                continue
            done = time.monotonic()
            completed += 1
            reply_bytes = len(reply)
            if began >= measure_from:
                latencies.append(done - began)
                last_done = max(last_done, done)
                by_model[model] += 1

    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    cpu = time.process_time()
    await asyncio.gather(*(caller(i) for i in range(spec.concurrency)))
    cpu = time.process_time() - cpu
    for channel in channels:
        await channel.close()
    return {
        "latencies": latencies, "measure_from": measure_from, "last_done": last_done, "errors": errors,
        "reply_bytes": reply_bytes, "completed": completed, "cpu_seconds": cpu, "by_model": by_model,
    }


def _worker(spec: LoadSpec) -> dict[str, Any]:
    if spec.protocol == "http":
        from digitserve.bench.http_load import drive

        return asyncio.run(drive(spec))
    return asyncio.run(_drive(spec))


def _noop() -> int:
    import grpc  # noqa: F401  (imported once here, not inside the first measurement)
    import h11  # noqa: F401

    return 0


class LoadGenerator:
    """A pool of `processes` spawned load workers, reused across measurements."""

    def __init__(self, processes: int = 1):
        self.processes = processes
        self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        for future in [self._pool.submit(_noop) for _ in range(processes)]:
            future.result(60)

    def run(self, spec: LoadSpec) -> LoadResult:
        """Split the concurrency over the workers, start them together, merge what they timed."""
        start_at = time.monotonic() + 0.5
        base, extra = divmod(spec.concurrency, self.processes)
        shares = [base + (i < extra) for i in range(self.processes)]
        futures = [
            self._pool.submit(
                _worker, replace(spec, concurrency=share, channels=max(1, min(share, spec.channels)), start_at=start_at)
            )
            for share in shares
            if share
        ]
        limit = spec.warmup_seconds + spec.seconds + spec.timeout + 60
        parts = [future.result(limit) for future in futures]
        latencies = np.array([x for part in parts for x in part["latencies"]], dtype=np.float64)
        measure_from = min(part["measure_from"] for part in parts)
        last_done = max(part["last_done"] for part in parts)
        errors: dict[str, int] = {}
        by_model: dict[str, int] = {}
        for part in parts:
            for code, count in part["errors"].items():
                errors[code] = errors.get(code, 0) + count
            for model, count in part["by_model"].items():
                by_model[model] = by_model.get(model, 0) + count
        return LoadResult(
            spec,
            latencies,
            last_done - measure_from,
            errors,
            reply_bytes=max(part["reply_bytes"] for part in parts),
            completed=sum(part["completed"] for part in parts),
            cpu_seconds=sum(part["cpu_seconds"] for part in parts),
            by_model=by_model,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
