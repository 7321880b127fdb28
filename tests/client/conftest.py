"""Client-side fixtures: a real `digitserve serve` process over the shared exported model, and
in-process ONNX Runtime on the very file the server serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support.server import ServeProcess, Servers


@pytest.fixture(scope="session")
def repo(exported_repo: Path) -> Path:
    """The session's exported repository (digits/1: a Keras softmax exported to ONNX)."""
    return exported_repo


@pytest.fixture(scope="session")
def reference(repo: Path) -> Callable[[np.ndarray], np.ndarray]:
    """probabilities = reference(float32 [N, 784]) by in-process ONNX Runtime."""
    import onnxruntime as ort

    model = repo / "digits" / "1" / "onnx" / "model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return lambda pixels: session.run(["probabilities"], {"pixels": np.asarray(pixels, np.float32).reshape(-1, 784)})[0]


@pytest.fixture(scope="session")
def server(session_servers: Servers, repo: Path) -> ServeProcess:
    """One server for every test that only sends requests."""
    return session_servers.serve("--repo", str(repo)).wait_serving()
