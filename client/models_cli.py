"""`digitserve models`: the model repository of a running server, for operators.

    digitserve models index [--ready] [--json]     # one row per model version: model, version, state, reason
    digitserve models load NAME [--version N]      # serve a model per its policy, or pin version N
    digitserve models unload NAME

These are the KServe V2 model repository calls (Triton's RepositoryIndex, RepositoryModelLoad and
RepositoryModelUnload), so they work against Triton too. Load and unload need a server started
with `--model-control explicit`: an operator API, never to face the internet. Exit 0 on success;
1 when the server refuses (its message is printed) or cannot be reached; 2 for bad usage.
Imports nothing heavy at module level: grpc loads inside `run`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from digitserve.cli import positive_float, positive_int
from digitserve.client.options import add_target_option, add_tls_options, tls_of

HEADER = ("MODEL", "VERSION", "STATE", "REASON")
RPC_OF_ACTION = {"index": "RepositoryIndex", "load": "RepositoryModelLoad", "unload": "RepositoryModelUnload"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List, load and unload the models of a running server's repository (the KServe V2 model "
        "repository extension). load and unload need a server started with --model-control explicit."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    index = actions.add_parser("index", help="list the repository's models and their state",
                               description="List the models of the server's repository: model, version, state, reason.")
    index.add_argument("--ready", action="store_true", help="only the models ready for inference")
    index.add_argument("--json", action="store_true", help="print the entries as one JSON document")
    index.set_defaults(models_run=_index)

    load = actions.add_parser("load", help="serve a model per its policy, or pin one version",
                              description="Serve a model of the server's repository per its version policy, or exactly "
                              "--version N (a pin). Again on a loaded model: picks up new versions and policy "
                              "changes; versions already in memory are not read again.")
    load.add_argument("name", metavar="NAME", help="the model's name in the repository")
    load.add_argument("--version", type=positive_int, metavar="N",
                      help="load this version (default: the newest in the repository)")
    load.set_defaults(models_run=_load)

    unload = actions.add_parser("unload", help="unload a model", description="Unload a model from the server.")
    unload.add_argument("name", metavar="NAME", help="the model's name in the repository")
    unload.set_defaults(models_run=_unload)

    for sub in (index, load, unload):
        add_target_option(sub)
        sub.add_argument(
            "--timeout", type=positive_float, default=60.0, metavar="SECONDS",
            help="deadline of the call; a load includes the model's warm-up (default: %(default)s)",
        )
        add_tls_options(sub)


def table(rows: list[dict[str, str]]) -> list[str]:
    """The index as aligned text lines, a header first (the reason column is not padded)."""
    cells = [HEADER, *((row["name"], row["version"] or "-", row["state"], row["reason"]) for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER) - 1)]
    padded = (" ".join(f"{cell:<{width}} " for cell, width in zip(line, widths, strict=False)) for line in cells)
    return [(left + " " + line[-1]).rstrip() for left, line in zip(padded, cells, strict=True)]


def _index(client: Any, args: argparse.Namespace) -> int:
    rows = client.repository_index(ready=args.ready)
    if args.json:
        print(json.dumps({"target": args.target, "models": rows}, indent=2))
    elif not rows:
        print(f"{args.target}: no {'ready ' if args.ready else ''}models")
    else:
        print("\n".join(table(rows)))
    return 0


def _load(client: Any, args: argparse.Namespace) -> int:
    client.load_model(args.name, args.version)
    what = args.name if args.version is None else f"{args.name} version {args.version}"
    print(f"{args.target}: loaded {what}")
    return 0


def _unload(client: Any, args: argparse.Namespace) -> int:
    client.unload_model(args.name)
    print(f"{args.target}: unloaded {args.name}")
    return 0


def run(args: argparse.Namespace) -> int:
    tls = tls_of(args)  # misused TLS flags are a usage error before anything connects

    from digitserve.client import Client, Unimplemented

    with Client(args.target, api="v2", timeout=args.timeout, tls=tls) as client:
        try:
            return int(args.models_run(client, args))
        except Unimplemented as exc:
            rpc = RPC_OF_ACTION[args.action]
            raise Unimplemented(
                f"{args.target}: the server does not implement {rpc} (the model repository extension): "
                f"it is an older digitserve, or another server without it ({exc.details or 'UNIMPLEMENTED'})",
                exc.code, exc.details,
            ) from exc
