"""The Keras model an export starts from: loaded safely, run once on the test set, described.

`model.keras` is loaded with `safe_mode=True` (no pickled Python, no lambda layers) and without
its optimizer. Its probabilities on the test images are the reference every artifact is held to.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.errors import ModelRepositoryError
from digitserve.manifest import ModelSummary
from digitserve.repository import METRICS_FILE

log = logging.getLogger(__name__)

# Every training setting, so the manifest alone says how to reproduce the model.
TRAINING_KEYS = ("epochs", "epochs_run", "batch_size", "optimizer", "learning_rate", "seed",
                 "validation_split", "augment", "patience", "subset", "train_images",
                 "validation_images", "wall_seconds", "data_sha256")
PREDICT_BATCH = 1000  # bounds memory for the CNN (its first activations are ~87 KB per image)


def load_keras_model(path: Path) -> Any:
    """Load `path` in Keras' safe mode; a file that is not a loadable model is a clear error."""
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, KeyError...
        if "safe_mode" in str(exc):
            raise ModelRepositoryError(
                f"{path} cannot be loaded as a Keras model: Keras' safe mode refuses it because "
                f"loading it would run arbitrary Python ({_first_line(exc)[:160]}...); "
                "digitserve never turns safe mode off — rebuild the model without such layers"
            ) from exc
        raise ModelRepositoryError(
            f"{path} cannot be loaded as a Keras model ({type(exc).__name__}: {_first_line(exc)}); "
            "it is corrupt or was not written by `digitserve train` — train this version again"
        ) from exc
    inputs, outputs = getattr(model, "inputs", None), getattr(model, "outputs", None)
    if not inputs or len(inputs) != 1 or len(outputs or []) != 1:
        raise ModelRepositoryError(f"{path} is not a one-input, one-output Keras model")
    if tuple(inputs[0].shape)[1:] != (784,) or tuple(outputs[0].shape)[1:] != (10,):
        raise ModelRepositoryError(
            f"{path} maps {tuple(inputs[0].shape)} to {tuple(outputs[0].shape)}; the input "
            "contract needs pixels [N, 784] -> probabilities [N, 10]"
        )
    return model


def predict(model: Any, pixels: np.ndarray) -> np.ndarray:
    """The Keras model's probabilities for float32 pixels [N, 784], in inference mode."""
    parts = [
        np.asarray(model(pixels[start : start + PREDICT_BATCH], training=False), dtype=np.float32)
        for start in range(0, len(pixels), PREDICT_BATCH)
    ]
    return np.concatenate(parts)


def describe_model(
    version_dir: Path, model: Any, keras_sha256: str, keras_accuracy: float
) -> ModelSummary:
    """The manifest's "model" section: from train/metrics.json where train wrote it, else from
    the model itself (architecture = model name, parameters counted, accuracy measured here)."""
    metrics = _read_metrics(version_dir / METRICS_FILE)
    training = {key: metrics[key] for key in TRAINING_KEYS if key in metrics} if metrics else None
    accuracy = metrics.get("test_accuracy") if metrics else None
    return ModelSummary(
        architecture=str((metrics or {}).get("model") or model.name),
        parameters=int((metrics or {}).get("parameters") or model.count_params()),
        keras_sha256=keras_sha256,
        test_accuracy=round(float(accuracy if accuracy is not None else keras_accuracy), 6),
        training=training,
    )


def _read_metrics(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        log.info("%s not found: describing the model from the model itself", path)
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: not readable JSON (%s)", path, exc)
        return None
    return metrics if isinstance(metrics, dict) else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:400] if text else "no message"
