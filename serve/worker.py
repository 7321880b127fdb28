"""One worker process of `digitserve serve --workers N` (its supervisor is serve/workers.py).

A worker is a DigitServer with three differences, each because it shares the port with others:
- it loads and warms its models *before* it listens: the kernel hands a listening worker its share
  of new connections at once, and a worker still loading would refuse them (a lone server listens
  first, so that health can say NOT_SERVING while it loads);
- it tells the supervisor, over a pipe, when it serves, instead of logging the "serving NAME version V"
  line that the supervisor logs once for all workers;
- it drains and exits when the supervisor is gone (the alive pipe reaches EOF), so no worker is orphaned.
Its metrics go to the multiprocess files the supervisor serves (PROMETHEUS_MULTIPROC_DIR, inherited).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from typing import Any

from digitserve import interrupt
from digitserve.errors import DigitserveError
from digitserve.serve.server import DigitServer
from digitserve.serve.settings import ServeSettings

log = logging.getLogger(__name__)


class WorkerServer(DigitServer):
    """A DigitServer that joins the shared port only once its models are warm (see module doc)."""

    def __init__(self, settings: ServeSettings, ready: Any):
        super().__init__(settings)
        self._ready = ready
        self._plan: dict[str, list[int]] = {}
        self._opened: list[Any] = []

    def preflight(self) -> dict[str, list[int]]:
        self._plan = super().preflight()
        return self._plan

    async def start(self) -> int:
        self._opened = await super().open_models(self._plan)
        return await super().start()

    async def open_models(self, plan: dict[str, list[int]]) -> list[Any]:
        return self._opened

    def announce(self, infos: list[Any]) -> None:
        for info in infos:
            log.info(
                "ready: %s version %d on %s (loaded, verified and warmed in %.2f s)",
                info.name,
                info.version,
                info.provider,
                info.load_seconds,
            )
        self._ready.send(
            [{"name": i.name, "version": i.version, "path": str(i.path), "provider": i.provider} for i in infos]
        )


def _drain_when_orphaned(alive: Any) -> None:
    """Block until the supervisor's end of the alive pipe closes, then drain like on SIGTERM."""
    try:
        alive.recv_bytes()
    except (EOFError, OSError):
        pass
    log.warning("the supervisor is gone: draining")
    os.kill(os.getpid(), signal.SIGTERM)


def main(index: int, settings: ServeSettings, log_level: str, ready: Any, alive: Any) -> None:
    """The worker's life; its exit code is the server's (0, 1 could not start, 3 out of grace)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor sends SIGHUP only once it serves
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt.handle)  # until the server's own handlers: stop before listening
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s [worker {index}] %(name)s: %(message)s"
    )
    threading.Thread(target=_drain_when_orphaned, args=(alive,), name="supervisor-watch", daemon=True).start()
    try:
        asyncio.run(WorkerServer(settings, ready).run())
    except KeyboardInterrupt:
        log.info("stopped before it served")
    except DigitserveError as exc:
        print(f"digitserve serve: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(exc.exit_code)
