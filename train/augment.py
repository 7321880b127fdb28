"""Random affine distortions of digit images, reproducible from a seed.

Stateless random ops keyed by per-batch seeds keep augmentation identical from run to run
whatever the thread scheduling, so the same seed gives the same model. The augmentation
lives in the input pipeline, not in the model, so exported artifacts never contain it.
"""

from __future__ import annotations

import math

import tensorflow as tf

from digitserve.contract import IMAGE_SIDE, IMAGE_SIZE

MAX_ROTATION = math.radians(10)
MAX_ZOOM = 0.10
MAX_SHIFT = 2.5  # pixels


def random_affine(pixels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rotate, zoom and shift a batch of [B, 784] images about their centre."""
    batch = tf.shape(pixels)[0]
    u = tf.random.stateless_uniform([batch, 4], seed=seed, minval=-1.0, maxval=1.0)
    angle = u[:, 0] * MAX_ROTATION
    scale = 1.0 + u[:, 1] * MAX_ZOOM
    shift_x, shift_y = u[:, 2] * MAX_SHIFT, u[:, 3] * MAX_SHIFT
    # The transform maps each output pixel to the input pixel it samples from.
    centre = (IMAGE_SIDE - 1) / 2.0
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    zeros = tf.zeros_like(angle)
    transforms = tf.stack(
        [
            cos, -sin, centre - cos * centre + sin * centre - shift_x,
            sin, cos, centre - sin * centre - cos * centre - shift_y,
            zeros, zeros,
        ],
        axis=1,
    )
    images = tf.reshape(pixels, [-1, IMAGE_SIDE, IMAGE_SIDE, 1])
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=[IMAGE_SIDE, IMAGE_SIDE],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.reshape(moved, [-1, IMAGE_SIZE])
