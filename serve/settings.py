"""Every setting of `digitserve serve`, declared once: type, default, bounds, help.

The flags, their DIGITSERVE_<FLAG> variables and docs/flags.md derive from these fields
(digitserve.settings); tests build ServeSettings directly. Imports no grpc or onnxruntime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from digitserve.contract import IMAGE_SIZE, NUM_CLASSES
from digitserve.repository import DEFAULT_NAME, DEFAULT_REPO
from digitserve.serve.policy import check_policy_text
from digitserve.settings import Noun, Port, Settings, setting
from digitserve.wire.names import DEFAULT_HOST, DEFAULT_METRICS_PORT, DEFAULT_PORT

MESSAGE_OVERHEAD_BYTES = 64 * 1024  # field tags, ids, names: generous, it only bounds abuse
REPOSITORY, NETWORK, DEVICE, BATCHING, IMAGES, LIFECYCLE = (
    "model repository", "network", "device and ONNX Runtime", "batching", "images", "lifecycle"
)

AtLeastOne = Annotated[int, Field(ge=1)]
ZeroOrMore = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0)]  # NaN fails too
PolicyText = Annotated[str, AfterValidator(check_policy_text), Noun("a version policy")]
ImageBytes = Annotated[int, Field(ge=1, le=64 * 1024 * 1024)]
ImagePixels = Annotated[int, Field(ge=1, le=50_000_000)]  # below Pillow's own bomb check (89,478,485)
Workers = Annotated[int, BeforeValidator(lambda v: 0 if str(v).strip().lower() == "auto" else v), Field(ge=0)]


class ServeSettings(Settings):
    """How the gRPC server runs."""

    repo: Path = setting(Path(DEFAULT_REPO), "model repository root: <repo>/<model>/<version>/", group=REPOSITORY)
    model: tuple[str, ...] = setting(
        (), "serve only this model of the repository (repeat for several; default: every model in it)",
        group=REPOSITORY,
    )
    name: str | None = setting(
        None, "one-model shorthand: serve only this model, the default for requests that name none",
        group=REPOSITORY,
    )
    version_policy: PolicyText = setting(
        "latest:1", "versions served of each model: latest:N, all or specific:V[,V...]; "
        "<repo>/<model>/serving.json overrides it per model", group=REPOSITORY,
    )
    model_control: Literal["poll", "explicit"] = setting(
        "poll", "poll: follow the repository (every --poll-seconds, and on SIGHUP); explicit: only "
        "RepositoryModelLoad/Unload calls change what is served (an operator API: never expose it)",
        group=REPOSITORY,
    )
    max_loaded_versions: ZeroOrMore = setting(
        0, "most model versions loaded at once, all models together; 0: no bound", group=REPOSITORY
    )

    host: str = setting(
        DEFAULT_HOST, "address of the gRPC and metrics listeners; 0.0.0.0 or :: for every interface", group=NETWORK
    )
    port: Port = setting(DEFAULT_PORT, "gRPC port; 0 picks a free one (logged)", group=NETWORK)
    http_port: Port | None = setting(
        None, "KServe V2 HTTP/REST port on --host (docs/http.md); 0 picks a free one (logged); off by default",
        group=NETWORK, off_flag="--no-http", off_help="do not serve HTTP/REST (overrides DIGITSERVE_HTTP_PORT)",
    )
    web: bool = setting(
        False, "serve the drawing page on the HTTP port beside /v2, with the server's answer beside the "
        "browser's (docs/web.md); needs --http-port and the TF.js npm files (npm ci), found as `digitserve web` "
        "finds them", group=NETWORK,
    )
    metrics_port: Port | None = setting(
        DEFAULT_METRICS_PORT, "Prometheus /metrics port; 0 picks a free one", group=NETWORK,
        off_flag="--no-metrics", off_help="do not serve /metrics",
    )
    reuse_port: bool = setting(
        False, "SO_REUSEPORT: several server processes share the port (off: a busy port fails the start)", group=NETWORK
    )
    tls_cert: Path | None = setting(
        None, "PEM server certificate (chain); with --tls-key the port speaks TLS only", group=NETWORK
    )
    tls_key: Path | None = setting(None, "PEM private key of --tls-cert", group=NETWORK)
    tls_client_ca: Path | None = setting(
        None, "PEM CA bundle: clients must present a certificate it signed (mutual TLS)", group=NETWORK
    )

    artifact: Literal["onnx", "onnx-int8"] = setting(
        "onnx", "the export to serve: onnx (float) or onnx-int8 (quantised for CPUs, made by "
        "`digitserve export --formats onnx-int8`)", group=DEVICE,
    )
    device: Literal["auto", "cuda", "cpu"] = setting(
        "auto", "auto: CUDA when a session can use it, else CPU (and says so); cuda: fail without CUDA", group=DEVICE
    )
    cuda_device_id: ZeroOrMore = setting(0, "GPU index for the CUDA execution provider", group=DEVICE)
    cuda_mem_limit_mb: ZeroOrMore = setting(
        0, "CUDA provider arena limit (gpu_mem_limit) in MiB; 0: none", group=DEVICE
    )
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = setting(
        "HEURISTIC", "cuDNN convolution algorithm search; HEURISTIC avoids a costly search per new batch size",
        group=DEVICE,
    )
    intra_op_threads: ZeroOrMore = setting(0, "ONNX Runtime threads per session; 0: cores / instances", group=DEVICE)
    inter_op_threads: ZeroOrMore = setting(
        0, "ONNX Runtime inter-op threads per session; 0: ORT's default", group=DEVICE
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = setting(
        "all", "ONNX Runtime graph optimisation level", group=DEVICE
    )
    ort_spinning: bool = setting(
        False, "let idle ORT threads spin: lower latency, but they take CPU from gRPC", group=DEVICE
    )

    max_batch_size: AtLeastOne = setting(64, "most images in one model execution", group=BATCHING)
    max_queue_delay_us: ZeroOrMore = setting(
        0, "microseconds a batch may wait to fill; 0 takes whatever queued while the model was busy", group=BATCHING
    )
    max_queue_images: AtLeastOne = setting(
        4096, "queue bound in images; beyond it calls get RESOURCE_EXHAUSTED", group=BATCHING
    )
    max_request_images: AtLeastOne = setting(
        1024, "most images in one request; sets the gRPC max message size too", group=BATCHING
    )
    instances: AtLeastOne = setting(1, "parallel ONNX Runtime sessions fed by the one batcher", group=BATCHING)
    workers: Workers = setting(
        1, "server processes on the one port (SO_REUSEPORT) under a supervisor that restarts them; "
        "auto or 0: cores / (instances x intra-op threads)", group=BATCHING,
    )

    max_image_bytes: ImageBytes = setting(
        1024 * 1024, "largest image file accepted as input (PNG, JPEG, ...), in bytes per file", group=IMAGES
    )
    max_image_pixels: ImagePixels = setting(
        4_000_000, "largest image accepted as input: width x height, read from the file's header before "
        "decoding", group=IMAGES,
    )
    image_threads: AtLeastOne = setting(
        2, "threads that decode image files (the event loop never decodes)", group=IMAGES
    )

    drain_delay_seconds: Seconds = setting(
        0.0, "on SIGTERM/SIGINT, seconds of lame duck first: health NOT_SERVING, every call still answered",
        group=LIFECYCLE,
    )
    grace_seconds: Seconds = setting(
        10.0, "after the lame duck, seconds to answer what arrives and finish the calls in flight; "
        "past it they are cancelled (exit 3)", group=LIFECYCLE,
    )
    poll_seconds: Seconds = setting(
        5.0, "seconds between scans of the repository (new versions, policy files, models); "
        "0: off (SIGHUP still reloads)",
        group=LIFECYCLE,
    )

    @model_validator(mode="after")
    def _fit_together(self) -> ServeSettings:
        problems = []
        if self.max_queue_images < self.max_request_images:
            problems.append(
                f"--max-queue-images ({self.max_queue_images}) must be at least "
                f"--max-request-images ({self.max_request_images}), or a full-size request "
                "could never be queued"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together: give both or neither")
        if self.name is not None and self.model and self.model != (self.name,):
            problems.append("--name serves one model and --model chooses several: give one or the other")
        if self.model_control == "explicit" and self.workers != 1:
            problems.append(
                "--model-control explicit changes what one process serves, and --workers runs several: "
                "use one worker, or the default poll control (serving.json and SIGHUP reach every worker)"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if self.web and self.http_port is None:
            problems.append("--web serves the drawing page on the HTTP/REST port: give --http-port too (0 picks one)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def page_model(self) -> str:
        """The model whose TF.js export the page of --web loads: --name, else the first --model, else digits."""
        return self.name or next(iter(self.model), DEFAULT_NAME)

    @property
    def max_message_bytes(self) -> int:
        """gRPC max message size: the largest request of max_request_images float32 images, plus
        one image file of max_image_bytes (so that a file of the largest size always fits)."""
        biggest = max(self.max_request_images * IMAGE_SIZE * 4, self.max_request_images * NUM_CLASSES * 16)
        return biggest + self.max_image_bytes + MESSAGE_OVERHEAD_BYTES

    @property
    def session_threads(self) -> int:
        """Intra-op threads per ORT session after resolving 0 (auto)."""
        if self.intra_op_threads:
            return self.intra_op_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, (cores or 1) // self.instances)
