"""`digitserve serve`: serve the model repository over gRPC (see serve/server.py),
in this process or, with `--workers N`, in N processes on one port (serve/workers.py).

The flags derive from ServeSettings (serve/settings.py). Imports nothing heavy at module level:
grpc and onnxruntime load inside `run`.
"""

from __future__ import annotations

import argparse
import logging
import signal

from digitserve.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    ServeSettings.add_flags(parser)  # its own --repo and --name: serve takes every model by default


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings.from_args(args)


def run(args: argparse.Namespace) -> int:
    from digitserve.serve.workers import Supervisor, worker_count

    # SIGHUP means "reload"; before the server listens the first load takes the newest version
    # anyway, and SIGHUP's default action would kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = settings_from_args(args)
    log.info("digitserve serve: %s", settings.describe())
    workers = worker_count(settings)
    if workers > 1:  # a supervisor and N server processes on one port (serve/workers.py)
        return Supervisor(settings, workers, getattr(args, "log_level", "INFO")).run()
    import asyncio

    from digitserve.serve.server import DigitServer

    asyncio.run(DigitServer(settings).run())
    return 0
