"""Every model builder honours the input contract: pixels [N, 784] -> probabilities [N, 10]."""

from __future__ import annotations

import numpy as np
import pytest

from digitserve.contract import INPUT_NAME, OUTPUT_NAME
from digitserve.train.models import MODELS, build_model


@pytest.mark.parametrize("name", MODELS)
def test_contract(name: str) -> None:
    model = build_model(name)
    assert model.input_shape == (None, 784)
    assert model.output_shape == (None, 10)
    assert model.inputs[0].name == INPUT_NAME
    assert model.layers[-1].name == OUTPUT_NAME
    batch = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    probabilities = np.asarray(model(batch, training=False))
    assert probabilities.shape == (3, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()


def test_softmax_is_the_tutorial_model() -> None:
    model = build_model("softmax")
    assert model.count_params() == 784 * 10 + 10
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Dense"]


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of softmax, mlp, cnn"):
        build_model("resnet")
