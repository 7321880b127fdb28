"""The manifest's schema (version 1) as typed objects: Manifest, ModelSummary, Artifact, Parity.

The repository (repository.py) is the only reader and writer of manifest.json; everyone else
uses these objects and reads no raw keys. Readers rely on `version`, `model.test_accuracy`,
`contract` and, per artifact, `path` and `sha256` (docs/design.md); export may add keys, never
remove them. Keys this version does not know are kept (`extra`, an artifact's `facts`) so that
a manifest from a newer digitserve reads and writes back unharmed.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

from digitserve.contract import IMAGE_SIZE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from digitserve.errors import ModelRepositoryError

SCHEMA_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def contract_section() -> dict[str, Any]:
    """The input/output contract every artifact follows (digitserve.contract), as recorded."""
    return {
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [-1, IMAGE_SIZE],
                  "range": [0.0, 1.0], "layout": "28x28 row-major, 0.0 background, 1.0 full ink"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [-1, NUM_CLASSES]},
    }


@dataclass(frozen=True)
class Parity:
    """How one artifact compares with the Keras model on the test set."""

    runtime: str
    images: int
    accuracy: float
    keras_accuracy: float
    top1_agreement: float
    label_disagreements: int
    max_abs_diff: float
    mean_abs_diff: float
    worst_image: int
    disagreeing_images: tuple[int, ...] = ()  # the first ten
    bound: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["disagreeing_images"] = list(self.disagreeing_images)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str, source: object) -> Parity:
        read = _Object(data, where, source)
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        values = {name: read.required(name) for name in required}
        values.update(
            disagreeing_images=tuple(read.optional("disagreeing_images", list) or ()),
            bound=dict(read.optional("bound", dict) or {}),
            seconds=read.optional("seconds", (int, float)) or 0.0,
        )
        return cls(**values)


@dataclass(frozen=True)
class Artifact:
    """One exported file its users open (`path`, relative to the version folder), and the
    `files` it consists of (relative to path's folder: TF.js weight shards), each checksummed."""

    path: str
    sha256: str
    format: str | None = None
    files: tuple[str, ...] = ()
    file_sha256: dict[str, str] = field(default_factory=dict)
    bytes: int | None = None
    conversion_seconds: float | None = None
    parity: Parity | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # what its converter says, unknown keys

    @classmethod
    def from_files(cls, version_dir: Path, path: str, format: str, facts: dict[str, Any],
                   conversion_seconds: float, files: list[str] | None = None) -> Artifact:
        """Describe an artifact already written under `version_dir`: sizes and checksums."""
        folder = version_dir / PurePosixPath(path).parent
        names = tuple(files or [PurePosixPath(path).name])
        hashes = {name: sha256_file(folder / name) for name in names}
        return cls(
            path=path, sha256=hashes[PurePosixPath(path).name], format=format, files=names,
            file_sha256=hashes, bytes=sum((folder / name).stat().st_size for name in names),
            conversion_seconds=round(conversion_seconds, 2), facts=dict(facts),
        )

    @property
    def folder(self) -> PurePosixPath:
        return PurePosixPath(self.path).parent

    @property
    def speedup(self) -> float | None:
        """An int8 ONNX's in-process speed-up over the float ONNX, measured on the exporting
        machine (facts `speedup_over_float`, export/speedup.py); None for other artifacts."""
        measured = self.facts.get("speedup_over_float")
        return float(measured["speedup"]) if isinstance(measured, dict) and "speedup" in measured else None

    def files_match(self, version_dir: Path) -> bool:
        """Whether every file is there with the checksum the manifest records."""
        folder = version_dir / self.folder
        return all((folder / name).is_file() and sha256_file(folder / name) == digest
                   for name, digest in self.file_sha256.items())

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path}
        if self.format is not None:
            data["format"] = self.format
        data.update(self.facts)
        data.update(files=list(self.files))
        if self.bytes is not None:
            data["bytes"] = self.bytes
        data.update(sha256=self.sha256, file_sha256=dict(self.file_sha256))
        if self.conversion_seconds is not None:
            data["conversion_seconds"] = self.conversion_seconds
        if self.parity is not None:
            data["parity"] = self.parity.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any, where: str, source: object) -> Artifact:
        read = _Object(data, where, source)
        path, sha256 = read.required("path", str), read.required("sha256", str)
        name = PurePosixPath(path).name
        parity = read.optional("parity", dict)
        return cls(
            path=path,
            sha256=sha256,
            format=read.optional("format", str),
            files=tuple(read.optional("files", list) or [name]),
            file_sha256=dict(read.optional("file_sha256", dict) or {name: sha256}),
            bytes=read.optional("bytes", int),
            conversion_seconds=read.optional("conversion_seconds", (int, float)),
            parity=Parity.from_json(parity, f"{where}.parity", source) if parity else None,
            facts=read.rest({f.name for f in fields(cls)} - {"facts"}),
        )


