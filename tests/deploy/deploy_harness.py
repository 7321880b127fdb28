"""Helpers for the deployment tests: tools, processes, the model job, certificates.

Kept out of conftest.py so test modules can import them by a name no other test folder uses.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_files import MODEL_JOB

VENV_BIN = Path(sys.executable).parent


def require_tool(name: str) -> str:
    """The path of a tool the deployment checks need; CI installs it (.ci/run, make setup)."""
    found = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make setup` (it installs the tools these checks use)")
    return found


@dataclass(frozen=True)
class JobRun:
    repo: Path
    returncode: int
    log: str


def run_model_job(repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> JobRun:
    """deploy/docker/model-job.sh with this checkout's environment on PATH, as the image runs it."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("DIGITSERVE_")}
    base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
    base.update(env or {})
    base["DIGITSERVE_REPO"] = str(repo)
    result = subprocess.run(
        ["sh", str(MODEL_JOB), *args], env=base, capture_output=True, text=True, timeout=timeout
    )
    return JobRun(repo, result.returncode, result.stdout + result.stderr)


class Process:
    """A subprocess whose output goes to a file the test reads while it runs."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None):
        self.log_path = log
        self._file = log.open("w")
        self.popen = subprocess.Popen(
            argv, env=env, stdout=self._file, stderr=subprocess.STDOUT, cwd=cwd
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the output:\n{self.log()}")

    def terminate(self, timeout: float) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._file.close()


def clean_env(**values: str) -> dict[str, str]:
    """A process environment without the caller's DIGITSERVE_* settings, plus `values`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIGITSERVE_")}
    env.update(values)
    return env



@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
