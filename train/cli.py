"""`digitserve train`: train a model and publish it as the next version in the repository."""

from __future__ import annotations

import argparse
import os

from digitserve.cli import add_repo_options, non_negative_int, positive_float, positive_int
from digitserve.train.recipes import MODELS, OPTIMIZERS, defaults_text


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:  # NaN too
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a digit classifier on MNIST and publish it as the next version "
        "<repo>/<name>/<version>/ with model.keras and train/ reports. Options left out take "
        "the model's defaults: softmax is the tutorial (SGD 0.05, batch 32, 20 epochs); "
        "cnn (Adam, cosine schedule, augmentation, 15 epochs) targets >= 99.5%; compact is the "
        "same recipe on a network of a quarter of cnn's multiply-adds. Defaults that "
        f"differ per model are listed {' / '.join(MODELS)}."
    )
    parser.add_argument("--model", choices=MODELS, default="cnn", help="architecture (default: %(default)s)")
    # Defaults differ per model: "(default: softmax / mlp / cnn)", from MODEL_DEFAULTS.
    parser.add_argument("--epochs", type=positive_int, help=f"maximum epochs (default: {defaults_text('epochs')})")
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"images per training step (default: {defaults_text('batch_size')})")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help=f"optimizer (default: {defaults_text('optimizer')})")
    parser.add_argument("--learning-rate", type=positive_float,
                        help=f"peak learning rate (default: {defaults_text('learning_rate')})")
    parser.add_argument("--validation-split", type=fraction,
                        help="fraction of the training images held out for validation, in [0, 1) "
                             f"(default: {defaults_text('validation_split')})")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help=f"random rotation/zoom/shift of training images (default: {defaults_text('augment')})")
    parser.add_argument("--patience", type=non_negative_int,
                        help="early-stopping patience in epochs on validation loss, 0 = off; needs a "
                             f"validation split (default: {defaults_text('patience')})")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--subset", type=positive_int, help="train on the first N training images only")
    parser.add_argument(
        "--data", help="MNIST folder (IDX files) or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)"
    )
    add_repo_options(parser)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out
    from digitserve.train.trainer import TrainConfig, train

    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    version = train(config)
    print(f"{args.repo}/{args.name}/{version}")
    return 0
