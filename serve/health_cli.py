"""`digitserve health`: ask a server's grpc.health.v1 service whether it is SERVING (exit 0) or not (1).

Made for container healthchecks (Docker HEALTHCHECK, compose `healthcheck`, a Kubernetes exec
probe when the server speaks TLS and the kubelet's native gRPC probe cannot be used): one
Check call, one line of output, an exit code. Exit 0 only for SERVING; 1 for NOT_SERVING,
UNKNOWN, an unknown service name, no answer in time or no server at all; 2 for bad usage.

Imports nothing heavy at module level: grpc loads inside `run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from digitserve.cli import positive_float
from digitserve.errors import DigitserveError, UsageError

log = logging.getLogger(__name__)

DEFAULT_PORT = 50051


def default_target() -> str:
    """127.0.0.1 on the port `digitserve serve` in this environment listens on: the healthcheck
    runs inside the server's container, beside the same DIGITSERVE_PORT."""
    return f"127.0.0.1:{os.environ.get('DIGITSERVE_PORT') or DEFAULT_PORT}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ask a gRPC server's grpc.health.v1.Health service for a status. Exit 0 when it answers "
        "SERVING, 1 otherwise (NOT_SERVING, unknown service, no answer, no server)."
    )
    parser.add_argument(
        "--target",
        default=default_target(),
        metavar="HOST:PORT",
        help="server address (default: %(default)s: 127.0.0.1 and DIGITSERVE_PORT, else 50051)",
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help="service to ask about, e.g. digits.v1.Classifier (default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="deadline for connecting and answering (default: %(default)s)",
    )
    tls = parser.add_argument_group("TLS (for a server started with --tls-cert)")
    tls.add_argument("--tls-ca", type=Path, metavar="PEM", help="CA bundle to verify the server; turns TLS on")
    tls.add_argument(
        "--tls-client-cert",
        type=Path,
        metavar="PEM",
        help="client certificate, for a server that requires one (--tls-client-ca)",
    )
    tls.add_argument("--tls-client-key", type=Path, metavar="PEM", help="private key of --tls-client-cert")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="name to verify the server certificate against, when it differs from the target's host",
    )


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DigitserveError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _check_target(target: str) -> None:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--target must be HOST:PORT (for example 127.0.0.1:{DEFAULT_PORT}), got {target!r}")


def open_channel(args: argparse.Namespace) -> Any:
    """A grpc channel to --target: plaintext, or TLS when --tls-ca is given."""
    import grpc

    if args.tls_ca is None:
        if args.tls_client_cert or args.tls_client_key or args.tls_server_name:
            raise UsageError("--tls-client-cert, --tls-client-key and --tls-server-name need --tls-ca")
        return grpc.insecure_channel(args.target)
    if (args.tls_client_cert is None) != (args.tls_client_key is None):
        raise UsageError("--tls-client-cert and --tls-client-key go together: give both or neither")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(args.tls_ca, "CA bundle"),
        private_key=_read(args.tls_client_key, "client key"),
        certificate_chain=_read(args.tls_client_cert, "client certificate"),
    )
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


def check(args: argparse.Namespace) -> tuple[bool, str]:
    """(serving?, the one line that says what the server answered or why there is no answer)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    _check_target(args.target)
    about = f"{args.target} service {args.service!r}" if args.service else args.target
    with open_channel(args) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == grpc.StatusCode.NOT_FOUND:
                return False, f"{about}: unknown service (the server does not report on {args.service!r})"
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f"{about}: no answer within {args.timeout:g} s"
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return False, f"{about}: the server has no grpc.health.v1 service"
            return False, f"{about}: cannot check health: {code.name}: {details}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{about}: {status}"


def run(args: argparse.Namespace) -> int:
    serving, line = check(args)
    print(line, file=sys.stdout if serving else sys.stderr, flush=True)
    return 0 if serving else 1
