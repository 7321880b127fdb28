"""`digitserve classify`: classify image files, or the MNIST test images, through a running server.

    digitserve classify [--target HOST:PORT] [--api digits|v2] [--encoding float32|uint8] IMAGE ...
    digitserve classify --mnist-test N [--data PATH] [--batch-size B]
    digitserve classify --model NAME [--model-version N] ...   # a model and version of the repository
    digitserve classify --server-side IMAGE ...                # send the files; the server prepares them

Image files are prepared as MNIST was (digitserve.preprocess: grayscale, inverted when dark on
light, cropped to the ink, fitted in 20x20, centred by centre of mass in 28x28), here or, with
--server-side, by the server in exactly the same way (then no Pillow is needed here). Imports
nothing heavy at module level: grpc, numpy and Pillow load inside `run`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from digitserve.cli import positive_float, positive_int
from digitserve.client.options import add_target_option, add_tls_options, tls_of
from digitserve.errors import ImageError, UsageError
from digitserve.wire.names import APIS, DIGITS_SERVICE, ENCODINGS
from digitserve.wire.tls import TLS

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Classify handwritten-digit images (PNG, JPEG, ...) through a digitserve server, or the first "
        "N MNIST test images (--mnist-test N) to check accuracy and latency."
    )
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE", help="image files to classify")
    add_target_option(parser)
    parser.add_argument(
        "--api", choices=APIS, default="digits",
        help=f"digits: {DIGITS_SERVICE}; v2: KServe V2 ModelInfer (default: %(default)s)",
    )
    parser.add_argument(
        "--encoding", choices=ENCODINGS, default="float32",
        help="how pixels travel: float32, float32_le bytes, or uint8 bytes (a quarter the size) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--model", metavar="NAME",
        help="the model of the server's repository to ask (default: the server's default model; "
        "over --api v2, digits)",
    )
    parser.add_argument(
        "--model-version", type=positive_int, metavar="N",
        help="that model's version (default: the newest the server serves)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=None,
        help="images per request (default: 64 for files, 1 for --mnist-test)",
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=10.0, metavar="SECONDS",
        help="deadline per request (default: %(default)s)",
    )
    parser.add_argument(
        "--mnist-test", type=positive_int, metavar="N",
        help="classify the first N MNIST test images; print accuracy, latency and images/s",
    )
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument(
        "--server-side", action="store_true",
        help="send the image files as they are and let the server decode and prepare them "
        "(the same steps; needs no Pillow here)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument(
        "--no-retries", dest="retries", action="store_false",
        help="fail at the first UNAVAILABLE instead of retrying with backoff (gRPC's retry policy)",
    )
    parser.add_argument(
        "--wait-for-ready", action="store_true",
        help="wait for the server (up to --timeout) instead of failing while it is down or restarting",
    )
    add_tls_options(parser)


def _client(args: argparse.Namespace, tls: TLS | None) -> Any:
    from digitserve.client import Client

    return Client(args.target, api=args.api, encoding=args.encoding, model=args.model,
                  model_version=args.model_version, timeout=args.timeout, tls=tls, retries=args.retries,
                  wait_for_ready=args.wait_for_ready)


SERVER_SIDE_REQUEST_BYTES = 2 * 1024 * 1024
"""--server-side: most file bytes in one request (several files), under the server's default
gRPC message limit (--max-request-images x 3,136 bytes + --max-image-bytes + 64 KiB)."""


def read_files(paths: list[Path]) -> list[bytes]:
    """Every file's bytes, or ImageError naming the first that cannot be read (before any call)."""
    files = []
    for path in paths:
        try:
            files.append(path.read_bytes())
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except OSError as exc:
            raise ImageError(f"{path}: cannot read it ({exc.strerror or exc}); give an image file") from None
    return files


