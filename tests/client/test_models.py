"""Choosing a model and version, and the model repository calls, without a digitserve server.

What the client puts on the wire is checked in the request messages and through an in-process
gRPC servicer that records what it receives and answers as told (a stand-in, not our server):
both APIs route by model and version, the operator calls send Triton's messages, refusals come
back as the right ClientError, and `digitserve classify --model/--model-version` and
`digitserve models` parse, print and exit as documented. Against the real multi-model server
these are end-to-end tests elsewhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from digitserve.cli import build_parser, main
from digitserve.client import (
    AsyncClient,
    Client,
    ClientError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unimplemented,
    models_cli,
)
from digitserve.wire.proto import digits_pb2, digits_pb2_grpc, grpc_service_pb2, grpc_service_pb2_grpc
from tests.support.commands import subparser

PIXELS = np.zeros((2, 784), np.float32)


# -- the request messages ---------------------------------------------------------------------
def request(api: str, *call: Any, **config: Any) -> Any:
    with Client("127.0.0.1:1", api=api, **config) as client:
        return client._config.request(PIXELS, *call)


def test_without_a_model_both_apis_send_what_they_always_did() -> None:
    digits = request("digits")
    assert (digits.model, digits.version) == ("", 0)
    from digitserve.client.messages import digits_request

    # "" and 0 are proto3 defaults: an old server receives the very bytes it always did
    assert digits.SerializeToString() == digits_request(PIXELS, "float32", True).SerializeToString()
    v2 = request("v2")  # an empty model_name: the server's default model, as in digits.v1
    assert (v2.model_name, v2.model_version) == ("", "")


@pytest.mark.parametrize("api", ["digits", "v2"])
def test_a_call_names_the_model_and_version_and_wins_over_the_clients(api: str) -> None:
    def routed(message: Any) -> tuple[str, str]:
        if api == "digits":
            return message.model, str(message.version or "")
        return message.model_name, message.model_version

    assert routed(request(api, "mnist-cnn", 3)) == ("mnist-cnn", "3")
    assert routed(request(api, None, None, model="compact", model_version=2)) == ("compact", "2")
    assert routed(request(api, "mnist-cnn", None, model="compact", model_version=2)) == ("mnist-cnn", "2")
    assert routed(request(api, None, 5, model="compact")) == ("compact", "5")
    assert routed(request(api, None, 4)) == ("", "4")  # no model named: the server's default model
    assert routed(request(api, None, 0, model_version=0)) == ("", "")  # 0 is the newest, like None


def test_digits_fields_survive_the_wire() -> None:
    message = request("digits", "mnist-cnn", 7)
    parsed = digits_pb2.ClassifyRequest.FromString(message.SerializeToString())
    assert (parsed.model, parsed.version) == ("mnist-cnn", 7)


@pytest.mark.parametrize("version", [-1, 1.5, "2", True])
def test_bad_versions_and_names_fail_before_sending(version: Any) -> None:
    with pytest.raises(ClientError, match="a model version is a whole number"):
        request("digits", None, version)
    with pytest.raises(ClientError, match="a model version is a whole number"):
        Client("127.0.0.1:1", model_version=version)
    with pytest.raises(ClientError, match="a model name is a string"):
        request("v2", 3)
    with Client("127.0.0.1:1") as client, pytest.raises(ClientError, match="name the model to load"):
        client.load_model("")


def test_repository_messages() -> None:
    from digitserve.client import messages

    pinned = messages.load_request("digits", 3)
    assert pinned.model_name == "digits" and pinned.repository_name == ""
    assert pinned.parameters["version"].WhichOneof("parameter_choice") == "int64_param"
    assert pinned.parameters["version"].int64_param == 3
    assert not messages.load_request("digits", None).parameters
    assert messages.unload_request("digits").model_name == "digits"
    assert messages.repository_index_request(True).ready
    reply = grpc_service_pb2.RepositoryIndexResponse()
    reply.models.add(name="digits", version="2", state="READY")
    reply.models.add(name="digits", version="1", state="UNAVAILABLE", reason="unloaded")
    assert messages.repository_index_result(reply) == [
        {"name": "digits", "version": "2", "state": "READY", "reason": ""},
        {"name": "digits", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
    ]


# -- over the wire, to a stand-in servicer ------------------------------------------------------
@dataclass
class Recorder(digits_pb2_grpc.ClassifierServicer, grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Records each request by method; `refuse[method] = (code, details)` makes that method fail."""

    received: dict[str, list[Any]] = field(default_factory=dict)
    refuse: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)
    index: list[tuple[str, str, str, str]] = field(default_factory=list)

    def _take(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.received.setdefault(method, []).append(request)
        if method in self.refuse:
            context.abort(*self.refuse[method])

    def Classify(self, request, context):  # noqa: N802 (gRPC's method names)
        self._take("Classify", request, context)
        n = len(request.float32.values) // 784
        return digits_pb2.ClassifyResponse(
            model_name=request.model or "digits", model_version=request.version or 9,
            packed_labels=bytes(n), packed_probabilities=np.full((n, 10), 0.1, "<f4").tobytes(),
        )

    def ModelInfer(self, request, context):  # noqa: N802
        self._take("ModelInfer", request, context)
        n = request.inputs[0].shape[0]
        reply = grpc_service_pb2.ModelInferResponse(model_name=request.model_name,
                                                    model_version=request.model_version or "9")
        reply.outputs.add(name="probabilities", datatype="FP32", shape=[n, 10])
        reply.raw_output_contents.append(np.full((n, 10), 0.1, "<f4").tobytes())
        return reply

    def RepositoryIndex(self, request, context):  # noqa: N802
        self._take("RepositoryIndex", request, context)
        reply = grpc_service_pb2.RepositoryIndexResponse()
        for name, version, state, reason in self.index:
            if state == "READY" or not request.ready:
                reply.models.add(name=name, version=version, state=state, reason=reason)
        return reply

    def RepositoryModelLoad(self, request, context):  # noqa: N802
        self._take("RepositoryModelLoad", request, context)
        return grpc_service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):  # noqa: N802
        self._take("RepositoryModelUnload", request, context)
        return grpc_service_pb2.RepositoryModelUnloadResponse()


