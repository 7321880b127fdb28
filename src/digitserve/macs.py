"""Multiply-adds per image of an ONNX graph, counted over its Conv, Gemm and MatMul nodes.

Architectures are compared on the graph that is served (batch norm folded, padding as
exported), not on the Keras code. Every other operator (bias adds, activations, pooling) is
left out: their cost is per output value, not per weight, and small beside the products.
Shapes come from ONNX shape inference with the batch dimension fixed at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

COUNTED = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds for one image: the total, and per counted node (name -> MACs)."""

    total: int
    per_node: dict[str, int] = field(default_factory=dict)
    per_op: dict[str, int] = field(default_factory=dict)


def count_macs(model: str | Path | onnx.ModelProto) -> MacCount:
    """MACs per image of an ONNX model (a path or a loaded ModelProto).

    Raises ValueError naming the node when a counted node's shapes cannot be inferred.
    """
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    proto = _batch_of_one(proto)
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = _known_shapes(inferred)
    per_node: dict[str, int] = {}
    per_op: dict[str, int] = {}
    for index, node in enumerate(inferred.graph.node):
        if node.op_type not in COUNTED:
            continue
        name = node.name or f"{node.op_type}_{index}"
        macs = _COUNTERS[node.op_type](node, shapes, name)
        per_node[name] = macs
        per_op[node.op_type] = per_op.get(node.op_type, 0) + macs
    return MacCount(total=sum(per_node.values()), per_node=per_node, per_op=per_op)


def _batch_of_one(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose graph inputs have every symbolic dimension (the batch) set to 1."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]  # re-inferred below with the fixed batch
    initializers = {tensor.name for tensor in copy.graph.initializer}
    for value in copy.graph.input:
        if value.name in initializers:
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
                dim.dim_value = 1
    for value in copy.graph.output:  # outputs are re-inferred; stale symbols would clash
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    return copy


def _known_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    """Value name -> its static shape, or None where some dimension is not known."""
    shapes: dict[str, tuple[int, ...] | None] = {
        tensor.name: tuple(tensor.dims) for tensor in proto.graph.initializer
    }
    graph = proto.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            shapes.setdefault(value.name, None)
            continue
        dims = tensor_type.shape.dim
        known = all(dim.HasField("dim_value") for dim in dims)
        shapes[value.name] = tuple(dim.dim_value for dim in dims) if known else None
    return shapes


def _shape(shapes: dict[str, tuple[int, ...] | None], value: str, node: str) -> tuple[int, ...]:
    shape = shapes.get(value)
    if shape is None:
        raise ValueError(f"{node}: the shape of {value!r} is not known after shape inference")
    return shape


def _conv(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...] | None], name: str) -> int:
    """Every output value is a dot product over (input channels / group) x kernel."""
    weight = _shape(shapes, node.input[1], name)  # [M, C/group, k1, k2, ...]
    output = _shape(shapes, node.output[0], name)  # [N, M, o1, o2, ...]
    return math.prod(output) * math.prod(weight[1:])


def _gemm(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...] | None], name: str) -> int:
    """Y = op(A) op(B): M x N outputs, each a dot product over K (the transposes decide K)."""
    a = _shape(shapes, node.input[0], name)
    trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
    inner = a[0] if trans_a else a[1]
    return math.prod(_shape(shapes, node.output[0], name)) * inner


def _matmul(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...] | None], name: str) -> int:
    """numpy matmul semantics: each output value is a dot product over A's last dimension."""
    a = _shape(shapes, node.input[0], name)
    return math.prod(_shape(shapes, node.output[0], name)) * a[-1]


_COUNTERS = {"Conv": _conv, "Gemm": _gemm, "MatMul": _matmul}
