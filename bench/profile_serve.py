"""`digitserve bench profile`: where a live server spends its CPU under a closed-loop load.

The server is a real `digitserve serve` process; the load comes from bench/loadgen.py's spawned
processes (single-image digits.v1 calls at concurrency 64 by default, the load of `bench serve`'s
phase b); py-spy samples the server from outside (no code in the server, no slowdown of its own
but the sampling). It prints and writes (`--output-dir`):

- calls/s and the server's CPU per call (from /proc), as `bench serve` measures them;
- the share of the server's busy samples by thread (event loop, model threads, gRPC's poller);
- the top functions by own time and by time including callees, with line numbers folded
  (`stacks.txt` keeps py-spy's raw collapsed stacks for a flame graph: flamegraph.pl or speedscope);
- the CPU per call outside ONNX Runtime's `run`, estimated as the server's CPU per call times the
  share of busy samples not inside it (the issue's "server CPU per call excluding model compute").

py-spy cannot see inside native code: time in gRPC's Cython core shows as the asyncio frame that
called it (`Handle._run`), and time in ONNX Runtime as `Session.run`.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from digitserve.cli import positive_float, positive_int
from digitserve.errors import UsageError

log = logging.getLogger(__name__)

METHODS = {"digits": "/digits.v1.Classifier/Classify", "v2": "/inference.GRPCInferenceService/ModelInfer"}
MODEL_RUN = "Session.run"
ROLES = (("event loop", re.compile(r"MainThread")), ("model", re.compile(r"digitserve-model")),
         ("image decoding", re.compile(r"digitserve-image")))


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="model repository to serve (default: train and export a fresh one)")
    parser.add_argument("--name", default="digits", help="model name in the repository (default: %(default)s)")
    parser.add_argument("--model", default="cnn", choices=("softmax", "mlp", "cnn", "compact"),
                        help="architecture of the fresh model when --repo is not given (default: %(default)s)")
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--api", choices=tuple(METHODS), default="digits", help="API under load (default: %(default)s)")
    parser.add_argument("--images", type=positive_int, default=1, help="images per call (default: 1)")
    parser.add_argument("--concurrency", type=positive_int, default=64, help="closed-loop callers (default: 64)")
    parser.add_argument("--channels", type=positive_int, default=8, help="connections (default: 8)")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="sampled seconds (default: 10)")
    parser.add_argument("--rate", type=positive_int, default=250, help="py-spy samples per second (default: 250)")
    parser.add_argument("--top", type=positive_int, default=20, help="functions listed (default: 20)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="extra `digitserve serve` flag, e.g. --server-arg=--workers=1")
    parser.add_argument("--output-dir", default="bench-profile", help="where stacks and the summary go")


def fold(frame: str) -> str:
    """`Batcher.submit (serve/batcher.py:142)` -> `Batcher.submit (serve/batcher.py)`."""
    return re.sub(r":\d+\)$", ")", frame)


def role_of(thread: str) -> str:
    return next((role for role, pattern in ROLES if pattern.search(thread)), "other (gRPC poller, ...)")


def summarise(stacks: Path, top: int) -> dict[str, Any]:
    """Shares of busy samples by thread role and by function, from py-spy's raw collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    roles: collections.Counter[str] = collections.Counter()
    total = in_model = 0
    for line in stacks.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not (count.isascii() and count.isdigit()):
            continue
        thread, *frames = stack.split(";")
        n = int(count)
        total += n
        roles[role_of(thread)] += n
        frames = [fold(frame) for frame in frames]
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        if any(frame.startswith(MODEL_RUN) for frame in frames):
            in_model += n
    share = (lambda n: round(n / total, 4)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "threads": {role: share(n) for role, n in roles.most_common()},
        "model_run_share": share(in_model),
        "own": [(frame, share(n)) for frame, n in own.most_common(top)],
        "inclusive": [(frame, share(n)) for frame, n in inclusive.most_common(top)],
    }


