"""The export stage: one trained Keras version -> ONNX, TF.js and TFLite, each proven equal to it.

    export_version(repo_root, name, version, formats=..., data=...) -> ExportResult

Modules: `to_onnx`, `to_tfjs`, `to_tflite` (one per target), `verify` (parity in each target's
runtime), `targets` (the table of targets: each one's file, converter, runtime and bound),
`publish` (staging and the atomic swap), `pipeline` (the order of it all), `cli` (`digitserve
export`). The manifest it writes is digitserve.manifest, through digitserve.repository.
Importing this package loads no TensorFlow.
"""

from digitserve.export.errors import ExportError, ParityError
from digitserve.export.pipeline import ExportResult, export_version
from digitserve.export.targets import FORMATS, Bounds

__all__ = ["FORMATS", "Bounds", "ExportError", "ExportResult", "ParityError", "export_version"]
