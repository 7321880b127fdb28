"""Parity: run each artifact in its users' runtime on the test images, hold it to the Keras model.

ONNX runs in ONNX Runtime (what the server uses), TFLite in LiteRT (`ai_edge_litert`, what apps
bundle), TF.js in @tensorflow/tfjs under Node.js (what a page runs, on the WASM backend).
Each runner also checks that the artifact exposes the contract's names and shapes.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.export import tfjs_node
from digitserve.export.errors import ExportError, ParityError
from digitserve.export.targets import Bounds, Target
from digitserve.manifest import Parity

BATCH = 1000


def run_tfjs(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    probabilities, report = tfjs_node.predict(path, pixels, batch=BATCH)
    _expect_names("TF.js", [i["name"] for i in report["inputs"]], [o["name"] for o in report["outputs"]])
    return probabilities, f"@tensorflow/tfjs {report['tfjs']} ({report['backend']} backend, Node.js)"


def run_onnx(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    _expect_names("ONNX", [i.name for i in inputs], [o.name for o in outputs])
    if inputs[0].shape[1:] != [IMAGE_SIZE] or isinstance(inputs[0].shape[0], int):
        raise ExportError(f"ONNX input shape is {inputs[0].shape}, expected [batch, {IMAGE_SIZE}]")
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: pixels[start : start + BATCH]})[0]
             for start in range(0, len(pixels), BATCH)]
    return np.concatenate(parts), f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def run_tflite(path: Path, pixels: np.ndarray) -> tuple[np.ndarray, str]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    _expect_names("TFLite", [d["name"] for d in interpreter.get_input_details()],
                  [d["name"] for d in interpreter.get_output_details()])
    shape, signature = list(source["shape"]), list(source["shape_signature"])
    if shape != [1, IMAGE_SIZE] or signature != [-1, IMAGE_SIZE]:
        raise ExportError(f"TFLite input has shape {shape}, signature {signature}; "
                          f"expected [1, {IMAGE_SIZE}] resizable to [-1, {IMAGE_SIZE}]")
    # First as shipped (one image, what an app does), then resized to whole batches.
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], pixels[:1])
    interpreter.invoke()
    single = interpreter.get_tensor(sink["index"]).copy()
    parts, size = [], 0
    for start in range(0, len(pixels), BATCH):
        batch = pixels[start : start + BATCH]
        if len(batch) != size:
            size = len(batch)
            interpreter.resize_tensor_input(source["index"], [size, IMAGE_SIZE], strict=True)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch)
        interpreter.invoke()
        parts.append(interpreter.get_tensor(sink["index"]).copy())
    probabilities = np.concatenate(parts)
    if not np.allclose(single[0], probabilities[0], atol=1e-5):
        raise ExportError(f"{path.name}: the batch-1 and the batched run disagree on image 0")
    return probabilities, f"ai-edge-litert {metadata.version('ai-edge-litert')} (Interpreter)"


def compare(
    runtime: str, probabilities: np.ndarray, keras: np.ndarray, labels: np.ndarray
) -> Parity:
    """The parity figures of `probabilities` against the Keras model's on labelled images."""
    if probabilities.shape != keras.shape or probabilities.shape[1:] != (NUM_CLASSES,):
        raise ExportError(f"{runtime} returned shape {probabilities.shape}, expected {keras.shape}")
    diff = np.abs(probabilities.astype(np.float64) - keras.astype(np.float64))
    # NaN would compare as "within bounds": make it the worst difference there is
    per_image = np.where(np.isfinite(diff), diff, np.inf).max(axis=1)
    predicted, expected = probabilities.argmax(axis=1), keras.argmax(axis=1)
    disagree = np.flatnonzero(predicted != expected)
    return Parity(
        runtime=runtime,
        images=int(len(labels)),
        accuracy=round(float(np.mean(predicted == labels)), 6),
        keras_accuracy=round(float(np.mean(expected == labels)), 6),
        top1_agreement=round(1.0 - len(disagree) / len(labels), 6),
        label_disagreements=int(len(disagree)),
        max_abs_diff=float(per_image.max()),
        mean_abs_diff=float(np.where(np.isfinite(diff), diff, 1.0).mean()),
        worst_image=int(per_image.argmax()),
        disagreeing_images=tuple(int(i) for i in disagree[:10]),
    )


def check(
    key: str, parity: Parity, probabilities: np.ndarray, keras: np.ndarray, labels: np.ndarray,
    quantised: bool, bounds: Bounds,
) -> None:
    """Raise ParityError naming the artifact and its worst image when `parity` is out of bounds."""
    if quantised:
        drop = parity.keras_accuracy - parity.accuracy
        if drop <= bounds.max_accuracy_drop + 1e-9 and math.isfinite(parity.max_abs_diff):
            return
        problem = (f"accuracy {parity.accuracy:.4f} is {100 * drop:.2f} points below Keras' "
                   f"{parity.keras_accuracy:.4f} (allowed: {100 * bounds.max_accuracy_drop:.2f})")
    else:
        if parity.label_disagreements == 0 and parity.max_abs_diff <= bounds.max_abs_diff:
            return
        problems = []
        if parity.max_abs_diff > bounds.max_abs_diff:
            problems.append(f"max |Δp| {parity.max_abs_diff:.3g} exceeds {bounds.max_abs_diff:g}")
        if parity.label_disagreements:
            problems.append(f"{parity.label_disagreements} test images get another label than "
                            f"from Keras (first: {', '.join(map(str, parity.disagreeing_images))})")
        problem = "; ".join(problems)
    worst = parity.worst_image
    raise ParityError(
        f"{key} fails parity with the Keras model in {parity.runtime}: {problem}. Worst: test "
        f"image #{worst} (true label {labels[worst]}; Keras says {keras[worst].argmax()} with "
        f"p={keras[worst].max():.6f}, {key} says {probabilities[worst].argmax()} with "
        f"p={probabilities[worst].max():.6f}; |Δp| {parity.max_abs_diff:.3g}). "
        "Nothing was published."
    )


def verify(
    target: Target, path: Path, pixels: np.ndarray, labels: np.ndarray, keras: np.ndarray,
    quantised: bool, bounds: Bounds,
) -> Parity:
    """Run, compare and check one artifact; return its parity figures or raise ParityError."""
    started = time.monotonic()
    probabilities, runtime = target.run(path, pixels)
    parity = replace(compare(runtime, probabilities, keras, labels), bound=bounds.recorded(quantised),
                     seconds=round(time.monotonic() - started, 2))
    check(target.key, parity, probabilities, keras, labels, quantised, bounds)
    return parity


def _expect_names(kind: str, inputs: list[str], outputs: list[str]) -> None:
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(
            f"the {kind} artifact has inputs {inputs} and outputs {outputs}; the contract needs "
            f"[{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]"
        )
