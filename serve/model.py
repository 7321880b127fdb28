"""One model version ready to serve: verified, loaded into ONNX Runtime, warmed.

`load_model` reads `artifacts.onnx` (or `artifacts.onnx-int8`, as `--artifact` asks) from the
version's manifest.json, checks the file's sha256,
opens `instances` ONNX Runtime sessions on the device `--device` asks for (docs/design.md: auto takes
CUDA when a session can use it, cuda fails when it cannot, never a silent fallback), checks the
input/output contract and runs a warm-up batch. Anything wrong raises ModelRepositoryError or
DeviceUnavailable with a message that names the problem; nothing half-loaded is returned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.errors import ModelRepositoryError
from digitserve.repository import DEFAULT_NAME, ModelRepository
from digitserve.serve.errors import DeviceUnavailable
from digitserve.serve.settings import ServeSettings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ModelInfo:
    """What the server reports about the model it serves."""

    name: str
    version: int
    path: Path
    sha256: str
    provider: str
    """The execution provider that runs the model: CUDAExecutionProvider or CPUExecutionProvider."""
    load_seconds: float
    artifact: str = "onnx"
    """The manifest's artifact served: onnx (float) or onnx-int8."""


class OnnxModel:
    """A loaded, verified, warmed model version: `run` one batch on one of its sessions."""

    def __init__(self, info: ModelInfo, sessions: list[Any]):
        self.info = info
        self._sessions = sessions

    @property
    def instances(self) -> int:
        return len(self._sessions)

    def run(self, pixels: np.ndarray, instance: int = 0) -> np.ndarray:
        """float32 [N, 784] -> probabilities float32 [N, 10]; thread-safe, releases the GIL."""
        return self._sessions[instance].run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]  # type: ignore[no-any-return]


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified_onnx(repo: ModelRepository, version: int, key: str = "onnx") -> tuple[Path, bytes, str]:
    """The bytes of the version's ONNX artifact `key`, after checking them against the manifest's sha256."""
    artifact = repo.read_manifest(version).artifacts.get(key)
    if artifact is None and key != "onnx":
        raise ModelRepositoryError(
            f"{repo.manifest_file(version)} has no artifacts.{key} entry: version {version} was "
            f"exported without it; add it with `digitserve export --version {version} --formats "
            f"{key}` (the other artifacts are kept), or serve the float model with --artifact onnx"
        )
    if artifact is None:
        raise ModelRepositoryError(
            f"{repo.manifest_file(version)} has no artifacts.onnx entry with a path and "
            "a sha256: export this version to ONNX with `digitserve export`"
        )
    version_dir = repo.path(version).resolve()
    file = (version_dir / artifact.path).resolve()
    if version_dir not in file.parents:
        raise ModelRepositoryError(
            f"artifacts.{key}.path {artifact.path!r} points outside {version_dir}; refusing it"
        )
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelRepositoryError(
            f"cannot read the ONNX model {file} named by the manifest ({exc.strerror or exc}): "
            "export this version again"
        ) from exc
    actual = sha256_of(data)
    if actual != artifact.sha256:
        raise ModelRepositoryError(
            f"{file} has sha256 {actual}, but the manifest says {artifact.sha256}: the file is "
            "corrupt or was replaced after export; export this version again"
        )
    return file, data, actual


def _session_options(settings: ServeSettings) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.session_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.graph_optimization]
    # Idle spinning makes ORT threads burn the cores the gRPC threads need (off by default).
    spin = "1" if settings.ort_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def _cuda_options(settings: ServeSettings) -> dict[str, str]:
    """CUDA execution provider options, as its documentation names them."""
    options = {
        "device_id": str(settings.cuda_device_id),
        "arena_extend_strategy": "kNextPowerOfTwo",
        "cudnn_conv_algo_search": settings.cudnn_conv_algo_search,
        "do_copy_in_default_stream": "1",
    }
    if settings.cuda_mem_limit_mb:
        options["gpu_mem_limit"] = str(settings.cuda_mem_limit_mb * 1024 * 1024)
    return options


def _open_session(data: bytes, settings: ServeSettings, cuda: bool) -> Any:
    import onnxruntime as ort

    providers: list[Any] = [(CUDA, _cuda_options(settings)), CPU] if cuda else [CPU]
    return ort.InferenceSession(data, sess_options=_session_options(settings), providers=providers)


