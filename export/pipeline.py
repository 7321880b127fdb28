"""Export one trained version: convert, prove each artifact equal to Keras, then publish at once.

The order is the safety argument: everything is written into a staging folder beside the
version and verified there; the manifest is written last, into that folder; one atomic swap
publishes it (publish.py). A missing model, a converter crash, a parity failure or Ctrl-C before
the swap leaves the repository exactly as it was.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from digitserve import __version__, interrupt
from digitserve.contract import images_to_pixels
from digitserve.errors import DigitserveError, ModelRepositoryError, UsageError
from digitserve.export import publish, source
from digitserve.export.errors import ExportError
from digitserve.export.report import Progress
from digitserve.export.targets import (
    EXPORT_FOLDERS,
    FORMATS,
    TARGETS,
    TFJS_QUANTIZATIONS,
    Bounds,
    Conversion,
    Target,
    parse_formats,
)
from digitserve.manifest import Artifact, Manifest, Parity, sha256_file
from digitserve.mnist import Mnist, load_mnist
from digitserve.repository import DEFAULT_NAME, MANIFEST, ModelRepository, write_manifest

log = logging.getLogger(__name__)

DEFAULT_BOUNDS = Bounds()

LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "tensorflowjs",
             "ai-edge-litert")


@dataclass(frozen=True)
class ExportResult:
    """What was published: the version's folder and its manifest (as written)."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    seconds: float


def export_version(
    repo_root: str | os.PathLike[str],
    name: str = DEFAULT_NAME,
    version: int | None = None,
    formats: str | Iterable[str] = FORMATS,
    data: str | os.PathLike[str] | Mnist | None = None,
    tfjs_quantization: str | None = None,
    bounds: Bounds = DEFAULT_BOUNDS,
    progress: Progress | None = None,
) -> ExportResult:
    """Export `version` (default: the newest) of `<repo_root>/<name>` and publish its manifest.

    `formats`: any of onnx, onnx-int8, tfjs, tflite, tflite-int8 (a list or "onnx,tfjs"; by default
    all but onnx-int8, which is asked for by name); artifacts of other
    formats from a previous export of the same model.keras are kept. `data`: MNIST as a path
    (see digitserve.mnist.load_mnist) or already loaded. `tfjs_quantization`: None/"none",
    "float16" or "uint8" weights. Raises ModelRepositoryError (no such version, model.keras
    missing or corrupt), UsageError, DataError, ExportError or ParityError; none of them
    changes the repository.
    """
    started = time.monotonic()
    keys = parse_formats(formats if isinstance(formats, str) else ",".join(formats))
    if (tfjs_quantization or "none") not in TFJS_QUANTIZATIONS:
        raise UsageError(f"unknown TF.js quantization {tfjs_quantization!r}; "
                         f"choose from {', '.join(TFJS_QUANTIZATIONS)}")
    repository = ModelRepository(repo_root, name)
    version = repository.latest_version() if version is None else version
    version_dir = repository.require(version)
    keras_path = repository.require_keras_file(version)
    needs_saved_model = any(TARGETS[key].from_saved_model for key in keys)
    progress = progress or Progress(enabled=False)
    progress.total = 4 + int(needs_saved_model) + 2 * len(keys)

    with progress.step("load MNIST"):
        mnist = data if isinstance(data, Mnist) else load_mnist(data)
        pixels, labels = images_to_pixels(mnist.x_test), mnist.y_test.astype(np.int64)
    with progress.step(f"load {keras_path} (safe mode)"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import
        keras_sha256 = sha256_file(keras_path)
        model = source.load_keras_model(keras_path)
    with progress.step(f"Keras: predict {len(pixels):,} test images"):
        keras_probabilities = source.predict(model, pixels)
    keras_accuracy = float(np.mean(keras_probabilities.argmax(axis=1) == labels))
    previous = _previous_manifest(repository, version)

    artifacts: dict[str, Artifact] = {}
    with publish.staged_copy(version_dir, skip=(*EXPORT_FOLDERS, MANIFEST)) as stage, \
            tempfile.TemporaryDirectory(prefix="digitserve-export-") as scratch:
        saved_model = Path(scratch) / "saved_model"
        if needs_saved_model:
            with progress.step("write the serving SavedModel (for TF.js and TFLite)"):
                _converting("SavedModel", lambda: _write_saved_model(model, saved_model))
        job = Conversion(model, saved_model, mnist, tfjs_quantization)
        # Kept ones first: onnx-int8 alone then quantises the very float ONNX it is published beside.
        kept = _keep_previous(previous, version_dir, stage, keys, keras_sha256)
        for key in keys:
            interrupt.check()  # a converter may have swallowed Ctrl-C or SIGTERM
            target = TARGETS[key]
            with progress.step(f"{key}: convert"):
                artifact = _convert(target, job, stage)
            with progress.step(f"{key}: verify in {target.runtime} on {len(pixels):,} images"):
                parity = _verify(target, stage / artifact.path, pixels, labels, keras_probabilities,
                                 target.is_quantised(tfjs_quantization), bounds)
            artifacts[key] = replace(artifact, parity=parity)
        everything = {**kept, **artifacts}
        manifest = Manifest(
            name=name,
            version=version,
            model=source.describe_model(version_dir, model, keras_sha256, keras_accuracy),
            artifacts={key: everything[key] for key in TARGETS if key in everything},
            export={
                "digitserve": __version__,
                "formats": list(keys),
                "kept_from_previous_export": sorted(kept),
                "test_images": int(len(pixels)),
                "data_sha256": mnist.sha256,
                "seconds": round(time.monotonic() - started, 1),
                "libraries": _library_versions("tfjs" in keys),
            },
        )
        interrupt.check()
        with progress.step(f"publish {version_dir} (manifest last)"):
            write_manifest(stage, manifest)
            publish.publish(stage, version_dir)
    log.info("exported %s version %d: %s", name, version, ", ".join(manifest.artifacts))
    return ExportResult(name, version, version_dir, manifest, time.monotonic() - started)


def _convert(target: Target, job: Conversion, stage: Path) -> Artifact:
    """Write one artifact into the stage and describe it (sizes, checksums, its converter's facts)."""
    started = time.monotonic()
    facts = _converting(target.key, lambda: target.convert(job, stage / target.path))
    files = facts.pop("files", None)
    return Artifact.from_files(stage, target.path, target.format, facts,
                               time.monotonic() - started, files)


def _write_saved_model(model: Any, folder: Path) -> Path:
    from digitserve.export.signature import write_saved_model

    return write_saved_model(model, folder)


def _verify(target: Target, path: Path, pixels: np.ndarray, labels: np.ndarray, keras: np.ndarray,
            quantised: bool, bounds: Bounds) -> Parity:
    from digitserve.export import verify

    try:
        return verify.verify(target, path, pixels, labels, keras, quantised, bounds)
    except DigitserveError:
        raise
    except Exception as exc:
        raise ExportError(f"{target.key}: running the artifact failed ({type(exc).__name__}: {exc}); "
                          "nothing was published") from exc


def _converting(what: str, action: Callable[[], Any]) -> Any:
    """Run a converter; its own exceptions become an ExportError naming the artifact."""
    try:
        return action()
    except DigitserveError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or ["no message"])[0][:500]
        raise ExportError(f"{what}: conversion failed ({type(exc).__name__}: {first}); "
                          "nothing was published") from exc


