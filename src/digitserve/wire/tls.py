"""How both sides find each other: TLS material, PEM files and HOST:PORT targets.

The server's credentials (`server_credentials`) and the client's (`TLS`) read their PEM files
through the same `read_pem`, so a missing or unreadable file fails the same way on both sides:
a DigitserveError naming the file and what it was meant to be. `check_target` is the one
validator of client targets (both CLIs use it), `host_port` the one way to write an address.

grpc loads inside the functions that need it: the CLIs validate their options before it is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digitserve.errors import DigitserveError
from digitserve.wire.names import DEFAULT_PORT

if TYPE_CHECKING:
    import grpc

TARGET_FORMS = "HOST:PORT, [IPV6]:PORT or a gRPC URI (dns:///HOST:PORT, ipv4:IP:PORT, ipv6:[IP]:PORT, unix:PATH)"
_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract")


def read_pem(path: Path | str, what: str) -> bytes:
    """The file's bytes; a DigitserveError naming `what` and the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise DigitserveError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


def _pem(value: Path | str | bytes | None, what: str) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else read_pem(value, what)


@dataclass(frozen=True)
class TLS:
    """TLS for a client channel: PEM bytes or file paths. All None: the system's roots, no client cert."""

    root_certificates: Path | str | bytes | None = None
    """CA bundle that signed the server's certificate (None: the system's trust store)."""
    client_certificate: Path | str | bytes | None = None
    """Client certificate chain, for a server that requires one (mutual TLS)."""
    client_key: Path | str | bytes | None = None
    """Private key of client_certificate."""
    server_name: str | None = None
    """Name to check the server's certificate against when it differs from the target's host."""

    def credentials(self) -> grpc.ChannelCredentials:
        import grpc

        if (self.client_certificate is None) != (self.client_key is None):
            raise DigitserveError("TLS client_certificate and client_key go together: give both or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates, "CA bundle"),
            private_key=_pem(self.client_key, "client key"),
            certificate_chain=_pem(self.client_certificate, "client certificate"),
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """The server's TLS; with client_ca, mutual TLS: only clients with a certificate it signed get in."""
    import grpc

    return grpc.ssl_server_credentials(
        [(read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))],
        root_certificates=read_pem(client_ca, "client CA") if client_ca is not None else None,
        require_client_auth=client_ca is not None,
    )


def host_port(host: str, port: int) -> str:
    """HOST:PORT as gRPC reads it: an IPv6 address goes in brackets ([::]:50051)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_target(target: str) -> str:
    """The target, unchanged, once it names a host and a port 1-65535 (or a unix socket).

    Accepts what grpc accepts and a person means: HOST:PORT, [IPV6]:PORT, and the URI schemes
    dns:[//AUTHORITY/]HOST:PORT, ipv4:IP:PORT[,IP:PORT...], ipv6:[IP]:PORT[,...], unix:PATH and
    unix-abstract:NAME. Raises ValueError saying what is wrong and how to write it instead.
    """
    scheme, sep, rest = target.partition(":")
    if not sep or scheme not in _SCHEMES:
        _check_address(target, target)
    elif scheme in ("unix", "unix-abstract"):
        if not rest.strip("/"):
            raise ValueError(f"{target!r} names no socket: write {scheme}:PATH")
    elif scheme == "dns":
        if rest.startswith("//"):  # dns://AUTHORITY/HOST:PORT, AUTHORITY usually empty
            _, slash, rest = rest[2:].partition("/")
            if not slash:
                raise ValueError(f"{target!r}: write dns:///HOST:PORT (three slashes when no DNS server is named)")
        _check_address(rest, target)
    else:
        for address in rest.split(","):
            _check_address(address, target)
    return target


def _check_address(address: str, target: str) -> None:
    """HOST:PORT or [IPV6]:PORT, or a ValueError that says what to fix."""
    host, port = _split(address, target)
    if not host:
        raise ValueError(f"{target!r} names no host: write HOST:PORT, as in localhost:{DEFAULT_PORT}")
    if not port:
        raise ValueError(f"{target!r} has no port: add one, as in {host_port(host, DEFAULT_PORT)}")
    if not re.fullmatch("[0-9]+", port):
        raise ValueError(f"{target!r}: the port must be a number, got {port!r}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{target!r}: port {int(port)} is out of range: give a port from 1 to 65535")


def _split(address: str, target: str) -> tuple[str, str]:
    if address.startswith("["):
        host, bracket, port = address[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise ValueError(f"{target!r}: write an IPv6 address as [IP]:PORT, as in [::1]:{DEFAULT_PORT}")
        return host, port[1:]
    if address.count(":") > 1:
        raise ValueError(f"{target!r}: put an IPv6 address in brackets, as in [::1]:{DEFAULT_PORT}")
    host, _, port = address.partition(":")
    return host, port
