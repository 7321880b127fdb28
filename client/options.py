"""The options the client commands (`classify`, `health`, `models`) share: --target and the TLS group.

One definition, so every client command accepts the same targets (digitserve.wire.tls.check_target)
and the same TLS flags with the same rules. Imports nothing heavy: grpc loads when a channel opens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from digitserve.errors import UsageError
from digitserve.wire.names import DEFAULT_TARGET
from digitserve.wire.tls import TARGET_FORMS, TLS, check_target


def target(text: str) -> str:
    """argparse type of --target: the validated target, or an error that says how to write it."""
    try:
        return check_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; --target must be {TARGET_FORMS}") from exc


def add_target_option(parser: argparse.ArgumentParser, default: str = DEFAULT_TARGET, help: str = "server") -> None:
    parser.add_argument(
        "--target", type=target, default=default, metavar="HOST:PORT", help=f"{help} (default: %(default)s)"
    )


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("TLS (for a server started with --tls-cert)")
    tls.add_argument("--tls", action="store_true", help="use TLS, trusting the system's CA store")
    tls.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA bundle to verify the server; turns TLS on")
    tls.add_argument(
        "--tls-client-cert", type=Path, metavar="PEM",
        help="client certificate, for a server that requires one (mutual TLS: --tls-client-ca)",
    )
    tls.add_argument("--tls-client-key", type=Path, metavar="PEM", help="private key of --tls-client-cert")
    tls.add_argument(
        "--tls-server-name", metavar="NAME",
        help="name to verify the server certificate against, when it differs from the target's host",
    )


def tls_of(args: argparse.Namespace) -> TLS | None:
    """The TLS the flags ask for; None for plaintext. Misused flags are a UsageError (exit 2)."""
    if not (args.tls or args.tls_ca is not None):
        if args.tls_client_cert or args.tls_client_key or args.tls_server_name:
            raise UsageError(
                "--tls-client-cert, --tls-client-key and --tls-server-name need --tls-ca (or --tls, for the "
                "system's CA store)"
            )
        return None
    if (args.tls_client_cert is None) != (args.tls_client_key is None):
        raise UsageError("--tls-client-cert and --tls-client-key go together: give both or neither")
    return TLS(args.tls_ca, args.tls_client_cert, args.tls_client_key, args.tls_server_name)