def _first_session(data: bytes, settings: ServeSettings) -> Any:
    """Open the first session on the device the policy picks; never fall back silently."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if settings.device == "cpu":
        return _open_session(data, settings, cuda=False)
    if CUDA not in available:
        if settings.device == "cuda":
            raise DeviceUnavailable(
                f"--device cuda: this onnxruntime {ort.__version__} has no {CUDA} (it offers "
                f"{', '.join(available)}); install digitserve[serve-gpu] (onnxruntime-gpu) on a "
                "machine with an NVIDIA GPU, or start with --device cpu"
            )
        log.info("device auto: no %s in onnxruntime %s; using the CPU", CUDA, ort.__version__)
        return _open_session(data, settings, cuda=False)
    problem = ""
    try:
        session = _open_session(data, settings, cuda=True)
        if session.get_providers()[0] == CUDA:
            return session
        problem = "onnxruntime dropped it while creating the session (its log above says why)"
    except Exception as exc:  # ORT raises plain RuntimeErrors for driver/library problems
        problem = f"{type(exc).__name__}: {exc}"
    if settings.device == "cuda":
        raise DeviceUnavailable(
            f"--device cuda: {CUDA} could not be used on GPU {settings.cuda_device_id}: {problem}. "
            "Check the driver and CUDA libraries (nvidia-smi), or start with --device cpu"
        )
    log.warning("device auto: %s is installed but not usable (%s); using the CPU", CUDA, problem)
    return _open_session(data, settings, cuda=False)


def check_providers(sessions: list[Any], settings: ServeSettings) -> None:
    """Every session runs on the first one's provider: ORT may drop CUDA for any one of them
    (GPU memory, a driver error), and a model silently half on the CPU breaks --device."""
    provider = sessions[0].get_providers()[0]
    for instance, session in enumerate(sessions):
        got = session.get_providers()[0]
        if got != provider:
            raise DeviceUnavailable(
                f"--device {settings.device}: instance {instance} of {len(sessions)} runs on {got}, "
                f"not {provider} like instance 0 (onnxruntime's log above says why); start with "
                "fewer --instances, or --device cpu"
            )


def _check_contract(session: Any, file: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    found_in = [(i.name, i.shape) for i in inputs]
    found_out = [(o.name, o.shape) for o in outputs]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].shape[-1] != IMAGE_SIZE:
        raise ModelRepositoryError(
            f"{file} does not follow the input contract: expected one input {INPUT_NAME!r} of "
            f"shape [N, {IMAGE_SIZE}], found {found_in}"
        )
    names = [o.name for o in outputs]
    if OUTPUT_NAME not in names or outputs[names.index(OUTPUT_NAME)].shape[-1] != NUM_CLASSES:
        raise ModelRepositoryError(
            f"{file} does not follow the output contract: expected an output {OUTPUT_NAME!r} of "
            f"shape [N, {NUM_CLASSES}], found {found_out}"
        )


def _warm_up(model: OnnxModel, batch_sizes: tuple[int, ...]) -> None:
    """Run each session once per batch size (first runs allocate), and sanity-check the output."""
    rng = np.random.default_rng(0)
    for instance in range(model.instances):
        for size in batch_sizes:
            pixels = rng.random((size, IMAGE_SIZE), dtype=np.float32)
            probabilities = model.run(pixels, instance)
            if probabilities.shape != (size, NUM_CLASSES) or not np.all(np.isfinite(probabilities)):
                raise ModelRepositoryError(
                    f"{model.info.path}: warm-up on {size} images returned shape "
                    f"{probabilities.shape} or non-finite values; expected [{size}, {NUM_CLASSES}]"
                )
            if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
                raise ModelRepositoryError(
                    f"{model.info.path}: warm-up probabilities do not sum to 1 (softmax missing?)"
                )


def load_model(settings: ServeSettings, version: int | None = None, name: str | None = None) -> OnnxModel:
    """Load `version` (default: the newest complete) of model `name` (default: --name, else
    digits) from settings.repo; see module doc."""
    started = time.monotonic()
    name = name or settings.name or DEFAULT_NAME
    repo = ModelRepository(settings.repo, name)
    if version is None:
        version = repo.latest_complete_version()
    file, data, digest = read_verified_onnx(repo, version, settings.artifact)
    try:
        first = _first_session(data, settings)
        _check_contract(first, file)
        sessions = [first] + [
            _open_session(data, settings, cuda=first.get_providers()[0] == CUDA) for _ in range(settings.instances - 1)
        ]
        check_providers(sessions, settings)
    except (ModelRepositoryError, DeviceUnavailable):
        raise
    except Exception as exc:  # onnxruntime's errors for an unreadable or invalid graph
        raise ModelRepositoryError(f"ONNX Runtime cannot load {file}: {exc}; export this version again") from exc
    info = ModelInfo(
        name=name,
        version=version,
        path=file,
        sha256=digest,
        provider=first.get_providers()[0],
        load_seconds=0.0,
        artifact=settings.artifact,
    )
    model = OnnxModel(info, sessions)
    try:
        _warm_up(model, tuple(sorted({1, settings.max_batch_size})))
    except ModelRepositoryError:
        raise
    except Exception as exc:
        raise ModelRepositoryError(f"warm-up of {file} failed: {exc}") from exc
    model.info = dataclasses.replace(info, load_seconds=time.monotonic() - started)
    return model
