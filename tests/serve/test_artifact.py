"""`--artifact onnx-int8`: a real server process serves the int8 ONNX of a real export, gives
in-process ONNX Runtime's answers on that file, says which artifact it serves (log, V2
metadata, metric), checks it as it checks the float one, and refuses to start without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from digitserve.client import Client
from digitserve.errors import ModelRepositoryError
from digitserve.repository import ModelRepository
from digitserve.serve.model import load_model
from digitserve.serve.settings import ServeSettings
from digitserve.wire.proto import grpc_service_pb2 as v2
from digitserve.wire.proto import grpc_service_pb2_grpc
from tests.support.images import Images
from tests.support.server import Servers


@pytest.fixture(scope="module")
def int8_repo(tmp_path_factory: pytest.TempPathFactory, exported_repo: Path, mnist_dir: Path) -> Path:
    """A copy of the exported repository with onnx-int8 added (`digitserve export --formats onnx-int8`)."""
    from digitserve.export import export_version

    root = tmp_path_factory.mktemp("int8-serve-repo")
    shutil.copytree(exported_repo, root, dirs_exist_ok=True, symlinks=True)
    export_version(root, "digits", 1, formats="onnx-int8", data=str(mnist_dir))
    return root


def test_serves_the_int8_file_with_onnxruntimes_answers_and_says_so(
    servers: Servers, int8_repo: Path, mnist_images: Images
) -> None:
    artifact = ModelRepository(int8_repo, "digits").read_manifest(1).artifacts["onnx-int8"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the test server runs it
    session = ort.InferenceSession(str(int8_repo / "digits" / "1" / artifact.path), options,
                                   providers=["CPUExecutionProvider"])
    pixels = mnist_images.pixels[:256]
    expected = session.run(["probabilities"], {"pixels": pixels})[0]

    server = servers.serve("--repo", str(int8_repo), "--artifact", "onnx-int8").wait_serving()
    assert "model_int8.onnx on CPUExecutionProvider (artifact onnx-int8;" in server.log()
    with Client(server.target) as client:
        got = client.classify(pixels).probabilities
        extensions = client.server_metadata()["extensions"]
    with grpc.insecure_channel(server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelMetadata.with_call(v2.ModelMetadataRequest(name="digits"), timeout=30)
        trailer = dict(call.trailing_metadata())
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    assert "artifact:onnx-int8" in extensions
    assert trailer["digitserve-artifact"] == "onnx-int8"
    assert server.metric("digitserve_artifact", artifact="onnx-int8") == 1


def test_the_float_model_stays_the_default(servers: Servers, int8_repo: Path) -> None:
    server = servers.serve("--repo", str(int8_repo)).wait_serving()
    assert "model.onnx on CPUExecutionProvider (artifact onnx;" in server.log()
    assert server.metric("digitserve_artifact", artifact="onnx") == 1
    assert server.metric("digitserve_artifact", artifact="onnx-int8") == 0


def test_a_version_without_it_is_a_start_error_naming_the_fix(servers: Servers, exported_repo: Path) -> None:
    server = servers.serve("--repo", str(exported_repo), "--artifact", "onnx-int8")
    assert server.wait(60) == 1
    assert "has no artifacts.onnx-int8 entry" in server.log()
    assert "digitserve export --version 1 --formats onnx-int8" in server.log()
    assert "Traceback" not in server.log()


def test_its_sha256_is_checked_like_the_float_ones(tmp_path: Path, int8_repo: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(int8_repo, root, symlinks=True)
    file = root / "digits" / "1" / "onnx" / "model_int8.onnx"
    data = file.read_bytes()
    file.unlink()  # a link into the shared copy: replace it, never write through it
    file.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    settings = ServeSettings(repo=root, device="cpu", intra_op_threads=1, artifact="onnx-int8")
    with pytest.raises(ModelRepositoryError, match="model_int8.onnx has sha256 .* corrupt or was replaced"):
        load_model(settings)
    assert load_model(settings.model_copy(update={"artifact": "onnx"})).info.artifact == "onnx"
