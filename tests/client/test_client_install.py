"""A client-only install: `uv sync --extra client` from the lock, then `digitserve health` and
`digitserve classify` from that environment against the folder's real server (conftest.py), with
none of the server's packages installed and no server module loaded.

The venv is built from uv's cache (about a second when it is warm, as after `make setup`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitserve.cli import missing_extra_message
from tests.support.commands import clean_env, require_tool
from tests.support.server import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("onnxruntime", "prometheus_client", "grpc_reflection", "pydantic", "tensorflow", "PIL")
# Runs inside the client-only venv: both commands in-process, then what they loaded and what is installed.
PROBE = """
import contextlib, importlib.util, io, json, sys
from digitserve.cli import main
target, data, *server_only = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["health", "--target", target]),
             main(["classify", "--target", target, "--mnist-test", "8", "--data", data])]
print(json.dumps({
    "codes": codes,
    "loaded": sorted(m for m in sys.modules if m.startswith("digitserve.serve")),
    "installed": [m for m in server_only if importlib.util.find_spec(m) is not None],
}))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the project with the `client` extra only, exactly as uv.lock pins it."""
    venv = tmp_path_factory.mktemp("client-venv")
    env = clean_env(UV_PROJECT_ENVIRONMENT=str(venv))
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [require_tool("uv"), "sync", "--locked", "--no-dev", "--extra", "client"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=clean_env(), capture_output=True, text=True,
        timeout=120,
    )


def test_health_and_classify_work_with_the_client_extra_alone(
    client_venv: Path, server: ServeProcess, mnist_dir: Path, tmp_path: Path
) -> None:
    health = run(client_venv, "digitserve", "health", "--target", server.target, cwd=tmp_path)
    assert (health.returncode, health.stdout.strip()) == (0, f"{server.target}: SERVING"), health.stderr
    classify = run(client_venv, "digitserve", "classify", "--target", server.target, "--api", "v2",
                   "--mnist-test", "50", "--batch-size", "10", "--data", str(mnist_dir), "--json", cwd=tmp_path)
    assert classify.returncode == 0, classify.stderr
    report = json.loads(classify.stdout)
    assert report["images"] == 50 and report["accuracy"] > 0.5 and report["model"] == "digits version 1"

    probe = run(client_venv, "python", "-c", PROBE, server.target, str(mnist_dir), *SERVER_ONLY, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == {"codes": [0, 0], "loaded": [], "installed": []}


def test_image_files_without_pillow_name_the_images_extra(
    client_venv: Path, server: ServeProcess, tmp_path: Path
) -> None:
    png = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(png)
    done = run(client_venv, "digitserve", "classify", "--target", server.target, str(png), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert "reading images needs Pillow: install the 'images' extra" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("module", "extra"),
    [("grpc", "client"), ("grpc_health.v1", "client"), ("google.protobuf", "client"), ("PIL", "images"),
     ("pydantic", "settings"), ("grpc_reflection", "serve"), ("prometheus_client", "serve"),
     ("onnxruntime", "serve"), ("tensorflow", "train")],
)
def test_a_missing_module_names_the_extra_that_brings_it(module: str, extra: str) -> None:
    message = missing_extra_message(ModuleNotFoundError(name=module))
    assert message is not None and f"install the {extra!r} extra" in message
    assert f"uv sync --locked --extra {extra}" in message and f"pip install 'digitserve[{extra}]'" in message
