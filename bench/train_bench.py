"""Time the training recipes on all 60,000 MNIST images and report test accuracy.

The softmax run is the tutorial's recipe (SGD 0.05, batch 32, 20 epochs), the reference
the tutorial quotes at 92-93%; the cnn run uses the defaults of `digitserve train`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

TUTORIAL_ACCURACY = "92-93%"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="softmax,cnn", help="models to train (default: %(default)s)")
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repo", help="model repository to publish into (default: a temporary folder)")
    parser.add_argument("--output", default="bench-train.json", help="JSON results file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from digitserve.train.trainer import TrainConfig, train

    repo = args.repo or tempfile.mkdtemp(prefix="digitserve-bench-")
    results = []
    for model in args.models.split(","):
        start = time.monotonic()
        version = train(TrainConfig(model=model, seed=args.seed, data=args.data, repo=repo))
        total = time.monotonic() - start
        metrics = json.loads((Path(repo) / "digits" / str(version) / "train" / "metrics.json").read_text())
        results.append({
            "model": model,
            "test_accuracy": metrics["test_accuracy"],
            "epochs_run": metrics["epochs_run"],
            "fit_seconds": metrics["wall_seconds"],
            "total_seconds": round(total, 1),
            "parameters": metrics["parameters"],
            "cpu_count": os.cpu_count(),
            "version_dir": str(Path(repo) / "digits" / str(version)),
        })
    print(f"\n{'model':<8} {'test accuracy':>13} {'epochs':>6} {'fit s':>7} {'total s':>8}")
    for r in results:
        print(f"{r['model']:<8} {r['test_accuracy']:>13.2%} {r['epochs_run']:>6} "
              f"{r['fit_seconds']:>7.0f} {r['total_seconds']:>8.0f}")
    print(f"(the tutorial quotes {TUTORIAL_ACCURACY} for softmax)")
    Path(args.output).write_text(json.dumps({"train": results}, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0
