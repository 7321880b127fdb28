"""`digitserve export`: a trained version -> ONNX, TF.js and TFLite, each proven equal to Keras.

Imports nothing heavy here: TensorFlow and the converters load inside `run`.
"""

from __future__ import annotations

import argparse
import sys

from digitserve.cli import add_repo_options, positive_int
from digitserve.errors import UsageError
from digitserve.export.targets import ALL_FORMATS, FORMATS, TFJS_QUANTIZATIONS, parse_formats


def _formats(text: str) -> tuple[str, ...]:
    try:
        return parse_formats(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def configure(parser: argparse.ArgumentParser) -> None:
    add_repo_options(parser)
    parser.add_argument(
        "--version", type=positive_int, default=None,
        help="version to export (default: the newest version in the repository)",
    )
    parser.add_argument(
        "--formats", type=_formats, default=FORMATS, metavar="LIST",
        help=f"comma-separated artifacts to build, of {','.join(ALL_FORMATS)} "
             f"(default: {','.join(FORMATS)}; onnx-int8, for CPU serving, only when named)",
    )
    parser.add_argument(
        "--tfjs-quantization", choices=TFJS_QUANTIZATIONS, default="none",
        help="store TF.js weights as float16 or uint8 (a smaller download, held to the "
             "0.5-point accuracy bound instead of the float one) (default: %(default)s)",
    )
    parser.add_argument(
        "--data", default=None,
        help="MNIST folder (IDX files) or mnist.npz, for the parity check and int8 calibration "
             "(default: DIGITSERVE_DATA, then the Keras cache)",
    )


def run(args: argparse.Namespace) -> int:
    from digitserve.export.pipeline import export_version
    from digitserve.export.report import Progress, format_table
    from digitserve.repository import MANIFEST

    result = export_version(
        args.repo, args.name, args.version, formats=args.formats, data=args.data,
        tfjs_quantization=args.tfjs_quantization, progress=Progress(stream=sys.stderr),
    )
    print(format_table(result.manifest))
    print(f"\nexported {result.name} version {result.version} in {result.seconds:.0f} s: "
          f"{result.path / MANIFEST}")
    return 0
