"""Commands as a user runs them: this checkout's `digitserve`, the tools the checks need, and an
environment without the shell's DIGITSERVE_* settings (tests pass the settings they mean)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
DIGITSERVE = (sys.executable, "-m", "digitserve")


def clean_env(**values: str) -> dict[str, str]:
    """os.environ without DIGITSERVE_* settings, plus `values`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIGITSERVE_")}
    env.update(values)
    return env


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with every DIGITSERVE_* variable replaced by `values`, restored afterwards
    (the CLI's parser reads them when it is built)."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("DIGITSERVE_")]:
            del os.environ[key]
        os.environ.update({k: str(v) for k, v in values.items()})
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of `digitserve COMMAND` inside the whole CLI's parser."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def digitserve(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real `digitserve` CLI to completion, its output captured."""
    return subprocess.run([*DIGITSERVE, *args], capture_output=True, text=True, timeout=timeout, env=clean_env())


def require_tool(name: str) -> str:
    """The path of a tool the checks need (`make setup` installs them); the test fails without it."""
    found = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make setup` (it installs the tools these checks use)")
    return found
