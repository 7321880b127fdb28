"""The compose stack rehearsed without Docker: each service's command, with the environment the
compose file gives it, run by the install its image makes.

- train: deploy/docker/model-job.sh (the training image's command) with this checkout's
  environment, which has the same locked TensorFlow stack as that image;
- server and web: `digitserve serve` / `digitserve web` from the serving install made by
  serve.Dockerfile's own COPY list and `uv sync` command (conftest.serving_venv), so a file the
  image would lack (package data, a module) fails here too;
- the healthcheck: `digitserve health` from that install, as the HEALTHCHECK runs it.

Only the ports are changed (0: any free one) and the repository path (a temporary folder).
What this cannot show: the images building, the base images' contents, container networking.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from digitserve.web.paths import TFJS_DIST, TFJS_FILES
from tests.deploy.deploy_files import parse_cli, service_env
from tests.deploy.model_job import JobRun, run_model_job
from tests.support.commands import clean_env
from tests.support.server import Servers


def serving_env(venv: Path, compose_env: dict[str, str], **changes: str) -> dict[str, str]:
    env = clean_env(**{**compose_env, **changes})
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("VIRTUAL_ENV", None)
    return env


def health(venv: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "digitserve"), "health", *args],
                          capture_output=True, text=True, env=env, timeout=60)


# -- train -------------------------------------------------------------------------------------------
def test_model_job_trains_and_exports_into_an_empty_repository(job_repo: JobRun) -> None:
    assert job_repo.returncode == 0, job_repo.log
    assert "digits: none" in job_repo.log
    manifest = json.loads((job_repo.repo / "digits" / "1" / "manifest.json").read_text())
    assert {"onnx", "tfjs"} <= set(manifest["artifacts"])
    assert manifest["model"]["architecture"] == "softmax"


def test_model_job_again_changes_nothing(job_repo: JobRun, tmp_path: Path) -> None:
    assert job_repo.returncode == 0, job_repo.log
    empty_data = tmp_path / "mnist"
    empty_data.mkdir()  # what compose mounts when MNIST_DIR holds nothing
    again = run_model_job(job_repo.repo, env={"DIGITSERVE_DATA": str(empty_data)}, timeout=120)
    assert again.returncode == 0, again.log
    assert f"nothing in {empty_data}: MNIST comes from the Keras download instead" in again.log
    assert "complete 1" in again.log and "nothing to do" in again.log
    assert sorted(p.name for p in (job_repo.repo / "digits").iterdir()) == ["1"]


def test_model_job_rejects_unknown_arguments(tmp_path: Path) -> None:
    result = run_model_job(tmp_path, "--bogus", timeout=60)
    assert result.returncode == 2 and "usage: digitserve-model-job [--retrain]" in result.log


# -- server ------------------------------------------------------------------------------------------
def test_server_starts_reports_health_serves_metrics_and_drains(
    compose: dict[str, Any], serving_venv: Path, job_repo: JobRun, servers: Servers, mnist_dir: Path
) -> None:
    assert job_repo.returncode == 0, job_repo.log
    service = compose["services"]["server"]
    env = serving_env(serving_venv, service_env(service), DIGITSERVE_REPO=str(job_repo.repo),
                      DIGITSERVE_PORT="0", DIGITSERVE_METRICS_PORT="0")
    server = servers.start([str(serving_venv / "bin" / service["command"][0]), *service["command"][1:]], env)
    port = int(server.wait_for_log(r"listening on 0\.0\.0\.0:(\d+)").group(1))
    metrics_port = int(server.wait_for_log(r"metrics on http://0\.0\.0\.0:(\d+)/metrics").group(1))
    target = f"127.0.0.1:{port}"

    # the compose healthcheck's command, pointed at this port, until the model is warm
    check = service["healthcheck"]["test"][1:]
    argv = [*check[1:check.index("--target") + 1], target, *check[check.index("--target") + 2:]]
    deadline = time.monotonic() + 60
    while (result := health(serving_venv, env, *argv[1:])).returncode != 0:
        assert result.returncode == 1, result.stderr
        assert time.monotonic() < deadline, f"never SERVING: {result.stderr}\n{server.log()}"
        time.sleep(0.2)
    assert result.stdout.strip() == f"{target}: SERVING"
    assert "CPUExecutionProvider" in server.log()
    for api in ("digits.v1.Classifier", "inference.GRPCInferenceService"):
        assert health(serving_venv, env, "--target", target, "--service", api).returncode == 0

    # a client in the serving image: both APIs, real MNIST test images
    for api in ("digits", "v2"):
        result = subprocess.run(
            [str(serving_venv / "bin" / "digitserve"), "classify", "--target", target, "--api", api,
             "--mnist-test", "200", "--data", str(mnist_dir)],
            capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "accuracy" in result.stdout.lower(), result.stdout

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    images = [float(line.split()[-1]) for line in text.splitlines()
              if re.match(r"nv_inference_count(_total)?\{", line)]
    assert sum(images) >= 2 * 200, f"the images classified above are not counted:\n{text}"

    settings = parse_cli(service["command"][1:], service_env(service))
    assert server.terminate(timeout=settings.grace_seconds + 5) == 0, server.log()
    after = health(serving_venv, env, "--target", target, "--timeout", "2")
    assert after.returncode == 1 and "UNAVAILABLE" in after.stderr


# -- web ---------------------------------------------------------------------------------------------
def test_web_serves_the_page_and_the_repository(
    compose: dict[str, Any], serving_venv: Path, job_repo: JobRun, servers: Servers, tmp_path: Path
) -> None:
    assert job_repo.returncode == 0, job_repo.log
    service = compose["services"]["web"]
    compose_env = service_env(service)
    # /app as the serving image lays it out: the two TF.js files it copies, nothing else
    app = tmp_path / "app"
    dist = app / TFJS_DIST  # test_images checks the Dockerfile copies exactly these files there
    dist.mkdir(parents=True)
    source = Path(__file__).resolve().parents[2] / TFJS_DIST
    for name in TFJS_FILES:
        (dist / name).write_bytes((source / name).read_bytes())
    env = serving_env(serving_venv, compose_env, DIGITSERVE_REPO=str(job_repo.repo), DIGITSERVE_PORT="0",
                      DIGITSERVE_NODE_MODULES=str(app))
    web = servers.start([str(serving_venv / "bin" / service["command"][0]), *service["command"][1:]], env,
                        cwd=tmp_path)
    url = web.wait_for_log(r"the drawing page is at (http://\S+)").group(1)
    base = url.replace("0.0.0.0", "127.0.0.1").rstrip("/")

    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.read()

    status, page = get("/")
    assert status == 200 and b"<html" in page.lower()
    for asset in ("/static/app.js", "/vendor/tfjs/tf.min.js"):
        assert get(asset)[0] == 200, asset
    status, latest = get("/api/latest")
    assert status == 200 and json.loads(latest)["version"] == 1
    assert web.terminate(timeout=15) == 0, web.log()


def test_serving_install_names_the_extra_a_training_command_needs(serving_venv: Path, tmp_path: Path) -> None:
    """The serving image has no TensorFlow: train and bench train say what to install, no traceback."""
    env = serving_env(serving_venv, {})
    for command in (["train", "--epochs", "1", "--repo", str(tmp_path)], ["bench", "train"]):
        result = subprocess.run([str(serving_venv / "bin" / "digitserve"), *command],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "install the 'train' extra" in result.stderr and "uv sync --locked --extra train" in result.stderr
