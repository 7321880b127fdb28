"""Float ONNX -> int8 ONNX for CPU serving: ONNX Runtime static quantisation in the QDQ format.

It starts from the float `onnx/model.onnx`, so the int8 file is that graph with quantise/
dequantise pairs around each quantised operator: weights int8 per output channel, activations
uint8 with ranges calibrated (MinMax) on training images. Unsigned activations because ORT's
x86 kernels are built for u8 x s8 products (VNNI): on the compact CNN int8 activations ran
slower than float, uint8 ones faster, at the same accuracy (docs/benchmarks.md). Without VNNI
u8 x s8 may saturate; the parity check on every test image would refuse what that costs.
The final Softmax stays float, so the probabilities keep full resolution and sum to 1 (the
server's warm-up checks that). Input and output stay float32 `pixels` [batch, 784] ->
`probabilities` [batch, 10]: the server, its clients and the parity check treat both alike.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from digitserve.contract import INPUT_NAME, OUTPUT_NAME
from digitserve.manifest import sha256_file

CALIBRATION_BATCH = 50
KEEP_FLOAT = ("Softmax",)  # probabilities in 8 bits would not sum to 1


class _Calibration(CalibrationDataReader):  # type: ignore[misc]
    """The calibration images as the quantiser asks for them: one feed dict per batch."""

    def __init__(self, pixels: np.ndarray):
        self._pixels = pixels
        self._batches = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self._pixels), CALIBRATION_BATCH):
            yield {INPUT_NAME: self._pixels[start : start + CALIBRATION_BATCH]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._feeds()


def convert(float_file: Path, path: Path, calibration: np.ndarray) -> dict[str, Any]:
    """Quantise `float_file` into `path`, calibrated on `calibration` pixels; the manifest's facts."""
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="digitserve-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # ONNX shape inference and ORT's fusions; the symbolic pass needs sympy, and the shapes
        # here are static but for the batch.
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        _name_nodes(graph)
        onnx.save_model(graph, str(prepared))
        kept = [node.name for node in graph.graph.node if node.op_type in KEEP_FLOAT]
        path.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared), str(path), _Calibration(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=kept,
        )
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    return {
        "quantization": "int8",
        "scheme": "ONNX Runtime static quantization, QDQ; weights int8 per channel, "
                  "activations uint8 (MinMax calibration)",
        "kept_float": sorted({node.op_type for node in graph.graph.node if node.name in kept}),
        "calibration_images": int(len(calibration)),
        "calibration_data": "training images",
        "quantized_from": {"sha256": sha256_file(float_file)},
        "quantizer": f"onnxruntime {ort.__version__}",
        "opset": max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")),
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": _shape(proto.graph.input[0])},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": _shape(proto.graph.output[0])},
        "operators": sorted({node.op_type for node in proto.graph.node}),
    }


def _name_nodes(graph: onnx.ModelProto) -> None:
    """Give unnamed nodes a name: the quantiser excludes nodes by name."""
    for index, node in enumerate(graph.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]
