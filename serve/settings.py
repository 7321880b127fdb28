"""Every setting of `digitserve serve`, with its unit and default, in one frozen dataclass.

The CLI fills it from flags (each also readable as DIGITSERVE_<FLAG>); tests build it directly.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitserve.contract import IMAGE_SIZE, NUM_CLASSES
from digitserve.errors import UsageError

DEVICES = ("auto", "cuda", "cpu")
GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")
CUDNN_CONV_ALGO_SEARCHES = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
MESSAGE_OVERHEAD_BYTES = 64 * 1024  # field tags, ids, names: generous, it only bounds abuse


@dataclass(frozen=True)
class ServeSettings:
    """How the gRPC server runs; see each field's docstring for its unit."""

    repo: Path = Path("models")
    """Model repository root: the server serves `<repo>/<name>/<newest complete version>/`."""
    name: str = "digits"
    """Model name inside the repository; also the model name of the V2 API."""
    host: str = "127.0.0.1"
    """Address the gRPC and metrics listeners bind (0.0.0.0 or :: for every interface)."""
    port: int = 50051
    """gRPC port; 0 picks a free one (logged)."""
    metrics_port: int | None = 8000
    """Prometheus metrics HTTP port; 0 picks a free one; None turns metrics serving off."""
    reuse_port: bool = False
    """Set SO_REUSEPORT so several server processes can share one port (off: a busy port fails)."""

    device: str = "auto"
    """Execution device: auto (CUDA when a session can use it, else CPU, and says so), cuda, cpu."""
    cuda_device_id: int = 0
    """GPU index for the CUDA execution provider."""
    cuda_mem_limit_mb: int = 0
    """CUDA provider arena limit in MiB (gpu_mem_limit); 0 means no limit."""
    cudnn_conv_algo_search: str = "HEURISTIC"
    """cuDNN convolution algorithm search; HEURISTIC avoids a costly search per new batch size."""
    intra_op_threads: int = 0
    """ONNX Runtime threads inside one operator per session; 0 means cores / instances."""
    inter_op_threads: int = 0
    """ONNX Runtime threads across operators per session; 0 means ORT's default."""
    graph_optimization: str = "all"
    """ONNX Runtime graph optimisation level: disable, basic, extended or all."""
    ort_spinning: bool = False
    """Let ORT worker threads spin while idle: lower latency, but they steal CPU from gRPC."""

    max_batch_size: int = 64
    """Most images in one model execution."""
    max_queue_delay_us: int = 0
    """Microseconds a batch may wait for more images; 0 takes whatever queued meanwhile."""
    max_queue_images: int = 4096
    """Most images waiting in the queue; beyond it calls get RESOURCE_EXHAUSTED."""
    max_request_images: int = 1024
    """Most images in one request; sets the gRPC max message size too."""
    instances: int = 1
    """Parallel ONNX Runtime sessions (model instances), each fed by the one batcher."""

    grace_seconds: float = 10.0
    """On SIGTERM/SIGINT, seconds in-flight calls get to finish before they are cancelled."""
    poll_seconds: float = 5.0
    """Seconds between scans of the repository for a newer complete version; 0 turns it off."""

    tls_cert: Path | None = None
    """PEM server certificate (chain); with tls_key, the server speaks TLS only."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""

    def __post_init__(self) -> None:
        problems = []
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            problems.append(
                f"--graph-optimization must be one of {', '.join(GRAPH_OPTIMIZATIONS)}, got {self.graph_optimization!r}"
            )
        if self.cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCHES:
            problems.append(
                "--cudnn-conv-algo-search must be one of "
                f"{', '.join(CUDNN_CONV_ALGO_SEARCHES)}, got {self.cudnn_conv_algo_search!r}"
            )
        for name in ("max_batch_size", "max_queue_images", "max_request_images", "instances"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_queue_images < self.max_request_images:
            problems.append(
                f"--max-queue-images ({self.max_queue_images}) must be at least "
                f"--max-request-images ({self.max_request_images}), or a full-size request "
                "could never be queued"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.grace_seconds < 0 or self.poll_seconds < 0 or self.max_queue_delay_us < 0:
            problems.append("--grace-seconds, --poll-seconds and --max-queue-delay-us must be >= 0")
        if problems:
            raise UsageError("; ".join(problems))

    @property
    def max_message_bytes(self) -> int:
        """gRPC max message size: the largest request of max_request_images float32 images."""
        biggest = max(self.max_request_images * IMAGE_SIZE * 4, self.max_request_images * NUM_CLASSES * 16)
        return biggest + MESSAGE_OVERHEAD_BYTES

    @property
    def session_threads(self) -> int:
        """Intra-op threads per ORT session after resolving 0 (auto)."""
        if self.intra_op_threads:
            return self.intra_op_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // self.instances)

    def describe(self) -> str:
        """One line of `key=value` for the start-up log."""
        values = dataclasses.asdict(self)
        return " ".join(f"{key}={value}" for key, value in values.items())

    def replace(self, **changes: Any) -> ServeSettings:
        return dataclasses.replace(self, **changes)
