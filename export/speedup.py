"""How much faster the int8 ONNX runs than the float one, in ONNX Runtime on the exporting machine.

Recorded in the manifest so that whoever picks `--artifact onnx-int8` sees what it bought where
it was made. Both files run in this one process on the same 64 training images (the server's
default batch), with ORT's default threads and idle spinning off as the server has it, in
alternating rounds so that a neighbour's load on a shared machine hits both alike; each side's
median round counts. It is in-process model time only: what a client sees through the server is
what `digitserve bench serve --phases d` measures.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.contract import INPUT_NAME, OUTPUT_NAME

BATCH = 64
ROUNDS = 7
ROUND_SECONDS = 0.15


def measure(float_file: Path, int8_file: Path, pixels: np.ndarray, batch: int = BATCH,
            rounds: int = ROUNDS) -> dict[str, Any]:
    """Milliseconds per call of `batch` images for each file, and float's over int8's."""
    import onnxruntime as ort

    feed = {INPUT_NAME: np.ascontiguousarray(pixels[:batch], dtype=np.float32)}
    sessions = {"float": _session(float_file), "int8": _session(int8_file)}
    for session in sessions.values():  # first runs allocate
        session.run([OUTPUT_NAME], feed)
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for round_ in range(rounds):
        order = list(sessions) if round_ % 2 == 0 else list(reversed(sessions))
        for key in order:
            times[key].append(_per_call(sessions[key], feed))
    float_ms, int8_ms = (1000 * statistics.median(times[key]) for key in ("float", "int8"))
    return {
        "speedup": round(float_ms / int8_ms, 2),
        "batch_size": int(len(feed[INPUT_NAME])),
        "float_ms_per_call": round(float_ms, 3),
        "int8_ms_per_call": round(int8_ms, 3),
        "rounds": rounds,
        "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu": _cpu_name(),
    }


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _per_call(session: Any, feed: dict[str, np.ndarray]) -> float:
    """Mean seconds per call over one round of ROUND_SECONDS."""
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < ROUND_SECONDS or calls == 0:
        session.run([OUTPUT_NAME], feed)
        calls += 1
    return elapsed / calls


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
