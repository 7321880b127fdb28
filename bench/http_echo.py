"""An HTTP echo on the server's own HTTP stack: the ceiling `bench serve` phase h compares the
KServe V2 HTTP/REST binding with.

A Starlette app under uvicorn, configured as serve/http/server.py configures ours (h11, no
lifespan, no access log, no proxy headers, no server header, a socket bound with SO_REUSEADDR,
asyncio's own event loop), with the server's routes up to inference in the server's order (so
routing costs what it costs there). `POST /v2/models/NAME[/versions/V]/infer` reads the body, as
the server does, and answers a precomputed reply: binary (application/octet-stream, with
Inference-Header-Content-Length) when the request carries Inference-Header-Content-Length, else
JSON. The bench passes recorded replies of the real server (`--json-reply`, `--binary-reply`),
so the sizes and content types are the real ones; no parsing, no data plane, no model: what this
stack does per call in one Python process on this machine, and nothing more.

    python -m digitserve.bench.http_echo [--port 0] [--json-reply FILE] [--binary-reply FILE --binary-header-length N]
    # prints "listening on http://127.0.0.1:PORT" once it accepts connections
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digitserve.cli import port

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


def default_replies() -> tuple[bytes, bytes, int]:
    """A JSON reply and a binary one shaped like a single-image answer (for use without the bench)."""
    output = {"name": "probabilities", "datatype": "FP32", "shape": [1, 10]}
    envelope = {"model_name": "echo", "model_version": "1"}
    json_reply = json.dumps({**envelope, "outputs": [{**output, "data": [0.1] * 10}]}, separators=(",", ":"))
    header = json.dumps({**envelope, "outputs": [{**output, "parameters": {"binary_data_size": 40}}]},
                        separators=(",", ":")).encode()
    return json_reply.encode(), header + bytes(40), len(header)


def create_app(json_reply: bytes, binary_reply: bytes, binary_header_length: int) -> Starlette:
    json_headers = {"content-type": JSON_TYPE}
    binary_headers = {"content-type": BINARY_TYPE, HEADER_LENGTH: str(binary_header_length)}

    async def infer(request: Request) -> Response:
        await request.body()
        if HEADER_LENGTH in request.headers:
            return Response(binary_reply, headers=binary_headers)
        return Response(json_reply, headers=json_headers)

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def model(request: Request) -> Response:
        return JSONResponse({"name": request.path_params["name"], "versions": ["1"]})

    model_path, version_path = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
    routes = [  # serve/http/app.py's, in its order, up to inference
        Route("/v2", ready, methods=["GET"]),
        Route("/v2/health/live", ready, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        *(Route(path, model, methods=["GET"]) for path in (model_path, version_path)),
        *(Route(f"{path}/ready", ready, methods=["GET"]) for path in (model_path, version_path)),
        *(Route(f"{path}/infer", infer, methods=["POST"]) for path in (model_path, version_path)),
    ]
    return Starlette(routes=routes)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal handlers (as serve/http/server.py), saying when it listens."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets:
            print(f"listening on http://127.0.0.1:{sockets[0].getsockname()[1]}", flush=True)


def bind(port: int) -> socket.socket:
    """As serve/http/server.py binds: through getaddrinfo, whose protocol number (IPPROTO_TCP) is
    what makes asyncio set TCP_NODELAY on the accepted connections (uvicorn writes a reply's
    headers and body apart; without it, Nagle holds the body for the client's delayed ACK)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        "127.0.0.1", port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


async def serve(port: int, app: Starlette) -> None:
    sock = bind(port)
    config = uvicorn.Config(  # serve/http/server.py's settings
        app, lifespan="off", log_config=None, log_level="warning", access_log=False, proxy_headers=False,
        server_header=False,
    )
    server = _Uvicorn(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, setattr, server, "should_exit", True)
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitserve.bench.http_echo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port, default=0, help="port on 127.0.0.1, 0 = any free (default: 0)")
    parser.add_argument("--json-reply", type=Path, help="body of the JSON reply (default: a 1-image answer)")
    parser.add_argument("--binary-reply", type=Path, help="body of the binary reply: JSON header, then tensor bytes")
    parser.add_argument("--binary-header-length", type=int, help="the binary reply's JSON header length in bytes")
    args = parser.parse_args(argv)
    json_reply, binary_reply, header_length = default_replies()
    if args.json_reply:
        json_reply = args.json_reply.read_bytes()
    if args.binary_reply:
        if args.binary_header_length is None:
            parser.error("--binary-reply needs --binary-header-length")
        binary_reply, header_length = args.binary_reply.read_bytes(), args.binary_header_length
    asyncio.run(serve(args.port, create_app(json_reply, binary_reply, header_length)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
