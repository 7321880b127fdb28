"""`digitserve serve --workers N`: N server processes on one port, and the supervisor that keeps them.

One server process is bound by its one event-loop thread (docs/benchmarks.md); N processes that share
the port through SO_REUSEPORT let the kernel spread connections over N loops, as uvicorn's and
gunicorn's workers do. The supervisor (`Supervisor.run`):

1. checks once what every worker would check, so a bad start fails before anything forks: the
   start plan (serve/control.py: the models, the versions their policies admit, each sha256),
   the gRPC address (bound with SO_REUSEPORT and held, never listened on: `--port 0` is picked
   here) and the metrics port, which it serves itself from the workers' prometheus-client
   multiprocess files (a temporary PROMETHEUS_MULTIPROC_DIR it owns); it logs
   "listening on HOST:PORT (…)" like a server;
2. spawns the workers (serve/worker.py); each joins the port only once its model is warm, then says
   so, and once every one has, the supervisor logs "serving NAME version V …" for each version;
3. restarts a worker that dies (logged, counted in digitserve_worker_restarts_total): at once, or after
   a delay that doubles while it keeps dying within RAPID_DEATH_SECONDS; a worker that fails before
   the first "serving" stops the start with its exit code (its message is in the log above);
4. passes SIGHUP to every worker (each reloads) and SIGTERM/SIGINT too: every worker drains
   (docs/serving.md, "Shutdown"). Exit 0 only if every worker exited 0; 3 if one ran out of grace,
   or outlived it by STOP_MARGIN_SECONDS and was killed; 1 for any other failure.
Workers never outlive the supervisor: each drains and exits once a pipe that only the supervisor
holds open closes, which it does when the supervisor dies, even by SIGKILL.

Imports nothing heavy at module level: `digitserve serve` loads this before it knows whether to fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker
from typing import Any

from digitserve.errors import DigitserveError
from digitserve.serve.settings import ServeSettings
from digitserve.wire.tls import host_port

log = logging.getLogger(__name__)

RAPID_DEATH_SECONDS = 10.0
"""A worker that dies sooner than this after its start counts towards the restart back-off."""
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
STOP_MARGIN_SECONDS = 10.0
"""After SIGTERM a worker has its drain delay and grace, plus this, before it is killed."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(settings: ServeSettings) -> int:
    """--workers, with 0 (auto) resolved so that the workers' ONNX Runtime threads fill the cores once."""
    if settings.workers:
        return settings.workers
    return max(1, cores() // (settings.instances * (settings.intra_op_threads or 1)))


def worker_settings(settings: ServeSettings, workers: int, port: int) -> ServeSettings:
    """What each worker runs with: the held port, shared; no metrics endpoint (the supervisor
    serves the sum); with intra-op threads 0, its share of the cores rather than all of them."""
    threads = settings.intra_op_threads or max(1, cores() // (workers * settings.instances))
    return settings.replace(port=port, reuse_port=True, metrics_port=None, intra_op_threads=threads, workers=1)


def reserve_port(settings: ServeSettings) -> socket.socket:
    """The gRPC address, bound with SO_REUSEPORT (not listened on) and held for the workers.

    Without --reuse-port a port that anything else holds fails the start, as it does without workers."""
    address = host_port(settings.host, settings.port)
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if not settings.reuse_port:
            with socket.socket(family, kind, proto) as probe:
                probe.bind(sockaddr)
                sockaddr = probe.getsockname()  # --port 0: the port picked
        held = socket.socket(family, kind, proto)
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind(sockaddr)
        except OSError:
            held.close()
            raise
    except OSError as exc:
        raise DigitserveError(f"cannot listen on {address} ({exc.strerror or exc}): is the port in use?") from exc
    return held


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _worker_entry(*args: Any) -> None:
    """The spawned process' target: imports the server only there, not in the supervisor."""
    from digitserve.serve import worker

    worker.main(*args)


@dataclass
class Worker:
    """One worker process as the supervisor sees it."""

    index: int
    process: Any  # multiprocessing.Process
    ready: Any  # the Connection on which it says it serves (None once closed)
    started: float
    serving: bool = False
    reload_pending: bool = False
    killed: bool = False


class Supervisor:
    """Starts `workers` server processes on one port and keeps them until SIGTERM (see module doc)."""

    def __init__(self, settings: ServeSettings, workers: int, log_level: str = "INFO"):
        self.settings = settings
        self.count = workers
        self.log_level = log_level
        self._context = multiprocessing.get_context("spawn")  # no inherited threads or gRPC state
        self._workers: dict[int, Worker] = {}
        self._due: dict[int, float] = {}  # restarts waiting out their back-off: index -> when
        self._rapid_deaths: dict[int, int] = {}
        self._signals: list[int] = []
        self._stopping = False
        self._stop_deadline = 0.0
        self._announced = False
        self._start_failure: int | None = None
        self._codes: list[int] = []
        self._metrics: Any = None
        self._alive_r: Any = None
        self._worker_settings: ServeSettings | None = None

    # -- the whole life ------------------------------------------------------------------------
    def run(self) -> int:
        """Preflight, listen, serve /metrics, keep the workers until a stop; the exit code."""
        # spawn's resource tracker process, started while SIGHUP is still ignored (serve/cli.py), so
        # that a hang-up sent to the process group does not kill it (it ignores SIGINT and SIGTERM).
        resource_tracker.ensure_running()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (*STOP_SIGNALS, signal.SIGHUP)}
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {*STOP_SIGNALS, signal.SIGHUP})
        folder = tempfile.mkdtemp(prefix="digitserve-metrics-")
        held = None
        try:
            plan = self._preflight()
            from digitserve.serve.control import describe_plan

            held = reserve_port(self.settings)
            port = held.getsockname()[1]
            self._worker_settings = worker_settings(self.settings, self.count, port)
            metrics_port = self._serve_metrics(folder)
            log.info(
                "listening on %s:%d (%s, %d workers), metrics on %s",
                self.settings.host,
                port,
                "mutual TLS" if self.settings.tls_client_ca else "TLS" if self.settings.tls_cert else "plaintext",
                self.count,
                f"http://{self.settings.host}:{metrics_port}/metrics" if metrics_port is not None else "off",
            )
            log.info(
                "supervising %d workers of %s (%d ONNX Runtime threads per session each)",
                self.count,
                describe_plan(plan),
                self._worker_settings.intra_op_threads,
            )
            return self._supervise(wake_r)
        finally:
            for worker in self._workers.values():  # only if the supervisor itself failed
                worker.process.kill()
                worker.process.join()
            if self._metrics is not None:
                self._metrics.close()
            if held is not None:
                held.close()
            shutil.rmtree(folder, ignore_errors=True)
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            wake_r.close()
            wake_w.close()

    def _preflight(self) -> dict[str, list[int]]:
        from digitserve.serve.control import start_plan  # imports no prometheus_client (see _serve_metrics)

        return start_plan(self.settings)

    def _serve_metrics(self, folder: str) -> int | None:
        # Before prometheus-client is imported here or in a worker: it picks the multiprocess mode
        # from this variable once, at import (workers inherit it).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        from digitserve.serve.metrics import SupervisorMetrics

        self._metrics = SupervisorMetrics(folder)
        if self.settings.metrics_port is None:
            return None
        try:
            return int(self._metrics.serve(self.settings.host, self.settings.metrics_port))
        except OSError as exc:
            raise DigitserveError(
                f"cannot serve metrics on {self.settings.host}:{self.settings.metrics_port} ({exc.strerror or exc})"
            ) from exc

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)  # acted on by the loop, which the wakeup fd wakes

    def _supervise(self, wake_r: socket.socket) -> int:
        # The alive pipe: each worker holds the read end; its EOF means the supervisor is gone.
        self._alive_r, alive_w = self._context.Pipe(duplex=False)
        try:
            self._act_on_signals()  # a SIGTERM during the preflight: start nothing
            for index in range(1, self.count + 1):
                if not self._stopping:
                    self._spawn(index)
            while self._workers or (self._due and not self._stopping):
                self._act_on_signals()
                waits: list[Any] = [wake_r]
                for worker in self._workers.values():
                    waits.append(worker.process.sentinel)
                    if worker.ready is not None:
                        waits.append(worker.ready)
                woken = multiprocessing.connection.wait(waits, self._timeout())
                if wake_r in woken:
                    while True:
                        try:
                            if not wake_r.recv(512):
                                break
                        except BlockingIOError:
                            break
                for worker in list(self._workers.values()):
                    if worker.ready is not None and worker.ready in woken:
                        self._on_message(worker)
                    if worker.process.sentinel in woken:
                        self._on_exit(worker)
                self._restart_due()
                self._kill_overdue()
        finally:
            alive_w.close()
            self._alive_r.close()
        return self._exit_code()

    def _timeout(self) -> float | None:
        now = time.monotonic()
        moments = [*self._due.values()] if not self._stopping else [self._stop_deadline]
        return max(0.0, min(moments) - now) if moments else None

    def _exit_code(self) -> int:
        if self._start_failure is not None:
            log.error("the workers could not start: stopped")
            return self._start_failure
        code = 3 if 3 in self._codes else 1 if any(self._codes) else 0
        log.info("stopped: %d workers, exit code %d", len(self._codes), code)
        return code

    # -- workers -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        ready_r, ready_w = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_entry,
            args=(index, self._worker_settings, self.log_level, ready_w, self._alive_r),
            name=f"digitserve-worker-{index}",
            daemon=True,
        )
        process.start()
        ready_w.close()
        self._workers[index] = Worker(index, process, ready_r, time.monotonic())
        log.info("worker %d started (pid %d)", index, process.pid)

    def _on_message(self, worker: Worker) -> None:
        try:
            infos = worker.ready.recv()
        except (EOFError, OSError):  # it exited; its sentinel says so
            worker.ready.close()
            worker.ready = None
            return
        worker.serving = True
        if worker.reload_pending and not self._stopping:
            worker.reload_pending = False
            self._send(worker, signal.SIGHUP)
        if self._announced:
            served = ", ".join(f"{info['name']} version {info['version']}" for info in infos)
            log.info("worker %d (pid %d) serving %s again", worker.index, worker.process.pid, served)
        elif all(w.serving for w in self._workers.values()) and len(self._workers) == self.count:
            self._announced = True
            for info in infos:
                log.info(
                    "serving %s version %d from %s on %s (%d workers ready)",
                    info["name"],
                    info["version"],
                    info["path"],
                    info["provider"],
                    self.count,
                )

    def _on_exit(self, worker: Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        pid = worker.process.pid
        del self._workers[worker.index]
        if worker.ready is not None:
            worker.ready.close()
        self._metrics.worker_gone(pid)
        if self._stopping:
            if worker.killed:
                code = 3
            elif code in (-signal.SIGTERM, -signal.SIGINT) and not worker.serving:
                code = 0  # stopped before it joined the port: nothing was sent to it
            self._codes.append(code)
            log.info("worker %d (pid %d) %s", worker.index, pid, exit_text(code))
            return
        if not self._announced:
            log.error("worker %d (pid %d) %s before it served: stopping the others", worker.index, pid, exit_text(code))
            self._start_failure = code if code and code > 0 else 1
            self._stop()
            return
        lived = time.monotonic() - worker.started
        rapid = self._rapid_deaths[worker.index] = (self._rapid_deaths.get(worker.index, 0) + 1
                                                    if lived < RAPID_DEATH_SECONDS else 0)
        delay = 0.0 if rapid <= 1 else min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (rapid - 2))
        self._metrics.restarts.inc()
        log.error(
            "worker %d (pid %d) %s after %.1f s; restarting it%s",
            worker.index,
            pid,
            exit_text(code),
            lived,
            f" in {delay:.1f} s ({rapid} quick deaths in a row)" if delay else "",
        )
        self._due[worker.index] = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self._stopping:
            self._due.clear()
            return
        now = time.monotonic()
        for index, when in sorted(self._due.items()):
            if when <= now:
                del self._due[index]
                self._spawn(index)

    def _send(self, worker: Worker, signum: int) -> None:
        try:
            os.kill(worker.process.pid, signum)
        except ProcessLookupError:
            pass  # it just exited; the loop hears it

    # -- signals -------------------------------------------------------------------------------
    def _act_on_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                self._reload()
            elif self._stopping:
                log.warning("already stopping (every worker drains); %s ignored", signal.Signals(signum).name)
            else:
                log.info("%s: every worker drains (see docs/serving.md, Shutdown)", signal.Signals(signum).name)
                self._stop()

    def _reload(self) -> None:
        if self._stopping:
            log.info("SIGHUP while stopping: ignored")
            return
        log.info("SIGHUP: every worker looks for a newer version")
        for worker in self._workers.values():
            if worker.serving:
                self._send(worker, signal.SIGHUP)
            else:  # not listening yet: it gets the SIGHUP once it serves, as a lone server defers it
                worker.reload_pending = True

    def _stop(self) -> None:
        s = self.settings
        self._stopping = True
        self._due.clear()
        self._stop_deadline = time.monotonic() + s.drain_delay_seconds + s.grace_seconds + STOP_MARGIN_SECONDS
        for worker in self._workers.values():
            self._send(worker, signal.SIGTERM)

    def _kill_overdue(self) -> None:
        if not self._stopping or time.monotonic() < self._stop_deadline:
            return
        for worker in self._workers.values():
            if not worker.killed:
                log.error(
                    "worker %d (pid %d) still runs %.0f s past its grace period: killed",
                    worker.index,
                    worker.process.pid,
                    STOP_MARGIN_SECONDS,
                )
                worker.killed = True
                self._send(worker, signal.SIGKILL)
        self._stop_deadline = time.monotonic() + STOP_MARGIN_SECONDS  # wake to hear them exit, not spin
