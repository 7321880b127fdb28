"""Health transitions, drain, hot reload and TLS on an in-process server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from digitserve.errors import DigitserveError
from digitserve.serve.dataplane import State
from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.serve.serve_models import SLOW_SIZE, random_weights, write_version
from tests.support.certs import Certificates

SERVICES = ("", "digits.v1.Classifier", "inference.GRPCInferenceService")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ONE = d.ClassifyRequest(uint8=bytes([200]) * 784)
V2_ONE = v2.ModelInferRequest(
    model_name="digits",
    inputs=[v2.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8", shape=[1, 784])],
    raw_input_contents=[bytes([200]) * 784],
)


def health_of(channel: grpc.Channel) -> list[int]:
    health = health_pb2_grpc.HealthStub(channel)
    return [health.Check(health_pb2.HealthCheckRequest(service=s)).status for s in SERVICES]


def test_health_is_not_serving_until_the_model_is_loaded_and_warm(
    make_server: Callable[..., ServerThread], model_repo: Path
) -> None:
    server = make_server(server_settings(model_repo, grace_seconds=30), load=False)
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        assert health_of(channel) == [NOT_SERVING] * 3
        assert stubs.v2.ServerLive(v2.ServerLiveRequest()).live
        assert not stubs.v2.ServerReady(v2.ServerReadyRequest()).ready
        assert not stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits")).ready
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(ONE)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in (error.value.details() or "")
        assert server.metric("digitserve_ready") == 0

        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == NOT_SERVING
        server.call(server.server.load())
        assert next(watch).status == SERVING
        assert health_of(channel) == [SERVING] * 3
        assert stubs.v2.ServerReady(v2.ServerReadyRequest()).ready
        assert len(stubs.digits.Classify(ONE).predictions) == 1
        assert server.metric("digitserve_ready") == 1

        started = time.monotonic()
        stopping = server.submit(server.server.stop())
        assert next(watch).status == NOT_SERVING  # watchers hear about the drain,
        assert list(watch) == []  # then their stream ends with OK
        stopping.result(30)
        assert time.monotonic() - started < 10  # an open Watch does not hold the 30 s grace


def test_drain_finishes_calls_in_flight_and_refuses_new_ones(
    make_server: Callable[..., ServerThread], slow_repo: Path
) -> None:
    server = make_server(server_settings(slow_repo, max_batch_size=2, grace_seconds=30))
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        in_flight = [stubs.digits.Classify.future(ONE, timeout=60) for _ in range(4)]
        server.wait_for("digitserve_inflight_calls", 4)
        stopping = server.submit(server.server.stop())
        deadline = time.monotonic() + 10  # the backlog is answered, then new calls are refused
        while server.server.plane.state is not State.CLOSED and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(ONE, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as error:
            stubs.v2.ModelInfer(V2_ONE, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert all(len(f.result().predictions) == 1 for f in in_flight)
        stopping.result(30)


def test_both_apis_say_the_server_is_shutting_down_once_the_drain_refuses(
    make_server: Callable[..., ServerThread], model_repo: Path
) -> None:
    # The drain's refusal step, once the backlog is answered and before the gRPC server stops
    # taking calls (after that, new calls are refused by gRPC itself, also with UNAVAILABLE).
    server = make_server(server_settings(model_repo))

    async def begin_drain() -> None:
        server.server.plane.close()

    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        assert stubs.v2.ModelInfer(V2_ONE, timeout=10).model_version == "1"
        server.call(begin_drain())
        for call in (lambda: stubs.digits.Classify(ONE, timeout=10), lambda: stubs.v2.ModelInfer(V2_ONE, timeout=10)):
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error.value.details() == "the server is shutting down; retry on another replica"
        assert not stubs.v2.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
        assert not stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits"), timeout=10).ready
    assert server.metric("nv_inference_request_failure_total", reason="UNAVAILABLE") == 2


def test_while_draining_readiness_says_no_but_every_call_is_still_answered(
    make_server: Callable[..., ServerThread], model_repo: Path
) -> None:
    server = make_server(server_settings(model_repo))

    async def report_not_ready() -> None:
        server.server.plane.report_not_ready()

    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        server.call(report_not_ready())
        assert not stubs.v2.ServerReady(v2.ServerReadyRequest(), timeout=10).ready
        assert not stubs.v2.ModelReady(v2.ModelReadyRequest(name="digits"), timeout=10).ready
        assert len(stubs.digits.Classify(ONE, timeout=10).predictions) == 1
        assert stubs.v2.ModelInfer(V2_ONE, timeout=10).model_version == "1"
    assert server.metric("digitserve_ready") == 0


def test_a_stream_answers_what_it_has_then_ends_unavailable_when_the_server_drains(
    make_server: Callable[..., ServerThread], slow_repo: Path
) -> None:
    server = make_server(server_settings(slow_repo, max_batch_size=1, grace_seconds=30))
    with grpc.insecure_channel(server.target) as channel:
        gate = threading.Event()

        def produce():  # two requests, then hold the stream open (more could follow)
            yield d.ClassifyRequest(uint8=bytes([200]) * 784, request_id="a")
            yield d.ClassifyRequest(uint8=bytes([200]) * 784, request_id="b")
            gate.wait(30)

        stream = Stubs(channel).digits.ClassifyStream(produce(), timeout=60)
        server.wait_for("digitserve_inflight_calls", 2)  # both read, in the model or queued
        started = time.monotonic()
        stopping = server.submit(server.server.stop())
        answers = [next(stream), next(stream)]
        with pytest.raises(grpc.RpcError) as error:
            next(stream)
        gate.set()
        stopping.result(30)
    assert [a.response.request_id for a in answers] == ["a", "b"]  # in progress: answered
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # not OK: later requests were not read
    assert "shutting down" in (error.value.details() or "")
    assert "retry them on another replica" in (error.value.details() or "")
    assert time.monotonic() - started < 10  # not held until the end of the 30 s grace


def probabilities_of(response: d.ClassifyResponse) -> np.ndarray:
    return np.array([list(p.probabilities) for p in response.predictions], np.float32)


def test_hot_reload_serves_a_new_version_and_skips_a_corrupt_one(
    make_server: Callable[..., ServerThread], own_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(server_settings(own_repo, poll_seconds=0.1))
    x = np.random.default_rng(2).random((3, 784), dtype=np.float32)
    request = d.ClassifyRequest(float32_le=x.tobytes())
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        assert stubs.digits.Classify(request).model_version == 1
        w2 = random_weights(2)
        write_version(own_repo, 2, w2)
        deadline = time.monotonic() + 20
        while stubs.digits.Classify(request).model_version != 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        response = stubs.digits.Classify(request)
        assert response.model_version == 2
        np.testing.assert_allclose(probabilities_of(response), w2.predict(x), atol=1e-5)
        assert list(stubs.v2.ModelMetadata(v2.ModelMetadataRequest(name="digits")).versions) == ["2"]

        write_version(own_repo, 3, random_weights(3), bad_sha256=True)
        write_version(own_repo, 4, random_weights(4), truncate=True)  # newest: tried, refused, then 3
        deadline = time.monotonic() + 20
        while server.metric("digitserve_reloads_total", result="failure") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a few more polls: a refused version is not retried on every poll
        assert server.metric("digitserve_reloads_total", result="failure") == 2
        assert server.metric("digitserve_reloads_total", result="success") == 1
        assert stubs.digits.Classify(request).model_version == 2
        assert health_of(channel) == [SERVING] * 3
        assert server.metric("digitserve_model_version", model="digits") == 2
    assert "version 4 of 'digits' not served: ONNX Runtime cannot load" in caplog.text
    assert "version 3 of 'digits' not served:" in caplog.text and "the file is corrupt" in caplog.text


def test_calls_in_flight_finish_on_the_model_they_started_with(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_version(repo, 1, random_weights(1), slow_size=SLOW_SIZE)
    server = make_server(server_settings(repo, max_batch_size=1))
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        running = stubs.digits.Classify.future(ONE, timeout=60)
        server.wait_running()
        queued = stubs.digits.Classify.future(ONE, timeout=60)
        server.wait_for("digitserve_queue_images", 1)
        write_version(repo, 2, random_weights(2))
        assert server.call(server.server.reload())
        assert not queued.done(), "the queued call finished before the swap: nothing was tested"
        after = stubs.digits.Classify(ONE, timeout=60)
        assert (running.result().model_version, queued.result().model_version) == (1, 1)
        assert after.model_version == 2


def test_a_busy_port_is_a_clear_start_error(make_server: Callable[..., ServerThread], model_repo: Path) -> None:
    first = make_server(server_settings(model_repo))
    with pytest.raises(DigitserveError, match=f"cannot listen on 127.0.0.1:{first.server.port}"):
        make_server(server_settings(model_repo, port=first.server.port), load=False)


def test_tls_and_mutual_tls(
    make_server: Callable[..., ServerThread], model_repo: Path, certificates: Certificates
) -> None:
    c = certificates
    server = make_server(
        server_settings(model_repo, tls_cert=c.server_cert, tls_key=c.server_key, tls_client_ca=c.ca)
    )
    target = f"localhost:{server.server.port}"
    ca = c.ca.read_bytes()
    with_cert = grpc.ssl_channel_credentials(ca, c.client_key.read_bytes(), c.client_cert.read_bytes())
    with grpc.secure_channel(target, with_cert) as channel:
        assert len(Stubs(channel).digits.Classify(ONE, timeout=10).predictions) == 1
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(ca)) as channel:
        with pytest.raises(grpc.RpcError) as error:  # no client certificate: refused
            Stubs(channel).digits.Classify(ONE, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError):  # plaintext against a TLS port
            Stubs(channel).digits.Classify(ONE, timeout=10)
