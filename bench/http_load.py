"""Closed-loop HTTP/1.1 load (`LoadSpec(protocol="http")`), run by loadgen's spawned workers.

Each caller owns one keep-alive connection (HTTP/1.1 carries one request at a time, so there is
no sharing to do; `channels` does not apply) over asyncio streams, and POSTs pre-built requests
to `LoadSpec.method`, the path. Every request is built once, before the clock starts: its h11
event and the bytes h11 writes for it. Per call the caller writes those bytes in one write, moves
its h11 connection through the same request (h11 must have sent it to read the reply; the bytes
it returns are the prebuilt ones, dropped) and parses the reply with h11: nothing depends on the
server's answer but its size, so the load costs the same whatever server answers, the real one
or the echo. A reply with another status than 200 counts as an error under "HTTP <status>"; a
broken connection or a timeout counts under its exception's name, and the caller reconnects.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import h11

if TYPE_CHECKING:
    from digitserve.bench.loadgen import LoadSpec

READ_BYTES = 1 << 18
CALL_ERRORS = (OSError, EOFError, TimeoutError, h11.ProtocolError)


@dataclass(frozen=True)
class Prepared:
    """One request, built once: its h11 event and body, and the bytes h11 writes for the whole of it."""

    event: h11.Request
    data: h11.Data
    raw: bytes


END = h11.EndOfMessage()


def prepare(host: str, path: str, headers: tuple[tuple[str, str], ...], body: bytes) -> Prepared:
    event = h11.Request(
        method="POST", target=path, headers=[("host", host), ("content-length", str(len(body))), *headers]
    )
    data = h11.Data(data=body)
    writer = h11.Connection(h11.CLIENT)
    raw = b"".join([writer.send(event), *writer.send_with_data_passthrough(data), writer.send(END)])
    return Prepared(event, data, raw)


class Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1: prebuilt requests out, replies parsed by h11."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.http = h11.Connection(h11.CLIENT)

    async def open(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.http = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def call(self, request: Prepared) -> tuple[int, int]:
        """Send `request`, read the whole reply: (status, body bytes)."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        http = self.http
        http.send(request.event)
        http.send_with_data_passthrough(request.data)
        http.send(END)
        self.writer.write(request.raw)
        status = size = 0
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(await self.reader.read(READ_BYTES))  # b"" at EOF: h11 says ConnectionClosed
                continue
            kind = type(event)
            if kind is h11.Data:
                size += len(event.data)  # type: ignore[union-attr]
            elif kind is h11.Response:
                status = event.status_code  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                break
            elif kind is h11.ConnectionClosed:
                raise EOFError("the server closed the connection")
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
        else:  # the server asked to close (Connection: close): the next call reconnects
            self.close()
        return status, size


async def drive(spec: LoadSpec) -> dict[str, Any]:
    """loadgen's `_drive` for HTTP: the same closed loop, clock and result."""
    if spec.models:
        raise ValueError("LoadSpec.models is for gRPC loads; an HTTP load names its model in its path")
    host, _, port = spec.target.rpartition(":")
    prepared = [prepare(spec.target, spec.method, spec.headers, body) for body in spec.payloads]
    connections = [Connection(host, int(port)) for _ in range(spec.concurrency)]
    await asyncio.wait_for(asyncio.gather(*(c.open() for c in connections)), 30)
    measure_from = spec.start_at + spec.warmup_seconds
    stop_at = measure_from + spec.seconds
    latencies: list[float] = []
    errors: dict[str, int] = {}
    reply_bytes = 0
    sent = completed = 0
    last_done = measure_from

    async def caller(connection: Connection) -> None:
        nonlocal sent, completed, reply_bytes, last_done
        while sent < spec.max_requests:
            began = time.monotonic()
            if began >= stop_at:
                return
            request = prepared[sent % len(prepared)]
            sent += 1
            try:
                async with asyncio.timeout(spec.timeout):
                    status, size = await connection.call(request)
            except CALL_ERRORS as exc:
                name = "TIMEOUT" if isinstance(exc, TimeoutError) else type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
                connection.close()
                continue
            if status != 200:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                continue
            done = time.monotonic()
            completed += 1
            reply_bytes = size
            if began >= measure_from:
                latencies.append(done - began)
                last_done = max(last_done, done)

    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    cpu = time.process_time()
    await asyncio.gather(*(caller(c) for c in connections))
    cpu = time.process_time() - cpu
    for connection in connections:
        connection.close()
    return {
        "latencies": latencies, "measure_from": measure_from, "last_done": last_done, "errors": errors,
        "reply_bytes": reply_bytes, "completed": completed, "cpu_seconds": cpu, "by_model": {"": len(latencies)},
    }
