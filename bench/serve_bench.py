"""`digitserve bench serve`: the gRPC and HTTP server against references measured in the same run.

(a) requests of 64 images at concurrency 8, against in-process ONNX Runtime on the same batches
    (the server's own model loader and session settings, called back to back);
(b) single-image requests at concurrency 1 and 64, against a bare grpc.aio echo server
    (bench/echo.py) answering the same method with a reply of the real reply's size;
(c) the single-image load again with batching off (`--max-batch-size 1`);
(d) the served throughput of both ONNX artifacts, `--artifact onnx` and `--artifact onnx-int8`:
    requests of 64 images at concurrency 8 to each, and in-process ONNX Runtime on each file
    (wants a version exported with `--formats onnx-int8`; without --repo, one is made);
(e) one model against two in one server: the served version is copied into a temporary
    repository as two models, NAME and NAME-b (the same export twice, so only the number of
    models differs); requests of 64 images at concurrency 8 to a server of NAME alone
    (`--model NAME`), then the same load split round robin over both, to a server of both;
(h) the KServe V2 HTTP/REST binding (`--http-port`), POST /v2/models/NAME/infer: single-image
    requests in JSON and in binary (Triton's binary tensor extension) at concurrency 1 and 64,
    against an echo of the same HTTP stack (bench/http_echo.py) answering the real replies;
    64-image requests in JSON and binary at concurrency 8, against in-process ONNX Runtime as in
    (a); with (b) in the same run, binary at concurrency 64 against gRPC's (b) too
    (bench/http_phase.py).

The server is a real `digitserve serve` process (or several sharing a port with SO_REUSEPORT);
the load comes from spawned processes (bench/loadgen.py; HTTP: bench/http_load.py) that talk
only to 127.0.0.1 and stop after `--seconds` or `--max-requests`, whichever comes first. Prints
images/s, p50/p99 latency and the ratios, and writes everything as JSON (`--output`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from digitserve.cli import positive_float, positive_int
from digitserve.errors import UsageError

log = logging.getLogger(__name__)

METHODS = {"digits": "/digits.v1.Classifier/Classify", "v2": "/inference.GRPCInferenceService/ModelInfer"}
TARGETS = {"a": 0.85, "b": 0.6, "c": 1.0}  # b: single-image calls at concurrency 64 against the echo
PHASES = ("a", "b", "c", "d", "e", "h")  # d (int8 / float), e (two models / one), h (HTTP): no targets, they report
ARTIFACTS = {"float": "onnx", "int8": "onnx-int8"}  # phase d's result keys -> --artifact


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", help="model repository to serve (default: train and export a fresh one)")
    parser.add_argument("--name", default="digits", help="model name in the repository (default: %(default)s)")
    parser.add_argument(
        "--model", default="cnn", choices=("softmax", "mlp", "cnn", "compact"),
        help="architecture of the fresh model when --repo is not given (default: %(default)s)",
    )
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--phases", default="a,b,c", help="which measurements: a, b, c, d, e, h (default: %(default)s)")
    parser.add_argument("--seconds", type=positive_float, default=10.0, help="measured seconds per phase (default: 10)")
    parser.add_argument("--warmup", type=positive_float, default=1.0, help="unmeasured seconds first (default: 1)")
    parser.add_argument("--max-requests", type=positive_int, default=200_000, help="cap per phase and load process")
    parser.add_argument("--api", choices=tuple(METHODS), default="digits", help="API under load (default: %(default)s)")
    parser.add_argument(
        "--encoding", choices=("float32", "float32_le", "uint8"), default="float32_le",
        help="pixel encoding of the requests (default: %(default)s)",
    )
    parser.add_argument(
        "--server-processes", type=positive_int, default=1, help="servers sharing one port (SO_REUSEPORT) (default: 1)"
    )
    parser.add_argument("--load-processes", type=positive_int, default=1, help="load generator processes (default: 1)")
    parser.add_argument(
        "--channels", type=positive_int, default=8,
        help="gRPC connections per load process (default: 8; HTTP loads open one per caller)",
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], metavar="FLAG",
        help="extra `digitserve serve` flag for every server, e.g. --server-arg=--max-queue-delay-us=200",
    )
    parser.add_argument("--output", default="bench-serve.json", help="JSON results file (default: %(default)s)")


def fresh_repo(args: argparse.Namespace, folder: Path) -> Path:
    """Train (1 epoch on 2,000 images: speed does not depend on accuracy) and export to ONNX."""
    repo = folder / "models"
    data = ["--data", args.data] if args.data else []
    common = ["--repo", str(repo), "--name", args.name]
    for step in (
        ["train", "--model", args.model, "--epochs", "1", "--subset", "2000", *data, *common],
        ["export", "--formats", "onnx,onnx-int8" if "d" in args.phases else "onnx", *data, *common],
    ):
        log.info("fresh model: digitserve %s", " ".join(step))
        subprocess.run([sys.executable, "-m", "digitserve", "--log-level", "WARNING", *step], check=True)
    return repo


def requests(args: argparse.Namespace, images: Any, size: int, count: int) -> tuple[list[Any], tuple[bytes, ...]]:
    """`count` batches of `size` MNIST test images, and the requests the Client would send."""
    batches = [images[i * size : (i + 1) * size] for i in range(count)]
    return batches, request_payloads(args, batches)


def request_payloads(args: argparse.Namespace, batches: list[Any], model: str | None = None) -> tuple[bytes, ...]:
    """The serialised requests of `batches` for `model` (None: as a single-model client sends them:
    digits.v1 names no model, V2 names --name)."""
    from digitserve.client.messages import digits_request, v2_request

    if args.api == "digits":
        messages = [digits_request(b, args.encoding, packed_output=True, model=model or "") for b in batches]
    else:
        messages = [v2_request(b, args.encoding, True, model or args.name, "") for b in batches]
    return tuple(m.SerializeToString() for m in messages)


def ratio(numerator: dict[str, Any] | None, denominator: dict[str, Any] | None, key: str = "images_per_s") -> Any:
    if not numerator or not denominator or not denominator.get(key):
        return None
    return round(numerator[key] / denominator[key], 3)


def http_ratios(results: dict[str, Any], grpc: bool) -> dict[str, Any]:
    """Phase h's ratios: single-image calls/s against the echo, 64-image images/s against in-process
    ORT, and (`grpc`: phase b ran) binary single-image calls at concurrency 64 against gRPC's."""
    ratios = {
        f"h_{kind}_c{c}_vs_echo": ratio(results.get(f"h_server_{kind}_c{c}"), results.get(f"h_echo_{kind}_c{c}"),
                                        "requests_per_s")
        for c in (64, 1) for kind in ("json", "binary")
    }
    for kind in ("binary", "json"):
        ratios[f"h_{kind}_64_vs_in_process"] = ratio(results.get(f"h_server_{kind}_64"), results.get("h_in_process"))
    if grpc:
        ratios["h_binary_c64_vs_grpc_c64"] = ratio(
            results.get("h_server_binary_c64"), results.get("b_server_c64"), "requests_per_s")
    return ratios


