"""The web tests' in-process server: a real WebServer in a background thread (any WebConfig, no
subprocess); `digitserve web` as a process uses tests.support.server instead."""

from __future__ import annotations

import threading

from digitserve.web.app import WebConfig
from digitserve.web.server import WebServer


class RunningServer:
    """A WebServer on 127.0.0.1 with a free port, serving in a background thread."""

    def __init__(self, config: WebConfig):
        self.server = WebServer(("127.0.0.1", 0), config)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = self.server.url.rstrip("/")
        self.port = self.server.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
