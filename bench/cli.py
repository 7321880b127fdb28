"""`digitserve bench`: measurements, not tests. `bench train` times the training recipes;
`bench serve` measures the gRPC and HTTP server against references taken in the same run; `bench drain`
counts what a SIGTERM under load costs the callers; `bench profile` samples the live server with py-spy."""

from __future__ import annotations

import argparse
import importlib

TARGETS = {
    "train": ("digitserve.bench.train_bench", "train the tutorial softmax and the default cnn on all of MNIST"),
    "serve": (
        "digitserve.bench.serve_bench",
        "throughput and latency of the gRPC (and HTTP) server against in-process ONNX Runtime and bare echoes",
    ),
    "drain": ("digitserve.bench.drain_bench", "answered, UNAVAILABLE and CANCELLED calls for a SIGTERM under load"),
    "profile": ("digitserve.bench.profile_serve", "py-spy samples of a live server under load: where its CPU goes"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module, summary) in TARGETS.items():
        sub = targets.add_parser(name, help=summary, description=summary)
        target = importlib.import_module(module)  # light: heavy imports happen inside run()
        target.configure(sub)
        sub.set_defaults(bench_run=target.run)


def run(args: argparse.Namespace) -> int:
    return int(args.bench_run(args))
