"""Every setting of `digitserve web`, declared once: type, default, bounds, help.

The flags, their DIGITSERVE_<FLAG> variables and docs/flags.md derive from these fields
(digitserve.settings).
"""

from __future__ import annotations

from pathlib import Path

from digitserve.repository import DEFAULT_NAME, DEFAULT_REPO
from digitserve.settings import Port, Settings, setting


class WebSettings(Settings):
    """Where the drawing page listens and what it publishes."""

    # their flags are add_repo_options', the same for every stage
    repo: Path = Path(DEFAULT_REPO)
    name: str = DEFAULT_NAME
    host: str = setting("127.0.0.1", "address to bind; 0.0.0.0 lets other machines in")
    port: Port = setting(8080, "HTTP port; 0 picks a free one")
    node_modules: Path | None = setting(
        None, "folder holding node_modules/@tensorflow/tfjs (unset: the first such folder above the "
        "working directory or the installed package)",
    )
