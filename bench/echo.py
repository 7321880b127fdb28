"""A bare grpc.aio echo server: the transport ceiling the benchmark compares the real server with.

It answers any unary method (the benchmark calls the real method paths, digits.v1 Classify or
V2 ModelInfer, so the HTTP/2 headers match) through a generic handler with no (de)serialisation:
a reply of `--reply-bytes` bytes (the size of the real server's reply), or the request's own
bytes with -1. No protobuf, no batcher, no model: what one Python gRPC server process on this
machine can do per call, and nothing more.

    python -m digitserve.bench.echo [--port 0] [--reply-bytes N]   # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc

from digitserve.cli import port


class EchoHandler(grpc.GenericRpcHandler):
    """A unary handler for every method, whose request and reply stay raw bytes."""

    def __init__(self, reply_bytes: int):
        reply = b"\0" * reply_bytes if reply_bytes >= 0 else None

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request if reply is None else reply

        self._handler = grpc.unary_unary_rpc_method_handler(echo)  # no serializers: bytes in, bytes out

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handler


async def serve(port: int, reply_bytes: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    server.add_generic_rpc_handlers((EchoHandler(reply_bytes),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitserve.bench.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port, default=0, help="port on 127.0.0.1, 0 = any free (default: 0)")
    parser.add_argument("--reply-bytes", type=int, default=-1, help="reply size; -1 echoes the request")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.reply_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
