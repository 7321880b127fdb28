"""The serving signature every artifact is converted from: `pixels` [batch, 784] -> `probabilities`.

ONNX is converted from the tf.function directly (tf2onnx.convert.from_function; from_keras fails
on Keras 3). TF.js and TFLite are converted from a SavedModel holding the same function as its
`serving_default` signature, so their signature keys are the contract's names too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, OUTPUT_NAME

SIGNATURE_KEY = "serving_default"


def input_spec() -> tf.TensorSpec:
    return tf.TensorSpec([None, IMAGE_SIZE], tf.float32, name=INPUT_NAME)


def serving_function(model: Any) -> tf.types.experimental.GenericFunction:
    """`pixels` float32 [batch, 784] -> {"probabilities": float32 [batch, 10]}, inference mode."""
    return tf.function(_serve(model), input_signature=[input_spec()])


def _serve(model: Any) -> Any:
    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(pixels, training=False)}

    return serve


def write_saved_model(model: Any, directory: Path) -> Path:
    """Write a SavedModel whose `serving_default` signature is the contract; return its folder."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_KEY, _serve(model), input_signature=[input_spec()])
    archive.write_out(str(directory), verbose=False)
    return directory
