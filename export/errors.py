"""Why an export can fail after the model was found: the export stage's own errors.

    DigitserveError (digitserve.errors)
    └── ExportError       a converter or a runtime failed, or a tool it needs is missing
        └── ParityError   an artifact strays from the Keras model beyond its bound

A missing or corrupt model.keras, or a version that does not exist, is a ModelRepositoryError.
Every one of them leaves the version exactly as it was.
"""

from __future__ import annotations

from digitserve.errors import DigitserveError


class ExportError(DigitserveError):
    """An artifact could not be produced or run; nothing was published."""


class ParityError(ExportError):
    """An artifact disagrees with the Keras model beyond its bound; nothing was published."""
