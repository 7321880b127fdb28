"""The shared fixtures, loaded for every test folder by tests/conftest.py (`pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Certificates, make_certificates
from tests.support.images import Images, load_test_images
from tests.support.server import Servers


@pytest.fixture(scope="session")
def mnist_images(mnist_dir: Path) -> Images:
    """The first 512 MNIST test images."""
    return load_test_images(mnist_dir)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    """Server processes stopped after the test."""
    started = Servers(tmp_path)
    yield started
    started.close()


@pytest.fixture(scope="session")
def session_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Server processes shared by many tests, stopped at the end of the session."""
    started = Servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.close()
