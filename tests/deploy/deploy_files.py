"""Read the deployment files the way their tools do, and the digitserve CLI they must agree with.

Shared by the tests in tests/deploy: the compose file as `docker-compose config` resolves it,
the Kubernetes manifests, the Dockerfiles' stages and instructions, .dockerignore matching,
and `parse_cli`, which runs the real argparse parser of a subcommand under a given environment.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from digitserve.cli import COMMANDS, ENV_PREFIX, build_parser
from tests.support.commands import environment, subparser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = DEPLOY / "k8s"
KSERVE_FILE = DEPLOY / "kserve" / "inferenceservice.yaml"
SERVE_DOCKERFILE = DEPLOY / "docker" / "serve.Dockerfile"
TRAIN_DOCKERFILE = DEPLOY / "docker" / "train.Dockerfile"
MODEL_JOB = DEPLOY / "docker" / "model-job.sh"
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Variables that are not CLI flags but that the code reads by these names (checked in the source).
NON_FLAG_VARIABLES = ("DIGITSERVE_DATA", "DIGITSERVE_NODE", "DIGITSERVE_NODE_MODULES")


# -- the CLI ----------------------------------------------------------------------------------------
def option_dests(command: str) -> set[str]:
    """The destinations of every option of `digitserve COMMAND`, and of the top-level options."""
    with environment({}):
        parser = build_parser(command)
    own = {a.dest for a in subparser(parser, command)._actions if a.option_strings}
    top = {a.dest for a in parser._actions if a.option_strings}
    return (own | top) - {"help", "version"}


def parse_cli(argv: list[str], env: Mapping[str, str]) -> argparse.Namespace:
    """`digitserve ARGV...` parsed by the real parser with `env` as the DIGITSERVE_* environment.

    A bad flag, or a variable whose value the flag's type rejects, fails the test with argparse's
    own message instead of exiting.
    """
    command = next(arg for arg in argv if arg in COMMANDS)
    with environment(env), contextlib.redirect_stderr(io.StringIO()) as stderr:
        try:
            return build_parser(command).parse_args(argv)
        except SystemExit:
            raise AssertionError(f"digitserve {' '.join(argv)} with {dict(env)}: "
                                 f"{stderr.getvalue().strip().splitlines()[-1]}") from None


def unknown_variables(names: list[str], commands: list[str]) -> list[str]:
    """DIGITSERVE_* names that are neither an option of one of `commands` nor a known variable."""
    dests = set().union(*(option_dests(c) for c in commands))
    return sorted(
        name for name in names
        if name.startswith(ENV_PREFIX)
        and name[len(ENV_PREFIX):].lower() not in dests
        and name not in NON_FLAG_VARIABLES
    )


def source_mentions(name: str) -> bool:
    """Whether digitserve's own code reads the variable `name` (a literal in a .py file)."""
    folders = ("src", "train", "export", "serve", "web", "bench")
    return any(name in path.read_text() for folder in folders for path in (ROOT / folder).rglob("*.py"))


# -- compose ---------------------------------------------------------------------------------------
def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose (1.29, no engine needed) on the project's compose file, with a clean env."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    for key in ("MNIST_DIR", "IMAGE_TAG", "COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME"):
        env.pop(key, None)
    return subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """container port -> host port, from either the short or the long (resolved) syntax."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
        else:
            host, _, container = str(entry).rpartition(":")
            ports[int(container)] = int(host.rpartition(":")[2])
    return ports


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    result = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            result.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
        else:
            parts = entry.split(":")
            mode = parts[2] if len(parts) > 2 else "rw"
            result.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
    return result


# -- Kubernetes ------------------------------------------------------------------------------------
def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> resource, for every manifest under deploy/k8s except the kustomization."""
    resources = {}
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_documents(path):
            resources[(doc["kind"], doc["metadata"]["name"])] = doc
    return resources


def container_env(container: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """A container's environment: its envFrom ConfigMaps, then its own env entries."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"])
    return env


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def prestop_seconds(container: Mapping[str, Any]) -> float:
    """How long the container's preStop hook sleeps (exec `sleep N` or the native sleep action)."""
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    return float(command[1]) if command[:1] == ["sleep"] else 0.0


# -- Dockerfiles -----------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, the stages in order) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            stages.append(Stage(name, base))
        elif instruction == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def stage_chain(stages: list[Stage], target: str) -> list[Stage]:
    """The target stage and the stages it is built FROM, base first."""
    by_name = {stage.name: stage for stage in stages}
    chain = [by_name[target]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def copy_sources(stage: Stage) -> list[str]:
    """Build-context paths a stage COPYs (COPY --from=... copies from another stage: left out)."""
    sources = []
    for args in stage.all("COPY"):
        words = shlex.split(args)
        if any(word.startswith("--from") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        sources.extend(paths[:-1])
    return sources


def env_of(chain: list[Stage]) -> dict[str, str]:
    """The ENV a stage ends with (KEY=VALUE pairs; inherited along its FROM chain)."""
    env: dict[str, str] = {}
    for stage in chain:
        for args in stage.all("ENV"):
            for word in shlex.split(args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def dockerignored(path: str, patterns_file: Path = ROOT / ".dockerignore") -> bool:
    """Whether .dockerignore keeps `path` (relative to the context) out of the build context."""
    ignored = False
    for raw in patterns_file.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        candidates = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        parts = Path(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, c) for prefix in prefixes for c in candidates):
            ignored = not negate
    return ignored
