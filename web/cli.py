"""`digitserve web`: serve the drawing page and the model repository (read-only) over HTTP."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from digitserve.cli import add_repo_options, port
from digitserve.errors import UsageError

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_repo_options(parser)
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind (default: %(default)s; 0.0.0.0 to let other machines in)",
    )
    parser.add_argument(
        "--port", type=port, default=8080,
        help="HTTP port, 0 = any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--node-modules", default=None, metavar="DIR",
        help="folder holding node_modules/@tensorflow/tfjs (default: the first such folder "
             "above the working directory or the installed package)",
    )


def run(args: argparse.Namespace) -> int:
    from digitserve.web.paths import find_tfjs_dist
    from digitserve.web.server import WebConfig, WebServer

    repo = Path(args.repo)
    tfjs_dist = find_tfjs_dist(args.node_modules)
    if tfjs_dist is None:
        where = args.node_modules or "above the working directory"
        log.warning("@tensorflow/tfjs not found (%s): the page will say so; run `npm ci` "
                    "in the project root or pass --node-modules", where)
    if not repo.is_dir():
        log.warning("model repository %s does not exist yet: the page will say so until "
                    "`digitserve train` and `digitserve export` fill it", repo)
    config = WebConfig(repo=repo, name=args.name, tfjs_dist=tfjs_dist)
    try:
        server = WebServer((args.host, args.port), config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {args.port} on {args.host} is in use: pass another "
                             "--port (0 picks a free one)") from exc
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must not run on that thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"digitserve web: the drawing page is at {server.url} "
          f"(model {args.name} from {repo.resolve()}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log.info("stopped")
    return 0
