"""`digitserve serve --workers N`: real supervisor and worker processes, real signals, load from another process.

The kernel spreads connections over the workers (SO_REUSEPORT), so the load opens many channels,
one connection each: `python -m tests.serve.test_workers` runs it (see `spread_load`), in a process
of its own as tests/support/load.py explains. Nothing here times the server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from digitserve.serve import workers
from digitserve.serve.settings import ServeSettings
from tests.serve.serve_models import random_weights, write_version
from tests.support.load import Tally, call
from tests.support.server import ServeProcess, Servers

ROOT = Path(__file__).resolve().parents[2]
SUCCESS = "nv_inference_request_success_total"
CHANNELS = 16  # connections: every worker gets some (all 16 on one of 2 workers: 1 in 32,768)


# -- the load ----------------------------------------------------------------------------------
async def spread_load(target: str, channels: int, calls: int, signal_pid: int, signal_after: float) -> dict:
    """`calls` calls per channel at once (burst), or, with calls 0, one closed-loop caller per
    channel until stdin closes (steady); optionally SIGTERM `signal_pid` `signal_after` s into it."""
    from digitserve.wire.proto import digits_pb2, digits_pb2_grpc

    request = digits_pb2.ClassifyRequest(uint8=bytes([120]) * 784)
    opened = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
              for _ in range(channels)]
    await asyncio.gather(*(asyncio.wait_for(channel.channel_ready(), 60) for channel in opened))
    stubs = [digits_pb2_grpc.ClassifierStub(channel) for channel in opened]
    tally = Tally()
    stop = asyncio.Event()
    details: collections.Counter[str] = collections.Counter()

    async def signal_later() -> None:
        await asyncio.sleep(signal_after)
        os.kill(signal_pid, signal.SIGTERM)

    async def caller(stub) -> None:  # waits for a connection rather than failing fast, as clients should
        while not stop.is_set():
            try:
                await stub.Classify(request, timeout=30, wait_for_ready=True)
                tally.record(grpc.StatusCode.OK)
            except grpc.aio.AioRpcError as error:
                tally.record(error.code())
                details[f"{error.code().name}: {error.details()}"] += 1

    extra = [asyncio.ensure_future(signal_later())] if signal_pid else []
    if calls:
        await asyncio.gather(*(call(stub, request, 60, tally) for stub in stubs for _ in range(calls)))
    else:
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True).start()
        await asyncio.gather(*(caller(stub) for stub in stubs))
    await asyncio.gather(*extra)
    for channel in opened:
        await channel.close()
    return {**tally.report(), "errors": dict(details)}


def load_command(process: ServeProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.serve.test_workers", "--target", process.target, *args]


def burst(process: ServeProcess, calls: int, *args: str) -> dict:
    done = subprocess.run(load_command(process, "--calls", str(calls), *args),
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextlib.contextmanager
def steady(process: ServeProcess) -> Iterator[dict]:
    """A steady load while the block runs; the dict gets its report when the block ends."""
    loader = subprocess.Popen(load_command(process), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    report: dict = {}
    try:
        yield report
        out, err = loader.communicate(timeout=120)
        assert loader.returncode == 0, err
        report.update(json.loads(out))
    finally:
        if loader.poll() is None:
            loader.kill()
            loader.wait(10)


# -- the processes -----------------------------------------------------------------------------
def worker_pids(process: ServeProcess) -> dict[int, int]:
    """index -> pid of the workers started so far (the supervisor logs each start)."""
    return {int(i): int(p) for i, p in re.findall(r"worker (\d+) started \(pid (\d+)\)", process.log())}


def alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(condition, what: str, process: ServeProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s\n{process.log()}")
        time.sleep(0.05)


@pytest.fixture
def kill_leftovers() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test if they still run: no test leaves an orphan, even a failed one."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def serve_workers(servers: Servers, repo: Path, *args: str) -> ServeProcess:
    return servers.serve("--repo", str(repo), "--workers", "2", *args).wait_serving()


# -- the tests ---------------------------------------------------------------------------------
def test_sigterm_with_calls_in_flight_across_workers_answers_every_one_and_exits_0(
    servers: Servers, model_repo: Path
) -> None:
    process = serve_workers(servers, model_repo)
    report = burst(process, 16, "--channels", str(CHANNELS), "--signal-pid", str(process.process.pid),
                   "--signal-after", "0.02")
    assert report["codes"] == {"OK": 16 * CHANNELS}, process.log()
    assert process.wait(60) == 0, process.log()
    assert process.log().count("refusing new calls") == 2  # both workers drained
    assert "stopped: 2 workers, exit code 0" in process.log()


def test_a_worker_killed_under_load_is_replaced_and_the_other_calls_succeed(
    servers: Servers, model_repo: Path, kill_leftovers: list[int]
) -> None:
    process = serve_workers(servers, model_repo)
    kill_leftovers.extend(worker_pids(process).values())
    with steady(process) as report:
        wait_until(lambda: process.metric(SUCCESS) > 100, "the load flows", process)
        os.kill(worker_pids(process)[1], signal.SIGKILL)
        process.wait_for_log(r"worker 1 \(pid \d+\) was killed by SIGKILL after [\d.]+ s; restarting it")
        process.wait_for_log(r"worker 1 \(pid \d+\) serving digits version 1 again")
        kill_leftovers.extend(worker_pids(process).values())
        answered = process.metric(SUCCESS)
        wait_until(lambda: process.metric(SUCCESS) > answered + 100, "the load flows on", process)
    codes = report["codes"]
    assert set(codes) <= {"OK", "UNAVAILABLE"}, report
    assert codes.get("UNAVAILABLE", 0) <= CHANNELS, report  # at most the calls the dead worker held
    assert process.metric("digitserve_worker_restarts_total") == 1
    assert process.metric("digitserve_ready") == 2
    assert process.metric(SUCCESS) >= codes["OK"]  # the dead worker's answers are still counted
    assert process.terminate(60) == 0, process.log()


def test_metrics_sum_across_workers_and_sighup_reloads_every_worker(servers: Servers, own_repo: Path) -> None:
    process = serve_workers(servers, own_repo)
    assert process.metric("digitserve_ready") == 2  # one gauge per worker, summed
    report = burst(process, 8, "--channels", str(CHANNELS))
    assert report["codes"] == {"OK": 8 * CHANNELS}
    assert process.metric(SUCCESS) == 8 * CHANNELS
    assert process.metric("nv_inference_count_total") == 8 * CHANNELS
    assert process.metric("digitserve_inflight_calls") == 0
    write_version(own_repo, 2, random_weights(2))
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: process.log().count("reload: now serving version 2") == 2, "both workers reload", process)
    assert process.metric("digitserve_model_version") == 2
    assert process.terminate(60) == 0, process.log()


def test_a_worker_out_of_grace_makes_the_supervisor_exit_3(servers: Servers, slow_repo: Path) -> None:
    # About 0.3 s per call, one at a time: 8 calls or more on a worker outlast a 0.5 s grace.
    process = serve_workers(servers, slow_repo, "--max-batch-size", "1", "--grace-seconds", "0.5")
    report = burst(process, 2, "--channels", str(CHANNELS), "--signal-pid", str(process.process.pid),
                   "--signal-after", "0.3")
    assert set(report["codes"]) <= {"OK", "UNAVAILABLE", "CANCELLED"}, report
    assert process.wait(60) == 3, process.log()
    assert "the grace period ran out" in process.log()


def test_no_worker_outlives_a_killed_supervisor(servers: Servers, model_repo: Path, tmp_path: Path,
                                                 kill_leftovers: list[int]) -> None:
    # TMPDIR: a supervisor killed by SIGKILL cannot remove its metrics folder; let it be pytest's.
    process = servers.serve("--repo", str(model_repo), "--workers", "2", env={"TMPDIR": str(tmp_path)}).wait_serving()
    pids = list(worker_pids(process).values())
    kill_leftovers.extend(pids)
    process.process.kill()
    process.wait(30)
    wait_until(lambda: not any(map(alive, pids)), "the workers exit", process)
    assert process.log().count("the supervisor is gone: draining") == 2


def test_a_bad_start_fails_before_any_worker_starts(servers: Servers, tmp_path: Path) -> None:
    (tmp_path / "digits" / "1").mkdir(parents=True)  # trained, never exported
    process = servers.serve("--repo", str(tmp_path), "--workers", "2")
    assert process.wait(60) == 1, process.log()
    process.wait_for_log("digitserve serve: error: no exported model version in")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        write_version(tmp_path, 2, random_weights(0))
        process = servers.serve("--repo", str(tmp_path), "--workers", "2", "--port", str(busy.getsockname()[1]))
        assert process.wait(60) == 1, process.log()
    process.wait_for_log(r"digitserve serve: error: cannot listen on 127\.0\.0\.1:\d+ .*is the port in use\?")
    assert "worker 1 started" not in process.log() and "Traceback" not in process.log()


def test_auto_fills_the_cores_with_one_onnx_runtime_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "cores", lambda: 8)
    assert workers.worker_count(ServeSettings(workers="auto")) == 8
    assert workers.worker_count(ServeSettings(workers=0, intra_op_threads=2)) == 4
    assert workers.worker_count(ServeSettings(workers=0, instances=3)) == 2
    assert workers.worker_count(ServeSettings(workers=3)) == 3
    assert workers.worker_count(ServeSettings()) == 1  # the default: one process, no supervisor
    each = workers.worker_settings(ServeSettings(port=0), 4, 50123)
    assert (each.port, each.reuse_port, each.metrics_port, each.intra_op_threads, each.workers) == (
        50123, True, None, 2, 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a load over many channels (see spread_load)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--channels", type=int, default=CHANNELS)
    parser.add_argument("--calls", type=int, default=0, help="burst: calls per channel; 0: steady until stdin closes")
    parser.add_argument("--signal-pid", type=int, default=0)
    parser.add_argument("--signal-after", type=float, default=0.0)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(spread_load(options.target, options.channels, options.calls, options.signal_pid,
                                             options.signal_after))))
