"""Client-side fixtures: a real `digitserve serve` process over the shared exported model,
MNIST test images, and in-process ONNX Runtime on the very file the server serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from client_harness import SERVE_FLAGS, Images

from digitserve.bench.launch import ServeProcess


@pytest.fixture(scope="session")
def repo(exported_repo: Path) -> Path:
    """The session's exported repository (digits/1: a Keras softmax exported to ONNX)."""
    return exported_repo


@pytest.fixture(scope="session")
def images(mnist_dir: Path) -> Images:
    from digitserve.mnist import load_mnist

    data = load_mnist(mnist_dir)
    raw = data.x_test[:256].reshape(-1, 784)
    return Images(raw, raw.astype(np.float32) / np.float32(255.0), data.y_test[:256])


@pytest.fixture(scope="session")
def reference(repo: Path) -> Callable[[np.ndarray], np.ndarray]:
    """probabilities = reference(float32 [N, 784]) by in-process ONNX Runtime."""
    import onnxruntime as ort

    model = repo / "digits" / "1" / "onnx" / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return lambda pixels: session.run(["probabilities"], {"pixels": np.asarray(pixels, np.float32).reshape(-1, 784)})[0]


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServeProcess]]:
    """start_server(repo, *flags) -> a serving `digitserve serve` process, stopped at the end."""
    started: list[ServeProcess] = []

    def start(repo: Path, *flags: str) -> ServeProcess:
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        process = ServeProcess(repo, [*SERVE_FLAGS, *flags], log)
        started.append(process)
        return process.wait_serving(timeout=120)

    yield start
    for process in started:
        process.close()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., ServeProcess], repo: Path) -> ServeProcess:
    """One server for every test that only sends requests."""
    return start_server(repo)
