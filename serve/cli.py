"""`digitserve serve`: serve the newest exported model version over gRPC (see serve/server.py).

Imports nothing heavy at module level (settings.py needs numpy only): grpc and onnxruntime
load inside `run`.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from digitserve.cli import add_repo_options, non_negative_float, non_negative_int, port, positive_int
from digitserve.serve.settings import (
    CUDNN_CONV_ALGO_SEARCHES,
    DEVICES,
    GRAPH_OPTIMIZATIONS,
    ServeSettings,
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    d = ServeSettings()
    add_repo_options(parser)
    net = parser.add_argument_group("network")
    net.add_argument("--host", default=d.host, help="address to bind (default: %(default)s; 0.0.0.0 for all)")
    net.add_argument(
        "--port",
        type=port,
        default=d.port,
        help="gRPC port, 0 = any free (default: %(default)s)",
    )
    net.add_argument(
        "--metrics-port",
        type=port,
        default=d.metrics_port,
        help="Prometheus /metrics port, 0 = any free (default: %(default)s)",
    )
    net.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    net.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: let several processes share the port",
    )
    net.add_argument("--tls-cert", type=Path, help="PEM server certificate; with --tls-key turns TLS on")
    net.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    net.add_argument("--tls-client-ca", type=Path, help="PEM CA bundle: require client certificates (mTLS)")

    dev = parser.add_argument_group("device and ONNX Runtime")
    dev.add_argument(
        "--device",
        choices=DEVICES,
        default=d.device,
        help="auto: CUDA if usable, else CPU; cuda: fail without CUDA (default: %(default)s)",
    )
    dev.add_argument(
        "--cuda-device-id",
        type=non_negative_int,
        default=d.cuda_device_id,
        help="GPU index (default: %(default)s)",
    )
    dev.add_argument(
        "--cuda-mem-limit-mb",
        type=non_negative_int,
        default=d.cuda_mem_limit_mb,
        help="CUDA arena limit in MiB, 0 = none (default: %(default)s)",
    )
    dev.add_argument(
        "--cudnn-conv-algo-search",
        choices=CUDNN_CONV_ALGO_SEARCHES,
        default=d.cudnn_conv_algo_search,
        help="cuDNN convolution algorithm search (default: %(default)s)",
    )
    dev.add_argument(
        "--intra-op-threads",
        type=non_negative_int,
        default=d.intra_op_threads,
        help="ORT threads per session, 0 = cores / instances (default: %(default)s)",
    )
    dev.add_argument(
        "--inter-op-threads",
        type=non_negative_int,
        default=d.inter_op_threads,
        help="ORT inter-op threads, 0 = ORT's default (default: %(default)s)",
    )
    dev.add_argument(
        "--graph-optimization",
        choices=GRAPH_OPTIMIZATIONS,
        default=d.graph_optimization,
        help="ORT graph optimisation level (default: %(default)s)",
    )
    dev.add_argument(
        "--ort-spinning",
        action="store_true",
        help="let idle ORT threads spin (lower latency, more CPU)",
    )

    batch = parser.add_argument_group("batching")
    batch.add_argument(
        "--max-batch-size",
        type=positive_int,
        default=d.max_batch_size,
        help="images per model execution (default: %(default)s)",
    )
    batch.add_argument(
        "--max-queue-delay-us",
        type=non_negative_int,
        default=d.max_queue_delay_us,
        help="microseconds a batch may wait to fill; 0 = no wait (default: %(default)s)",
    )
    batch.add_argument(
        "--max-queue-images",
        type=positive_int,
        default=d.max_queue_images,
        help="queue bound in images; beyond it RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    batch.add_argument(
        "--max-request-images",
        type=positive_int,
        default=d.max_request_images,
        help="most images in one request; sets the max message size (default: %(default)s)",
    )
    batch.add_argument(
        "--instances",
        type=positive_int,
        default=d.instances,
        help="parallel model sessions (default: %(default)s)",
    )

    life = parser.add_argument_group("lifecycle")
    life.add_argument(
        "--grace-seconds",
        type=non_negative_float,
        default=d.grace_seconds,
        help="on SIGTERM/SIGINT, time calls in flight get to finish (default: %(default)s)",
    )
    life.add_argument(
        "--poll-seconds",
        type=non_negative_float,
        default=d.poll_seconds,
        help="seconds between scans for new versions, 0 = off (default: %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(
        repo=Path(args.repo),
        name=args.name,
        host=args.host,
        port=args.port,
        metrics_port=None if args.no_metrics else args.metrics_port,
        reuse_port=args.reuse_port,
        device=args.device,
        cuda_device_id=args.cuda_device_id,
        cuda_mem_limit_mb=args.cuda_mem_limit_mb,
        cudnn_conv_algo_search=args.cudnn_conv_algo_search,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        graph_optimization=args.graph_optimization,
        ort_spinning=args.ort_spinning,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_images=args.max_queue_images,
        max_request_images=args.max_request_images,
        instances=args.instances,
        grace_seconds=args.grace_seconds,
        poll_seconds=args.poll_seconds,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
    )


def run(args: argparse.Namespace) -> int:
    import asyncio

    from digitserve.serve.server import DigitServer

    # SIGHUP means "reload"; before the server listens the first load takes the newest version
    # anyway, and SIGHUP's default action would kill the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = settings_from_args(args)
    log.info("digitserve serve: %s", settings.describe())
    asyncio.run(DigitServer(settings).run())
    return 0
