"""Fixtures for the deployment tests: the resolved compose file, a serving install made from the
lock exactly as the serving image makes it, and a model repository filled by the image's model job.

Server processes (`servers`) and the throwaway certificate authority (`certificates`) come from
tests/support."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_files import (
    ROOT,
    SERVE_DOCKERFILE,
    copy_sources,
    dockerfile_stages,
    dockerignored,
    run_compose,
    service_env,
)
from tests.deploy.model_job import JobRun, run_model_job
from tests.support.commands import require_tool


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as `docker-compose config` resolves it (anchors, defaults, merges)."""
    require_tool("docker-compose")
    result = run_compose("config")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


# -- the serving image's install, without Docker ------------------------------------------------
@pytest.fixture(scope="session")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment made the way serve.Dockerfile makes /app/.venv: the files its
    `sources` stage COPYs (nothing else of the checkout), then the same `uv sync` command."""
    uv = require_tool("uv")
    context = tmp_path_factory.mktemp("serve-context")
    _, stages = dockerfile_stages(SERVE_DOCKERFILE)
    sources = next(stage for stage in stages if stage.name == "sources")
    for item in copy_sources(sources):
        assert not dockerignored(item), f"serve.Dockerfile COPYs {item}, which .dockerignore excludes"
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, context / item, ignore=_dockerignore_filter)
        else:
            shutil.copy2(source, context / item)
    venv = tmp_path_factory.mktemp("serve-venv") / ".venv"
    build = next(stage for stage in stages if stage.name == "build-cpu")
    sync = [args for args in build.all("RUN") if "--no-editable" in args]
    assert len(sync) == 1, "build-cpu should install the project with one `uv sync ... --no-editable`"
    command = sync[0].split("uv sync", 1)[1].split("&&")[0].split()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DIGITSERVE_", "VIRTUAL_ENV", "UV_PROJECT"))
    }
    env.update(UV_PROJECT_ENVIRONMENT=str(venv), UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never",
               UV_LINK_MODE="copy")
    result = subprocess.run(
        [uv, "sync", *command], cwd=context, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"uv sync {' '.join(command)} failed:\n{result.stderr}"
    return venv


def _dockerignore_filter(folder: str, names: list[str]) -> set[str]:
    """shutil.copytree's ignore: what .dockerignore keeps out of the build context."""
    relative = Path(folder).resolve().relative_to(ROOT)
    return {name for name in names if dockerignored(str(relative / name))}


# -- a repository filled by the training image's model job ---------------------------------------
@pytest.fixture(scope="session")
def job_repo(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path, compose: dict[str, Any]) -> JobRun:
    """The compose `train` service's job on an empty repository: a small softmax model (1 epoch on
    2,000 images), trained and exported, with the service's own settings otherwise."""
    env = service_env(compose["services"]["train"])
    env.update(
        DIGITSERVE_DATA=str(mnist_dir), DIGITSERVE_MODEL="softmax", DIGITSERVE_EPOCHS="1",
        DIGITSERVE_SUBSET="2000",
    )
    return run_model_job(tmp_path_factory.mktemp("job-repo"), env=env)
