"""deploy/k8s and deploy/kserve: valid Kubernetes objects that agree with the CLI and compose.

kubernetes-validate checks each manifest offline against the JSON schemas of the Kubernetes API
(strict: unknown fields fail), at the oldest version the manifests rely on and at the newest it
ships. It knows no CRDs, so the KServe InferenceService is checked in parts: its pod-level
fields and container against the Kubernetes PodSpec/Container schemas, its KServe fields
against the v1beta1 predictor field list below.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from digitserve.serve.cli import settings_from_args
from tests.deploy.deploy_files import (
    K8S_DIR,
    KSERVE_FILE,
    PROJECT_VERSION,
    SERVE_DOCKERFILE,
    TRAIN_DOCKERFILE,
    container_env,
    cpu_cores,
    dockerfile_stages,
    k8s_resources,
    load_documents,
    parse_cli,
    prestop_seconds,
    service_env,
    unknown_variables,
)
from tests.support.commands import clean_env, require_tool

# 1.30: the oldest release these manifests are written for (native gRPC probes are GA since
# 1.27, appProtocol kubernetes.io/h2c is a standard value since 1.29).
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
MANIFESTS = sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")
POD_LABELS = {"app.kubernetes.io/name": "digitserve", "app.kubernetes.io/component": "server"}
# Fields of a KServe v1beta1 PredictorSpec that are not PodSpec fields (ComponentExtensionSpec
# and the framework/model specs). Unknown names in the manifest fail the test.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels",
    "annotations", "deploymentStrategy", "workerSpec", "model", "sklearn", "xgboost", "tensorflow",
    "pytorch", "triton", "onnx", "huggingface", "pmml", "lightgbm", "paddle", "storageUri",
}


def test_every_manifest_is_valid_kubernetes() -> None:
    failures = []
    for path in MANIFESTS:
        for doc in load_documents(path):
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    where = ".".join(str(p) for p in exc.path)
                    failures.append(f"{path.name} {doc['kind']} @ {version}: {where}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_the_validation_catches_a_misspelt_field() -> None:
    (deployment,) = load_documents(K8S_DIR / "deployment.yaml")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["grpc"]["servcie"] = "digits.v1.Classifier"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]
    assert {image["name"] for image in kustomization["images"]} == {"digitserve/serve", "digitserve/train"}
    assert all(image["newTag"] == PROJECT_VERSION for image in kustomization["images"])


def test_kustomize_builds_valid_objects() -> None:
    kubectl = require_tool("kubectl")
    result = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    docs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(docs) == len(k8s_resources())
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[0], strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "digitserve"


# -- consistency -------------------------------------------------------------------------------------
@cache
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    return k8s_resources()


def config_maps() -> dict[str, dict[str, str]]:
    return {name: doc["data"] for (kind, name), doc in resources().items() if kind == "ConfigMap"}


def pod_spec() -> dict[str, Any]:
    return resources()[("Deployment", "digitserve")]["spec"]["template"]["spec"]


def server_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    return container


def test_server_settings_are_real_flags_with_valid_values() -> None:
    container = server_container()
    env = container_env(container, config_maps())
    assert container["command"] == ["digitserve", "serve"]
    assert unknown_variables(list(env), ["serve"]) == []
    settings = settings_from_args(parse_cli(["serve"], env))
    assert settings.host == "0.0.0.0"
    # ONNX Runtime sizes its pools from the node's cores unless told: tell it the pod's limit.
    threads = settings.intra_op_threads * settings.instances
    assert 0 < threads <= cpu_cores(container["resources"]["limits"]["cpu"])


def test_ports_probes_and_service_agree_with_the_settings() -> None:
    container = server_container()
    settings = settings_from_args(parse_cli(["serve"], container_env(container, config_maps())))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": settings.port, "metrics": settings.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == settings.port, f"{probe} must use the gRPC health service"
        assert "httpGet" not in container[probe] and "exec" not in container[probe]
    template = resources()[("Deployment", "digitserve")]["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(settings.metrics_port)

    for name in ("digitserve", "digitserve-headless"):
        service = resources()[("Service", name)]["spec"]
        assert service["selector"] == POD_LABELS
        grpc_port = next(port for port in service["ports"] if port["name"] == "grpc")
        assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
        assert grpc_port["targetPort"] == "grpc" and grpc_port["port"] == settings.port
    assert resources()[("Service", "digitserve-headless")]["spec"]["clusterIP"] == "None"


def test_termination_grace_covers_the_lame_duck_and_the_server_grace() -> None:
    container = server_container()
    settings = settings_from_args(parse_cli(["serve"], container_env(container, config_maps())))
    assert settings.drain_delay_seconds > 0, "a lame duck lets endpoint removal spread before refusals"
    assert prestop_seconds(container) == 0, "the lame duck replaces the preStop sleep"
    assert pod_spec()["terminationGracePeriodSeconds"] >= settings.drain_delay_seconds + settings.grace_seconds + 2


def test_scaling_and_disruption_target_the_server_pods() -> None:
    deployment = resources()[("Deployment", "digitserve")]
    assert deployment["spec"]["selector"]["matchLabels"] == POD_LABELS
    assert POD_LABELS.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    hpa = resources()[("HorizontalPodAutoscaler", "digitserve")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "digitserve"}
    assert hpa["spec"]["minReplicas"] >= 2, "one pod left alone cannot be drained without an outage"
    assert "requests" in server_container()["resources"], "CPU utilisation is measured against requests"
    pdb = resources()[("PodDisruptionBudget", "digitserve")]
    assert pdb["spec"]["selector"]["matchLabels"] == POD_LABELS
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_model_repository_volume_is_shared_read_only() -> None:
    env = container_env(server_container(), config_maps())
    claim = resources()[("PersistentVolumeClaim", "digitserve-models")]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    volumes = {volume["name"]: volume for volume in pod_spec()["volumes"]}
    for container in [*pod_spec()["initContainers"], server_container()]:
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["DIGITSERVE_REPO"]]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "digitserve-models"

    job = resources()[("Job", "digitserve-model-job")]["spec"]["template"]["spec"]
    (trainer,) = job["containers"]
    job_env = container_env(trainer, config_maps())
    assert trainer["command"] == ["digitserve-model-job"]
    assert unknown_variables(list(job_env), ["train", "export"]) == []
    parse_cli(["train"], job_env), parse_cli(["export"], job_env)
    (mount,) = [m for m in trainer["volumeMounts"] if m["mountPath"] == job_env["DIGITSERVE_REPO"]]
    assert not mount.get("readOnly")
    job_volumes = {volume["name"]: volume for volume in job["volumes"]}
    assert job_volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "digitserve-models"
    assert (job_env["DIGITSERVE_REPO"], job_env["DIGITSERVE_NAME"]) == (env["DIGITSERVE_REPO"], env["DIGITSERVE_NAME"])


def test_pods_run_as_the_images_user() -> None:
    job = resources()[("Job", "digitserve-model-job")]["spec"]["template"]["spec"]
    for dockerfile, spec in ((SERVE_DOCKERFILE, pod_spec()), (TRAIN_DOCKERFILE, job)):
        _, stages = dockerfile_stages(dockerfile)
        users = {user for stage in stages for user in stage.all("USER")}
        assert users == {f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsGroup']}"}
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_images_are_the_projects() -> None:
    images = [c["image"] for c in [*pod_spec()["initContainers"], server_container()]]
    assert images == [f"digitserve/serve:{PROJECT_VERSION}"] * 2
    job = resources()[("Job", "digitserve-model-job")]["spec"]["template"]["spec"]
    assert job["containers"][0]["image"] == f"digitserve/train:{PROJECT_VERSION}"


def test_kubernetes_and_compose_run_the_same_server(compose: dict[str, Any]) -> None:
    """Same port, metrics port, model, batching and grace in both; only container-local paths
    and the thread count (pinned to the pod's CPU limit) may be set in one of them only."""
    k8s = container_env(server_container(), config_maps())
    local = service_env(compose["services"]["server"])
    shared = set(k8s) & set(local)
    assert {key: k8s[key] for key in shared} == {key: local[key] for key in shared}
    assert set(k8s) ^ set(local) <= {"DIGITSERVE_INTRA_OP_THREADS"}


# -- the init container's wait, run for real ------------------------------------------------------------
def test_init_container_waits_for_an_exported_version(tmp_path: Path, job_repo: Any, serving_venv: Path) -> None:
    """Its command, run by the serving image's Python (the install made as the image makes it)."""
    (init,) = pod_spec()["initContainers"]
    assert init["image"] == server_container()["image"]
    env = clean_env(**container_env(init, config_maps()))
    env["PATH"] = f"{serving_venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    command = init["command"]

    empty = subprocess.Popen(command, env={**env, "DIGITSERVE_REPO": str(tmp_path)},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            empty.wait(2)  # still waiting: no version yet
    finally:
        empty.kill()
        output = empty.communicate()[0]
    assert "waiting for an exported version" in output

    assert job_repo.returncode == 0, job_repo.log
    done = subprocess.run(command, env={**env, "DIGITSERVE_REPO": str(job_repo.repo)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "version 1 is exported" in done.stdout


# -- KServe --------------------------------------------------------------------------------------------
@cache
def kubernetes_schema(kind_file: str, version: str = K8S_VERSIONS[0]) -> Draft202012Validator:
    """A validator for one Kubernetes type (e.g. podspec-v1.json), strict, from kubernetes-validate."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    schema = json.loads((folder / kind_file).read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return Draft202012Validator(schema, registry=registry)


def kserve() -> dict[str, Any]:
    (doc,) = load_documents(KSERVE_FILE)
    return doc


def test_inferenceservice_structure() -> None:
    isvc = kserve()
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(isvc["spec"]) == {"predictor"}
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = isvc["spec"]["predictor"]
    pod_fields = set(kubernetes_schema("podspec-v1.json").schema["properties"])
    unknown = set(predictor) - pod_fields - KSERVE_PREDICTOR_FIELDS
    assert not unknown, f"not PodSpec nor KServe predictor fields: {unknown}"
    assert predictor["scaleMetric"] in ("cpu", "memory", "concurrency", "rps")
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]

    # Everything that is a PodSpec field must be a valid PodSpec (containers, probes, security).
    pod = {key: value for key, value in predictor.items() if key in pod_fields}
    errors = sorted(kubernetes_schema("podspec-v1.json").iter_errors(pod), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_inferenceservice_runs_our_server_speaking_grpc() -> None:
    predictor = kserve()["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == f"digitserve/serve:{PROJECT_VERSION}"
    env = container_env(container, {})
    storage = env.pop("STORAGE_URI")
    assert storage == "pvc://digitserve-models", "the PVC the Kubernetes model Job fills"
    assert unknown_variables(list(env), ["serve"]) == []
    settings = settings_from_args(parse_cli(container["command"][1:], env))
    assert str(settings.repo) == "/mnt/models", "KServe mounts STORAGE_URI at /mnt/models"
    assert settings.host == "0.0.0.0"
    (port,) = container["ports"]
    assert port == {"name": "h2c", "containerPort": settings.port, "protocol": "TCP"}, \
        "KServe recognises a gRPC (HTTP/2) predictor port by the name h2c"
    assert container["readinessProbe"]["grpc"]["port"] == settings.port
    assert prestop_seconds(container) == 0 and settings.drain_delay_seconds > 0
    assert predictor["terminationGracePeriodSeconds"] >= settings.drain_delay_seconds + settings.grace_seconds + 2
    # the same server as the Deployment: name, port, grace, device
    k8s = container_env(server_container(), config_maps())
    for key in ("DIGITSERVE_NAME", "DIGITSERVE_PORT", "DIGITSERVE_METRICS_PORT", "DIGITSERVE_GRACE_SECONDS",
                "DIGITSERVE_DRAIN_DELAY_SECONDS",
                "DIGITSERVE_DEVICE", "DIGITSERVE_INTRA_OP_THREADS"):
        assert env[key] == k8s[key], key