def _keep_previous(previous: Manifest | None, version_dir: Path, stage: Path,
                   keys: tuple[str, ...], keras_sha256: str) -> dict[str, Artifact]:
    """Artifacts of formats not asked for this time, from a previous export of this very
    model.keras whose files still match their checksums: linked into the stage, entries kept."""
    if previous is None or previous.model.keras_sha256 != keras_sha256:
        return {}
    kept = {}
    for key, artifact in previous.artifacts.items():
        if key in keys or key not in TARGETS:
            continue
        if not artifact.files_match(version_dir):
            log.warning("dropping the previous %s artifact: its files do not match its manifest",
                        key)
            continue
        (stage / artifact.folder).mkdir(parents=True, exist_ok=True)
        for name in artifact.files:
            publish.link_into(version_dir / artifact.folder / name, stage / artifact.folder / name)
        kept[key] = artifact
    return kept


def _previous_manifest(repository: ModelRepository, version: int) -> Manifest | None:
    """The version's manifest from an earlier export, if it has a readable one."""
    if not repository.manifest_file(version).is_file():
        return None
    try:
        return repository.read_manifest(version)
    except ModelRepositoryError as exc:
        log.warning("not keeping any previous artifact: %s", exc)
        return None


def _library_versions(with_tfjs: bool) -> dict[str, str]:
    versions = {}
    for package in LIBRARIES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    if with_tfjs:
        from digitserve.export import tfjs_node

        versions["@tensorflow/tfjs"] = tfjs_node.tfjs_version()
    return versions
