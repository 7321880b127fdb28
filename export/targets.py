"""What `digitserve export` can produce: four targets, where each lands, the bounds each must meet.

Light on purpose (no TensorFlow): the CLI validates `--formats` with it before any heavy import.
"""

from __future__ import annotations

from dataclasses import dataclass

from digitserve.errors import UsageError


@dataclass(frozen=True)
class Target:
    """One export target: its manifest key and the file its users open."""

    key: str  # the name in --formats and in manifest["artifacts"]
    folder: str  # folder inside the version, shared by the two TFLite files
    filename: str  # the file `path` points at (model.json for TF.js, plus its weight shards)
    format: str  # manifest "format"
    runtime: str  # where parity is proven: the runtime the artifact's users run


TARGETS = {
    "onnx": Target("onnx", "onnx", "model.onnx", "onnx", "ONNX Runtime"),
    "tfjs": Target("tfjs", "tfjs", "model.json", "tfjs-graph-model", "TensorFlow.js (Node.js)"),
    "tflite": Target("tflite", "tflite", "model.tflite", "tflite", "LiteRT"),
    "tflite-int8": Target("tflite-int8", "tflite", "model_int8.tflite", "tflite", "LiteRT"),
}
FORMATS = tuple(TARGETS)
TFJS_QUANTIZATIONS = ("none", "float16", "uint8")
# Folders export owns inside a version: rebuilt on every export, never copied from a previous one.
EXPORT_FOLDERS = tuple(sorted({target.folder for target in TARGETS.values()}))


@dataclass(frozen=True)
class Bounds:
    """How far an artifact may stray from the Keras model on the test set before export refuses it.

    Float artifacts must give every image the Keras label and stay within `max_abs_diff` in every
    probability; quantised ones (int8 TFLite, TF.js with quantised weights) may lose at most
    `max_accuracy_drop` of accuracy (0.005 = half a percentage point).
    """

    max_abs_diff: float = 1e-4
    max_accuracy_drop: float = 0.005


def parse_formats(text: str) -> tuple[str, ...]:
    """`onnx,tfjs` -> ("onnx", "tfjs") in the canonical order; an unknown name is a UsageError."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError(f"--formats is empty; choose from {', '.join(FORMATS)}")
    unknown = [name for name in names if name not in TARGETS]
    if unknown:
        raise UsageError(
            f"unknown export format {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(FORMATS)}"
        )
    return tuple(key for key in FORMATS if key in names)


def is_quantised(key: str, tfjs_quantization: str | None) -> bool:
    """Whether a target is held to the accuracy-drop bound rather than the float bound."""
    return key == "tflite-int8" or (key == "tfjs" and tfjs_quantization not in (None, "none"))