@pytest.fixture
def fake() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    digits_pb2_grpc.add_ClassifierServicer_to_server(recorder, server)
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", recorder
    finally:
        server.stop(None)


def test_sync_and_async_calls_carry_model_and_version(fake: tuple[str, Recorder]) -> None:
    target, recorder = fake
    with Client(target, encoding="float32", packed_output=True, timeout=10) as client:
        result = client.classify(PIXELS, model="mnist-cnn", version=3)
        assert (result.model_name, result.model_version) == ("mnist-cnn", 3)
        assert client.classify(PIXELS).model_name == "digits"
    with Client(target, api="v2", model="compact", timeout=10) as client:
        assert client.classify(PIXELS, version=2).model_name == "compact"

    async def main() -> None:
        async with AsyncClient(target, timeout=10) as client:
            await client.aclassify(PIXELS, model="a", version=1)
        async with AsyncClient(target, api="v2", timeout=10) as client:
            await client.aclassify(PIXELS, model="b", version=4)
            await client.aclassify(PIXELS)

    asyncio.run(main())
    assert [(r.model, r.version) for r in recorder.received["Classify"]] == [("mnist-cnn", 3), ("", 0), ("a", 1)]
    assert [(r.model_name, r.model_version) for r in recorder.received["ModelInfer"]] == [
        ("compact", "2"), ("b", "4"), ("", "")
    ]


def test_repository_index_load_and_unload(fake: tuple[str, Recorder]) -> None:
    target, recorder = fake
    recorder.index = [("digits", "2", "READY", ""), ("digits", "1", "UNAVAILABLE", "unloaded")]
    with Client(target, timeout=10) as client:
        assert [row["version"] for row in client.repository_index()] == ["2", "1"]
        assert client.repository_index(ready=True) == [
            {"name": "digits", "version": "2", "state": "READY", "reason": ""}
        ]
        client.load_model("digits", version=1)
        client.load_model("compact")
        client.unload_model("digits")

    async def main() -> list[dict[str, str]]:
        async with AsyncClient(target, timeout=10) as client:
            await client.aload_model("x", 5)
            await client.aunload_model("x")
            return await client.arepository_index()

    assert len(asyncio.run(main())) == 2
    assert [r.ready for r in recorder.received["RepositoryIndex"]] == [False, True, False]
    loads = recorder.received["RepositoryModelLoad"]
    assert [(r.model_name, dict(r.parameters)) for r in loads[1:2]] == [("compact", {})]
    assert [(r.model_name, r.parameters["version"].int64_param) for r in (loads[0], loads[2])] == [
        ("digits", 1), ("x", 5)
    ]
    assert [r.model_name for r in recorder.received["RepositoryModelUnload"]] == ["digits", "x"]


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNIMPLEMENTED, Unimplemented),
    ],
)
def test_refusals_come_back_as_their_client_error(fake: tuple[str, Recorder], code: grpc.StatusCode,
                                                  error: type[ClientError]) -> None:
    target, recorder = fake
    for method in ("RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex", "Classify"):
        recorder.refuse[method] = (code, f"the server says no to {method}")
    with Client(target, timeout=10) as client:
        for call in (lambda: client.load_model("digits", 2), lambda: client.unload_model("digits"),
                     client.repository_index, lambda: client.classify(PIXELS, model="nope")):
            with pytest.raises(error) as caught:
                call()
            assert caught.value.code == code and caught.value.details.startswith("the server says no to")
            assert f"{target}: {code.name}: the server says no to" in str(caught.value)


# -- the command lines ------------------------------------------------------------------------
def parse(*argv: str) -> Any:
    return build_parser(argv[0]).parse_args(list(argv))


