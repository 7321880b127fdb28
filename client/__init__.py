"""digitserve.client: the Python client and the `classify`, `health` and `models` commands.

Lives in the repository's client/ folder. Needs the `client` extra only (grpcio, protobuf, numpy):
it shares digitserve.wire (stubs, names, TLS, targets) with the server and imports nothing from
digitserve.serve.

    from digitserve.client import Client, AsyncClient, TLS

client.py        Client and AsyncClient for digits.v1 and the KServe V2 API
messages.py      request building and result parsing for both APIs, the pixel encodings
errors.py        the ClientError tree, one class per gRPC status a caller acts on
options.py       --target and the TLS flags, the same for every client command
classify_cli.py  `digitserve classify`
health_cli.py    `digitserve health`
models_cli.py    `digitserve models`: the model repository's index, load and unload (operators)
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "APIS": "client", "ENCODINGS": "client", "Classification": "messages",
    "Client": "client", "AsyncClient": "client", "TLS": "client", "RetryPolicy": "retries",
    "ClientError": "errors", "DeadlineExceeded": "errors", "FailedPrecondition": "errors",
    "InvalidArgument": "errors", "NotFound": "errors", "ResourceExhausted": "errors",
    "Unavailable": "errors", "Unimplemented": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import lazily, so `digitserve classify --help` works before grpc is loaded."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitserve.client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"digitserve.client.{_EXPORTS[name]}"), name)
