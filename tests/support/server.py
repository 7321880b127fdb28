"""Real server processes: `digitserve serve` (or any server command) as a subprocess.

Every test folder starts its server processes through `ServeProcess`, so readiness, logs,
signals and clean-up are decided once. Ports are ephemeral: the process logs the ones it got
("listening on HOST:PORT", "metrics on http://HOST:PORT/metrics", and with --http-port
"KServe V2 HTTP on http://HOST:PORT") and `wait_serving` reads them,
then waits for the "serving NAME version V" line, which the server logs once its health is SERVING.
The log goes to a file so a test can read it while the process runs and quote it on failure.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.commands import DIGITSERVE, clean_env
from tests.support.metrics import metric_value, scrape

LISTENING = re.compile(r"listening on \S+:(\d+) \(")
METRICS = re.compile(r"metrics on http://\S+:(\d+)/metrics")
HTTP = re.compile(r"KServe V2 HTTP on (https?)://\S+:(\d+)")  # only with --http-port
SERVING = re.compile(r"serving (\S+) version (\d+) from \S+ on (\S+)")
# What every test server gets unless a test passes its own: loopback, ephemeral ports, CPU,
# one thread, no polling (a test that wants a reload sends SIGHUP).
SERVE_DEFAULTS = ("--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", "--device", "cpu",
                  "--intra-op-threads", "1", "--poll-seconds", "0")


class ServeProcess:
    """One server subprocess whose output goes to `log_path`; `close` always reaps it."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None):
        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
        )
        self.port = self.metrics_port = self.version = 0
        self.http_port = 0
        """The KServe V2 HTTP/REST port, for a server started with --http-port (else 0)."""
        self.http_scheme = "http"
        self.provider = ""

    @classmethod
    def serve(cls, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> ServeProcess:
        """`digitserve serve` with SERVE_DEFAULTS, then `args` (later flags win); `env` adds to
        the clean environment, so DIGITSERVE_* settings can be tested."""
        return cls([*DIGITSERVE, "serve", *SERVE_DEFAULTS, *args], log_path, clean_env(**(env or {})))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The base URL of the HTTP/REST listener (wait_listening reads its port)."""
        return f"{self.http_scheme}://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        """The first match of `pattern` in the log; fails, quoting the log, if the process exits
        or `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None  # read after the exit: nothing is missed
            match = re.search(pattern, self.log())
            if match:
                return match
            if exited or time.monotonic() > deadline:
                state = f"exited with {self.process.returncode}" if exited else f"still running after {timeout:g} s"
                raise AssertionError(f"no {pattern!r} in the log of {self.log_path.name} ({state}):\n{self.log()}")
            time.sleep(0.05)

    def wait_listening(self, timeout: float = 60) -> ServeProcess:
        """Wait until the server listens; its gRPC and metrics ports are then known."""
        self.port = int(self.wait_for_log(LISTENING, timeout).group(1))
        metrics = METRICS.search(self.log())
        self.metrics_port = int(metrics.group(1)) if metrics else 0
        http = HTTP.search(self.log())  # logged before "listening on"
        if http:
            self.http_scheme, self.http_port = http.group(1), int(http.group(2))
        return self

    def wait_serving(self, timeout: float = 120) -> ServeProcess:
        """Wait until the server listens and its model is loaded, verified and warm."""
        started = time.monotonic()
        self.wait_listening(timeout)
        serving = self.wait_for_log(SERVING, max(1.0, timeout - (time.monotonic() - started)))
        self.version, self.provider = int(serving.group(2)), serving.group(3)
        return self

    def metric(self, name: str, **labels: str) -> float:
        """The current value of metric `name` (summed over samples with `labels`)."""
        return metric_value(scrape(self.metrics_port), name, **labels)

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> int:
        """The exit code, once the process exits within `timeout` seconds."""
        return self.process.wait(timeout)

    def terminate(self, timeout: float) -> int:
        """SIGTERM (a server drains), then the exit code."""
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def close(self, grace: float = 10) -> None:
        """Stop the process if it still runs (SIGTERM, SIGKILL after `grace` s) and close the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Servers:
    """Starts server processes logging into one folder; `close` (a fixture's teardown) stops them all."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._started: list[ServeProcess] = []

    def _log_path(self) -> Path:
        return self.folder / f"server-{len(self._started)}.log"

    def serve(self, *args: str, env: Mapping[str, str] | None = None) -> ServeProcess:
        """`digitserve serve ARGS` (see ServeProcess.serve), not yet waited for."""
        return self._keep(ServeProcess.serve(args, self._log_path(), env))

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> ServeProcess:
        """Any server command, with exactly `env` (default: the clean environment)."""
        return self._keep(ServeProcess(argv, self._log_path(), env, cwd))

    def _keep(self, process: ServeProcess) -> ServeProcess:
        self._started.append(process)
        return process

    def close(self) -> None:
        for process in self._started:
            process.close()
