"""The client rides through restarts: gRPC's retry policy and wait-for-ready, against real servers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from digitserve.client import Client, RetryPolicy, Unavailable
from digitserve.client.retries import channel_options
from tests.support.ports import free_port
from tests.support.server import ServeProcess, Servers

PIXELS = np.full((1, 784), 0.5, np.float32)


class CallingLoop:
    """Calls classify over and over in a thread; every error is kept."""

    def __init__(self, client: Client):
        self.client = client
        self.answers = 0
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.classify(PIXELS, timeout=60)
                self.answers += 1
            except Exception as exc:  # noqa: BLE001 - the test reports every kind
                self.errors.append(exc)

    def __enter__(self) -> CallingLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_answers(self, more: int) -> None:
        target = self.answers + more
        for _ in range(600):
            if self.answers >= target or self.errors:
                return
            self._stop.wait(0.05)


def test_a_rolling_restart_on_the_same_port_costs_the_default_client_no_error(
    servers: Servers, repo: Path
) -> None:
    port = str(free_port())
    old = servers.serve("--repo", str(repo), "--port", port, "--reuse-port").wait_serving()
    with Client(old.target) as client, CallingLoop(client) as calls:
        calls.wait_answers(20)
        new = servers.serve("--repo", str(repo), "--port", port, "--reuse-port").wait_serving()
        assert old.terminate(60) == 0, old.log()
        calls.wait_answers(20)  # the same channel, now on the new process
    assert calls.errors == [], calls.errors[:3]
    assert new.metric("nv_inference_request_success_total") > 0


def test_wait_for_ready_rides_through_a_stop_and_start(servers: Servers, repo: Path) -> None:
    port = str(free_port())
    first = servers.serve("--repo", str(repo), "--port", port).wait_serving()
    with Client(first.target, wait_for_ready=True) as client, CallingLoop(client) as calls:
        calls.wait_answers(20)
        assert first.terminate(60) == 0, first.log()
        second = servers.serve("--repo", str(repo), "--port", port).wait_serving()
        calls.wait_answers(20)
    assert calls.errors == [], calls.errors[:3]
    assert second.metric("nv_inference_request_success_total") > 0


def test_a_dns_target_is_balanced_round_robin_and_still_classifies(server: ServeProcess) -> None:
    with Client(f"dns:///localhost:{server.port}") as client:
        assert client.classify(PIXELS).labels.shape == (1,)
    config = json.loads(dict(channel_options("dns:///localhost:1", RetryPolicy(), False))["grpc.service_config"])
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]


def test_retries_cover_only_the_idempotent_calls_and_can_be_turned_off() -> None:
    options = dict(channel_options("127.0.0.1:1", RetryPolicy(max_attempts=3), False))
    config = json.loads(options["grpc.service_config"])
    (method,) = config["methodConfig"]
    assert {(n["service"], n["method"]) for n in method["name"]} == {
        ("digits.v1.Classifier", "Classify"), ("inference.GRPCInferenceService", "ModelInfer")
    }
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert options["grpc.enable_retries"] == 1
    off = dict(channel_options("127.0.0.1:1", None, False))
    assert off["grpc.enable_retries"] == 0 and json.loads(off["grpc.service_config"]) == {"methodConfig": []}


@pytest.mark.parametrize("retries", [True, False])
def test_a_server_that_is_not_there_is_still_unavailable(retries: bool) -> None:
    with Client(f"127.0.0.1:{free_port()}", retries=retries) as client, pytest.raises(Unavailable):
        client.classify(PIXELS, timeout=30)
