"""What a person sees during and after `digitserve export`: numbered steps, then one table."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from digitserve.errors import DigitserveError
from digitserve.export.errors import ExportError
from digitserve.manifest import Manifest
from digitserve.repository import KERAS_FILE


class Progress:
    """Numbered steps with their durations, e.g. `[3/9] ONNX: convert ... 0.6 s`.

    Written to `stream` (stderr by default, so stdout keeps only the table). On a terminal a
    step's line is finished in place; elsewhere (logs, CI) each step gets a start and an end line.
    While a step runs, what TensorFlow, the converters and LiteRT print from C++ straight to file
    descriptors 1 and 2 is held back (process-wide: meant for the CLI); it is shown only when the
    step fails unexpectedly. A disabled Progress (the default for library callers) does neither.
    """

    def __init__(self, total: int = 0, stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.done += 1
        prefix = f"[{self.done}/{max(self.total, self.done)}] {title}"
        inline = self.enabled and self.stream.isatty()
        self._write(f"{prefix} ..." + ("" if inline else "\n"))
        started = time.monotonic()
        held: list[str] = []
        try:
            if self.enabled:
                with held_back_native_output(held):
                    yield
            else:  # a library caller keeps its own file descriptors as they are
                yield
        except BaseException as exc:
            self._write((" " if inline else f"{prefix}: ") + "FAILED\n")
            # A user error explains itself; a crash may need what the libraries printed.
            if held and (not isinstance(exc, DigitserveError) or type(exc) is ExportError):
                sys.stderr.write("output of the failed step (last lines):\n" + "\n".join(held)
                                 + "\n")
            raise
        seconds = time.monotonic() - started
        self._write(f" {seconds:.1f} s\n" if inline else f"{prefix}: done in {seconds:.1f} s\n")

    def _write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(text)
            self.stream.flush()


@contextmanager
def held_back_native_output(held: list[str], keep_lines: int = 40) -> Iterator[None]:
    """Redirect file descriptors 1 and 2 to a scratch file; its last lines end up in `held`."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (embedded interpreters): nothing to hold back
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            held[:] = sink.read().decode(errors="replace").rstrip().splitlines()[-keep_lines:]


def format_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def format_table(manifest: Manifest, markdown: bool = False) -> str:
    """The artifacts of a manifest as an aligned text table, or a Markdown one for docs/benchmarks.md."""
    header = ["format", "file", "size", "accuracy", "top-1 agreement", "max |Δp|", "convert",
              "verify"]
    parities = [artifact.parity for artifact in manifest.artifacts.values() if artifact.parity]
    keras_accuracy = parities[0].keras_accuracy if parities else manifest.model.test_accuracy
    rows = [["keras", KERAS_FILE, "", _figure(keras_accuracy, ".4f"), "(reference)", "", "", ""]]
    for key, artifact in manifest.artifacts.items():
        parity = artifact.parity
        quantised = artifact.facts.get("weight_quantization")
        rows.append([
            f"{key} ({quantised})" if quantised else key,
            artifact.path,
            format_size(artifact.bytes) if artifact.bytes is not None else "",
            _figure(parity and parity.accuracy, ".4f"),
            _figure(parity and 100 * parity.top1_agreement, ".2f") + "%",
            _figure(parity and parity.max_abs_diff, ".1e"),
            f"{artifact.conversion_seconds or 0:.1f} s",
            f"{parity.seconds if parity else 0:.1f} s",
        ])
    if markdown:
        header = [cell.replace("|", "\\|") for cell in header]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    if markdown:
        rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    else:
        rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *map(line, rows)])


def _figure(value: float | None, spec: str) -> str:
    return format(float("nan") if value is None else value, spec)
