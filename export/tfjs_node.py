"""Run a TF.js graph model in real TensorFlow.js (Node.js, @tensorflow/tfjs) from Python.

Used by the parity check and by tests. Needs `node` (>= 20) and the project's npm install
(`npm ci` puts @tensorflow/tfjs in node_modules). Where they are:
- node: DIGITSERVE_NODE, else `node` on PATH;
- node_modules: DIGITSERVE_NODE_MODULES (the folder holding node_modules), else the first
  folder holding node_modules/@tensorflow/tfjs above the working directory or this package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.export.errors import ExportError

SCRIPT = Path(__file__).with_name("tfjs_predict.mjs")
TFJS_PACKAGE = Path("node_modules") / "@tensorflow" / "tfjs" / "package.json"
FIX = "install Node.js >= 20 and run `npm ci` in the project root (or set DIGITSERVE_NODE_MODULES)"


def find_node() -> str:
    node = os.environ.get("DIGITSERVE_NODE") or shutil.which("node")
    if not node:
        raise ExportError(f"TF.js parity needs Node.js, and `node` is not on PATH: {FIX}")
    return node


def find_project() -> Path:
    """The folder whose node_modules holds @tensorflow/tfjs."""
    configured = os.environ.get("DIGITSERVE_NODE_MODULES")
    if configured:
        candidates = [Path(configured)]
    else:
        starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
        candidates = [folder for start in starts for folder in (start, *start.parents)]
    for folder in candidates:
        if folder.name == "node_modules":
            folder = folder.parent
        if (folder / TFJS_PACKAGE).is_file():
            return folder
    raise ExportError(f"@tensorflow/tfjs is not installed where digitserve looks: {FIX}")


def tfjs_version(project: Path | None = None) -> str:
    package = (project or find_project()) / TFJS_PACKAGE
    return str(json.loads(package.read_text()).get("version", "unknown"))


def predict(
    model_json: Path, pixels: np.ndarray, batch: int = 1000, backend: str = "wasm", timeout: float = 1800
) -> tuple[np.ndarray, dict[str, Any]]:
    """Probabilities [N, 10] from TF.js for float32 pixels [N, 784], and what Node reported.

    `backend`: "wasm" (XNNPACK kernels, what browsers without WebGL run; about 30 times faster
    than "cpu" on the CNN) or "cpu" (TF.js's pure-JavaScript reference kernels).
    """
    pixels = np.ascontiguousarray(pixels, dtype="<f4").reshape(-1, IMAGE_SIZE)
    node, project = find_node(), find_project()
    with tempfile.TemporaryDirectory(prefix="digitserve-tfjs-") as scratch:
        inputs, outputs = Path(scratch) / "pixels.f32", Path(scratch) / "probabilities.f32"
        pixels.tofile(inputs)
        command = [
            node, str(SCRIPT), "--project", str(project), "--model", str(model_json),
            "--input", str(inputs), "--output", str(outputs), "--batch", str(batch),
            "--input-name", INPUT_NAME, "--output-name", OUTPUT_NAME, "--backend", backend,
        ]
        process = _start(command)
        try:
            report = _finish(process, model_json, timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        probabilities = np.fromfile(outputs, dtype="<f4")
    if probabilities.size != len(pixels) * NUM_CLASSES:
        raise ExportError(
            f"TF.js returned {probabilities.size} values for {len(pixels)} images, "
            f"expected {len(pixels) * NUM_CLASSES}"
        )
    return probabilities.reshape(-1, NUM_CLASSES).astype(np.float32), report


def _start(command: list[str]) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise ExportError(f"cannot start Node.js ({exc}): {FIX}") from exc


def _finish(process: subprocess.Popen[str], model_json: Path, timeout: float) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ExportError(f"TF.js in Node.js took over {timeout:.0f} s on {model_json}") from exc
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        raise ExportError(f"TF.js in Node.js could not run {model_json}:\n{tail}")
    try:
        return dict(json.loads(stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError) as exc:
        raise ExportError(f"TF.js in Node.js gave no report for {model_json}: {stdout!r}") from exc
