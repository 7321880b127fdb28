"""`digitserve serve` as a real process: signals, exit codes, refusals, the logged configuration."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import onnxruntime as ort
import pytest

from digitserve.wire.proto import digits_pb2 as d
from tests.serve.in_process import Stubs
from tests.serve.serve_models import SLOW_SIZE, random_weights, write_version
from tests.support.server import Servers

ONE = d.ClassifyRequest(uint8=bytes([90]) * 784)
INFLIGHT = "digitserve_inflight_calls"


def test_sigterm_answers_every_call_in_flight_then_exits_0(servers: Servers, slow_repo: Path) -> None:
    process = servers.serve("--repo", str(slow_repo), "--max-batch-size", "2", "--grace-seconds", "30")
    process.wait_serving()
    with grpc.insecure_channel(process.target) as channel:
        stubs = Stubs(channel)
        in_flight = [stubs.digits.Classify.future(ONE, timeout=60) for _ in range(5)]
        deadline = time.monotonic() + 30  # in flight means arrived at the server
        while process.metric(INFLIGHT) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.metric(INFLIGHT) == 5
        process.send_signal(signal.SIGTERM)
        process.wait_for_log("refusing new calls")  # the backlog is answered; then refusals
        with pytest.raises(grpc.RpcError) as error:
            stubs.digits.Classify(ONE, timeout=10)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        answers = [f.result() for f in in_flight]
    assert all(len(a.predictions) == 1 for a in answers)
    assert process.wait(60) == 0, process.log()
    assert "stopped" in process.log()


def test_a_second_sigterm_during_the_drain_loses_no_answer(servers: Servers, slow_repo: Path) -> None:
    process = servers.serve("--repo", str(slow_repo), "--max-batch-size", "1", "--grace-seconds", "30")
    process.wait_serving()
    gate = threading.Event()

    def produce():  # one request, then the stream stays open
        yield d.ClassifyRequest(uint8=bytes([90]) * 784, request_id="s")
        gate.wait(60)

    with grpc.insecure_channel(process.target) as channel:
        stubs = Stubs(channel)
        stream = stubs.digits.ClassifyStream(produce(), timeout=60)
        unary = [stubs.digits.Classify.future(ONE, timeout=60) for _ in range(3)]
        deadline = time.monotonic() + 30
        while process.metric(INFLIGHT) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.metric(INFLIGHT) == 4
        process.send_signal(signal.SIGTERM)
        process.wait_for_log("draining")
        process.send_signal(signal.SIGTERM)  # impatient orchestrator
        process.send_signal(signal.SIGINT)  # impatient operator
        answers = [f.result() for f in unary]
        streamed = next(stream)
        with pytest.raises(grpc.RpcError) as error:
            next(stream)
        gate.set()
    process.wait_for_log("signal ignored")
    assert all(len(a.predictions) == 1 for a in answers)
    assert streamed.response.request_id == "s"
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert process.wait(60) == 0, process.log()
    assert "stopped" in process.log()


def test_sighup_during_the_first_load_reloads_after_it(servers: Servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_version(repo, 1, random_weights(1), slow_size=SLOW_SIZE)  # slow to warm up: a long first load
    process = servers.serve("--repo", str(repo), "--instances", "4").wait_listening()
    write_version(repo, 2, random_weights(2))
    process.send_signal(signal.SIGHUP)
    assert "serving digits version" not in process.log(), "the first load was over: nothing was tested"
    process.wait_for_log("serving digits version 1 from")
    process.wait_for_log("reload: now serving version 2")
    with grpc.insecure_channel(process.target) as channel:
        assert Stubs(channel).digits.Classify(ONE, timeout=10).model_version == 2  # not overwritten by 1
    assert "SIGHUP during the first load" in process.log()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.log()


def test_signals_while_an_abandoned_load_finishes_are_ignored(servers: Servers, tmp_path: Path) -> None:
    """SIGTERM during a long first load stops the server at once; the process then waits for the
    load's thread, and signals in that time must not turn a clean exit into 129 or 143."""
    repo = tmp_path / "repo"
    write_version(repo, 1, random_weights(1), slow_size=2 * SLOW_SIZE)
    process = servers.serve("--repo", str(repo), "--instances", "4").wait_listening()
    process.send_signal(signal.SIGTERM)
    process.wait_for_log("stop requested while loading")
    process.wait_for_log(r"INFO digitserve\.serve\.server: stopped")
    assert process.poll() is None, "the load was over: nothing was tested"
    for repeated in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        process.send_signal(repeated)
    assert process.wait(180) == 0, process.log()  # the abandoned load of 4 slow sessions goes on meanwhile
    assert "signal ignored" in process.log()


def test_sighup_reloads_and_the_effective_configuration_is_logged(servers: Servers, own_repo: Path) -> None:
    process = servers.serve(
        "--repo", str(own_repo), env={"DIGITSERVE_MAX_BATCH_SIZE": "16", "DIGITSERVE_GRACE_SECONDS": "3"}
    )
    process.wait_serving()
    config = process.wait_for_log(r"digitserve serve: (repo=.*)").group(1)
    assert "max_batch_size=16" in config and "grace_seconds=3.0" in config
    assert "max_queue_delay_us=0" in config and "device=cpu" in config
    assert "on CPUExecutionProvider" in process.log()
    write_version(own_repo, 2, random_weights(2))
    process.send_signal(signal.SIGHUP)
    process.wait_for_log("reload: now serving version 2")
    with grpc.insecure_channel(process.target) as channel:
        assert Stubs(channel).digits.Classify(ONE, timeout=10).model_version == 2
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, process.log()


def bad_sha(repo: Path) -> list[str]:
    write_version(repo, 1, random_weights(0), bad_sha256=True)
    return []


def empty(repo: Path) -> list[str]:
    (repo / "digits" / "1").mkdir(parents=True)  # trained, never exported
    return []


def cuda(repo: Path) -> list[str]:
    write_version(repo, 1, random_weights(0))
    return ["--device", "cuda"]


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (empty, "no exported model version in .* \\(no .*/<model>/<version>/ has a manifest.json\\)"),
        (bad_sha, ".*model.onnx has sha256 [0-9a-f]{64}, but the manifest says 0{64}"),
        pytest.param(
            cuda,
            "--device cuda: this onnxruntime .* has no CUDAExecutionProvider",
            marks=pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA present"),
        ),
    ],
    ids=["no-exported-version", "sha256-mismatch", "device-cuda-without-gpu"],
)
def test_refuses_to_start_with_a_clear_message(
    servers: Servers,
    tmp_path: Path,
    prepare: Callable[[Path], list[str]],
    message: str,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    extra = prepare(repo)
    process = servers.serve("--repo", str(repo), *extra)
    assert process.wait(60) == 1, process.log()
    process.wait_for_log(f"digitserve serve: error: {message}")
    assert "Traceback" not in process.log()
