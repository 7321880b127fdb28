"""Train the recipes on all 60,000 MNIST images and compare them in one run.

Per model: parameters, multiply-adds per image counted on its ONNX graph, test accuracy per
seed, training wall time, and accuracy on the out-of-MNIST check set (drawn and photographed
digits, digitserve.train.out_of_mnist). Ratios are taken against `--reference` (the cnn)
trained in the same run, because wall times on a shared machine only compare within one run.
The softmax run is the tutorial's recipe, the reference the tutorial quotes at 92-93%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from digitserve.errors import UsageError
from digitserve.repository import KERAS_FILE, METRICS_FILE, ModelRepository

TUTORIAL_ACCURACY = "92-93%"
CHECK_SET_SEED = 13
CHECK_SET_PER_DIGIT = 50  # per rendering: 1,000 images in all


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed")
    return seeds


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="softmax,cnn,compact", help="models to train (default: %(default)s)")
    parser.add_argument("--seeds", "--seed", type=seed_list, default=[42],
                        help="comma-separated seeds, each model trained once per seed (default: 42)")
    parser.add_argument("--single-seed", default="",
                        help="models trained with the first seed only, e.g. cnn (default: none)")
    parser.add_argument("--epochs", type=int,
                        help="epochs for every model, for timing runs (default: each model's recipe)")
    parser.add_argument("--reference", default="cnn",
                        help="the model the ratios are taken against (default: %(default)s)")
    parser.add_argument("--intra-op-threads", type=int, default=0,
                        help="TensorFlow threads inside one op, 0 = TensorFlow's choice (default: 0)")
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="TensorFlow ops run at once, 0 = TensorFlow's choice (default: 0)")
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--repo", help="model repository to publish into (default: a temporary folder)")
    parser.add_argument("--existing", action="store_true",
                        help="train nothing: compare the versions already in --repo (their recorded "
                             "accuracy and wall time; ratios then hold only if they were trained alike)")
    parser.add_argument("--output", default="bench-train.json", help="JSON results file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    if args.existing and not args.repo:
        raise UsageError("--existing compares the versions of --repo: give --repo")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Thread pools are fixed when TensorFlow's runtime starts: set them before any op runs.
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)

    import digitserve.export.to_onnx  # noqa: F401  (imported up front: a long run fails early)
    from digitserve.train.out_of_mnist import make_check_set
    from digitserve.train.trainer import TrainConfig, train

    check_set = make_check_set(CHECK_SET_SEED, CHECK_SET_PER_DIGIT)
    repo = args.repo or tempfile.mkdtemp(prefix="digitserve-bench-")
    single = {name for name in args.single_seed.split(",") if name}
    runs: list[dict[str, Any]] = []
    macs: dict[str, int] = {}
    load_before = os.getloadavg()
    if args.existing:
        jobs = [(None, None, version) for version in ModelRepository(repo).versions()]
    else:
        jobs = [(model, seed, None) for model in args.models.split(",")
                for seed in (args.seeds[:1] if model in single else args.seeds)]
    for model, seed, version in jobs:
        start, cpu = time.monotonic(), os.times()
        if version is None:
            version = train(TrainConfig(model=model, seed=seed, epochs=args.epochs, data=args.data, repo=repo))
        total, used = time.monotonic() - start, os.times()
        version_dir = ModelRepository(repo).path(version)
        metrics = json.loads((version_dir / METRICS_FILE).read_text())
        trained = not args.existing
        runs.append({
            "model": metrics["model"],
            "seed": metrics["seed"],
            "test_accuracy": metrics["test_accuracy"],
            "epochs_run": metrics["epochs_run"],
            "fit_seconds": metrics["wall_seconds"],
            "total_seconds": round(total, 1) if trained else None,
            "user_cpu_seconds": round(used.user - cpu.user, 1) if trained else None,
            "system_cpu_seconds": round(used.system - cpu.system, 1) if trained else None,
            "parameters": metrics["parameters"],
            "out_of_mnist": score_check_set(version_dir, check_set),
            "version_dir": str(version_dir),
        })
        if metrics["model"] not in macs:
            macs[metrics["model"]] = onnx_macs(version_dir)
    models = summarise(runs, macs, args.reference)
    conditions = {
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "intra_op_threads": args.intra_op_threads,
        "inter_op_threads": args.inter_op_threads,
        "existing_versions": args.existing,
        "check_set": {"seed": CHECK_SET_SEED, "images": len(check_set.labels)},
    }
    print()
    print(format_table(models, args.reference))
    print(f"(the tutorial quotes {TUTORIAL_ACCURACY} for softmax; load average before/after "
          f"{conditions['load_average_before'][0]:.2f}/{conditions['load_average_after'][0]:.2f} "
          f"on {os.cpu_count()} CPUs)")
    Path(args.output).write_text(json.dumps({"train": runs, "models": models, "conditions": conditions},
                                            indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def score_check_set(version_dir: Path, check_set: Any) -> dict[str, float]:
    """Accuracy of the published model on the out-of-MNIST check set, overall and per rendering."""
    import keras

    model = keras.models.load_model(version_dir / KERAS_FILE, safe_mode=True)
    predicted = model.predict(check_set.pixels, batch_size=1000, verbose=0).argmax(axis=1)
    return {kind: round(value, 4) for kind, value in check_set.accuracy(predicted).items()}


def onnx_macs(version_dir: Path) -> int:
    """Multiply-adds per image of the model's ONNX export (converted aside, not published)."""
    import keras

    from digitserve.export.to_onnx import convert
    from digitserve.macs import count_macs

    model = keras.models.load_model(version_dir / KERAS_FILE, safe_mode=True)
    with tempfile.TemporaryDirectory(prefix="digitserve-macs-") as folder:
        path = Path(folder) / "model.onnx"
        convert(model, path)
        return count_macs(path).total


