"""The MAC counter on tiny hand-built ONNX graphs whose multiply-adds are known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from digitserve.macs import count_macs


def weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def graph_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
                initializers: list[onnx.TensorProto], output: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "tiny", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model


def image_input(*shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def test_plain_conv_counts_outputs_times_kernel_times_channels() -> None:
    # 3 -> 4 channels, 3x3, no padding, 8x8 -> 6x6: 4 * 36 outputs, each 3 * 9 products
    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], name="conv")
    model = graph_model([conv], [image_input("batch", 3, 8, 8)], [weight("w", 4, 3, 3, 3)], "y")
    assert count_macs(model).total == 4 * 36 * 3 * 9


def test_strided_padded_and_depthwise_convs() -> None:
    # stride 2 with padding 1: 8x8 -> 4x4; then depthwise (group = channels): one channel per output
    strided = helper.make_node("Conv", ["x", "w1"], ["h"], kernel_shape=[3, 3], strides=[2, 2],
                               pads=[1, 1, 1, 1], name="strided")
    depthwise = helper.make_node("Conv", ["h", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                 group=6, name="depthwise")
    model = graph_model([strided, depthwise], [image_input(1, 2, 8, 8)],
                        [weight("w1", 6, 2, 3, 3), weight("w2", 6, 1, 3, 3)], "y")
    counted = count_macs(model)
    assert counted.per_node == {"strided": 6 * 16 * 2 * 9, "depthwise": 6 * 16 * 9}
    assert counted.per_op == {"Conv": 6 * 16 * 2 * 9 + 6 * 16 * 9}


def test_grouped_conv_divides_the_channels() -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1], group=2, name="grouped")
    model = graph_model([conv], [image_input(1, 8, 5, 5)], [weight("w", 4, 4, 1, 1)], "y")
    assert count_macs(model).total == 4 * 25 * 4


def test_gemm_honours_transposes_and_matmul_broadcasts() -> None:
    gemm = helper.make_node("Gemm", ["x", "w"], ["h"], transB=1, name="gemm")  # [1,16] x [10,16]^T
    matmul = helper.make_node("MatMul", ["h", "m"], ["y"], name="matmul")  # [1,10] x [10,3]
    model = graph_model([gemm, matmul], [image_input("batch", 16)],
                        [weight("w", 10, 16), weight("m", 10, 3)], "y")
    assert count_macs(model).per_node == {"gemm": 160, "matmul": 30}

    transposed = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1, name="gemm")  # [16,1]^T x [16,10]
    model = graph_model([transposed], [image_input(16, 1)], [weight("w", 16, 10)], "y")
    assert count_macs(model).total == 160


def test_counts_per_image_whatever_the_batch_and_shapes_computed_in_the_graph(tmp_path: Path) -> None:
    """A symbolic batch counts as one image, also through a Reshape whose shape is computed
    from the graph (as tf2onnx writes Flatten), and a path reads the same as a proto."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "minus_one"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="dense"),
    ]
    consts = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([-1], np.int64), "minus_one"), weight("w", 48, 5)]
    model = graph_model(nodes, [image_input("batch", 3, 4, 4)], consts, "y")
    assert count_macs(model).total == 48 * 5
    onnx.save(model, tmp_path / "tiny.onnx")
    assert count_macs(tmp_path / "tiny.onnx").total == 48 * 5


def test_other_operators_cost_nothing_and_unknown_shapes_fail_by_name() -> None:
    relu = helper.make_node("Relu", ["x"], ["y"])
    assert count_macs(graph_model([relu], [image_input(1, 10)], [], "y")).total == 0

    unknown = helper.make_node("MatMul", ["x", "m"], ["y"], name="mystery")
    model = graph_model([unknown], [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                        [weight("m", 10, 3)], "y")
    with pytest.raises(ValueError, match="mystery: the shape of 'x' is not known"):
        count_macs(model)
