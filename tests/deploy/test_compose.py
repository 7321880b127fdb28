"""docker-compose.yml: valid for docker-compose, and every service agrees with the CLI it runs.

`docker-compose config` (Debian's 1.29; no engine needed) validates the file against the compose
schema and resolves it; the checks below then run each service's command and environment
through the real argparse parser of the subcommand it starts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from digitserve.serve.cli import settings_from_args
from tests.deploy.deploy_files import (
    COMPOSE_FILE,
    NON_FLAG_VARIABLES,
    PROJECT_VERSION,
    ROOT,
    dockerfile_stages,
    env_of,
    mounts,
    parse_cli,
    published_ports,
    run_compose,
    service_env,
    source_mentions,
    stage_chain,
    unknown_variables,
)
from tests.support.commands import require_tool

SERVERS = ("server", "server-gpu")


def test_compose_file_is_valid() -> None:
    require_tool("docker-compose")
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr
    for profile in ("gpu", "monitoring"):
        result = run_compose("--profile", profile, "config", "-q")
        assert result.returncode == 0, f"--profile {profile}: {result.stderr}"


def test_docker_compose_rejects_what_is_wrong(tmp_path: Path) -> None:
    """The validation above means something: a misspelt key in our own file makes it fail."""
    require_tool("docker-compose")
    broken = COMPOSE_FILE.read_text().replace("condition: service_completed_successfully",
                                              "condition: service_finished", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    import subprocess

    result = subprocess.run(["docker-compose", "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode != 0 and "service_finished" in result.stderr


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"train", "server", "server-gpu", "web", "prometheus"}
    assert "profiles" not in services["server"] and "profiles" not in services["web"]
    assert services["server-gpu"]["profiles"] == ["gpu"]
    assert services["prometheus"]["profiles"] == ["monitoring"]


@pytest.mark.parametrize("name", SERVERS)
def test_server_settings_are_real_flags_with_valid_values(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    env = service_env(service)
    assert service["command"] == ["digitserve", "serve"]
    assert unknown_variables(list(env), ["serve"]) == []
    args = parse_cli(service["command"][1:], env)
    settings = settings_from_args(args)  # the server's own validation of the combination
    assert settings.host == "0.0.0.0", "inside a container the server must listen on every interface"
    assert (settings.port, settings.metrics_port) == (int(env["DIGITSERVE_PORT"]), int(env["DIGITSERVE_METRICS_PORT"]))
    assert settings.device == ("cuda" if name == "server-gpu" else "cpu")


@pytest.mark.parametrize("name", SERVERS)
def test_server_ports_volume_healthcheck_and_lifecycle(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    settings = settings_from_args(parse_cli(["serve"], service_env(service)))
    assert published_ports(service) == {settings.port: 50051, settings.metrics_port: 8000}
    (models,) = [m for m in mounts(service) if m.source == "models"]
    assert models.target == str(settings.repo) and models.read_only
    assert service["depends_on"] == {"train": {"condition": "service_completed_successfully"}}
    assert service["restart"] == "unless-stopped"

    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:3] == ["digitserve", "health"]
    health = parse_cli(test[2:], {})
    assert health.target == f"127.0.0.1:{settings.port}"
    assert health.timeout < seconds(service["healthcheck"]["timeout"])

    # Docker sends SIGKILL after stop_grace_period: the lame duck and the grace must fit inside it.
    assert settings.drain_delay_seconds > 0
    assert seconds(service["stop_grace_period"]) >= settings.drain_delay_seconds + settings.grace_seconds + 2
    assert service["networks"]["default"]["aliases"] == ["server"]


def test_gpu_server_reserves_a_gpu_and_refuses_the_cpu(compose: dict[str, Any]) -> None:
    service = compose["services"]["server-gpu"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service_env(service)["DIGITSERVE_DEVICE"] == "cuda"
    assert service["build"]["target"] == "serve-gpu"
    cpu, gpu = service_env(compose["services"]["server"]), service_env(service)
    assert {k: v for k, v in cpu.items() if k != "DIGITSERVE_DEVICE"} == \
        {k: v for k, v in gpu.items() if k != "DIGITSERVE_DEVICE"}, "the two servers differ only in device"


def test_train_job_settings_and_volumes(compose: dict[str, Any]) -> None:
    service = compose["services"]["train"]
    env = service_env(service)
    assert service["command"] == ["digitserve-model-job"]
    assert unknown_variables(list(env), ["train", "export"]) == []
    train, export = parse_cli(["train"], env), parse_cli(["export"], env)
    assert train.repo == export.repo == env["DIGITSERVE_REPO"]
    assert train.model == "cnn", "the default compose model is the accurate one"
    by_target = {m.target: m for m in mounts(service)}
    assert by_target[train.repo].source == "models" and not by_target[train.repo].read_only
    assert by_target[train.data].read_only, "MNIST is mounted read-only where DIGITSERVE_DATA points"
    assert service["restart"] == "no" and service["init"] is True

    # The command is the script the training image installs under that name.
    _, stages = dockerfile_stages(ROOT / service["build"]["dockerfile"])
    copies = [args for stage in stages for args in stage.all("COPY")]
    assert any(args.endswith("deploy/docker/model-job.sh /usr/local/bin/digitserve-model-job") for args in copies)


def test_web_settings_ports_and_volume(compose: dict[str, Any]) -> None:
    service = compose["services"]["web"]
    env = service_env(service)
    assert service["command"] == ["digitserve", "web"]
    assert unknown_variables(list(env), ["web"]) == []
    args = parse_cli(["web"], env)
    assert args.host == "0.0.0.0"
    assert published_ports(service) == {args.port: 8080}
    (models,) = [m for m in mounts(service) if m.source == "models"]
    assert models.target == args.repo and models.read_only
    assert args.name == service_env(compose["services"]["server"])["DIGITSERVE_NAME"]
    # the page's TF.js is where the serving image puts it
    _, stages = dockerfile_stages(ROOT / service["build"]["dockerfile"])
    image_env = env_of(stage_chain(stages, service["build"]["target"]))
    assert str(args.node_modules) == image_env["DIGITSERVE_NODE_MODULES"]  # a Path, as WebSettings declares


def test_images_and_build_targets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name == "prometheus":
            assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", service["image"])
            continue
        build = service["build"]
        assert Path(build["context"]) == ROOT
        _, stages = dockerfile_stages(ROOT / build["dockerfile"])
        names = [stage.name for stage in stages]
        assert build.get("target", names[-1]) in names, f"{name}: no stage {build.get('target')}"
        assert service["image"].endswith(f":{PROJECT_VERSION}"), f"{name}: tag it with the project version"


def test_prometheus_scrapes_the_server_metrics_port(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    (config_mount,) = [m for m in mounts(service) if m.target == "/etc/prometheus/prometheus.yml"]
    assert config_mount.read_only
    config = yaml.safe_load(Path(config_mount.source).read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "digitserve"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    metrics_port = service_env(compose["services"]["server"])["DIGITSERVE_METRICS_PORT"]
    assert targets == [f"server:{metrics_port}"]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_every_variable_the_files_use_is_read_somewhere(compose: dict[str, Any]) -> None:
    """NON_FLAG_VARIABLES are allowed without a flag only because the code reads them by name."""
    for name in NON_FLAG_VARIABLES:
        assert source_mentions(name), f"nothing in the code reads {name}"
    names = {key for service in compose["services"].values() for key in service_env(service)}
    assert all(not key.startswith("DIGITSERVE") or key.startswith("DIGITSERVE_") for key in names)


def seconds(duration: str | int | float) -> float:
    """A compose duration ("15s", "1m30s", "500ms") in seconds."""
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts, f"not a duration: {duration!r}"
    return sum(float(value) * units[unit] for value, unit in parts)
