"""Helpers for the client tests: MNIST images, certificates, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SERVE_FLAGS = ("--device", "cpu", "--metrics-port", "0", "--intra-op-threads", "1")


@dataclass(frozen=True)
class Images:
    uint8: np.ndarray  # [N, 784] MNIST test images
    pixels: np.ndarray  # [N, 784] float32 in [0, 1]
    labels: np.ndarray  # [N]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> Path:
    """A CA, and a server (localhost, 127.0.0.1) and a client certificate it signed, by openssl."""
    ca_key, ca = str(folder / "ca.key"), str(folder / "ca.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
            "-subj", "/CN=digitserve client test CA")
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        key, csr, cert = (str(folder / f"{name}.{ext}") for ext in ("key", "csr", "pem"))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                "-days", "2", "-extfile", str(folder / "san.cnf"))
    return folder


def digitserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `digitserve` CLI; DIGITSERVE_* settings of the shell are not passed on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGITSERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "digitserve", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
