"""Import layering: who may import whom, checked over the source the way import-linter would.

import-linter (grimp) only finds a package's modules under the package's own folder, and ours
are spread over stage folders by setuptools' package-dir mapping (train/ is digitserve.train),
so this builds the same graph itself: every `import` statement of every module, function-level
ones included, followed transitively through digitserve's own modules.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (source packages, forbidden prefixes, why): checked transitively.
CONTRACTS = [
    (
        ("digitserve.client", "digitserve.wire", "digitserve.train", "digitserve.export", "digitserve.web"),
        ("digitserve.serve",),
        "only the server and the benchmarks import the server",
    ),
    (
        ("digitserve.serve", "digitserve.client", "digitserve.wire"),
        ("tensorflow", "keras", "tf_keras", "tf2onnx", "tensorflowjs"),
        "the server, the client and the wire import no TensorFlow",
    ),
    (
        ("digitserve.client", "digitserve.wire"),
        ("onnxruntime", "prometheus_client", "grpc_reflection", "pydantic", "starlette", "uvicorn"),
        "a client-only install has none of the server's packages",
    ),
    (("digitserve.wire",), ("digitserve.client", "digitserve.bench"), "the wire depends on neither side"),
]


def package_folders() -> dict[str, Path]:
    """Package name -> folder, from pyproject's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    folders = {}
    for package in config["packages"]:
        parent, best = package, None
        while parent:  # the longest mapped prefix decides the folder
            if parent in mapping:
                best = parent
                break
            parent = parent.rpartition(".")[0]
        base = ROOT / (mapping[best] if best else mapping[""])
        rest = package[len(best) + 1:] if best else package
        folders[package] = base.joinpath(*rest.split(".")) if rest else base
    return folders


@cache
def modules() -> dict[str, Path]:
    """Every module of digitserve, dotted name -> file."""
    found = {}
    for package, folder in package_folders().items():
        for file in folder.glob("*.py"):
            found[package if file.stem == "__init__" else f"{package}.{file.stem}"] = file
    return found


def imports_of(name: str) -> Iterator[str]:
    file = modules()[name]
    is_package = file.stem == "__init__"
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # `from pkg import mod`


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(name)) for name in modules()}


def reaches(source: str, forbidden: tuple[str, ...]) -> list[str] | None:
    """The import chain from `source` to a forbidden module, or None."""
    chains = {source: [source]}
    todo = [source]
    while todo:
        current = todo.pop()
        for target in sorted(graph().get(current, ())):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                return [*chains[current], target]
            if target in modules() and target not in chains:
                chains[target] = [*chains[current], target]
                todo.append(target)
    return None


@pytest.mark.parametrize(("sources", "forbidden", "why"), CONTRACTS, ids=[c[2] for c in CONTRACTS])
def test_layering_contract(sources: tuple[str, ...], forbidden: tuple[str, ...], why: str) -> None:
    checked = [m for m in modules() if any(m == s or m.startswith(s + ".") for s in sources)]
    assert checked, f"no modules found for {sources}"
    broken = [" -> ".join(chain) for m in checked if (chain := reaches(m, forbidden))]
    assert not broken, f"{why}, but:\n" + "\n".join(broken)


def test_the_checker_sees_a_violation() -> None:
    """The graph is real: the server does reach onnxruntime, and the CLI reaches every stage."""
    assert reaches("digitserve.serve.server", ("onnxruntime",)) is not None
    assert {"digitserve.train", "digitserve.client", "digitserve.serve"} <= {
        m.rpartition(".")[0] for m in modules() if m.count(".") == 2
    }
