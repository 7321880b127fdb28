"""Repository serving fixtures: a repository of two models, clients for both APIs, polling helpers.

The repository holds a softmax regression (`softmax`, tests/serve/serve_models.write_version) and
a small CNN (`cnn`, serve_models.write_cnn_version); every version has its own seeded weights,
so versions are told apart by their answers. The answers to match come from in-process ONNX
Runtime on each version's own onnx/model.onnx (`Reference`).

The server is a real `digitserve serve --repo R` process (tests.support.server); `start` waits
until it listens and its health says SERVING, by asking it, not by reading its log lines.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.serve.serve_models import random_weights, write_cnn_version, write_version
from tests.support.commands import DIGITSERVE, clean_env
from tests.support.server import SERVE_DEFAULTS, ServeProcess, Servers

SOFTMAX, CNN = "softmax", "cnn"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL = ("--poll-seconds", "0.2")
EXPLICIT = ("--model-control", "explicit")
START_TIMEOUT = 120.0  # seconds: a start on a loaded 2-core machine, several models to warm
WAIT_TIMEOUT = 60.0  # seconds: any reload, load or unload
SLOWISH_SIZE = 1800
"""serve_models' slow variant at this size: about 0.1-0.25 s per batch on an idle core (a third of
SLOW_SIZE's), so a handful of calls stays in flight across a transition without a test taking long."""

_rng = np.random.default_rng(1234)
IMAGES = _rng.integers(0, 256, (8, 784), dtype=np.uint8)
"""Eight seeded random images as uint8 bytes (what digits.v1 `uint8` and V2 UINT8 carry)."""
PIXELS = IMAGES.astype(np.float32) / np.float32(255.0)
"""The same images as the model sees them: float32 in [0, 1]."""


# -- the repository ----------------------------------------------------------------------------

def write_softmax(root: Path, version: int, **options: Any) -> Path:
    """Version `version` of model `softmax`: seeded random weights of its own."""
    return write_version(root, version, random_weights(1000 + version), name=SOFTMAX, **options)


def write_cnn(root: Path, version: int, **options: Any) -> Path:
    """Version `version` of model `cnn`: seeded random weights of its own."""
    return write_cnn_version(root, version, 2000 + version, name=CNN, **options)


def make_repository(root: Path, softmax: Iterable[int] = (1, 2, 3), cnn: Iterable[int] = (1, 2)) -> Path:
    for version in softmax:
        write_softmax(root, version)
    for version in cnn:
        write_cnn(root, version)
    return root


def onnx_file(root: Path, name: str, version: int) -> Path:
    return root / name / str(version) / "onnx" / "model.onnx"


def write_policy(root: Path, name: str, text: str) -> None:
    """`<root>/<name>/serving.json`, written whole (a polling server never sees half of it)."""
    target = root / name / "serving.json"
    temp = target.with_name(".serving.json.tmp")
    temp.write_text(text)
    temp.rename(target)


class Reference:
    """In-process ONNX Runtime on a version's own file; sessions are opened on first use and
    kept, so open them before a test corrupts or removes the file."""

    def __init__(self, root: Path):
        self.root = root
        self._sessions: dict[tuple[str, int], Any] = {}

    def session(self, name: str, version: int) -> Any:
        import onnxruntime as ort

        key = (name, int(version))
        if key not in self._sessions:
            self._sessions[key] = ort.InferenceSession(
                str(onnx_file(self.root, name, int(version))), providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]

    def __call__(self, name: str, version: int, pixels: np.ndarray = PIXELS) -> np.ndarray:
        return self.session(name, version).run(["probabilities"], {"pixels": pixels})[0]  # type: ignore[no-any-return]


# -- the clients -------------------------------------------------------------------------------

