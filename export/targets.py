"""What `digitserve export` can produce: one table entry per target, carrying where it lands, how
it is converted, where its parity is proven and which bound holds it. A new format is one entry.

Light on purpose (no TensorFlow): the CLI validates `--formats` with it before any heavy import;
each entry's converter and runtime load their libraries only when called.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.contract import images_to_pixels
from digitserve.errors import UsageError
from digitserve.mnist import Mnist


@dataclass(frozen=True)
class Conversion:
    """What a converter may start from."""

    model: Any  # the Keras model
    saved_model: Path  # its serving SavedModel, written once when a target needs it
    mnist: Mnist  # for int8 calibration
    tfjs_quantization: str | None


Converter = Callable[[Conversion, Path], dict[str, Any]]
"""Writes the artifact at the given path; returns its facts for the manifest (`files` included
where it writes more than one)."""
Runner = Callable[[Path, np.ndarray], tuple[np.ndarray, str]]
"""Runs the artifact on float32 pixels [N, 784]: probabilities [N, 10] and the runtime's name."""


@dataclass(frozen=True)
class Target:
    """One export target: its manifest key, its file, its converter and its runtime."""

    key: str  # the name in --formats and in the manifest's artifacts
    folder: str  # folder inside the version, shared by the two TFLite files
    filename: str  # the file the artifact's `path` points at (model.json for TF.js)
    format: str  # the artifact's manifest "format"
    runtime: str  # where parity is proven: the runtime the artifact's users run
    convert: Converter
    run: Runner
    from_saved_model: bool = True  # converted from the SavedModel rather than the Keras model
    quantised: bool = False  # held to the accuracy-drop bound, not the float one
    follows_tfjs_quantization: bool = False  # quantised when --tfjs-quantization is not none
    default: bool = True  # built by a plain `digitserve export` (else only when --formats names it)

    @property
    def path(self) -> str:
        return f"{self.folder}/{self.filename}"

    def is_quantised(self, tfjs_quantization: str | None) -> bool:
        """Whether this export of it is held to the accuracy-drop bound."""
        return self.quantised or (self.follows_tfjs_quantization
                                  and tfjs_quantization not in (None, "none"))


def _to_onnx(job: Conversion, out: Path) -> dict[str, Any]:
    from digitserve.export import to_onnx

    return to_onnx.convert(job.model, out)


def _to_onnx_int8(job: Conversion, out: Path) -> dict[str, Any]:
    """Quantise the float ONNX beside `out`: the one this export just wrote (onnx comes first in
    the table) or kept from the previous export; else a fresh conversion in a scratch folder."""
    from digitserve.export import calibration, speedup, to_onnx_int8

    pixels = calibration.calibration_pixels(images_to_pixels(job.mnist.x_train))
    with tempfile.TemporaryDirectory(prefix="digitserve-onnx-") as scratch:
        float_file = out.parent / TARGETS["onnx"].filename
        if not float_file.is_file():
            float_file = Path(scratch) / TARGETS["onnx"].filename
            _to_onnx(job, float_file)
        facts = to_onnx_int8.convert(float_file, out, pixels)
        facts["speedup_over_float"] = speedup.measure(float_file, out, pixels)
    return facts


def _to_tfjs(job: Conversion, out: Path) -> dict[str, Any]:
    from digitserve.export import to_tfjs

    return to_tfjs.convert(job.saved_model, out.parent, job.tfjs_quantization)


def _to_tflite(job: Conversion, out: Path) -> dict[str, Any]:
    from digitserve.export import to_tflite

    return to_tflite.convert(job.saved_model, out)


def _to_tflite_int8(job: Conversion, out: Path) -> dict[str, Any]:
    from digitserve.export import calibration, to_tflite

    pixels = calibration.calibration_pixels(images_to_pixels(job.mnist.x_train))
    return to_tflite.convert(job.saved_model, out, pixels)


def _in_onnxruntime(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    from digitserve.export import verify

    return verify.run_onnx(path, pixels)


def _in_tfjs(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    from digitserve.export import verify

    return verify.run_tfjs(path, pixels)


def _in_litert(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    from digitserve.export import verify

    return verify.run_tflite(path, pixels)


TARGETS = {target.key: target for target in (
    Target("onnx", "onnx", "model.onnx", "onnx", "ONNX Runtime", _to_onnx, _in_onnxruntime,
           from_saved_model=False),
    Target("onnx-int8", "onnx", "model_int8.onnx", "onnx", "ONNX Runtime", _to_onnx_int8,
           _in_onnxruntime, from_saved_model=False, quantised=True, default=False),
    Target("tfjs", "tfjs", "model.json", "tfjs-graph-model", "TensorFlow.js (Node.js)", _to_tfjs,
           _in_tfjs, follows_tfjs_quantization=True),
    Target("tflite", "tflite", "model.tflite", "tflite", "LiteRT", _to_tflite, _in_litert),
    Target("tflite-int8", "tflite", "model_int8.tflite", "tflite", "LiteRT", _to_tflite_int8,
           _in_litert, quantised=True),
)}
ALL_FORMATS = tuple(TARGETS)  # the canonical order: onnx before onnx-int8, which starts from it
FORMATS = tuple(key for key, target in TARGETS.items() if target.default)  # a plain export's
_CHOICES = ", ".join((*FORMATS, *(key for key in ALL_FORMATS if key not in FORMATS)))
TFJS_QUANTIZATIONS = ("none", "float16", "uint8")
# Folders export owns inside a version: rebuilt on every export, never copied from a previous one.
EXPORT_FOLDERS = tuple(sorted({target.folder for target in TARGETS.values()}))


@dataclass(frozen=True)
class Bounds:
    """How far an artifact may stray from the Keras model on the test set before export refuses it.

    Float artifacts must give every image the Keras label and stay within `max_abs_diff` in every
    probability; quantised ones (int8 TFLite and ONNX, TF.js with quantised weights) may lose at most
    `max_accuracy_drop` of accuracy (0.005 = half a percentage point).
    """

    max_abs_diff: float = 1e-4
    max_accuracy_drop: float = 0.005

    def recorded(self, quantised: bool) -> dict[str, float]:
        """The bound an artifact is held to, as its parity records it."""
        if quantised:
            return {"max_accuracy_drop": self.max_accuracy_drop}
        return {"max_abs_diff": self.max_abs_diff, "top1_agreement": 1.0}


def parse_formats(text: str) -> tuple[str, ...]:
    """`onnx,tfjs` -> ("onnx", "tfjs") in the canonical order; an unknown name is a UsageError."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--formats is empty; choose from {_CHOICES}")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise UsageError(
            f"unknown export format {', '.join(map(repr, unknown))}; "
            f"choose from {_CHOICES}"
        )
    return tuple(key for key in ALL_FORMATS if key in names)
