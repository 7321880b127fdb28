"""Each artifact opened the way its users open it: ONNX Runtime, LiteRT, TensorFlow.js over HTTP."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter

from digitserve.contract import images_to_pixels
from digitserve.export import tfjs_node
from digitserve.export.source import load_keras_model, predict
from digitserve.repository import KERAS_FILE


@pytest.fixture(scope="module")
def version(exported_repo: Path) -> Path:
    return exported_repo / "digits" / "1"


@pytest.fixture(scope="module")
def sample(mnist: Any, version: Path) -> tuple[np.ndarray, np.ndarray]:
    """Twenty test images and the Keras model's probabilities for them."""
    pixels = images_to_pixels(mnist.x_test[:20])
    return pixels, predict(load_keras_model(version / KERAS_FILE), pixels)


def test_onnx_has_the_contract_and_runs_any_batch(
    version: Path, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    path = version / "onnx" / "model.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,), (sink,) = session.get_inputs(), session.get_outputs()
    assert (source.name, source.type, source.shape) == ("pixels", "tensor(float)", ["batch", 784])
    assert (sink.name, sink.shape) == ("probabilities", ["batch", 10])
    pixels, keras = sample
    for size in (1, 7, 20):
        (out,) = session.run(["probabilities"], {"pixels": pixels[:size]})
        np.testing.assert_allclose(out, keras[:size], atol=1e-5)


@pytest.mark.parametrize("filename", ["model.tflite", "model_int8.tflite"])
def test_tflite_has_named_tensors_batch_one_and_resizes(
    version: Path, sample: tuple[np.ndarray, np.ndarray], filename: str
) -> None:
    interpreter = Interpreter(model_path=str(version / "tflite" / filename))
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert (source["name"], source["dtype"]) == ("pixels", np.float32)
    assert (sink["name"], sink["dtype"]) == ("probabilities", np.float32)
    assert list(source["shape"]) == [1, 784] and list(source["shape_signature"]) == [-1, 784]
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["pixels"], "outputs": ["probabilities"]}}
    pixels, keras = sample
    runner = interpreter.get_signature_runner("serving_default")
    assert runner(pixels=pixels[:1])["probabilities"].shape == (1, 10)
    interpreter = Interpreter(model_path=str(version / "tflite" / filename))  # the runner holds on
    interpreter.resize_tensor_input(source["index"], [5, 784], strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], pixels[:5])
    interpreter.invoke()
    batch = interpreter.get_tensor(sink["index"])
    tolerance = 1e-5 if filename == "model.tflite" else 0.1
    np.testing.assert_allclose(batch, keras[:5], atol=tolerance)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=tolerance)
    if filename == "model_int8.tflite":  # full-integer inside, float at the edges
        kinds = {d["dtype"] for d in interpreter.get_tensor_details()}
        assert np.int8 in kinds


def test_tfjs_model_json_is_a_graph_model_with_contract_names(version: Path) -> None:
    model = json.loads((version / "tfjs" / "model.json").read_text())
    assert model["format"] == "graph-model"
    assert list(model["signature"]["inputs"]) == ["pixels"]
    assert list(model["signature"]["outputs"]) == ["probabilities"]
    assert model["signature"]["outputs"]["probabilities"]["name"] == "probabilities:0"
    assert {node["name"] for node in model["modelTopology"]["node"]} >= {"pixels", "probabilities"}
    assert model["userDefinedMetadata"]["digitserve"]["input"] == "pixels"


@pytest.fixture
def served_tfjs(version: Path) -> Iterator[str]:
    """The tfjs/ folder over HTTP on 127.0.0.1, as a web page would fetch it."""
    handler = functools.partial(_QuietHandler, directory=str(version / "tfjs"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/model.json"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


NODE_PAGE_LIKE = """
const { createRequire } = await import('node:module');
const require = createRequire(process.argv[1] + '/package.json');
const tf = require('@tensorflow/tfjs');
await tf.setBackend('cpu');
const model = await tf.loadGraphModel(process.argv[2]);
const pixels = JSON.parse(process.argv[3]);
const x = tf.tensor2d(pixels, [pixels.length / 784, 784]);
const y = model.predict(x);
console.log(JSON.stringify({
  inputs: model.inputs.map((i) => [i.name, i.shape]),
  outputs: model.outputs.map((o) => o.name),
  shape: y.shape,
  probabilities: Array.from(y.dataSync()),
}));
"""


def test_tfjs_loads_over_http_in_real_tensorflow_js(
    served_tfjs: str, sample: tuple[np.ndarray, np.ndarray]
) -> None:
    """tf.loadGraphModel(url) + model.predict(tensor), the calls a page makes, in Node.js."""
    pixels, keras = sample
    command = [tfjs_node.find_node(), "--input-type=module", "-e", NODE_PAGE_LIKE,
               str(tfjs_node.find_project()), served_tfjs, json.dumps(pixels[:3].ravel().tolist())]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["inputs"] == [["pixels", [-1, 784]]]
    assert report["outputs"] == ["probabilities"]
    assert report["shape"] == [3, 10]
    np.testing.assert_allclose(np.reshape(report["probabilities"], (3, 10)), keras[:3], atol=1e-4)


@pytest.mark.parametrize("backend", ["wasm", "cpu"])
def test_tfjs_runner_backends_agree_with_keras(
    version: Path, sample: tuple[np.ndarray, np.ndarray], backend: str
) -> None:
    pixels, keras = sample
    out, report = tfjs_node.predict(version / "tfjs" / "model.json", pixels, batch=7, backend=backend)
    assert report["backend"] == backend and report["images"] == 20
    np.testing.assert_allclose(out, keras, atol=1e-4)
