"""Which files the page's server may publish, beyond what Starlette's StaticFiles checks.

StaticFiles (web/app.py) keeps every answer inside its folder: it normalises the path, follows
symlinks and refuses a real path outside the folder, and answers only regular files. What it does
not know is ours: the repository's hidden names (the export's staging folders) are never served,
and a repository path is split before it is decoded, so `%2f` cannot make a new segment nor an
empty one (`//`) stand for anything. TensorFlow.js is served as two named files only.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote_to_bytes

TFJS_FILES = ("tf.min.js", "tf.min.js.map")  # all the page needs from @tensorflow/tfjs/dist
TFJS_DIST = Path("node_modules") / "@tensorflow" / "tfjs" / "dist"


def plain_segments(raw_path: bytes) -> list[str] | None:
    """The decoded segments of a raw request path (no query), or None unless each one is a plain
    file or folder name: not empty, not hidden (nor . or ..), valid UTF-8, no separators or NULs."""
    if not raw_path.startswith(b"/"):
        return None
    segments = []
    for part in raw_path[1:].split(b"/"):
        try:
            segment = unquote_to_bytes(part).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            return None
        if not segment or segment.startswith(".") or any(c in segment for c in ("/", "\\", "\0")):
            return None
        segments.append(segment)
    return segments


def find_tfjs_dist(configured: str | os.PathLike[str] | None = None) -> Path | None:
    """The @tensorflow/tfjs dist folder: under `configured` (a project or its node_modules), or
    else the first project folder above the working directory or this package that has one."""
    if configured:
        folder = Path(configured)
        candidates = [folder.parent if folder.name == "node_modules" else folder]
    else:
        starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
        candidates = [folder for start in starts for folder in (start, *start.parents)]
    for folder in candidates:
        if (folder / TFJS_DIST / TFJS_FILES[0]).is_file():
            return folder / TFJS_DIST
    return None
