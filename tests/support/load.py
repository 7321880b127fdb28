"""A load generator in its own process, for shutdown and overload tests: `python -m tests.support.load`.

The load must come from another process than the test, or the test's own event loop and GIL
would decide when calls reach the server. Two shapes:

    burst   issue --calls calls at once, then signal the server --signal-after seconds later: the
            calls are sent, but nothing waits for them to reach a handler (the case a drain must cover)
    steady  --concurrency closed-loop callers for --seconds; optionally signal the server after
            --signal-after seconds; with --watch-health the callers stop sending once the
            server's health says NOT_SERVING (a client that follows health, as balancers do)

It prints one JSON object: the count of each status code, and OK answers per 0.25 s bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from digitserve.wire.proto import digits_pb2, digits_pb2_grpc

BUCKET_SECONDS = 0.25


class Tally:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.codes: collections.Counter[str] = collections.Counter()
        self.ok_per_bucket: collections.Counter[int] = collections.Counter()

    def record(self, code: grpc.StatusCode) -> None:
        self.codes[code.name] += 1
        if code is grpc.StatusCode.OK:
            self.ok_per_bucket[int((time.monotonic() - self.started) / BUCKET_SECONDS)] += 1

    def report(self) -> dict[str, object]:
        last = max(self.ok_per_bucket, default=-1)
        return {"codes": dict(self.codes), "ok_per_bucket": [self.ok_per_bucket[i] for i in range(last + 1)]}


async def call(stub: digits_pb2_grpc.ClassifierStub, request: digits_pb2.ClassifyRequest, timeout: float,
               tally: Tally) -> None:
    try:
        await stub.Classify(request, timeout=timeout)
        tally.record(grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as error:
        tally.record(error.code())


async def burst(stub, request, args, tally: Tally) -> None:
    calls = [asyncio.ensure_future(call(stub, request, args.timeout, tally)) for _ in range(args.calls)]
    await asyncio.sleep(args.signal_after)  # sent, but not waited for: most are still queued
    if args.signal_pid:
        os.kill(args.signal_pid, signal.SIGTERM)
    await asyncio.gather(*calls)


async def steady(stub, channel, request, args, tally: Tally) -> None:
    stop_at = time.monotonic() + args.seconds
    healthy = asyncio.Event()
    healthy.set()

    async def watch_health() -> None:
        health = health_pb2_grpc.HealthStub(channel)
        async for answer in health.Watch(health_pb2.HealthCheckRequest(service="")):
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                healthy.clear()
                return

    async def caller() -> None:
        while time.monotonic() < stop_at and healthy.is_set():
            await call(stub, request, args.timeout, tally)

    async def signal_later() -> None:
        await asyncio.sleep(args.signal_after)
        os.kill(args.signal_pid, signal.SIGTERM)

    extra = []
    if args.watch_health:
        extra.append(asyncio.ensure_future(watch_health()))
    if args.signal_pid:
        extra.append(asyncio.ensure_future(signal_later()))
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    for task in extra:
        task.cancel()


async def main(args: argparse.Namespace) -> dict[str, object]:
    request = digits_pb2.ClassifyRequest(uint8=bytes([120]) * (784 * args.images))
    async with grpc.aio.insecure_channel(args.target) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        tally = Tally()  # the clock starts once connected
        stub = digits_pb2_grpc.ClassifierStub(channel)
        if args.shape == "burst":
            await burst(stub, request, args, tally)
        else:
            await steady(stub, channel, request, args, tally)
    return tally.report()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=("burst", "steady"))
    parser.add_argument("--target", required=True)
    parser.add_argument("--images", type=int, default=1, help="images per call")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds")
    parser.add_argument("--calls", type=int, default=200, help="burst: calls issued at once")
    parser.add_argument("--concurrency", type=int, default=64, help="steady: closed-loop callers")
    parser.add_argument("--seconds", type=float, default=3.0, help="steady: how long the callers call")
    parser.add_argument("--signal-pid", type=int, default=0, help="SIGTERM this process (the server)")
    parser.add_argument("--signal-after", type=float, default=1.0, help="seconds from the first call to the signal")
    parser.add_argument("--watch-health", action="store_true", help="steady: stop calling once NOT_SERVING")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(parse(sys.argv[1:])))))
