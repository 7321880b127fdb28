"""The training image's model job (deploy/docker/model-job.sh), run as that image runs it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.deploy_files import MODEL_JOB
from tests.support.commands import VENV_BIN, clean_env


@dataclass(frozen=True)
class JobRun:
    repo: Path
    returncode: int
    log: str


def run_model_job(repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> JobRun:
    """model-job.sh with this checkout's environment on PATH; DIGITSERVE_REPO is `repo`."""
    base = clean_env(PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    base.update(env or {})
    base["DIGITSERVE_REPO"] = str(repo)
    result = subprocess.run(
        ["sh", str(MODEL_JOB), *args], env=base, capture_output=True, text=True, timeout=timeout
    )
    return JobRun(repo, result.returncode, result.stdout + result.stderr)