def run(args: argparse.Namespace) -> int:
    from digitserve.bench.serve_phases import Phases
    from digitserve.mnist import load_mnist

    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases or phases - set(PHASES):
        raise UsageError(f"--phases takes a comma-separated subset of {','.join(PHASES)}; got {args.phases!r}")
    images = load_mnist(args.data).x_test.reshape(-1, 784)
    with tempfile.TemporaryDirectory(prefix="digitserve-bench-") as tmp:
        folder = Path(tmp)
        repo = Path(args.repo) if args.repo else fresh_repo(args, folder)
        batches, batch_payloads = requests(args, images, 64, 16)
        singles, single_payloads = requests(args, images, 1, 64)
        results: dict[str, Any] = {
            "machine": {
                "cpus": len(os.sched_getaffinity(0)),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            },
            "settings": {
                key: getattr(args, key)
                for key in ("repo", "name", "api", "encoding", "seconds", "warmup", "max_requests",
                            "server_processes", "load_processes", "channels", "server_arg")
            },
        }
        with Phases(args, repo, folder) as run_phases:
            results.update(run_phases.measure(phases, batches, batch_payloads, singles, single_payloads))
        ratios = {
            "a_server_vs_in_process": ratio(results.get("a_server"), results.get("a_in_process")),
            "b_server_vs_echo_c1": ratio(results.get("b_server_c1"), results.get("b_echo_c1"), "requests_per_s"),
            "b_server_vs_echo_c64": ratio(results.get("b_server_c64"), results.get("b_echo_c64"), "requests_per_s"),
            "c_batching_vs_off_c64": ratio(results.get("b_server_c64"), results.get("c_no_batching_c64")),
            "c_batching_vs_off_c1": ratio(results.get("b_server_c1"), results.get("c_no_batching_c1")),
            "d_int8_vs_float_served": ratio(results.get("d_server_int8"), results.get("d_server_float")),
            "d_int8_vs_float_in_process": ratio(results.get("d_in_process_int8"), results.get("d_in_process_float")),
            "e_two_models_vs_one": ratio(results.get("e_two_models"), results.get("e_one_model")),
            **http_ratios(results, "b" in phases),
        }
        results["ratios"] = {key: value for key, value in ratios.items() if key[0] in phases}  # the phases run
        results["targets"] = {
            "a_server_vs_in_process": TARGETS["a"],
            "b_server_vs_echo_c64": TARGETS["b"],
            "c_batching_vs_off_c64": TARGETS["c"],
        }
    print_table(results)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