@dataclass(frozen=True)
class ModelSummary:
    """The trained model: from train/metrics.json where train wrote it, else from the model."""

    test_accuracy: float | None  # a required key, null where nobody measured it
    architecture: str | None = None
    parameters: int | None = None
    keras_sha256: str | None = None
    training: dict[str, Any] | None = None  # every training setting; null without metrics.json
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key in ("architecture", "parameters", "keras_sha256"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return {**data, "test_accuracy": self.test_accuracy, "training": self.training, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str, source: object) -> ModelSummary:
        read = _Object(data, where, source)
        return cls(
            test_accuracy=read.required("test_accuracy", (int, float), nullable=True),
            architecture=read.optional("architecture", str),
            parameters=read.optional("parameters", int),
            keras_sha256=read.optional("keras_sha256", str),
            training=read.optional("training", dict),
            extra=read.rest({f.name for f in fields(cls)} - {"extra"}),
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Manifest:
    """What one exported version is; its file's presence means the version is complete."""

    name: str
    version: int
    model: ModelSummary
    artifacts: dict[str, Artifact]
    contract: dict[str, Any] | None = field(default_factory=contract_section)
    created: str | None = field(default_factory=_now)
    export: dict[str, Any] | None = None  # how it was exported: formats, libraries, seconds
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "name": self.name,
                                "version": self.version}
        if self.created is not None:
            data["created"] = self.created
        data["model"] = self.model.to_json()
        if self.contract is not None:
            data["contract"] = self.contract
        data["artifacts"] = {key: artifact.to_json() for key, artifact in self.artifacts.items()}
        if self.export is not None:
            data["export"] = self.export
        return copy.deepcopy({**data, **self.extra})  # the caller's to change, not this object's

    @classmethod
    def from_json(cls, data: Any, source: object) -> Manifest:
        """Parse a manifest read from `source` (named in every error); refuse other schemas."""
        read = _Object(data, "", source)
        schema = read.data.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise ModelRepositoryError(
                f"{source} has schema_version {schema!r}; this digitserve reads "
                f"{SCHEMA_VERSION}: export again with this version"
            )
        artifacts = read.required("artifacts", dict)
        return cls(
            name=read.required("name", str),
            version=read.required("version", int),
            model=ModelSummary.from_json(read.required("model", dict), "model", source),
            artifacts={str(key): Artifact.from_json(entry, f"artifacts.{key}", source)
                       for key, entry in artifacts.items()},
            contract=read.optional("contract", dict),
            created=read.optional("created", str),
            export=read.optional("export", dict),
            extra=read.rest({"schema_version", *(f.name for f in fields(cls))} - {"extra"}),
        )


class _Object:
    """One JSON object of a manifest; every error names the file and the key's dotted path."""

    def __init__(self, data: Any, where: str, source: object):
        self.where, self.source = where, source
        if not isinstance(data, dict):
            raise self._error(f"holds a {type(data).__name__} where {where or 'the manifest'} should be an object")
        self.data: dict[str, Any] = data

    def required(self, key: str, kind: type | tuple[type, ...] = object, nullable: bool = False) -> Any:
        if key not in self.data:
            raise self._error(f"has no {self._dotted(key)!r}, which schema version "
                              f"{SCHEMA_VERSION} requires")
        return self._checked(key, kind, nullable)

    def optional(self, key: str, kind: type | tuple[type, ...]) -> Any:
        return self._checked(key, kind, nullable=True) if key in self.data else None

    def rest(self, known: set[str]) -> dict[str, Any]:
        """The keys this schema does not name, in their order (kept for forward compatibility)."""
        return {key: value for key, value in self.data.items() if key not in known}

    def _checked(self, key: str, kind: type | tuple[type, ...], nullable: bool) -> Any:
        value = self.data[key]
        if value is None and nullable:
            return None
        wrong_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if wrong_bool or not isinstance(value, kind):
            raise self._error(f"has {self._dotted(key)} = {value!r}, of the wrong type")
        return value

    def _dotted(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _error(self, problem: str) -> ModelRepositoryError:
        return ModelRepositoryError(f"{self.source} {problem}: export this version again")
