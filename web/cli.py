"""`digitserve web`: serve the drawing page and the model repository (read-only) over HTTP."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import threading
from types import FrameType

from digitserve.cli import add_repo_options
from digitserve.errors import UsageError
from digitserve.web.settings import WebSettings

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_repo_options(parser)
    WebSettings.add_flags(parser)


def run(args: argparse.Namespace) -> int:
    from digitserve.web.paths import find_tfjs_dist
    from digitserve.web.server import WebConfig, WebServer

    settings = WebSettings.from_args(args)
    tfjs_dist = find_tfjs_dist(settings.node_modules)
    if tfjs_dist is None:
        where = settings.node_modules or "above the working directory"
        log.warning("@tensorflow/tfjs not found (%s): the page will say so; run `npm ci` "
                    "in the project root or pass --node-modules", where)
    if not settings.repo.is_dir():
        log.warning("model repository %s does not exist yet: the page will say so until "
                    "`digitserve train` and `digitserve export` fill it", settings.repo)
    config = WebConfig(repo=settings.repo, name=settings.name, tfjs_dist=tfjs_dist)
    try:
        server = WebServer((settings.host, settings.port), config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {settings.port} on {settings.host} is in use: pass another "
                             "--port (0 picks a free one)") from exc
        raise UsageError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from exc

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must not run on that thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"digitserve web: the drawing page is at {server.url} "
          f"(model {settings.name} from {settings.repo.resolve()}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log.info("stopped")
    return 0
