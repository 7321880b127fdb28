"""The gRPC server: wiring, health, reflection, metrics endpoint, hot reload and graceful drain.

Life of a server (`DigitServer.run`):
1. preflight: plan the models and versions to serve (serve/control.py: --model/--name, version
   policies, --max-loaded-versions) and check each ONNX file against its manifest's sha256, or
   start is refused before anything listens;
2. listen (health NOT_SERVING, ServerLive true, ServerReady false), load + verify + warm every
   planned version in a thread, then health SERVING (whole server, each model, each version);
3. serve; SIGHUP, or a scan of the repository every `poll_seconds`, brings what is served in line
   with the repository (new versions beside the others, versions leaving a policy drained and
   unloaded, bad versions logged and skipped); under --model-control explicit only
   RepositoryModelLoad/Unload calls do;
4. SIGTERM/SIGINT: health and readiness say NOT_SERVING at once, and nothing sent to the server
   is lost (docs/serving.md, "Shutdown"):
   a. lame duck (`drain_delay_seconds`, default 0): every call is answered as usual, so load
      balancers and clients that watch health move away before anything is refused;
   b. drain: every call that arrives is still answered, the transport's backlog included, until
      none has arrived for DRAIN_QUIET_SECONDS; streams answer what they read, then UNAVAILABLE;
   c. refuse: new calls get UNAVAILABLE (retry elsewhere) while the calls in flight finish, until
      none is in flight and none has arrived or ended for DRAIN_QUIET_SECONDS; then the
      transport stops, with nothing left in it to cancel, and the process exits 0.
   b and c share `grace_seconds`; if it runs out, the calls still in flight are cancelled and
   the process exits 3 (GraceExpired) saying how many. The handlers stay installed until the
   process exits: a repeated SIGTERM/SIGINT (or a SIGHUP) is logged and ignored.
A SIGHUP during the first load is deferred until that load is done (a reload racing with it could
be overwritten by the older version); one before the server listens is ignored (serve/cli.py), since
the first load looks for the newest version anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from digitserve.errors import DigitserveError
from digitserve.serve.batcher import Batcher
from digitserve.serve.control import ModelControl, start_plan
from digitserve.serve.dataplane import DataPlane, State
from digitserve.serve.errors import GraceExpired
from digitserve.serve.health import NOT_SERVING, SERVING, HealthService
from digitserve.serve.images import ImageDecoder
from digitserve.serve.metrics import Metrics
from digitserve.serve.model import load_model
from digitserve.serve.registry import Registry
from digitserve.serve.servicers import digits, kserve
from digitserve.serve.settings import ServeSettings
from digitserve.wire.names import HEALTH_SERVICE, SERVICES
from digitserve.wire.proto import digits_pb2_grpc, grpc_service_pb2_grpc
from digitserve.wire.tls import host_port, server_credentials

log = logging.getLogger(__name__)

DRAIN_QUIET_SECONDS = 0.25
"""A drain phase ends once no call has arrived or ended for this long: by then the transport's
backlog (calls received but not yet handed to a handler) has been answered."""
REFUSAL_RESERVE_SECONDS = 1.0
"""Of the grace period, kept for refusing late calls with UNAVAILABLE, so the transport's stop
finds nothing to cancel."""


class DigitServer:
    """One gRPC server process' worth of state (see module doc)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.metrics = Metrics(settings.max_batch_size)
        self.registry = Registry(self._new_batcher, default_name=settings.name)
        self.metrics.track_queue(lambda: self.registry.queued_images)
        self.plane = DataPlane(self.registry, self.metrics, settings.max_request_images)
        self.plane.images = ImageDecoder(settings)  # its threads start with the first image request
        self.health = HealthService()
        self.control = ModelControl(
            settings, self.registry, self.metrics, self._load_version, changed=self._model_health
        )
        self._health_names: dict[str, set[str]] = {}
        self.port = 0
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self.http: Any = None
        """The KServe V2 HTTP/REST listener (serve/http/server.py) when --http-port is set."""
        self._stop_requested = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_when_loaded = False
        self.unanswered: int | None = None
        """Set when the grace period ran out: the calls the transport's stop cancelled."""

    def _new_batcher(self) -> Batcher:
        """One per served version, so that a batch never mixes versions."""
        s = self.settings
        return Batcher(
            max_batch_size=s.max_batch_size,
            max_queue_images=s.max_queue_images,
            max_queue_delay_us=s.max_queue_delay_us,
            instances=s.instances,
            observer=self.metrics,
        )

    def _load_version(self, name: str, version: int) -> Any:
        return load_model(self.settings, version, name)

    async def _model_health(self, name: str) -> None:
        """grpc.health.v1 names `NAME` and `NAME/VERSION` follow what is served."""
        versions = self.registry.versions(name)
        known = self._health_names.setdefault(name, set())
        serving = {f"{name}/{v}" for v in versions}
        for service in sorted(known | serving):
            await self.health.set(service, SERVING if service in serving else NOT_SERVING)
        known |= serving
        await self.health.set(name, SERVING if versions else NOT_SERVING)

    # -- start ---------------------------------------------------------------------------------
    def preflight(self) -> dict[str, list[int]]:
        """The models and versions to serve, after checking their files against their manifests."""
        return start_plan(self.settings)

    async def start(self) -> int:
        """Listen (health NOT_SERVING until `load`); return the gRPC port."""
        s = self.settings
        options = [
            ("grpc.max_receive_message_length", s.max_message_bytes),
            ("grpc.max_send_message_length", s.max_message_bytes),
            ("grpc.so_reuseport", 1 if s.reuse_port else 0),
        ]
        server = grpc.aio.server(options=options)
        digits_pb2_grpc.add_ClassifierServicer_to_server(digits.ClassifierServicer(self.plane), server)
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            kserve.InferenceServicer(self.plane, self.control), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for service in ("", *SERVICES):
            await self.health.set(service, NOT_SERVING)
        reflection.enable_server_reflection((*SERVICES, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        address = host_port(s.host, s.port)
        try:
            if s.tls_cert is not None and s.tls_key is not None:
                credentials = server_credentials(s.tls_cert, s.tls_key, s.tls_client_ca)
                self.port = server.add_secure_port(address, credentials)
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise DigitserveError(f"cannot listen on {address} ({exc}): is the port in use?") from exc
        await server.start()
        self._server = server
        if s.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(s.host, s.metrics_port)
            except OSError as exc:
                await server.stop(None)
                raise DigitserveError(
                    f"cannot serve metrics on {s.host}:{s.metrics_port} ({exc.strerror or exc})"
                ) from exc
        if s.http_port is not None:  # same loop, same data plane: imported only when asked for
            from digitserve.serve.http.server import HttpServer

            try:
                self.http = HttpServer(s, self.plane, self.control)
                await self.http.start()
            except DigitserveError:
                await server.stop(None)
                self.metrics.close()
                raise
        log.info(
            "listening on %s:%d (%s), metrics on %s",
            s.host,
            self.port,
            "mutual TLS" if s.tls_client_ca else "TLS" if s.tls_cert else "plaintext",
            f"http://{s.host}:{self.metrics_port}/metrics" if self.metrics_port is not None else "off",
        )
        return self.port

    async def load(self, plan: dict[str, list[int]] | None = None) -> None:
        """Load, verify and warm the planned versions, report SERVING, start polling for changes."""
        if plan is None:
            plan = await asyncio.to_thread(start_plan, self.settings)
        models = await self.open_models(plan)
        await self.control.serve_opened(models)
        self.plane.loaded()
        for service in ("", *SERVICES):
            await self.health.set(service, SERVING)
        if self.settings.poll_seconds > 0 and not self.control.explicit:
            self._tasks.append(asyncio.create_task(self._poll(), name="reload-poll"))
        if self._reload_when_loaded:
            self._tasks.append(asyncio.create_task(self.reload(), name="deferred-sighup-reload"))
        self.announce([model.info for model in models])

    async def open_models(self, plan: dict[str, list[int]]) -> list[Any]:
        """The planned versions, loaded, verified and warmed (a worker opens them before it listens)."""
        return await self.control.open_plan(plan)

    def announce(self, infos: list[Any]) -> None:
        """Log what serves (a worker tells its supervisor instead: serve/worker.py)."""
        for info in infos:
            log.info(
                "serving %s version %d from %s on %s (artifact %s; loaded, verified and warmed in %.2f s)",
                info.name,
                info.version,
                info.path,
                info.provider,
                info.artifact,
                info.load_seconds,
            )
        if self.control.explicit:
            log.info("model control explicit: only RepositoryModelLoad/Unload change what is served")

    # -- reload --------------------------------------------------------------------------------
    async def reload(self, force: bool = False) -> bool:
        """Bring what is served in line with the repository (force: retry failed versions);
        True when the served versions changed."""
        before = {(served.name, served.version) for served in self.registry}
        await self.control.reload(force)
        if self.plane.state in (State.DRAINING, State.CLOSED):
            return False
        return before != {(served.name, served.version) for served in self.registry}

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                await self.reload()
            except Exception:
                log.exception("reload poll failed; will try again")

    def request_reload(self) -> None:
        """SIGHUP: reload now, or once the first load is done (running beside it would race)."""
        if self._stop_requested.is_set():
            log.info("SIGHUP while draining: ignored")
            return
        if self.plane.state is State.LOADING:
            log.info("SIGHUP during the first load: will look at the repository again once it is served")
            self._reload_when_loaded = True
            return
        self._tasks.append(asyncio.create_task(self.reload(force=True), name="sighup-reload"))

    # -- stop ----------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """SIGTERM/SIGINT: start the drain; a repeated signal is ignored so answers are not lost."""
        if self._stop_requested.is_set():
            log.warning(
                "already draining (up to %.1f s for calls in flight); signal ignored",
                self.settings.grace_seconds,
            )
            return
        self._stop_requested.set()

    async def stop(self) -> None:
        """Lame duck, drain, refuse, close: every call that reaches the server is answered."""
        if self._stopped:
            return
        self._stopped = True
        s = self.settings
        deadline = time.monotonic() + s.drain_delay_seconds + s.grace_seconds
        self.plane.report_not_ready()
        await self.health.enter_graceful_shutdown()
        for task in self._tasks:
            task.cancel()
        if s.drain_delay_seconds > 0:
            log.info(
                "lame duck: health NOT_SERVING, answering every call for %.1f s (--drain-delay-seconds)",
                s.drain_delay_seconds,
            )
            await asyncio.sleep(s.drain_delay_seconds)
        log.info(
            "draining: health NOT_SERVING, answering every call until none has arrived for %.2f s "
            "(%.1f s grace)",
            DRAIN_QUIET_SECONDS,
            s.grace_seconds,
        )
        self.plane.end_streams()
        await self._until_quiet(self.plane.since_arrival, deadline - min(REFUSAL_RESERVE_SECONDS, s.grace_seconds / 2))
        log.info("refusing new calls (UNAVAILABLE); %d still in flight", self.plane.calls_in_flight)
        self.plane.close()
        quiet = await self._until_quiet(self.plane.idle_for, deadline)
        if not quiet:
            self.unanswered = self.plane.calls_in_flight
            log.error(
                "the grace period ran out: %d calls in flight are cancelled%s",
                self.unanswered,
                "" if self.plane.calls_in_flight else ", and calls were still arriving",
            )
        if self.http is not None:  # after the drain: what it answers has been answered
            await self.http.stop(grace=1.0 if quiet else 0.0)
        if self._server is not None:
            await self._server.stop(None)
        await self.registry.close()
        self.plane.images.close()
        self.metrics.close()
        log.info("stopped")

    async def _until_quiet(self, quiet_for: Callable[[], float], deadline: float) -> bool:
        """Wait until `quiet_for()` reaches DRAIN_QUIET_SECONDS (True) or `deadline` (False)."""
        self.plane.last_arrival = self.plane.last_activity = time.monotonic()  # calls may be on their way
        while (wait := DRAIN_QUIET_SECONDS - quiet_for()) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(wait, left, 0.05))
        return True

    # -- the whole life ------------------------------------------------------------------------
    async def run(self) -> None:
        """Preflight, start, load, serve until SIGTERM/SIGINT, drain (see module doc)."""
        plan = await asyncio.to_thread(self.preflight)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):  # before listening: a client may signal at once
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        await self.start()  # a stop requested meanwhile wins at once below
        try:
            loading = asyncio.create_task(self.load(plan))
            stop = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({loading, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not loading.done():
                loading.cancel()
                log.info("stop requested while loading")
            else:
                loading.result()  # a failed load ends the process (exit 1) after the drain below
                await stop
        finally:
            # The handlers stay until asyncio.run closes the loop: a signal during the drain, or
            # while asyncio.run waits for a load thread to finish, is logged and ignored.
            with contextlib.suppress(asyncio.CancelledError):
                await self.stop()
        if self.unanswered is not None:
            raise GraceExpired(
                f"the grace period ({self.settings.grace_seconds} s) ran out before every call was answered "
                f"({self.unanswered} cancelled in flight): raise --grace-seconds, or set --drain-delay-seconds "
                "so that clients move away first"
            )