def test_classify_takes_model_and_model_version() -> None:
    from digitserve.client import classify_cli

    args = parse("classify", "--model", "mnist-cnn", "--model-version", "3", "x.png")
    with classify_cli._client(args, None) as client:
        assert (client._config.model, client._config.model_version) == ("mnist-cnn", 3)
    args = parse("classify", "x.png")
    assert (args.model, args.model_version) == (None, None)
    with pytest.raises(SystemExit) as exit_info:
        parse("classify", "--model-version", "0", "x.png")
    assert exit_info.value.code == 2


def test_models_parses_each_action() -> None:
    args = parse("models", "load", "digits", "--version", "3", "--target", "h:1", "--timeout", "5")
    assert (args.action, args.name, args.version, args.target, args.timeout) == ("load", "digits", 3, "h:1", 5.0)
    args = parse("models", "index", "--ready", "--json")
    assert (args.action, args.ready, args.json, args.target) == ("index", True, True, "127.0.0.1:50051")
    assert parse("models", "unload", "digits").name == "digits"
    assert parse("models", "load", "digits").version is None
    for argv in (["models"], ["models", "load"], ["models", "load", "d", "--version", "0"], ["models", "drop", "d"]):
        with pytest.raises(SystemExit) as exit_info:
            parse(*argv)
        assert exit_info.value.code == 2, argv


def test_models_help_and_the_top_level_version_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["models", "--help"], ["models", "load", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "index" in out and "unload" in out and "--model-control explicit" in out and "--version N" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("digitserve ")
    actions = subparser(subparser(build_parser("models"), "models"), "index")
    assert {a.dest for a in actions._actions} >= {"ready", "json", "target", "timeout", "tls_ca"}


def test_models_commands_print_and_exit(fake: tuple[str, Recorder], capsys: pytest.CaptureFixture[str]) -> None:
    target, recorder = fake
    recorder.index = [("digits", "2", "READY", ""), ("mnist-cnn", "10", "UNAVAILABLE", "unloaded by an operator")]
    assert main(["models", "index", "--target", target]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "MODEL      VERSION  STATE        REASON",
        "digits     2        READY",
        "mnist-cnn  10       UNAVAILABLE  unloaded by an operator",
    ]
    assert main(["models", "index", "--ready", "--json", "--target", target]) == 0
    assert json.loads(capsys.readouterr().out)["models"] == [
        {"name": "digits", "version": "2", "state": "READY", "reason": ""}
    ]
    recorder.index = []
    assert main(["models", "index", "--target", target]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: no models"

    assert main(["models", "load", "mnist-cnn", "--version", "10", "--target", target]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: loaded mnist-cnn version 10"
    assert main(["models", "unload", "mnist-cnn", "--target", target]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: unloaded mnist-cnn"
    assert recorder.received["RepositoryModelLoad"][0].parameters["version"].int64_param == 10

    recorder.refuse["RepositoryModelLoad"] = (
        grpc.StatusCode.FAILED_PRECONDITION, "model control is 'none': start the server with --model-control explicit"
    )
    assert main(["models", "load", "digits", "--target", target]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    assert captured.err.strip() == (
        f"digitserve models: error: {target}: FAILED_PRECONDITION: model control is 'none': "
        "start the server with --model-control explicit"
    )
    recorder.refuse["RepositoryModelUnload"] = (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    assert main(["models", "unload", "digits", "--target", target]) == 1
    err = capsys.readouterr().err
    assert "does not implement RepositoryModelUnload (the model repository extension)" in err


def test_models_without_a_server_or_with_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.ports import free_port

    nobody = f"127.0.0.1:{free_port()}"
    assert main(["models", "index", "--target", nobody, "--timeout", "5"]) == 1
    assert f"digitserve models: error: {nobody}: UNAVAILABLE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "index", "--tls-server-name", "localhost"])
    assert exit_info.value.code == 2 and "need --tls-ca (or --tls" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "unload", "d", "--target", "nowhere"])
    assert exit_info.value.code == 2


def test_the_index_table_lines_up() -> None:
    rows = [{"name": "a", "version": "", "state": "READY", "reason": ""}]
    assert models_cli.table(rows) == ["MODEL  VERSION  STATE  REASON", "a      -        READY"]


def test_classify_cli_sends_the_model_and_version(fake: tuple[str, Recorder], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).rectangle((28, 10, 36, 54), fill=0)
    image.save(tmp_path / "one.png")
    target, recorder = fake
    argv = ["classify", "--target", target, str(tmp_path / "one.png")]
    assert main([*argv, "--model", "mnist-cnn", "--model-version", "3"]) == 0
    assert "classified by mnist-cnn version 3" in capsys.readouterr().out
    assert main([*argv, "--api", "v2", "--model", "compact"]) == 0
    assert main(argv) == 0
    capsys.readouterr()
    assert [(r.model, r.version) for r in recorder.received["Classify"]] == [("mnist-cnn", 3), ("", 0)]
    assert [(r.model_name, r.model_version) for r in recorder.received["ModelInfer"]] == [("compact", "")]
