"""Fixtures for the deployment tests: the resolved compose file, a serving install made from the
lock exactly as the serving image makes it, a model repository filled by the image's model job,
real processes on ephemeral ports, and a throwaway certificate authority."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    ROOT,
    SERVE_DOCKERFILE,
    copy_sources,
    dockerfile_stages,
    dockerignored,
    run_compose,
    service_env,
)
from deploy_harness import Certificates, JobRun, Process, require_tool, run_model_job


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


# -- real processes ------------------------------------------------------------------------------
@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Any]:
    started: list[Process] = []

    def start(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        process = Process(argv, env, tmp_path / f"process-{len(started)}.log", cwd)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


# -- TLS -----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, by openssl."""
    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        result = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=digitserve test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, usage, san in (("server", "serverAuth", "DNS:localhost,IP:127.0.0.1"),
                             ("client", "clientAuth", "DNS:client")):
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}\n")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key")
