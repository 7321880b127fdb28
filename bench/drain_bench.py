"""`digitserve bench drain`: what a SIGTERM under load costs the callers, counted.

A closed-loop load (bench/loadgen.py, processes of its own) runs against a real server; after
--signal-after seconds the server gets SIGTERM, and the load goes on to its end as a client that
ignores health would. The run prints how many calls were answered, refused UNAVAILABLE (safe
to retry elsewhere) and CANCELLED (the client cannot know whether it was computed), and the time
from the signal to the server's exit with its exit code (docs/serving.md, "Shutdown").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from digitserve.cli import non_negative_float, positive_float, positive_int

METHOD = "/digits.v1.Classifier/Classify"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="model repository to serve (default: train and export a fresh one)")
    parser.add_argument("--name", default="digits", help="model name in the repository (default: %(default)s)")
    parser.add_argument("--model", default="cnn", help="model trained for the fresh repository (default: %(default)s)")
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--concurrency", type=positive_int, default=64, help="closed-loop callers (default: 64)")
    parser.add_argument("--images", type=positive_int, default=1, help="images per call (default: 1)")
    parser.add_argument("--seconds", type=positive_float, default=4.0, help="length of the load (default: 4)")
    parser.add_argument(
        "--signal-after", type=non_negative_float, default=1.0, help="seconds of load before SIGTERM (default: 1)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], metavar="FLAG",
        help="extra `digitserve serve` flag, e.g. --server-arg=--drain-delay-seconds=1",
    )
    parser.add_argument("--output", default="bench-drain.json", help="JSON results file (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from digitserve.bench.launch import BenchServer
    from digitserve.bench.loadgen import LoadGenerator, LoadSpec
    from digitserve.bench.serve_bench import fresh_repo
    from digitserve.client.messages import digits_request
    from digitserve.mnist import load_mnist

    images = load_mnist(args.data).x_test[: args.images].reshape(-1, 784)
    payload = digits_request(images, "uint8", packed_output=True).SerializeToString()
    with tempfile.TemporaryDirectory(prefix="digitserve-bench-") as tmp:
        folder = Path(tmp)
        repo = Path(args.repo) if args.repo else fresh_repo(args, folder)
        with LoadGenerator(1) as load, BenchServer(repo, args.server_arg, folder / "server.log", args.name) as server:
            server.wait_serving()
            spec = LoadSpec(server.target, METHOD, (payload,), args.images, args.concurrency, args.seconds,
                            warmup_seconds=0.0, channels=min(8, args.concurrency))
            moments: dict[str, float] = {}

            def terminate_and_wait() -> None:
                moments["signal"] = time.monotonic()
                server.process.terminate()
                server.process.wait(300)
                moments["exit"] = time.monotonic()

            watcher = threading.Timer(args.signal_after + 0.5, terminate_and_wait)  # load starts 0.5 s after run()
            watcher.start()
            result = load.run(spec)
            watcher.join()
            code = server.process.returncode
            log_tail = server.log().splitlines()[-6:]
    errors = dict(result.errors)
    report: dict[str, Any] = {
        "settings": {key: getattr(args, key) for key in ("concurrency", "images", "seconds", "signal_after",
                                                         "server_arg")},
        "answered": result.completed,
        "unavailable": errors.pop("UNAVAILABLE", 0),
        "cancelled": errors.pop("CANCELLED", 0),
        "other_errors": errors,
        "signal_to_exit_s": round(moments["exit"] - moments["signal"], 3),
        "exit_code": code,
        "server_log_tail": log_tail,
    }
    print_report(report)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"\nSIGTERM after {s['signal_after']} s of a {s['seconds']} s load: {s['concurrency']} callers, "
          f"{s['images']} image(s) per call, server flags {' '.join(s['server_arg']) or '(defaults)'}")
    for key in ("answered", "unavailable", "cancelled", "other_errors", "signal_to_exit_s", "exit_code"):
        print(f"  {key:<18} {report[key]}")
