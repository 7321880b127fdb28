"""docs/deploy.md agrees with the compose file, the manifests and the CLI.

Every command in its code blocks is checked against what it names: `docker compose` profiles
and services, `docker run` networks and images, `kubectl` files and objects, and each
`digitserve …` command line through the real argparse parser; every localhost URL or port it
gives is one the compose file publishes; every DIGITSERVE_ variable it names is a real one.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from digitserve.cli import COMMANDS
from tests.deploy.deploy_files import K8S_DIR, ROOT, k8s_resources, parse_cli, published_ports, unknown_variables

DEPLOY_DOC = ROOT / "docs" / "deploy.md"
PLACEHOLDER = "DIGITSERVE_SOME_FLAG"  # how the docs write "the variable of --some-flag"
K8S_SHORT_KINDS = {"job": "Job", "deployment": "Deployment", "service": "Service", "hpa": "HorizontalPodAutoscaler",
                   "pdb": "PodDisruptionBudget", "configmap": "ConfigMap", "pvc": "PersistentVolumeClaim"}


def command_lines(section: str) -> list[str]:
    blocks = re.findall(r"^```(?:sh|bash|shell)?\n(.*?)^```", section, flags=re.M | re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line.rstrip("&").strip())
    return lines


def problems_in(section: str, compose: dict[str, Any]) -> list[str]:
    """Everything in a Deploy section that disagrees with the files; empty when all agree."""
    services = compose["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    images = {s["image"] for s in services.values()}
    network = compose["networks"]["default"]["name"]
    ports = {host for s in services.values() for host in published_ports(s).values()}
    server_port = int(next(iter(published_ports(services["server"]))))
    objects = {(kind, name) for kind, name in k8s_resources()}
    problems = []

    for port in re.findall(r"localhost:(\d+)", section):
        if int(port) not in ports:
            problems.append(f"localhost:{port} is not a port docker-compose.yml publishes")
    for port in re.findall(r"\bserver:(\d+)", section):
        if int(port) != server_port:
            problems.append(f"server:{port}: the server listens on {server_port}")
    for name in sorted(set(re.findall(r"\bDIGITSERVE_[A-Z0-9_]+\b", section)) - {PLACEHOLDER}):
        if unknown_variables([name], list(COMMANDS)):
            problems.append(f"{name} is no digitserve setting")

    for line in command_lines(section):
        words = shlex.split(line)
        if words[:2] == ["docker", "compose"] or words[:1] == ["docker-compose"]:
            rest = words[2:] if words[0] == "docker" else words[1:]
            for i, word in enumerate(rest):
                if word == "--profile" and rest[i + 1] not in profiles:
                    problems.append(f"{line}: no profile {rest[i + 1]}")
            if "up" in rest:
                named = [w for w in rest[rest.index("up") + 1:] if not w.startswith("-")]
                problems += [f"{line}: no service {w}" for w in named if w not in services]
            if "run" in rest:
                after = [w for w in rest[rest.index("run") + 1:] if not w.startswith("-")]
                if after[0] not in services:
                    problems.append(f"{line}: no service {after[0]}")
        if words[:2] == ["docker", "run"]:
            if "--network" in words and words[words.index("--network") + 1] != network:
                problems.append(f"{line}: the stack's network is {network}")
            image = next((w for w in words if ":" in w and w.split(":")[0].startswith("digitserve/")), None)
            if image not in images:
                problems.append(f"{line}: {image} is not an image of the compose file")
        if words[:1] == ["kubectl"]:
            for flag in ("-k", "-f"):
                if flag in words and not (ROOT / words[words.index(flag) + 1]).exists():
                    problems.append(f"{line}: no {words[words.index(flag) + 1]}")
            for kind, name in re.findall(r"\b(job|deployment|service|hpa|pdb|configmap|pvc)[/ ]([a-z0-9-]+)", line):
                if (K8S_SHORT_KINDS[kind], name) not in objects:
                    problems.append(f"{line}: no {K8S_SHORT_KINDS[kind]} {name} in deploy/k8s")
        for i, word in enumerate(words):
            if word == "digitserve" and i + 1 < len(words) and words[i + 1] in COMMANDS:
                try:
                    parse_cli(words[i + 1:], {})
                except AssertionError as exc:
                    problems.append(f"{line}: {exc}")
            if word == "digitserve-model-job" and set(words[i + 1:]) - {"--retrain"}:
                problems.append(f"{line}: digitserve-model-job takes only --retrain")
    return problems


def test_the_deploy_doc_agrees_with_the_files(compose: dict[str, Any]) -> None:
    text = DEPLOY_DOC.read_text()
    assert not problems_in(text, compose), "\n".join(problems_in(text, compose))
    for needed in ("docker compose up", "--profile gpu", "http://localhost:8080/", "kubectl apply -k deploy/k8s",
                   "No image was built"):
        assert needed in text, f"docs/deploy.md should say {needed!r}"


def test_the_checker_finds_disagreements(compose: dict[str, Any]) -> None:
    wrong = """## Deploy
```sh
docker compose --profile tpu up servr
docker run --rm --network other digitserve/serve:0.1.0 digitserve health --targt server:50052
kubectl -n digitserve wait --for=condition=complete job/trainer
```
Open http://localhost:8081/ and set DIGITSERVE_MAX_BATCH.
"""
    found = "\n".join(problems_in(wrong, compose))
    for expected in ("no profile tpu", "no service servr", "network is digitserve", "--targt",
                     "server:50052", "no Job trainer", "localhost:8081", "DIGITSERVE_MAX_BATCH"):
        assert expected in found, f"missed {expected!r} in:\n{found}"
    assert (K8S_DIR / "kustomization.yaml").is_file()
