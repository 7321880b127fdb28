"""The server on a version made by the real pipeline (`digitserve train` + `digitserve export`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from digitserve.repository import ModelRepository
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.support.images import Images


def test_serves_an_exported_version_with_onnxruntimes_predictions(
    make_server: Callable[..., ServerThread], exported_repo: Path, mnist_images: Images
) -> None:
    manifest = ModelRepository(exported_repo, "digits").read_manifest(1)
    onnx_file = exported_repo / "digits" / "1" / manifest.artifacts["onnx"].path
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    pixels = mnist_images.pixels[:128]
    expected = session.run(["probabilities"], {"pixels": pixels})[0]

    server = make_server(server_settings(exported_repo))
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        ours = stubs.digits.Classify(d.ClassifyRequest(float32_le=pixels.tobytes()), timeout=30)
        tensor = v2.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[128, 784])
        theirs = stubs.v2.ModelInfer(
            v2.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[pixels.tobytes()]),
            timeout=30,
        )
    assert ours.model_version == 1 and theirs.model_version == "1"
    got = np.array([list(p.probabilities) for p in ours.predictions], np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(
        np.frombuffer(theirs.raw_output_contents[0], "<f4").reshape(128, 10), expected, atol=1e-6
    )
