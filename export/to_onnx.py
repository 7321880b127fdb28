"""Keras -> ONNX for the gRPC server: `pixels` float32 [batch, 784] -> `probabilities` [batch, 10].

tf2onnx converts the serving tf.function (its from_keras road fails on Keras 3, docs/toolchain.md).
Its graph optimisers are the only rewriting: constant folding, removal of identities and of the
NHWC/NCHW transposes around convolutions, and batch norm folded into the convolution weights (a
change of rounding only; the CNN stays within 1e-6 of Keras, and parity measures it every time).
Further fusions are left to ONNX Runtime at load time, in the server's own session.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
import tf2onnx

from digitserve.contract import INPUT_NAME, OUTPUT_NAME
from digitserve.export.signature import input_spec, serving_function

log = logging.getLogger(__name__)

OPSET = 17
BATCH_DIM = "batch"


def convert(model: Any, path: Path, opset: int = OPSET) -> dict[str, Any]:
    """Write `model` to `path` as ONNX and check it; return the manifest's facts about it."""
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # it narrates every pass at INFO
    proto, _ = tf2onnx.convert.from_function(
        serving_function(model), input_signature=[input_spec()], opset=opset
    )
    name_batch_dimension(proto)
    proto.doc_string = (
        f"digitserve: {INPUT_NAME} float32 [{BATCH_DIM}, 784], 28x28 row-major, 0.0 background, "
        f"1.0 full ink -> {OUTPUT_NAME} float32 [{BATCH_DIM}, 10]"
    )
    check_names(proto)
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)  # the file as written, not the proto
    return {
        "opset": opset,
        "ir_version": int(proto.ir_version),
        "producer": f"tf2onnx {tf2onnx.__version__}",
        "input": {"name": INPUT_NAME, "shape": [BATCH_DIM, 784]},
        "output": {"name": OUTPUT_NAME, "shape": [BATCH_DIM, 10]},
        "operators": sorted({node.op_type for node in proto.graph.node}),
    }


def name_batch_dimension(proto: onnx.ModelProto) -> None:
    """Give the dynamic first dimension one name everywhere (tf2onnx calls it unk__N)."""
    graph = proto.graph
    generated = {
        value.type.tensor_type.shape.dim[0].dim_param
        for value in [*graph.input, *graph.output]
        if value.type.tensor_type.shape.dim and value.type.tensor_type.shape.dim[0].dim_param
    }
    for value in [*graph.input, *graph.output, *graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param in generated:
            dims[0].dim_param = BATCH_DIM


def check_names(proto: onnx.ModelProto) -> None:
    inputs = [value.name for value in proto.graph.input]
    outputs = [value.name for value in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ValueError(
            f"tf2onnx named the graph's inputs {inputs} and outputs {outputs}; "
            f"expected [{INPUT_NAME!r}] and [{OUTPUT_NAME!r}]"
        )
