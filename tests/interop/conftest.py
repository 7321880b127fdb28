"""The Triton client's interpreter, shared by the interop tests: tritonclient needs protobuf>=6.30,
so it runs in its own virtual environment (.venv-triton), as a subprocess."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="session")
def triton_python() -> Path:
    """.venv-triton's interpreter, built by make_triton_venv.sh from the pinned, hashed
    requirements-triton.txt; the script returns at once when the venv is up to date."""
    done = subprocess.run([str(HERE / "make_triton_venv.sh")], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"cannot build .venv-triton:\n{done.stdout}\n{done.stderr}")
    return ROOT / ".venv-triton" / "bin" / "python"