def summarise(runs: list[dict[str, Any]], macs: dict[str, int], reference: str) -> list[dict[str, Any]]:
    """One row per model: its seeds' figures, its MACs per image, ratios to `reference`."""
    rows: list[dict[str, Any]] = []
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        rows.append({
            "model": model,
            "parameters": mine[0]["parameters"],
            "macs_per_image": macs[model],
            "seeds": [r["seed"] for r in mine],
            "epochs": mine[0]["epochs_run"],
            "test_accuracy": [r["test_accuracy"] for r in mine],
            "mean_test_accuracy": statistics.fmean(r["test_accuracy"] for r in mine),
            "mean_fit_seconds": statistics.fmean(r["fit_seconds"] for r in mine),
            "out_of_mnist": statistics.fmean(r["out_of_mnist"]["all"] for r in mine),
            "out_of_mnist_page": statistics.fmean(r["out_of_mnist"]["page"] for r in mine),
            "out_of_mnist_paper": statistics.fmean(r["out_of_mnist"]["paper"] for r in mine),
        })
    base = next((row for row in rows if row["model"] == reference), None)
    for row in rows:
        row["mac_ratio"] = row["macs_per_image"] / base["macs_per_image"] if base else None
        row["wall_ratio"] = row["mean_fit_seconds"] / base["mean_fit_seconds"] if base else None
    return rows


def format_table(models: list[dict[str, Any]], reference: str) -> str:
    """The comparison as a fixed-width table; ratios are to `reference` in the same run."""
    columns = [("model", "<8"), ("params", ">8"), ("MACs/img", ">10"), ("MACs ×", ">7"), ("epochs", ">6"),
               ("test accuracy per seed", "<26"), ("mean", ">7"), ("fit s", ">6"), ("wall ×", ">7"),
               ("out-of-MNIST (page/paper)", ">26")]
    lines = [" ".join(f"{name:{spec}}" for name, spec in columns)]
    lines.append("-" * len(lines[0]))
    for row in models:
        cells = [
            row["model"], f"{row['parameters']:,}", f"{row['macs_per_image']:,}",
            "" if row["mac_ratio"] is None else f"{row['mac_ratio']:.3f}", str(row["epochs"]),
            " ".join(f"{acc:.2%}" for acc in row["test_accuracy"]), f"{row['mean_test_accuracy']:.2%}",
            f"{row['mean_fit_seconds']:.0f}", "" if row["wall_ratio"] is None else f"{row['wall_ratio']:.3f}",
            f"{row['out_of_mnist']:.1%} ({row['out_of_mnist_page']:.1%}/{row['out_of_mnist_paper']:.1%})",
        ]
        lines.append(" ".join(f"{cell:{spec}}" for cell, (_, spec) in zip(cells, columns, strict=True)))
    lines.append(f"(× = ratio to {reference} in this run; fit s = mean training wall time over the seeds)")
    return "\n".join(lines)
