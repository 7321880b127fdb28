"""Train one model on MNIST and publish it as a new version of the model repository.

The recipe: load the data, build the model, fit it (seeded, with the model's defaults
for anything the caller leaves out), evaluate on the test set, then write model.keras
and the train/ reports into a staging folder that is renamed into place at the end.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, replace

import keras
import numpy as np
import tensorflow as tf

from digitserve import interrupt
from digitserve.contract import images_to_pixels
from digitserve.errors import UsageError
from digitserve.mnist import Mnist, load_mnist
from digitserve.repository import KERAS_FILE, METRICS_FILE, TRAIN_DIR, ModelRepository
from digitserve.train import report
from digitserve.train.augment import random_affine
from digitserve.train.models import build_model
from digitserve.train.recipes import MODEL_DEFAULTS, MODELS, OPTIMIZERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; None means "the model's default" (see MODEL_DEFAULTS)."""

    model: str = "cnn"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    validation_split: float | None = None
    augment: bool | None = None
    patience: int | None = None  # early-stopping patience in epochs; 0 turns it off
    seed: int = 42
    subset: int | None = None  # train on the first N training images only
    data: str | None = None
    repo: str = "models"
    name: str = "digits"


def resolve(config: TrainConfig) -> TrainConfig:
    """Fill in the model's defaults and reject settings that cannot work."""
    if config.model not in MODELS:
        raise UsageError(f"unknown model {config.model!r}; choose one of {', '.join(MODELS)}")
    filled = {k: v for k, v in MODEL_DEFAULTS[config.model].items() if getattr(config, k) is None}
    config = replace(config, **filled)  # type: ignore[arg-type]
    checks = [
        (config.epochs > 0, f"--epochs must be positive, got {config.epochs}"),
        (config.batch_size > 0, f"--batch-size must be positive, got {config.batch_size}"),
        (config.learning_rate > 0, f"--learning-rate must be positive, got {config.learning_rate}"),
        (0 <= config.validation_split < 1,
         f"--validation-split must lie in [0, 1), got {config.validation_split}"),
        (config.patience >= 0, f"--patience must be zero or more, got {config.patience}"),
        (config.optimizer in OPTIMIZERS,
         f"unknown optimizer {config.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
        (config.subset is None or config.subset > 0, f"--subset must be positive, got {config.subset}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    return config


def train(config: TrainConfig) -> int:
    """Train, evaluate and publish; return the new version number."""
    config = resolve(config)
    data = load_mnist(config.data)
    x_train, y_train, x_val, y_val = split_training_data(data, config)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    model = build_model(config.model)
    steps = math.ceil(len(x_train) / config.batch_size)
    model.compile(
        optimizer=make_optimizer(config, steps),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    log.info("training %s (%d parameters) on %d images, validating on %d, seed %d",
             config.model, model.count_params(), len(x_train), len(x_val), config.seed)
    start = time.monotonic()
    history = model.fit(
        training_dataset(x_train, y_train, config),
        steps_per_epoch=steps,
        epochs=config.epochs,
        validation_data=(x_val, y_val) if len(x_val) else None,
        callbacks=callbacks(config, has_validation=len(x_val) > 0),
        shuffle=False,  # the dataset is shuffled, with the seed
        verbose=1 if sys.stdout.isatty() else 2,
    )
    wall_seconds = time.monotonic() - start

    x_test, y_test = images_to_pixels(data.x_test), data.y_test.astype(np.int64)
    probabilities = model.predict(x_test, batch_size=1024, verbose=0)
    metrics = report.evaluate(probabilities, y_test)
    metrics.update(
        model=config.model,
        parameters=int(model.count_params()),
        epochs_run=len(history.history["loss"]),
        wall_seconds=round(wall_seconds, 1),
        train_images=len(x_train),
        validation_images=len(x_val),
        data_sha256=data.sha256,
        data_source=data.source,
        libraries=report.library_versions(),
        **{k: v for k, v in asdict(config).items() if k not in ("model", "data", "repo", "name")},
    )
    log.info("test accuracy %.4f after %d epochs in %.0f s",
             metrics["test_accuracy"], metrics["epochs_run"], wall_seconds)
    return publish(model, metrics, history.history, probabilities, data, config)


def split_training_data(
    data: Mnist, config: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (subset of the) training images, with the last `validation_split` held out."""
    images, labels = data.x_train, data.y_train
    if config.subset is not None:
        if config.subset > len(images):
            raise UsageError(f"--subset {config.subset} is larger than the {len(images)} training images")
        images, labels = images[: config.subset], labels[: config.subset]
    held_out = int(len(images) * (config.validation_split or 0.0))
    cut = len(images) - held_out
    pixels, labels = images_to_pixels(images), labels.astype(np.int64)
    return pixels[:cut], labels[:cut], pixels[cut:], labels[cut:]


def training_dataset(x: np.ndarray, y: np.ndarray, config: TrainConfig) -> tf.data.Dataset:
    """Shuffled, batched, endlessly repeated batches; augmented for the models that want it."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(config.batch_size)
    )
    if config.augment:
        seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, seed: (random_affine(batch[0], seed), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The tutorial's constant-rate SGD for softmax; warm-up then cosine decay for the rest."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = float(config.learning_rate)
    if config.model != "softmax":
        total = steps_per_epoch * config.epochs
        warmup = min(steps_per_epoch, total // 10)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate / 10,
            decay_steps=max(total - warmup, 1),
            alpha=0.01,
            warmup_target=config.learning_rate,
            warmup_steps=warmup,
        )
    kinds = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
             "adamw": keras.optimizers.AdamW, "rmsprop": keras.optimizers.RMSprop}
    return kinds[config.optimizer](learning_rate=rate)


def callbacks(config: TrainConfig, has_validation: bool) -> list[keras.callbacks.Callback]:
    if config.patience and not has_validation:
        log.warning("--patience %d: early stopping watches validation loss, and there is no "
                    "validation split; training runs all %d epochs", config.patience, config.epochs)
    if not (has_validation and config.patience):
        return []
    return [keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=1)]


def publish(
    model: keras.Model,
    metrics: dict[str, object],
    history: dict[str, list[float]],
    probabilities: np.ndarray,
    data: Mnist,
    config: TrainConfig,
) -> int:
    """Write the model and its reports into a staging folder, then rename it into place."""
    repository = ModelRepository(config.repo, config.name)
    with repository.staging_dir() as staged:
        model.save(staged / KERAS_FILE)
        reports = staged / TRAIN_DIR
        reports.mkdir()
        (reports / "history.json").write_text(json.dumps(
            {k: [float(v) for v in values] for k, values in history.items()}, indent=2) + "\n")
        report.plot_learning_curves(history, reports / "learning_curves.png")
        report.plot_confusion_matrix(metrics["confusion_matrix"], reports / "confusion_matrix.png")
        report.plot_misclassified(data.x_test, data.y_test, probabilities, reports / "misclassified.png")
        (staged / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        interrupt.check()  # one a library swallowed still means: publish nothing
        version = repository.publish(staged)
    log.info("wrote %s", repository.path(version))
    return version
