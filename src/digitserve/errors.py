"""Errors a user can act on: each carries a message that names the problem and the fix.

    DigitserveError          base; the CLI prints its message and exits 1, no traceback
    ├── UsageError           an option value that cannot work (exit 2, like argparse's own errors)
    ├── DataError            MNIST files missing, truncated, corrupt or failing their checksum
    ├── ModelRepositoryError a model version or artifact that is missing, corrupt or incomplete
    ├── InvalidInput         input that breaks the input contract (shape, dtype, range)
    └── ImageError           an image file that is missing or cannot be read as a picture

The server maps these to gRPC status codes in `digitserve.serve.errors`.
"""

from __future__ import annotations


class DigitserveError(Exception):
    """An error whose message is meant for the user, shown without a traceback."""

    exit_code = 1


class UsageError(DigitserveError):
    """An option or argument that cannot work; the message says which and why."""

    exit_code = 2


class DataError(DigitserveError):
    """The MNIST data could not be read as it is."""


class ModelRepositoryError(DigitserveError):
    """The model repository does not hold what was asked for."""


class InvalidInput(DigitserveError, ValueError):
    """Pixels that do not follow the input contract."""


class ImageError(DigitserveError):
    """An image file that cannot be read or prepared; the message names the file and the fix."""
