"""The `digitserve` command: one subcommand per stage.

Only the chosen stage's module is imported, so `digitserve serve` never loads TensorFlow
and `--help` is instant. Each stage module exposes `configure(parser)` and `run(args) -> int`.
Every option `--some-flag` also reads the environment variable `DIGITSERVE_SOME_FLAG`.

Exit codes: 0 success, 1 a failure whose message says what to fix, 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from digitserve import __version__, interrupt
from digitserve.errors import DigitserveError, UsageError
from digitserve.repository import DEFAULT_NAME, DEFAULT_REPO

ENV_PREFIX = "DIGITSERVE_"
COMMANDS = {
    "train": ("digitserve.train.cli", "train a model into the model repository"),
    "export": ("digitserve.export.cli", "export a trained version to ONNX, TF.js and TFLite"),
    "serve": ("digitserve.serve.cli", "serve the model repository over gRPC (digits.v1, KServe V2)"),
    "classify": ("digitserve.client.classify_cli", "classify images through a running server"),
    "health": ("digitserve.client.health_cli", "check a server's gRPC health (exit 0 serving, 1 not)"),
    "models": ("digitserve.client.models_cli", "list, load and unload a running server's models (operators)"),
    "bench": ("digitserve.bench.cli", "benchmark training or serving"),
    "web": ("digitserve.web.cli", "serve the drawing page and the model repository"),
}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 0 to 65535, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be more than zero, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def add_repo_options(parser: argparse.ArgumentParser) -> None:
    """--repo and --name, the same for every stage that touches the model repository."""
    parser.add_argument("--repo", default=DEFAULT_REPO, help="model repository root (default: %(default)s)")
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name inside the repository (default: %(default)s)")


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="digitserve",
        description="Train, export and serve an MNIST digit classifier.",
        epilog="Every option --some-flag can also be set with DIGITSERVE_SOME_FLAG.",
    )
    parser.add_argument("--version", action="version", version=f"digitserve {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: %(default)s)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if name == command:  # configure only the stage that runs: its imports stay light
            stage = importlib.import_module(module)
            stage.configure(sub)
            sub.set_defaults(run=stage.run)
    apply_environment(parser)
    return parser


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")
FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)


def apply_environment(parser: argparse.ArgumentParser) -> None:
    """Take each option's default from DIGITSERVE_<DEST> when that variable is set.

    The value goes through the option's own type and choices, so a bad variable fails as
    plainly as a bad flag; nested subcommands (`bench train`) read the same variables.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                apply_environment(sub)
            continue
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        name = environment_variable(action)
        raw = os.environ.get(name)
        if raw is None:
            continue
        try:
            action.default = _environment_value(action, raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"{name}={raw!r}: {exc}")
        action.required = False


def environment_variable(action: argparse.Action) -> str:
    return ENV_PREFIX + action.dest.upper()


def _environment_value(action: argparse.Action, raw: str) -> object:
    if isinstance(action, FLAG_ACTIONS):
        word = raw.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ValueError(f"expected one of {', '.join(w for w in TRUE_WORDS + FALSE_WORDS if w)}")
        return word in TRUE_WORDS
    if isinstance(action, argparse._AppendAction):  # a repeatable flag: comma-separated values
        return [action.type(part.strip()) if callable(action.type) else part.strip()
                for part in raw.split(",") if part.strip()]
    value = action.type(raw) if callable(action.type) else raw
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"expected one of {', '.join(map(str, action.choices))}")
    return value


# Top-level modules of each extra, so a missing one names the install that brings it.
EXTRA_OF_MODULE = {
    **dict.fromkeys(
        ("tensorflow", "keras", "tf2onnx", "onnx", "tensorflowjs", "ai_edge_litert", "matplotlib"), "train"
    ),
    **dict.fromkeys(("grpc", "grpc_health", "google"), "client"),
    "PIL": "images",
    "pydantic": "settings",
    **dict.fromkeys(("grpc_reflection", "prometheus_client", "onnxruntime"), "serve"),
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return (
        f"this install has no {exc.name!r}, which this command needs: install the {extra!r} extra "
        f"(uv sync --locked --extra {extra}, or pip install 'digitserve[{extra}]')"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if arg in COMMANDS), None)
    try:
        parser = build_parser(command)  # a stage's flags may need its extra (serve and web: pydantic)
    except ModuleNotFoundError as exc:
        if (message := missing_extra_message(exc)) is None:
            raise
        print(f"digitserve {command}: error: {message}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # SIGTERM unwinds like Ctrl-C, so staging folders are removed on the way out, and both are
    # remembered for long jobs to check (the server installs its own graceful handler instead).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt.handle)
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        parser.exit(exc.exit_code, f"digitserve {args.command}: error: {exc}\n")
    except DigitserveError as exc:
        print(f"digitserve {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"digitserve {args.command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"digitserve {args.command}: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
