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
    graph = helper.make_graph(
        nodes,
        "digits-softmax",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


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
    digest = hashlib.sha256(data).hexdigest()
    if bad_sha256:
        digest = "0" * 64
    if truncate:
        data = data[: len(data) // 2]
        digest = hashlib.sha256(data).hexdigest()  # a truthful manifest over a broken file
    final = root / name / str(version)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=final.parent))  # hidden from the server
    (staging / "onnx").mkdir()
    (staging / "onnx" / "model.onnx").write_bytes(data)
    if manifest:
        (staging / MANIFEST).write_text(json.dumps(_manifest(name, version, data, digest), indent=2))
    os.rename(staging, final)  # whole, as export publishes, so a polling server never sees half of it
    return final


def _manifest(name: str, version: int, data: bytes, digest: str) -> dict[str, object]:
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": "2026-01-01T00:00:00Z",
        "model": {"architecture": "softmax", "parameters": 7850, "test_accuracy": None},
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