def run(args: argparse.Namespace) -> int:
    from digitserve.bench.launch import BenchServer
    from digitserve.bench.loadgen import LoadGenerator, LoadSpec
    from digitserve.bench.serve_bench import fresh_repo
    from digitserve.bench.serve_phases import process_cpu
    from digitserve.client.messages import digits_request, v2_request
    from digitserve.mnist import load_mnist

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise UsageError("py-spy is not installed: it comes with the dev tools (uv sync --locked --extra train)")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = load_mnist(args.data).x_test.reshape(-1, 784)
    batches = [images[i * args.images : (i + 1) * args.images] for i in range(64)]
    if args.api == "digits":
        payloads = tuple(digits_request(b, "float32_le", packed_output=True).SerializeToString() for b in batches)
    else:
        payloads = tuple(v2_request(b, "float32_le", True, args.name, "").SerializeToString() for b in batches)
    with tempfile.TemporaryDirectory(prefix="digitserve-profile-") as tmp:
        folder = Path(tmp)
        if args.repo:
            repo = Path(args.repo)
        else:
            fresh = argparse.Namespace(data=args.data, name=args.name, model=args.model, phases="")
            repo = fresh_repo(fresh, folder)
        server = BenchServer(repo, ["--device", "cpu", "--no-metrics", *args.server_arg], out / "serve.log",
                             name=args.name).wait_serving()
        try:
            spec = LoadSpec(target=server.target, method=METHODS[args.api], payloads=payloads,
                            images_per_request=args.images, concurrency=args.concurrency,
                            seconds=args.seconds + 1.0, warmup_seconds=1.0, channels=args.channels)
            stacks = out / "stacks.txt"
            sampler = subprocess.Popen(
                [spy, "record", "--pid", str(server.process.pid), "--rate", str(args.rate), "--duration",
                 str(int(round(args.seconds))), "--format", "raw", "--threads", "--nonblocking", "-o", str(stacks)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
            cpu_before = process_cpu(server.process.pid)
            result = LoadGenerator(1).run(spec)
            server_cpu = process_cpu(server.process.pid) - cpu_before
            _, error = sampler.communicate(timeout=args.seconds + 60)
            if sampler.returncode != 0 or not stacks.exists():
                raise UsageError(f"py-spy failed (exit {sampler.returncode}): {error.strip()[-500:]}")
        finally:
            server.close()
    load = result.summary()
    cpu_per_call = server_cpu / max(1, result.completed) * 1e6
    profile = summarise(stacks, args.top)
    summary = {
        "load": {key: load[key] for key in ("concurrency", "images_per_request", "requests_per_s", "p50_ms", "p99_ms",
                                            "errors")},
        "server_cpu_us_per_call": round(cpu_per_call, 1),
        "server_cpu_us_per_call_outside_model_run": round(cpu_per_call * (1 - profile["model_run_share"]), 1),
        **profile,
        "settings": {"api": args.api, "model": args.repo or args.model, "server_args": args.server_arg,
                     "rate": args.rate, "seconds": args.seconds},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    print(f"wrote {out / 'summary.json'} and {out / 'stacks.txt'}")
    return 0


def print_summary(summary: dict[str, Any]) -> None:
    load = summary["load"]
    print(f"\n{load['requests_per_s']:.0f} calls/s of {load['images_per_request']} image(s) at concurrency "
          f"{load['concurrency']} (p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, errors {load['errors']})")
    print(f"server CPU per call {summary['server_cpu_us_per_call']:.0f} us, of which outside ONNX Runtime's run "
          f"about {summary['server_cpu_us_per_call_outside_model_run']:.0f} us "
          f"({summary['model_run_share']:.0%} of busy samples in {MODEL_RUN})")
    print("busy samples by thread: " + ", ".join(f"{role} {share:.0%}" for role, share in summary["threads"].items()))
    for title, rows in (("own time", summary["own"]), ("including callees", summary["inclusive"])):
        print(f"\ntop functions by {title}:")
        for frame, share in rows:
            print(f"  {share:6.1%}  {frame}")
