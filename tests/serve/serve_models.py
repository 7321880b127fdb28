"""Real exported model versions for the serving tests, built without TensorFlow.

`write_version` writes `<root>/<name>/<version>/onnx/model.onnx` (a softmax regression built
with onnx.helper) and a manifest.json following the export contract, atomically, as
`digitserve export` does. Options make the variants reload tests need: a slow model (an extra
input-dependent matrix product, so the queue fills), a wrong sha256, a truncated file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from digitserve.repository import MANIFEST, MANIFEST_SCHEMA_VERSION

SLOW_SIZE = 2600
"""Side of the slow variant's matrix product: 0.3 to 0.7 s per model execution on one core."""


@dataclass(frozen=True)
class Weights:
    w: np.ndarray  # float32 [784, 10]
    b: np.ndarray  # float32 [10]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        logits = pixels @ self.w + self.b
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, steps: int = 60, rate: float = 0.5) -> Weights:
    """Softmax regression by full-batch gradient descent: about 88% on MNIST in a second."""
    w = np.zeros((x.shape[1], 10), dtype=np.float32)
    b = np.zeros(10, dtype=np.float32)
    onehot = np.eye(10, dtype=np.float32)[y]
    for _ in range(steps):
        grad = Weights(w, b).predict(x) - onehot
        w -= rate * (x.T @ grad) / len(x)
        b -= rate * grad.mean(axis=0)
    return Weights(w.astype(np.float32), b.astype(np.float32))


def random_weights(seed: int) -> Weights:
    rng = np.random.default_rng(seed)
    return Weights(rng.normal(0, 0.05, (784, 10)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32))


def build_onnx(weights: Weights, slow_size: int = 0, fail_on_full_ink: bool = False) -> bytes:
    """pixels [N, 784] -> probabilities [N, 10]; slow_size > 0 adds a [k, k] @ [k, k] product.

    The slow branch depends on the input (so ONNX Runtime cannot fold it away) and adds exactly
    zero to the logits. fail_on_full_ink makes ONNX Runtime raise at run time when a pixel is
    exactly 1.0 (a Gather whose index, floor(10 * max pixel), is then out of bounds); warm-up
    pixels lie in [0, 1), so such a model loads and serves everything else.
    """
    nodes = [
        helper.make_node("MatMul", ["pixels", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["logits"]),
    ]
    inits = [numpy_helper.from_array(weights.w, "W"), numpy_helper.from_array(weights.b, "B")]
    softmax_input = "logits"
    if slow_size:
        big = np.full((slow_size, slow_size), 1e-3, dtype=np.float32)
        inits += [
            numpy_helper.from_array(big, "Big"),
            numpy_helper.from_array(np.zeros(1, dtype=np.float32), "Zero"),
        ]
        nodes += [
            helper.make_node("ReduceSum", ["pixels"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "Zero"], ["nothing"]),
            helper.make_node("Add", ["Big", "nothing"], ["big_dep"]),
            helper.make_node("MatMul", ["big_dep", "big_dep"], ["product"]),
            helper.make_node("ReduceSum", ["product"], ["product_sum"], keepdims=0),
            helper.make_node("Mul", ["product_sum", "Zero"], ["zero_dep"]),
            helper.make_node("Add", ["logits", "zero_dep"], ["logits_slow"]),
        ]
        softmax_input = "logits_slow"
    if fail_on_full_ink:
        inits.append(numpy_helper.from_array(np.zeros(10, dtype=np.float32), "Ten"))
        inits.append(numpy_helper.from_array(np.array(10.0, dtype=np.float32), "TenScale"))
        nodes += [
            helper.make_node("ReduceMax", ["pixels"], ["peak"], keepdims=0),
            helper.make_node("Mul", ["peak", "TenScale"], ["scaled"]),
            helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["Ten", "index"], ["picked"]),
            helper.make_node("Add", [softmax_input, "picked"], ["logits_checked"]),
        ]
        softmax_input = "logits_checked"
    nodes.append(helper.make_node("Softmax", [softmax_input], ["probabilities"], axis=1))
    return _model_bytes(nodes, inits, "digits-softmax")


def write_version(
    root: Path,
    version: int,
    weights: Weights,
    *,
    name: str = "digits",
    slow_size: int = 0,
    fail_on_full_ink: bool = False,
    bad_sha256: bool = False,
    truncate: bool = False,
    manifest: bool = True,
) -> Path:
    """Write one exported version; return its folder."""
    data = build_onnx(weights, slow_size, fail_on_full_ink)
    return write_onnx_version(root, name, version, data, bad_sha256=bad_sha256, truncate=truncate, manifest=manifest)


