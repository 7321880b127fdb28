"""The packed-float shortcuts give exactly what the plain protobuf API gives."""

from __future__ import annotations

import numpy as np

from digitserve.wire.codec import packed_float_field, packed_floats
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2

VALUES = np.random.default_rng(0).random(784 * 3, dtype=np.float32)


def test_packed_floats_reads_a_float32_pixels_message() -> None:
    message = d.Float32Pixels(values=VALUES)
    got = packed_floats(message.SerializeToString(), 1)
    assert got is not None
    np.testing.assert_array_equal(got, VALUES)
    assert packed_floats(b"", 1) is not None and packed_floats(b"", 1).size == 0


def test_packed_floats_declines_mixed_contents() -> None:
    only = v2.InferTensorContents(fp32_contents=VALUES[:10])
    mixed = v2.InferTensorContents(fp32_contents=VALUES[:10], int_contents=[1])
    got = packed_floats(only.SerializeToString(), 6)
    assert got is not None
    np.testing.assert_array_equal(got, VALUES[:10])
    assert packed_floats(mixed.SerializeToString(), 6) is None
    assert packed_floats(only.SerializeToString(), 1) is None  # another field number


def test_packed_float_field_merges_like_extend() -> None:
    fast = v2.InferTensorContents()
    fast.MergeFromString(packed_float_field(6, VALUES))
    plain = v2.InferTensorContents()
    plain.fp32_contents.extend(VALUES.tolist())
    assert fast == plain
