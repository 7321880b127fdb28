"""`digitserve web`: serve the drawing page and the model repository (read-only) over HTTP."""

from __future__ import annotations

import argparse
import errno
import logging
import signal

from digitserve.cli import add_repo_options
from digitserve.errors import UsageError
from digitserve.web.settings import WebSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_repo_options(parser)
    WebSettings.add_flags(parser)


def run(args: argparse.Namespace) -> int:
    from digitserve.web.app import WebConfig
    from digitserve.web.server import WebServer

    settings = WebSettings.from_args(args)
    config = WebConfig.find(settings.repo, settings.name, settings.node_modules, hint=" or pass --node-modules")
    try:
        server = WebServer((settings.host, settings.port), config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {settings.port} on {settings.host} is in use: pass another "
                             "--port (0 picks a free one)") from exc
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from exc
    print(f"digitserve web: the drawing page is at {server.url} "
          f"(model {settings.name} from {settings.repo.resolve()}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever(stop_signals=(signal.SIGTERM, signal.SIGINT))
    finally:
        server.server_close()
    log.info("stopped")
    return 0
