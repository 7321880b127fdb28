"""`digitserve train`: train a model and publish it as the next version in the repository."""

from __future__ import annotations

import argparse
import os

from digitserve.cli import add_repo_options, non_negative_int, positive_float, positive_int

MODELS = ("softmax", "mlp", "cnn")  # mirrors train.models.MODELS without importing Keras
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


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
        "cnn (Adam, cosine schedule, augmentation, 15 epochs) targets >= 99.5%."
    )
    parser.add_argument("--model", choices=MODELS, default="cnn", help="architecture (default: %(default)s)")
    # Defaults per model (softmax / mlp / cnn), as train/trainer.py MODEL_DEFAULTS sets them.
    parser.add_argument("--epochs", type=positive_int, help="maximum epochs (default: 20 / 20 / 15)")
    parser.add_argument("--batch-size", type=positive_int, help="images per training step (default: 32 / 128 / 128)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default: sgd / adam / adam)")
    parser.add_argument("--learning-rate", type=positive_float,
                        help="peak learning rate (default: 0.05 / 0.001 / 0.003)")
    parser.add_argument("--validation-split", type=fraction,
                        help="fraction of the training images held out for validation, in [0, 1) "
                             "(default: 0 / 0.1 / 0.05)")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random rotation/zoom/shift of training images (default: off / off / on)")
    parser.add_argument("--patience", type=non_negative_int,
                        help="early-stopping patience in epochs on validation loss, 0 = off; needs a "
                             "validation split (default: 0 / 4 / 0)")
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
