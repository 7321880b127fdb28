"""The HTTP/REST listener's life: a uvicorn server on the gRPC server's own event loop.

`start` binds --host:--http-port itself (so a busy port is a start error, and --reuse-port lets
workers share it, as the gRPC port), with TLS when --tls-cert/--tls-key are given (client
certificates required with --tls-client-ca), and serves the app of serve/http/app.py there.
The DigitServer owns SIGTERM/SIGINT and the drain: uvicorn installs no signal handlers, and
`stop` runs once the data plane's drain is over. It closes the listener and the idle keep-alive
connections, lets every request still in progress finish (for at most `grace` seconds; then it
is cancelled) and closes each connection once its response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from digitserve.errors import DigitserveError
from digitserve.serve.control import ModelControl
from digitserve.serve.dataplane import DataPlane
from digitserve.serve.http.app import create_app
from digitserve.serve.settings import ServeSettings
from digitserve.wire.tls import host_port

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal handlers, saying when it listens."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the DigitServer drains on SIGTERM first, then stops this server

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpServer:
    """The KServe V2 HTTP/REST binding's listener (see module doc)."""

    def __init__(self, settings: ServeSettings, plane: DataPlane, control: ModelControl):
        self.settings = settings
        self.app = create_app(settings, plane, control)
        self.port = 0
        self.scheme = "https" if settings.tls_cert is not None else "http"
        self._server: _Uvicorn | None = None
        self._serving: asyncio.Task[None] | None = None

    def _bind(self) -> socket.socket:
        s = self.settings
        assert s.http_port is not None
        address = host_port(s.host, s.http_port)
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                s.host, s.http_port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if s.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(sockaddr)
            except OSError:
                sock.close()
                raise
        except OSError as exc:
            raise DigitserveError(
                f"cannot serve HTTP on {address} ({exc.strerror or exc}): is the port in use? (--http-port)"
            ) from exc
        return sock

    def _tls(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert is None or s.tls_key is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(s.tls_cert, s.tls_key)
            if s.tls_client_ca is not None:
                context.load_verify_locations(s.tls_client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise DigitserveError(
                f"cannot serve HTTPS with --tls-cert {s.tls_cert}, --tls-key {s.tls_key}"
                f"{f', --tls-client-ca {s.tls_client_ca}' if s.tls_client_ca else ''}: {exc}"
            ) from exc
        return context

    async def start(self) -> int:
        """Listen and serve; the port (the one picked, for --http-port 0)."""
        context = self._tls()
        sock = self._bind()
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # the process' logging stays as digitserve set it up
            log_level="warning",  # not uvicorn's own start and stop lines: digitserve logs its own
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ssl_context_factory=(lambda config, default: context) if context is not None else None,
        )
        server = _Uvicorn(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http-server")
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        if not listening.done():
            listening.cancel()
            address = host_port(self.settings.host, int(sock.getsockname()[1]))
            sock.close()
            try:
                serving.result()
            except (OSError, SystemExit) as exc:  # uvicorn exits on a failed start
                raise DigitserveError(f"cannot serve HTTP on {address} ({exc})") from exc
            raise DigitserveError(f"the HTTP server on {address} stopped as it started")
        self._server, self._serving = server, serving
        self.port = int(sock.getsockname()[1])
        log.info("KServe V2 HTTP on %s://%s", self.scheme, host_port(self.settings.host, self.port))
        return self.port

    async def stop(self, grace: float) -> None:
        """Close the listener and idle connections; finish the requests in progress within `grace` s."""
        if self._server is None or self._serving is None:
            return
        self._server.config.timeout_graceful_shutdown = grace  # type: ignore[assignment]  # a float works
        self._server.should_exit = True
        await self._serving
        self._server = None

    @property
    def connections(self) -> int:
        """Open connections (tests watch keep-alive ones close)."""
        return len(self._server.server_state.connections) if self._server is not None else 0

