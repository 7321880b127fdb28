"""`digitserve web`'s HTTP server: the page's Starlette app (app.py) on uvicorn.

One asyncio event loop serves every connection, so an idle keep-alive connection costs a socket,
not a thread. The socket listens from the moment the WebServer is made (a busy port fails there,
port 0 is known at once, and a client that connects early waits in the backlog); `serve_forever`
runs the loop until `shutdown` (from any thread) or, in the command, SIGTERM/SIGINT: then the
listener closes, idle connections are closed and requests in progress get STOP_GRACE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator, Sequence

import uvicorn

from digitserve.web.app import WebConfig, create_app

STOP_GRACE_SECONDS = 5
BACKLOG = 2048  # uvicorn's default


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling (it re-raises a caught SIGTERM on the
    way out, which would end the process with the signal instead of exit 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """The page's app on uvicorn, listening on `address` from construction (see module doc)."""

    def __init__(self, address: tuple[str, int], config: WebConfig):
        self.config = config
        host, port = address
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.socket = socket.socket(family, kind, proto)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(sockaddr)
            self.socket.listen(BACKLOG)  # connections wait in the backlog until uvicorn runs
        except OSError:
            self.socket.close()
            raise
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self._server = _Uvicorn(uvicorn.Config(
            create_app(config),
            lifespan="off",
            log_config=None,  # the process' logging stays as digitserve set it up
            log_level="warning",  # not uvicorn's start and stop lines: the command prints its own
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ws="none",
            backlog=BACKLOG,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        ))
        self._done = threading.Event()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    def serve_forever(self, stop_signals: Sequence[signal.Signals] = ()) -> None:
        """Serve until `shutdown` or one of `stop_signals` (main thread only)."""
        try:
            asyncio.run(self._serve(stop_signals))
        finally:
            self._done.set()

    async def _serve(self, stop_signals: Sequence[signal.Signals]) -> None:
        loop = asyncio.get_running_loop()
        for signum in stop_signals:
            loop.add_signal_handler(signum, self._stop)
        await self._server.serve(sockets=[self.socket])

    def _stop(self) -> None:
        self._server.should_exit = True  # uvicorn's loop looks every 0.1 s

    def shutdown(self, timeout: float = STOP_GRACE_SECONDS + 5) -> None:
        """Stop serving (from another thread) and wait until `serve_forever` has returned."""
        self._stop()
        self._done.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()

    @property
    def connections(self) -> int:
        """Open connections (tests hold idle ones)."""
        return len(self._server.server_state.connections)
