"""Publishing an export without ever showing a half-written version.

The export is built in a staging folder beside the version (`<name>/.<version>.export-XXXX`,
which the repository ignores: not an integer name). The staging folder starts as a copy of the
version without what export owns (hard links, so model.keras is not copied); the artifacts are
written and verified there, the manifest last. Publishing then swaps the staging folder and the
version folder in one atomic `renameat2(RENAME_EXCHANGE)`: a reader sees the old version or the
new one, whole. Any failure before that swap removes the staging folder and leaves the version,
including a previous export of it, exactly as it was; a staging folder left by a killed export
(SIGKILL) is removed by the next one (repository.make_staging).

Where the filesystem cannot exchange (not Linux, or a filesystem without RENAME_EXCHANGE) the
swap falls back to two renames, with a moment in which the version folder is absent, never
half-written.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from digitserve.repository import make_staging

log = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def staged_copy(version_dir: Path, skip: Iterable[str]) -> Iterator[Path]:
    """A staging folder beside `version_dir` holding its files except `skip`; always removed."""
    stage = make_staging(version_dir.parent, f".{version_dir.name}.export-")
    try:
        os.chmod(stage, stat.S_IMODE(version_dir.stat().st_mode))  # mkdtemp makes it 0700
        skipped = set(skip)
        for entry in version_dir.iterdir():
            if entry.name not in skipped:
                link_into(entry, stage / entry.name)
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # after a publish it holds the old version


def link_into(source: Path, target: Path) -> None:
    """Hard-link a file or a folder tree (copy where links are refused, e.g. across devices)."""
    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(source), str(target))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, target, follow_symlinks=False)


def publish(stage: Path, version_dir: Path) -> None:
    """Put the staged folder in place of `version_dir`; the old one ends up at `stage`."""
    try:
        exchange(stage, version_dir)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
            raise
        log.warning("atomic exchange not supported here (%s); publishing with two renames", exc)
    aside = stage.with_name(stage.name + ".old")
    os.rename(version_dir, aside)
    try:
        os.rename(stage, version_dir)
    except BaseException:
        os.rename(aside, version_dir)
        raise
    os.rename(aside, stage)  # so that staged_copy's cleanup removes the old version


def exchange(first: Path, second: Path) -> None:
    """Atomically swap two paths on one filesystem (Linux renameat2 with RENAME_EXCHANGE)."""
    if not sys.platform.startswith("linux"):
        raise OSError(errno.ENOSYS, "renameat2 is Linux-only")
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "this C library has no renameat2")
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                       _RENAME_EXCHANGE)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))
