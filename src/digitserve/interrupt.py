"""Ctrl-C and SIGTERM, remembered as well as raised.

Some libraries catch BaseException and carry on (the TF.js converter retries another way), which
swallows the KeyboardInterrupt; long jobs call `check()` between steps so the request still wins.
"""

from __future__ import annotations

import threading

_received = threading.Event()


def handle(signum: int, frame: object) -> None:
    """Signal handler for SIGINT and SIGTERM (installed by the `digitserve` command)."""
    _received.set()
    raise KeyboardInterrupt


def check() -> None:
    """Raise KeyboardInterrupt if an interrupt arrived, even one a library swallowed."""
    if _received.is_set():
        raise KeyboardInterrupt


def clear() -> None:
    """Forget a past interrupt (for callers that handled it and go on)."""
    _received.clear()
