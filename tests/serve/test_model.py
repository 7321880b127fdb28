"""Loading a model version: sha256 check, contract check, warm-up, device policy, settings."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from digitserve.errors import ModelRepositoryError, UsageError
from digitserve.serve.errors import DeviceUnavailable
from digitserve.serve.model import check_providers, load_model
from digitserve.serve.settings import ServeSettings
from tests.serve.serve_models import Weights, random_weights, write_version

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def settings(repo: Path, **changes: object) -> ServeSettings:
    return ServeSettings(repo=repo, device="cpu", intra_op_threads=1, **changes)  # type: ignore[arg-type]


def test_loads_the_newest_complete_version_and_matches_the_weights(tmp_path: Path) -> None:
    w1, w3 = random_weights(1), random_weights(3)
    write_version(tmp_path, 1, w1)
    write_version(tmp_path, 3, w3)
    write_version(tmp_path, 4, random_weights(4), manifest=False)  # being exported: ignored
    model = load_model(settings(tmp_path))
    assert model.info.version == 3 and model.info.provider == "CPUExecutionProvider"
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    np.testing.assert_allclose(model.run(x), w3.predict(x), atol=1e-5)
    assert load_model(settings(tmp_path), version=1).info.version == 1


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    write_version(tmp_path, 1, random_weights(0), bad_sha256=True)
    with pytest.raises(ModelRepositoryError, match="has sha256 [0-9a-f]{64}, but the manifest says 0{64}"):
        load_model(settings(tmp_path))


def test_file_changed_after_export_is_refused(tmp_path: Path) -> None:
    folder = write_version(tmp_path, 1, random_weights(0))
    (folder / "onnx" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelRepositoryError, match="corrupt or was replaced"):
        load_model(settings(tmp_path))


def test_truncated_model_with_a_truthful_manifest_is_refused(tmp_path: Path) -> None:
    write_version(tmp_path, 1, random_weights(0), truncate=True)
    with pytest.raises(ModelRepositoryError, match="ONNX Runtime cannot load .*model.onnx"):
        load_model(settings(tmp_path))


def test_no_exported_version_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelRepositoryError, match="no exported model version"):
        load_model(settings(tmp_path))


def test_manifest_without_onnx_artifact(tmp_path: Path) -> None:
    folder = write_version(tmp_path, 1, random_weights(0))
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["artifacts"]["onnx"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRepositoryError, match="no artifacts.onnx entry"):
        load_model(settings(tmp_path))


def test_artifact_path_outside_the_version_is_refused(tmp_path: Path) -> None:
    folder = write_version(tmp_path, 1, random_weights(0))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["onnx"]["path"] = "../../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRepositoryError, match="points outside"):
        load_model(settings(tmp_path))


def test_a_model_breaking_the_input_contract_is_refused(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)],
        "wrong",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = write_version(tmp_path, 1, random_weights(0))
    data = model.SerializeToString()
    (folder / "onnx" / "model.onnx").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRepositoryError, match="expected one input 'pixels'.*found \\[\\('image'"):
        load_model(settings(tmp_path))
    assert onnx.load_from_string(data).graph.input[0].name == "image"


def test_warm_up_rejects_outputs_that_are_not_probabilities(tmp_path: Path) -> None:
    huge = Weights(np.full((784, 10), 0.0, np.float32), np.zeros(10, np.float32))
    folder = write_version(tmp_path, 1, huge)
    # replace Softmax by Identity: outputs no longer sum to 1
    model = onnx.load(folder / "onnx" / "model.onnx")
    for node in model.graph.node:
        if node.op_type == "Softmax":
            node.op_type = "Identity"
            del node.attribute[:]
    data = model.SerializeToString()
    (folder / "onnx" / "model.onnx").write_bytes(data)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["onnx"]["sha256"] = hashlib.sha256(data).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelRepositoryError, match="do not sum to 1"):
        load_model(settings(tmp_path))


def test_instances_each_get_a_session(tmp_path: Path) -> None:
    write_version(tmp_path, 1, random_weights(0))
    model = load_model(settings(tmp_path, instances=2))
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    assert model.instances == 2
    np.testing.assert_array_equal(model.run(x, 0), model.run(x, 1))


@pytest.mark.skipif(HAS_CUDA, reason="checks the GPU-less failure; this onnxruntime has CUDA")
def test_device_cuda_without_cuda_fails_clearly(tmp_path: Path) -> None:
    write_version(tmp_path, 1, random_weights(0))
    with pytest.raises(DeviceUnavailable, match="--device cuda: .* has no CUDAExecutionProvider"):
        load_model(ServeSettings(repo=tmp_path, device="cuda"))


@pytest.mark.skipif(HAS_CUDA, reason="checks the GPU-less path; this onnxruntime has CUDA")
def test_device_auto_without_cuda_says_it_uses_the_cpu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_version(tmp_path, 1, random_weights(0))
    with caplog.at_level(logging.INFO, logger="digitserve.serve.model"):
        model = load_model(ServeSettings(repo=tmp_path, device="auto", intra_op_threads=1))
    assert model.info.provider == "CPUExecutionProvider"
    assert "using the CPU" in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"device": "gpu"}, "--device must be one of auto, cuda, cpu"),
        ({"max_queue_images": 10, "max_request_images": 20}, "could never be queued"),
        ({"tls_cert": Path("c.pem")}, "--tls-cert and --tls-key go together"),
        ({"tls_client_ca": Path("ca.pem")}, "needs --tls-cert"),
        ({"instances": 0}, "--instances must be at least 1"),
        ({"graph_optimization": "max"}, "--graph-optimization must be one of"),
    ],
)
def test_settings_refuse_what_cannot_work(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ServeSettings(**changes)  # type: ignore[arg-type]


def test_max_message_size_follows_the_request_limit() -> None:
    small, big = ServeSettings(max_request_images=10), ServeSettings(max_request_images=1000)
    assert small.max_message_bytes >= 10 * 784 * 4
    assert big.max_message_bytes - small.max_message_bytes == 990 * 784 * 4


@pytest.mark.skipif(
    "AzureExecutionProvider" not in ort.get_available_providers(), reason="needs a second provider to mix"
)
def test_every_instance_must_run_on_the_first_ones_provider(tmp_path: Path) -> None:
    # Without a GPU, CUDA cannot be made to drop out of one session; two real sessions on
    # different providers (the CPU build's Azure provider) stand for that case.
    data = (write_version(tmp_path, 1, random_weights(0)) / "onnx" / "model.onnx").read_bytes()
    cpu = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    other = ort.InferenceSession(data, providers=["AzureExecutionProvider", "CPUExecutionProvider"])
    assert other.get_providers()[0] != "CPUExecutionProvider", "the sessions do not differ: nothing was tested"
    check_providers([cpu, cpu], settings(tmp_path))
    message = "instance 2 of 3 runs on AzureExecutionProvider, not CPUExecutionProvider"
    with pytest.raises(DeviceUnavailable, match=message):
        check_providers([cpu, cpu, other], settings(tmp_path, instances=3))