ROWS = (
    ("a_in_process", "(a) in-process ORT, 64 images/call"),
    ("a_server", "(a) server, 64 images/call, conc 8"),
    ("b_echo_c1", "(b) bare echo, 1 image/call, conc 1"),
    ("b_server_c1", "(b) server, 1 image/call, conc 1"),
    ("b_echo_c64", "(b) bare echo, 1 image/call, conc 64"),
    ("b_server_c64", "(b) server, 1 image/call, conc 64"),
    ("c_no_batching_c1", "(c) batching off, conc 1"),
    ("c_no_batching_c64", "(c) batching off, conc 64"),
    ("d_in_process_float", "(d) in-process ORT, float onnx"),
    ("d_server_float", "(d) server --artifact onnx, 64/call"),
    ("d_in_process_int8", "(d) in-process ORT, onnx-int8"),
    ("d_server_int8", "(d) server --artifact onnx-int8, 64/call"),
    ("e_one_model", "(e) one model served, 64/call, conc 8"),
    ("e_two_models", "(e) two models, load split over both"),
    ("h_in_process", "(h) in-process ORT, 64 images/call"),
    ("h_server_json_64", "(h) HTTP JSON, 64 images/call, conc 8"),
    ("h_server_binary_64", "(h) HTTP binary, 64 images/call, conc 8"),
    ("h_echo_json_c1", "(h) HTTP echo, JSON, conc 1"),
    ("h_server_json_c1", "(h) HTTP JSON, 1 image/call, conc 1"),
    ("h_echo_json_c64", "(h) HTTP echo, JSON, conc 64"),
    ("h_server_json_c64", "(h) HTTP JSON, 1 image/call, conc 64"),
    ("h_echo_binary_c1", "(h) HTTP echo, binary, conc 1"),
    ("h_server_binary_c1", "(h) HTTP binary, 1 image/call, conc 1"),
    ("h_echo_binary_c64", "(h) HTTP echo, binary, conc 64"),
    ("h_server_binary_c64", "(h) HTTP binary, 1 image/call, conc 64"),
)


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'measurement':<40} {'images/s':>10} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6}")
    for key, label in ROWS:
        row = results.get(key)
        if not row:
            continue
        calls = row.get("requests_per_s", row["images_per_s"] / row["images_per_request"])
        batch = row.get("mean_batch_size")
        failed = sum(row.get("errors", {}).values())
        print(
            f"{label:<40} {row['images_per_s']:>10.0f} {calls:>9.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
            f"{batch if batch is not None else '':>6}" + (f"  {failed} FAILED CALLS: {row['errors']}" if failed else "")
        )
    print()
    for key, value in results["ratios"].items():
        target = results["targets"].get(key)
        verdict = ""
        if target is not None and value is not None:
            strict = key.startswith("c_")  # batching must be faster, not as fast
            met = value > target if strict else value >= target
            verdict = f"  {'meets' if met else 'MISSES'} {'>' if strict else '>='} {target}"
        print(f"{key:<28} {value if value is not None else '-':>6}{verdict}")
