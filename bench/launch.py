"""Run `digitserve serve` as a real subprocess on 127.0.0.1 and find out when it serves, and where.

`digitserve bench serve` and the GPU check start servers the way a user does: the
port comes from the server's own log line ("listening on 127.0.0.1:PORT"), readiness from its
"serving NAME version V" line (a server of several models logs one per version, once every
one of them serves), and a server that exits first raises ServerFailed carrying the
error line the server printed (for example `--device cuda` on a machine without CUDA). A server
started with `--http-port` logs "KServe V2 HTTP on http://HOST:PORT" too: `http_port` reads it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from digitserve.errors import DigitserveError

LISTENING = re.compile(r"listening on [^ ]*:(\d+) ")
SERVING = re.compile(r"serving (\S+) version (\d+) from \S+ on (\S+)")
HTTP = re.compile(r"KServe V2 HTTP on https?://\S+:(\d+)")  # only with --http-port, before "listening on"
ERROR_LINE = re.compile(r"^digitserve serve: error: (.*)$", re.MULTILINE)


class ServerFailed(DigitserveError):
    """The server process exited, or did not serve in time; the message quotes its error."""


def reusable_port() -> int:
    """A port free on 127.0.0.1 right now that several `--reuse-port` servers can share."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BenchServer:
    """One `digitserve serve --host 127.0.0.1` process; a context manager that stops it.

    `name` becomes `--name`; None leaves it out (the server then serves every model of the
    repository, or those that `--model` flags in `args` choose).
    """

    def __init__(self, repo: str | Path, args: list[str], log_path: Path, name: str | None = "digits", port: int = 0):
        self.log_path = log_path
        self._log = log_path.open("w")
        command = [sys.executable, "-m", "digitserve", "--log-level", "INFO", "serve", "--repo", str(repo)]
        command += ["--name", name] if name is not None else []
        command += ["--host", "127.0.0.1", "--port", str(port), "--poll-seconds", "0", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSERVE_") or k == "DIGITSERVE_DATA"}
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.port = 0
        self.http_port = 0
        """The KServe V2 HTTP/REST port, for a server started with --http-port (else 0)."""
        self.version = 0
        self.provider = ""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_target(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 120.0) -> BenchServer:
        """Wait for the 'serving' line; raise ServerFailed if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            listening, serving = LISTENING.search(text), SERVING.search(text)
            if listening and serving:
                self.port = int(listening.group(1))
                http = HTTP.search(text)
                self.http_port = int(http.group(1)) if http else 0
                self.version = int(serving.group(2))
                self.provider = serving.group(3)
                return self
            if self.process.poll() is not None:
                self.close()
                error = ERROR_LINE.search(self.log())
                reason = error.group(1) if error else f"see {self.log_path}"
                raise ServerFailed(f"digitserve serve exited with code {self.process.returncode}: {reason}")
            time.sleep(0.05)
        self.close()
        raise ServerFailed(f"digitserve serve did not serve within {timeout:g} s; see {self.log_path}")

    def close(self, grace: float = 15.0) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after `grace` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if not self._log.closed:
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> BenchServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
