"""Serving fixtures: a real exported model repository, in-process servers, slow models.

MNIST test images (`mnist_images`) and server processes (`servers`) come from tests/support.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from digitserve.serve.settings import ServeSettings
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.serve.serve_models import SLOW_SIZE, Weights, fit_softmax, write_version


@pytest.fixture(scope="session")
def weights(mnist_dir: Path) -> Weights:
    from digitserve.mnist import load_mnist

    data = load_mnist(mnist_dir)
    x = data.x_train[:3000].reshape(-1, 784).astype(np.float32) / np.float32(255.0)
    return fit_softmax(x, data.y_train[:3000], steps=40)


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory, weights: Weights) -> Path:
    """A repository root with digits/1 exported (ONNX + manifest); shared, never modified."""
    root = tmp_path_factory.mktemp("serve-repo")
    write_version(root, 1, weights)
    return root


@pytest.fixture
def own_repo(tmp_path: Path, weights: Weights) -> Path:
    """A repository of this test's own, with digits/1, free to modify (reload tests)."""
    write_version(tmp_path / "repo", 1, weights)
    return tmp_path / "repo"


@pytest.fixture
def make_server() -> Iterator[Any]:
    """make_server(settings, load=True) -> a started ServerThread, stopped after the test."""
    servers: list[ServerThread] = []

    def make(settings: ServeSettings, load: bool = True) -> ServerThread:
        server = ServerThread(settings, load)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, model_repo: Path) -> Iterator[ServerThread]:
    """One server over model_repo for the tests that only send requests."""
    server = ServerThread(server_settings(model_repo))
    yield server
    server.close()


@pytest.fixture
def stubs(shared_server: ServerThread) -> Iterator[Stubs]:
    with grpc.insecure_channel(shared_server.target) as channel:
        yield Stubs(channel)


@pytest.fixture(scope="session")
def reference(model_repo: Path) -> Any:
    """In-process ONNX Runtime on the very file the server serves: the predictions to match."""
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(model_repo / "digits" / "1" / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return lambda pixels: session.run(["probabilities"], {"pixels": pixels})[0]


@pytest.fixture(scope="session")
def slow_repo(tmp_path_factory: pytest.TempPathFactory, weights: Weights) -> Path:
    """A repository whose model takes about 0.3 s per batch, whatever its size (queues fill)."""
    root = tmp_path_factory.mktemp("slow-repo")
    write_version(root, 1, weights, slow_size=SLOW_SIZE)
    return root


# Repository serving (tests/serve/repository_fixtures.py): a repository of two models, shared or own.
from tests.serve.repository_fixtures import (  # noqa: E402, F401, I001
    models_repo,
    repo_servers,
    shared_models_reference,
    shared_models_repo,
)
