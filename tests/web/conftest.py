"""Fixtures for the drawing page: a real HTTP server, a model good enough to read drawn digits,
and headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from digitserve.web.app import WebConfig
from digitserve.web.paths import find_tfjs_dist
from tests.web.in_process import RunningServer

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "data" / "preprocess_vectors.json"
ARTIFACTS = ROOT / "artifacts" / "web"  # screenshots the browser tests leave (git-ignored)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic",
]


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text())["vectors"])


@pytest.fixture(scope="session")
def tfjs_dist() -> Path:
    dist = find_tfjs_dist(ROOT)
    if dist is None:
        pytest.fail(f"@tensorflow/tfjs is not installed under {ROOT}: run `npm ci` there")
    return dist


@pytest.fixture(scope="session")
def drawing_model_repo(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """A repository with digits/1: an MLP trained on 10,000 images for 5 epochs (~94% test
    accuracy), exported to ONNX and TF.js. The tutorial's softmax reads clean MNIST but not
    always mouse strokes; this MLP read all 50 strokes of tests/web/strokes.py (10 digits x 5
    sizes and places) when measured."""
    from digitserve.export import export_version
    from digitserve.mnist import load_mnist
    from digitserve.train.trainer import TrainConfig, train

    root = tmp_path_factory.mktemp("drawing-repo")
    train(TrainConfig(model="mlp", epochs=5, subset=10_000, data=str(mnist_dir), repo=str(root)))
    export_version(root, "digits", formats=("onnx", "tfjs"), data=load_mnist(str(mnist_dir)))
    return root


@pytest.fixture
def start_server() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with any WebConfig; all are stopped after the test."""
    running: list[RunningServer] = []

    def start(repo: Path, name: str = "digits", tfjs_dist: Path | None = None) -> RunningServer:
        server = RunningServer(WebConfig(repo=repo, name=name, tfjs_dist=tfjs_dist))
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (which cannot download browsers here)."""
    executable = CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium")
    if not executable:
        pytest.fail(f"Chromium not found at {CHROMIUM}: `apt-get install chromium` (make "
                    "system-packages), or deselect these tests with -m 'not browser'")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