def file_batches(files: list[bytes], count: int, size: int = SERVER_SIDE_REQUEST_BYTES) -> list[list[bytes]]:
    """Consecutive groups of at most `count` files and `size` bytes (a larger file goes alone)."""
    batches: list[list[bytes]] = []
    held = 0
    for file in files:
        if not batches or len(batches[-1]) == count or held + len(file) > size:
            batches.append([])
            held = 0
        batches[-1].append(file)
        held += len(file)
    return batches


def classify_files(args: argparse.Namespace, tls: TLS | None) -> int:
    import numpy as np

    batch = args.batch_size or 64
    if args.server_side:
        files = read_files(args.images)  # an unreadable file stops the run before the server is asked
        with _client(args, tls) as client:
            results = [client.classify_images(group) for group in file_batches(files, batch)]
    else:
        from digitserve.preprocess import load_pixels

        # Prepare every file first: an unreadable one stops the run before the server is asked.
        pixels = np.stack([load_pixels(path) for path in args.images])
        with _client(args, tls) as client:
            results = [client.classify(pixels[i : i + batch]) for i in range(0, len(pixels), batch)]
    labels = np.concatenate([r.labels for r in results])
    probabilities = np.concatenate([r.probabilities for r in results])
    model = f"{results[0].model_name} version {results[0].model_version}"
    if args.json:
        rows = [
            {"image": str(path), "label": int(label), "probabilities": [round(float(p), 6) for p in row]}
            for path, label, row in zip(args.images, labels, probabilities, strict=True)
        ]
        print(json.dumps({"target": args.target, "api": args.api, "model": model, "images": rows}, indent=2))
        return 0
    width = max(len(str(path)) for path in args.images)
    for path, label, row in zip(args.images, labels, probabilities, strict=True):
        print(f"{str(path):<{width}}  {label}  (p={row[label]:.3f})")
    print(f"# {len(labels)} image(s) classified by {model} at {args.target} ({args.api} API)")
    return 0


def mnist_test(args: argparse.Namespace, tls: TLS | None) -> int:
    import numpy as np

    from digitserve.mnist import load_mnist

    data = load_mnist(args.data)
    count = min(args.mnist_test, len(data.x_test))
    images = data.x_test[:count].reshape(count, -1)  # uint8: the client scales for float encodings
    truth = data.y_test[:count]
    batch = args.batch_size or 1
    latencies, labels = [], []
    with _client(args, tls) as client:
        client.classify(images[:1])  # connect and warm up outside the measurement
        started = time.perf_counter()
        for i in range(0, count, batch):
            sent = time.perf_counter()
            result = client.classify(images[i : i + batch])
            latencies.append(time.perf_counter() - sent)
            labels.append(result.labels)
        seconds = time.perf_counter() - started
    predicted = np.concatenate(labels)
    correct = int((predicted == truth).sum())
    ms = np.asarray(latencies) * 1000.0
    report = {
        "target": args.target,
        "api": args.api,
        "encoding": args.encoding,
        "model": f"{result.model_name} version {result.model_version}",
        "images": count,
        "images_per_request": batch,
        "accuracy": correct / count,
        "correct": correct,
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))},
        "images_per_second": count / seconds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"MNIST test images 0..{count - 1} via {args.target} ({args.api} API, {args.encoding}, "
        f"{batch} image(s) per request), model {report['model']}"
    )
    print(f"accuracy   {report['accuracy']:.2%} ({correct}/{count})")
    print(f"latency    p50 {report['latency_ms']['p50']:.2f} ms, p99 {report['latency_ms']['p99']:.2f} ms per request")
    print(f"throughput {report['images_per_second']:.0f} images/s (one call at a time)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.mnist_test and args.images:
        raise UsageError("give image files or --mnist-test N, not both")
    if not args.mnist_test and not args.images:
        raise UsageError("give one or more image files, or --mnist-test N")
    if args.server_side and args.mnist_test:
        raise UsageError("--server-side sends image files; --mnist-test sends MNIST's pixels: give one")
    tls = tls_of(args)  # misused TLS flags are a usage error before any file is read
    return mnist_test(args, tls) if args.mnist_test else classify_files(args, tls)