def _manifest(name: str, version: int, data: bytes, digest: str, architecture: str = "softmax") -> dict[str, object]:
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "model": {"architecture": architecture, "test_accuracy": None},
        "contract": {
            "input": {
                "name": "pixels",
                "dtype": "float32",
                "shape": [-1, 784],
                "range": [0.0, 1.0],
            },
            "output": {"name": "probabilities", "dtype": "float32", "shape": [-1, 10]},
        },
        "artifacts": {
            "onnx": {
                "path": "onnx/model.onnx",
                "format": "onnx",
                "opset": 17,
                "bytes": len(data),
                "sha256": digest,
            }
        },
    }


# -- repository serving: a second architecture, and a heavier model for the memory test ---------

def build_cnn_onnx(seed: int, filters: int = 4) -> bytes:
    """A small CNN with seeded random weights: pixels [N, 784] -> Reshape [N, 1, 28, 28] ->
    Conv 3x3 (`filters`, padding 1) -> Relu -> MaxPool 2 -> Flatten -> MatMul + Add to 10 ->
    Softmax -> probabilities [N, 10]. Different seeds give versions whose answers differ."""
    rng = np.random.default_rng(seed)
    flat = filters * 14 * 14
    inits = [
        numpy_helper.from_array(np.array([-1, 1, 28, 28], dtype=np.int64), "Shape"),
        numpy_helper.from_array(rng.normal(0, 0.5, (filters, 1, 3, 3)).astype(np.float32), "ConvW"),
        numpy_helper.from_array(rng.normal(0, 0.1, filters).astype(np.float32), "ConvB"),
        numpy_helper.from_array(rng.normal(0, 0.1, (flat, 10)).astype(np.float32), "DenseW"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "DenseB"),
    ]
    nodes = [
        helper.make_node("Reshape", ["pixels", "Shape"], ["image"]),
        helper.make_node("Conv", ["image", "ConvW", "ConvB"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "DenseW"], ["dense"]),
        helper.make_node("Add", ["dense", "DenseB"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    return _model_bytes(nodes, inits, "digits-cnn")


def build_wide_onnx(seed: int, hidden: int = 4096) -> bytes:
    """pixels [N, 784] -> Dense(hidden) -> Relu -> Dense(10) -> Softmax: about hidden x 3 KiB of
    weights (12.6 MiB at 4096), so that a version's memory, if it leaked, would show in RSS."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.05, (784, hidden)).astype(np.float32), "W1"),
        numpy_helper.from_array(np.zeros(hidden, dtype=np.float32), "B1"),
        numpy_helper.from_array(rng.normal(0, 0.05, (hidden, 10)).astype(np.float32), "W2"),
        numpy_helper.from_array(np.zeros(10, dtype=np.float32), "B2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["pixels", "W1"], ["h"]),
        helper.make_node("Add", ["h", "B1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["hr"]),
        helper.make_node("MatMul", ["hr", "W2"], ["o"]),
        helper.make_node("Add", ["o", "B2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    return _model_bytes(nodes, inits, "digits-wide")


def _model_bytes(nodes: list, inits: list, graph_name: str) -> bytes:
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_onnx_version(
    root: Path,
    name: str,
    version: int,
    data: bytes,
    *,
    architecture: str = "softmax",
    bad_sha256: bool = False,
    truncate: bool = False,
    manifest: bool = True,
) -> Path:
    """Publish the ONNX bytes `data` as `<root>/<name>/<version>/` with a manifest, exactly as
    write_version publishes its softmax (same manifest, same atomic rename), and the same
    corruption options: a wrong sha256 in the manifest, or a truncated file with a truthful one."""
    digest = hashlib.sha256(data).hexdigest()
    if bad_sha256:
        digest = "0" * 64
    if truncate:
        data = data[: len(data) // 2]
        digest = hashlib.sha256(data).hexdigest()
    final = root / name / str(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=final.parent))
    (staging / "onnx").mkdir()
    (staging / "onnx" / "model.onnx").write_bytes(data)
    if manifest:
        (staging / MANIFEST).write_text(json.dumps(_manifest(name, version, data, digest, architecture), indent=2))
    os.rename(staging, final)  # whole, as export publishes, so a polling server never sees half of it
    return final


def write_cnn_version(root: Path, version: int, seed: int, *, name: str = "cnn", **options: bool) -> Path:
    """One version of the small CNN (build_cnn_onnx(seed)); `options` as write_onnx_version's."""
    return write_onnx_version(root, name, version, build_cnn_onnx(seed), architecture="cnn", **options)


def write_wide_version(root: Path, version: int, seed: int, *, name: str = "wide", hidden: int = 4096) -> Path:
    """One version of the wide two-layer model (build_wide_onnx)."""
    return write_onnx_version(root, name, version, build_wide_onnx(seed, hidden), architecture="mlp")
