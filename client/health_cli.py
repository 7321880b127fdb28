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
from typing import Any

from digitserve.cli import positive_float
from digitserve.client.options import add_target_option, add_tls_options, tls_of
from digitserve.wire.names import DEFAULT_HOST, DEFAULT_PORT, DIGITS_SERVICE

log = logging.getLogger(__name__)


def default_target() -> str:
    """127.0.0.1 on the port `digitserve serve` in this environment listens on: the healthcheck
    runs inside the server's container, beside the same DIGITSERVE_PORT."""
    return f"{DEFAULT_HOST}:{os.environ.get('DIGITSERVE_PORT') or DEFAULT_PORT}"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ask a gRPC server's grpc.health.v1.Health service for a status. Exit 0 when it answers "
        "SERVING, 1 otherwise (NOT_SERVING, unknown service, no answer, no server)."
    )
    add_target_option(
        parser, default_target(), help=f"server address; {DEFAULT_HOST} and DIGITSERVE_PORT, else {DEFAULT_PORT}"
    )
    parser.add_argument(
        "--service",
        default="",
        metavar="NAME",
        help=f"service to ask about, e.g. {DIGITS_SERVICE} (default: the whole server)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="deadline for connecting and answering (default: %(default)s)",
    )
    add_tls_options(parser)


def open_channel(args: argparse.Namespace) -> Any:
    """A grpc channel to --target: plaintext, or TLS when --tls or --tls-ca is given."""
    import grpc

    tls = tls_of(args)
    if tls is None:
        return grpc.insecure_channel(args.target)
    return grpc.secure_channel(args.target, tls.credentials(), options=tls.options())


def check(args: argparse.Namespace) -> tuple[bool, str]:
    """(serving?, the one line that says what the server answered or why there is no answer)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

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
