"""SavedModel -> TFLite for mobile apps: float32 `model.tflite`, full-integer `model_int8.tflite`.

Both take the same 784 float32 pixels and return 10 float32 probabilities: the int8 model
quantises at its input and dequantises at its output, so an app feeds both alike. The input is
[1, 784] (what an app classifying one drawing wants) with shape signature [-1, 784], so
`resize_tensor_input` takes any batch. The converter names the tensors `serving_default_pixels:0`
and `StatefulPartitionedCall:0`; we rename them `pixels` and `probabilities`, the signature keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from digitserve.contract import INPUT_NAME, OUTPUT_NAME
from digitserve.export.signature import SIGNATURE_KEY


def convert(saved_model: Path, path: Path, calibration: np.ndarray | None = None) -> dict[str, Any]:
    """Write a float32 TFLite model, or a full-integer one when `calibration` pixels are given."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=[SIGNATURE_KEY]
    )
    facts: dict[str, Any] = {"quantization": None}
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32  # apps feed the same floats to both files
        converter.inference_output_type = tf.float32
        facts = {"quantization": "int8", "calibration_images": len(calibration)}
    flatbuffer = rename_io_tensors(converter.convert())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flatbuffer)
    return {
        **facts,
        "signature": SIGNATURE_KEY,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [1, 784],
                  "shape_signature": [-1, 784]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [1, 10],
                   "shape_signature": [-1, 10]},
        "converter": f"tensorflow {tf.__version__}",
    }


def _representative(pixels: np.ndarray) -> Iterator[list[np.ndarray]]:
    for start in range(len(pixels)):
        yield [pixels[start : start + 1]]


def rename_io_tensors(flatbuffer: bytes) -> bytes:
    """Name the model's input and output tensors after its signature keys (`pixels`, ...)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    signatures = {sig.signatureKey.decode(): sig for sig in model.signatureDefs}
    signature = signatures.get(SIGNATURE_KEY)
    if signature is None or len(model.subgraphs) < 1:
        raise ValueError(f"the TFLite model has no {SIGNATURE_KEY!r} signature")
    tensors = model.subgraphs[signature.subgraphIndex].tensors
    for side, expected in ((signature.inputs, INPUT_NAME), (signature.outputs, OUTPUT_NAME)):
        keys = [entry.name.decode() for entry in side]
        if keys != [expected]:
            raise ValueError(f"the TFLite signature has {keys}, expected [{expected!r}]")
        tensors[side[0].tensorIndex].name = expected.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
