"""The batcher inside a real server: it batches, splits, bounds its queue, drops dead calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from digitserve.wire.proto import digits_pb2 as d
from digitserve.wire.proto import grpc_service_pb2 as v2
from tests.serve.in_process import ServerThread, Stubs, server_settings
from tests.support.images import Images

COMPUTED = "nv_inference_count_total"
EXECUTIONS = "nv_inference_exec_count_total"
DROPPED = "digitserve_dropped_images_total"
FAILED = "nv_inference_request_failure_total"


def one_image(images: Images, i: int) -> d.ClassifyRequest:
    return d.ClassifyRequest(uint8=images.uint8[i].tobytes(), request_id=str(i))


def wait_for_metric(server: ServerThread, name: str, value: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while (current := server.metric(name)) < value and time.monotonic() < deadline:
        time.sleep(0.05)
    return current


def test_concurrent_single_image_calls_are_batched_and_never_cross(
    make_server: Callable[..., ServerThread],
    model_repo: Path,
    mnist_images: Images,
    reference: Callable[..., np.ndarray],
) -> None:
    server = make_server(server_settings(model_repo))
    expected = reference(mnist_images.pixels)
    calls = 384
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        futures = [
            stubs.digits.Classify.future(one_image(mnist_images, i % 512), timeout=60) for i in range(calls)
        ]
        responses = [f.result() for f in futures]
    for i, response in enumerate(responses):
        assert response.request_id == str(i % 512)
        got = np.array(response.predictions[0].probabilities, np.float32)
        np.testing.assert_allclose(got, expected[i % 512], atol=1e-6)  # its own image's answer
    executions = server.metric(EXECUTIONS)
    assert server.metric("nv_inference_request_success_total") == calls
    assert server.metric(COMPUTED) == calls
    assert executions < calls, "no two concurrent calls ever shared a model execution"
    assert server.metric("digitserve_batch_size_bucket", le="1.0") < executions  # some batch > 1


def test_a_request_larger_than_the_max_batch_is_split_and_reassembled(
    make_server: Callable[..., ServerThread],
    model_repo: Path,
    mnist_images: Images,
    reference: Callable[..., np.ndarray],
) -> None:
    server = make_server(server_settings(model_repo, max_batch_size=64))
    with grpc.insecure_channel(server.target) as channel:
        request = d.ClassifyRequest(uint8=mnist_images.uint8[:150].tobytes())
        response = Stubs(channel).digits.Classify(request, timeout=30)
    got = np.array([list(p.probabilities) for p in response.predictions], np.float32)
    np.testing.assert_allclose(got, reference(mnist_images.pixels[:150]), atol=1e-6)
    assert server.metric(EXECUTIONS) == 3  # 64 + 64 + 22
    assert server.metric("digitserve_batch_size_count") == 3


@pytest.fixture
def slow_server(make_server: Callable[..., ServerThread], slow_repo: Path) -> ServerThread:
    return make_server(server_settings(slow_repo, max_batch_size=4, max_queue_images=8, max_request_images=4))


def images_request(count: int, value: int = 128) -> d.ClassifyRequest:
    return d.ClassifyRequest(uint8=bytes([value]) * (784 * count))


def test_a_full_queue_answers_resource_exhausted(slow_server: ServerThread) -> None:
    with grpc.insecure_channel(slow_server.target) as channel:
        stubs = Stubs(channel)
        busy = stubs.digits.Classify.future(images_request(4), timeout=60)
        slow_server.wait_running()  # inside the model; the queue is empty
        queued = [stubs.digits.Classify.future(images_request(4), timeout=60) for _ in range(2)]
        slow_server.wait_for("digitserve_queue_images", 8)
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(images_request(1), timeout=60)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue full: 8 images are waiting" in (error.value.details() or "")
        for future in (busy, *queued):
            assert len(future.result().predictions) == 4
        assert len(stubs.digits.Classify(images_request(1), timeout=60).predictions) == 1  # still serving
    assert slow_server.metric("nv_inference_request_failure_total", reason="RESOURCE_EXHAUSTED") == 1


def test_a_deadline_shorter_than_the_queue_wait_never_runs_the_model(
    slow_server: ServerThread,
) -> None:
    with grpc.insecure_channel(slow_server.target) as channel:
        stubs = Stubs(channel)
        busy = stubs.digits.Classify.future(images_request(1), timeout=60)
        slow_server.wait_running()
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(images_request(3), timeout=0.1)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        busy.result()
        assert len(stubs.digits.Classify(images_request(1), timeout=60).predictions) == 1  # still serving
    assert wait_for_metric(slow_server, DROPPED, 3) == 3
    assert slow_server.metric(COMPUTED) == 2  # the busy call's image and the one after, not the 3
    # gRPC cancels the call at its deadline; it is still counted as a deadline, not a cancellation.
    assert slow_server.metric(DROPPED, reason="expired") == 3
    assert slow_server.metric(FAILED, reason="DEADLINE_EXCEEDED") == 1
    assert slow_server.metric(FAILED, reason="CANCELLED") == 0


def test_a_cancelled_call_is_not_computed(slow_server: ServerThread) -> None:
    with grpc.insecure_channel(slow_server.target) as channel:
        stubs = Stubs(channel)
        busy = stubs.digits.Classify.future(images_request(1), timeout=60)
        slow_server.wait_running()
        doomed = stubs.digits.Classify.future(images_request(2), timeout=60)
        slow_server.wait_for("digitserve_queue_images", 2)
        assert doomed.cancel()
        assert not busy.done(), "the model finished first: the check proves nothing"
        busy.result()
        after = stubs.digits.Classify(images_request(1), timeout=60)  # the queue moves on
        assert len(after.predictions) == 1
    assert wait_for_metric(slow_server, DROPPED, 2) == 2
    assert slow_server.metric(DROPPED, reason="cancelled") == 2
    assert slow_server.metric(COMPUTED) == 2
    assert slow_server.metric("nv_inference_request_failure_total", reason="CANCELLED") == 1


def test_the_event_loop_keeps_answering_while_the_model_computes(slow_server: ServerThread) -> None:
    with grpc.insecure_channel(slow_server.target) as channel:
        stubs = Stubs(channel)
        busy = stubs.digits.Classify.future(images_request(4), timeout=60)
        slow_server.wait_running()
        assert stubs.v2.ServerLive(v2.ServerLiveRequest(), timeout=5).live
        # a loop blocked by the model would have answered only after it: the model still runs
        assert not busy.done(), "ServerLive waited for the model"
        busy.result()


def test_with_a_queue_delay_calls_gone_while_the_batch_waits_are_not_computed(
    make_server: Callable[..., ServerThread],
    model_repo: Path,
    mnist_images: Images,
    reference: Callable[..., np.ndarray],
) -> None:
    server = make_server(server_settings(model_repo, max_batch_size=8, max_queue_delay_us=3_000_000))
    with grpc.insecure_channel(server.target) as channel:
        stubs = Stubs(channel)
        expiring = stubs.digits.Classify.future(images_request(2), timeout=1.0)
        cancelled = stubs.digits.Classify.future(images_request(1), timeout=60)
        server.wait_running(2)  # both taken into a batch that waits up to 3 s for more images
        assert cancelled.cancel()
        with pytest.raises(grpc.RpcError) as error:
            expiring.result()
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert wait_for_metric(server, DROPPED, 3) == 3
        started = time.monotonic()
        after = stubs.digits.Classify(one_image(mnist_images, 7), timeout=20)  # waits its own 3 s
        waited = time.monotonic() - started
    expected = reference(mnist_images.pixels[7:8])[0]
    np.testing.assert_allclose(after.predictions[0].probabilities, expected, atol=1e-6)
    assert 2.9 < waited, waited  # the delay applies: a lone call waits for company
    assert server.metric(COMPUTED) == 1  # only the last call's image reached the model
    assert server.metric(DROPPED, reason="expired") == 2
    assert server.metric(DROPPED, reason="cancelled") == 1
    assert server.metric(FAILED, reason="DEADLINE_EXCEEDED") == 1
    assert server.metric(FAILED, reason="CANCELLED") == 1
