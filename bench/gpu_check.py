"""GPU check: serve with `--device cuda`, compare with the CPU path, measure both; print JSON.

    python -m digitserve.bench.gpu_check --repo models [--images 10000] [--seconds 10]

Needs the GPU serving install (`uv sync --extra serve-gpu`: onnxruntime-gpu with its CUDA
libraries) on a machine with an NVIDIA GPU. Starts two real `digitserve serve` processes on
127.0.0.1, one with `--device cpu` and one with `--device cuda`, then:
1. checks the CUDA server really runs on CUDAExecutionProvider (its log and ServerMetadata);
2. classifies the first `--images` MNIST test images on both and requires every label equal
   and the probabilities within `--tolerance` (GPU kernels round differently from CPU ones);
3. measures images/s and latency on both: 64-image requests at concurrency 8, single images
   at concurrency 64.
Exit 0 when the CUDA path serves and agrees; 1 otherwise, with the server's own message when
it refuses to start (for example without CUDA: `--device cuda` never falls back to the CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.bench.launch import BenchServer, ServerFailed
from digitserve.bench.loadgen import LoadGenerator, LoadSpec
from digitserve.errors import DigitserveError

log = logging.getLogger(__name__)
METHOD = "/digits.v1.Classifier/Classify"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m digitserve.bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default="models", help="model repository (default: %(default)s)")
    parser.add_argument("--name", default="digits", help="model name (default: %(default)s)")
    parser.add_argument("--data", help="MNIST folder or mnist.npz (default: DIGITSERVE_DATA, then the Keras cache)")
    parser.add_argument("--images", type=int, default=10_000, help="MNIST test images to compare (default: 10000)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |p_cuda - p_cpu| (default: 1e-4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput measurement")
    parser.add_argument(
        "--device", choices=("cuda", "auto", "cpu"), default="cuda",
        help="device of the server under check (default: cuda; cpu only to test this script without a GPU)",
    )
    parser.add_argument("--cuda-device-id", type=int, default=0, help="GPU index (default: 0)")
    parser.add_argument("--output", default="gpu-check.json", help="JSON results file (default: %(default)s)")
    return parser.parse_args(argv)


def classify_all(target: str, images: np.ndarray) -> np.ndarray:
    from digitserve.client import Client

    with Client(target, encoding="float32_le", timeout=60) as client:
        return np.concatenate([client.classify(images[i : i + 256]).probabilities for i in range(0, len(images), 256)])


def throughput(load: LoadGenerator, target: str, images: np.ndarray, seconds: float) -> dict[str, Any]:
    from digitserve.client.messages import digits_request

    out = {}
    for name, size, concurrency in (("batch64_c8", 64, 8), ("single_c64", 1, 64)):
        count = max(1, min(16, len(images) // size))
        payloads = tuple(
            digits_request(images[i * size : (i + 1) * size], "float32_le", True).SerializeToString()
            for i in range(count)
        )
        spec = LoadSpec(target, METHOD, payloads, size, concurrency, seconds, channels=4)
        out[name] = load.run(spec).summary()
    return out


def provider_of(target: str) -> str:
    from digitserve.client import Client

    with Client(target) as client:
        extensions = client.server_metadata()["extensions"]
    return next((e.split(":", 1)[1] for e in extensions if e.startswith("execution_provider:")), "unknown")


def check(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from digitserve.mnist import load_mnist

    images = load_mnist(args.data).x_test[: args.images].reshape(-1, 784)
    result: dict[str, Any] = {"repo": str(args.repo), "images": len(images), "tolerance": args.tolerance}
    cuda_flags = ["--device", args.device, "--cuda-device-id", str(args.cuda_device_id), "--metrics-port", "0"]
    with (
        BenchServer(args.repo, cuda_flags, folder / "serve-cuda.log", args.name).wait_serving() as cuda,
        BenchServer(args.repo, ["--device", "cpu", "--metrics-port", "0"], folder / "serve-cpu.log", args.name)
        .wait_serving() as cpu,
    ):
        result["provider"] = {"cuda_server": provider_of(cuda.target), "cpu_server": provider_of(cpu.target)}
        if args.device != "cpu" and result["provider"]["cuda_server"] != "CUDAExecutionProvider":
            raise ServerFailed(f"the --device {args.device} server runs on {result['provider']['cuda_server']}")
        on_gpu, on_cpu = classify_all(cuda.target, images), classify_all(cpu.target, images)
        difference = np.abs(on_gpu - on_cpu)
        result["parity"] = {
            "max_abs_diff": float(difference.max()),
            "worst_image": int(difference.max(axis=1).argmax()),
            "labels_equal": int((on_gpu.argmax(1) == on_cpu.argmax(1)).sum()),
        }
        with LoadGenerator(1) as load:
            result["throughput"] = {
                "cuda": throughput(load, cuda.target, images, args.seconds),
                "cpu": throughput(load, cpu.target, images, args.seconds),
            }
    parity = result["parity"]
    failed_calls = sum(sum(run["errors"].values()) for loads in result["throughput"].values() for run in loads.values())
    result["ok"] = bool(
        parity["max_abs_diff"] <= args.tolerance and parity["labels_equal"] == len(images) and not failed_calls
    )
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="digitserve-gpu-check-") as tmp:
        try:
            result = check(args, Path(tmp))
        except DigitserveError as exc:
            result = {"ok": False, "error": str(exc), "repo": str(args.repo)}
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.output).write_text(text + "\n")
    if not result["ok"]:
        reason = result.get("error") or "CUDA and CPU predictions differ, or calls failed (see the JSON)"
        print(f"gpu_check: FAILED: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
