"""Map a request path onto a file inside one allowed folder, or onto nothing.

Everything a client can name is checked here, once: the raw path is split before it is
decoded (so an encoded slash cannot make a new segment), no segment may be empty, `.`, `..`
or hidden, and the file's real path (symlinks followed) must still lie inside the folder.
Anything else is "not found", never an error that tells an attacker what exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

TFJS_FILES = ("tf.min.js", "tf.min.js.map")  # all the page needs from @tensorflow/tfjs/dist
TFJS_DIST = Path("node_modules") / "@tensorflow" / "tfjs" / "dist"


def request_segments(target: str) -> list[str] | None:
    """The decoded path segments of a request target, or None when it cannot be a file path."""
    if target.startswith("/"):
        raw = target.split("?", 1)[0].split("#", 1)[0]
    elif target.lower().startswith(("http://", "https://")):
        raw = urlsplit(target).path  # absolute form, as proxies send it
    else:
        return None
    if raw == "/":
        return []
    parts = raw.split("/")[1:]
    segments = []
    for part in parts:
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError:
            return None
        if not _plain_segment(segment):
            return None
        segments.append(segment)
    return segments


def _plain_segment(segment: str) -> bool:
    """A file or folder name: not empty, not hidden (nor . or ..), no separators or NULs."""
    if not segment or segment.startswith("."):
        return False
    return not any(char in segment for char in ("/", "\\", "\0"))


def resolve_file(base: Path, segments: list[str]) -> Path | None:
    """The regular file at base/segments if its real path stays inside base's, else None."""
    if not segments:
        return None
    try:
        root = base.resolve(strict=True)
        real = Path(os.path.realpath(base.joinpath(*segments), strict=True))
    except (OSError, ValueError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


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