class Client:
    """Both APIs, health and the V2 repository RPCs of one server, through one real channel."""

    def __init__(self, target: str):
        from digitserve.wire.proto import digits_pb2_grpc, grpc_service_pb2_grpc

        self.channel = grpc.insecure_channel(target)
        self.digits = digits_pb2_grpc.ClassifierStub(self.channel)
        self.v2 = grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channel)
        self.healthz = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # inference
    def infer(self, model: str, version: str = "", pixels: np.ndarray = PIXELS,
              timeout: float = 30) -> tuple[np.ndarray, Any]:
        """V2 ModelInfer of FP32 `pixels` as raw contents: (probabilities [N, 10], response)."""
        response = self.v2.ModelInfer(infer_request(model, version, pixels), timeout=timeout)
        raw = response.raw_output_contents[0]
        return np.frombuffer(raw, dtype="<f4").reshape(len(pixels), 10), response

    def infer_future(self, model: str, version: str = "", pixels: np.ndarray = PIXELS, timeout: float = 60) -> Any:
        return self.v2.ModelInfer.future(infer_request(model, version, pixels), timeout=timeout)

    def classify(self, model: str | None = None, version: int | None = None, images: np.ndarray = IMAGES,
                 timeout: float = 30) -> tuple[np.ndarray, Any]:
        """digits.v1 Classify of uint8 `images`: (probabilities [N, 10], response); None leaves
        the field unset (the default model, the newest version)."""
        from digitserve.wire.proto import digits_pb2

        fields: dict[str, Any] = {"uint8": images.tobytes()}
        if model is not None:
            fields["model"] = model
        if version is not None:
            fields["version"] = version
        response = self.digits.Classify(digits_pb2.ClassifyRequest(**fields), timeout=timeout)
        return np.array([list(p.probabilities) for p in response.predictions], dtype=np.float32), response

    # health and readiness
    def health(self, service: str = "") -> Any:
        """The health status of `service`, or the gRPC status code if the check fails (unknown service)."""
        try:
            return self.healthz.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        except grpc.RpcError as error:
            return error.code()

    def model_ready(self, name: str, version: str | int = "") -> bool | grpc.StatusCode:
        """V2 ModelReady; the status code when it fails (NOT_FOUND for an unknown model)."""
        from digitserve.wire.proto import grpc_service_pb2 as pb

        try:
            return bool(self.v2.ModelReady(pb.ModelReadyRequest(name=name, version=str(version)), timeout=10).ready)
        except grpc.RpcError as error:
            return error.code()

    def metadata_versions(self, name: str) -> list[int]:
        from digitserve.wire.proto import grpc_service_pb2 as pb

        return sorted(int(v) for v in self.v2.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10).versions)

    def served(self, name: str) -> list[int] | grpc.StatusCode:
        """The versions ModelMetadata lists for `name`, or the code it fails with."""
        try:
            return self.metadata_versions(name)
        except grpc.RpcError as error:
            return error.code()

    # the repository
    def index(self, ready: bool = False) -> dict[tuple[str, int], tuple[str, str]]:
        """RepositoryIndex as {(model, version): (state, reason)}; fails if an entry repeats."""
        from digitserve.wire.proto import grpc_service_pb2 as pb

        answer = self.v2.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready), timeout=30)
        entries: dict[tuple[str, int], tuple[str, str]] = {}
        for model in answer.models:
            key = (model.name, int(model.version) if model.version else 0)  # 0: an entry without a version
            assert key not in entries, f"RepositoryIndex lists {key} twice: {answer}"
            entries[key] = (model.state, model.reason)
        return entries

    def load(self, name: str, version: int | None = None, timeout: float = WAIT_TIMEOUT) -> Any:
        from digitserve.wire.proto import grpc_service_pb2 as pb

        request = pb.RepositoryModelLoadRequest(model_name=name)
        if version is not None:
            request.parameters["version"].int64_param = version
        return self.v2.RepositoryModelLoad(request, timeout=timeout)

    def unload(self, name: str, timeout: float = WAIT_TIMEOUT) -> Any:
        from digitserve.wire.proto import grpc_service_pb2 as pb

        return self.v2.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=name), timeout=timeout)


def infer_request(model: str, version: str, pixels: np.ndarray) -> Any:
    from digitserve.wire.proto import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="pixels", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(np.ascontiguousarray(pixels, dtype="<f4").tobytes())
    return request


def failure(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and message `call` fails with; an AssertionError if it succeeds."""
    try:
        answer = call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    raise AssertionError(f"expected a gRPC error, got an answer: {answer}")


# -- waiting -----------------------------------------------------------------------------------

def wait_until(condition: Callable[[], Any], what: str, process: ServeProcess | None = None,
               timeout: float = WAIT_TIMEOUT) -> Any:
    """Poll `condition` until it is truthy (return it); fail naming `what`, quoting the server's
    log, after `timeout` seconds or once the server has exited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        exited = process is not None and process.poll() is not None
        try:
            last = condition()
        except grpc.RpcError as error:  # a server that is not there yet, or a transient refusal
            last = f"{error.code()}: {error.details()}"
        if last and not isinstance(last, str | grpc.StatusCode):
            return last
        if exited or time.monotonic() > deadline:
            state = "the server exited" if exited else f"{timeout:g} s passed"
            log = f"\n--- server log ---\n{process.log()}" if process is not None else ""
            raise AssertionError(f"{state} before {what} (last: {last!r}){log}")
        time.sleep(0.05)


def start(servers: Servers, repo: Path, *args: str, timeout: float = START_TIMEOUT) -> ServeProcess:
    """`digitserve serve --repo REPO ARGS`, once it listens and its health says SERVING."""
    process = servers.serve("--repo", str(repo), *args)
    process.wait_listening(timeout)
    with Client(process.target) as client:
        wait_until(lambda: client.health("") == SERVING, "health SERVING", process, timeout)
    return process


def wait_served(client: Client, process: ServeProcess, expected: dict[str, list[int]],
                timeout: float = WAIT_TIMEOUT) -> None:
    """Wait until ModelMetadata lists exactly `expected[name]` for every name in it."""
    wait_until(lambda: all(client.served(name) == versions for name, versions in expected.items()),
               f"the server serves {expected}", process, timeout)


def start_fails(repo: Path, *args: str, timeout: float = 120) -> tuple[int, str]:
    """Run `digitserve serve --repo REPO ARGS` (SERVE_DEFAULTS first), which must refuse to
    start: (exit code, its stderr)."""
    done = subprocess.run([*DIGITSERVE, "serve", *SERVE_DEFAULTS, "--repo", str(repo), *args],
                          capture_output=True, text=True, timeout=timeout, env=clean_env())
    assert done.returncode != 0, f"the server started and stopped with exit 0:\n{done.stderr}"
    return done.returncode, done.stderr


def error_line(log: str) -> str:
    """The `digitserve serve: error: ...` line of a failed start (fails if there is none)."""
    match = re.search(r"^.*digitserve serve: error: .*$", log, re.MULTILINE)
    assert match, f"no 'digitserve serve: error:' line in:\n{log}"
    return match.group(0)


def rss_bytes(pid: int) -> int:
    """VmRSS of process `pid`, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Server processes shared by one module's tests, stopped at its end."""
    started = Servers(tmp_path_factory.mktemp("repo-servers"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def shared_models_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """softmax 1, 2, 3 and cnn 1, 2; shared by a module's tests, never modified."""
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def shared_models_reference(shared_models_repo: Path) -> Reference:
    return Reference(shared_models_repo)


@pytest.fixture
def models_repo(tmp_path: Path) -> Path:
    """softmax 1, 2, 3 and cnn 1, 2, this test's own: free to change."""
    return make_repository(tmp_path / "repo")
