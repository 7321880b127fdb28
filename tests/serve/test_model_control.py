"""Model control: `--model-control explicit` (Triton's explicit mode), the V2 repository RPCs
(RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload), `--max-loaded-versions`, and the
server's memory across many loads and unloads. Real server processes, real ONNX Runtime.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.serve.repository_fixtures import (
    CNN,
    EXPLICIT,
    NOT_SERVING,
    POLL,
    SERVING,
    SLOWISH_SIZE,
    SOFTMAX,
    Client,
    Reference,
    error_line,
    failure,
    make_repository,
    rss_bytes,
    start,
    start_fails,
    wait_served,
    wait_until,
    write_cnn,
    write_policy,
    write_softmax,
)
from tests.serve.serve_models import write_wide_version
from tests.support.server import Servers

ATOL = 1e-5
INFLIGHT = "digitserve_inflight_calls"
NEGATIVE_WAIT_SECONDS = 2.0
"""How long a test waits for something that must NOT happen (a scan under explicit control):
ten poll periods of --poll-seconds 0.2. Absence cannot be polled for; nothing is timed."""
MEMORY_CYCLES = 50
MEMORY_WARMUP_CYCLES = 10
RSS_GROWTH_BOUND = 96 * 2**20
"""Bytes of RSS the server may gain between load/unload cycle 10 and cycle 50. Each cycle loads a
~12.4 MiB model (write_wide_version), and keeping each version's sessions (the bug this test
caught: a cycle through the unloaded batcher's cancelled tasks) added 7 MiB a cycle, about 300 MiB
over the 40 cycles. Once freed, RSS is flat but for a step or two of glibc's per-thread malloc
arenas (up to ~60 MiB seen once, at any cycle), which the bound allows."""


def assert_answer(client: Client, reference: Reference, name: str, version: int, asked: str = "") -> None:
    probabilities, response = client.infer(name, asked)
    assert (response.model_name, int(response.model_version)) == (name, version), response
    np.testing.assert_allclose(probabilities, reference(name, version), atol=ATOL)


def states(client: Client, name: str, ready: bool = False) -> dict[int, str]:
    return {version: state for (model, version), (state, _) in client.index(ready).items() if model == name}


def unloaded(client: Client, name: str) -> bool:
    """Every entry of `name` in the index UNAVAILABLE (none LOADING, UNLOADING or READY)."""
    found = states(client, name)
    return bool(found) and set(found.values()) == {"UNAVAILABLE"}


# -- explicit control --------------------------------------------------------------------------

def test_explicit_control_does_not_scan_and_load_picks_up_the_repository(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1, 2), cnn=(1,))
    reference = Reference(repo)
    process = start(servers, repo, *EXPLICIT, *POLL)
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [2], CNN: [1]})  # the start loads per the policy
        write_softmax(repo, 3)
        write_cnn(repo, 2)
        write_softmax(tmp_path / "staging", 1)
        os.rename(tmp_path / "staging" / SOFTMAX, repo / "extra")
        # RepositoryIndex reads the disk: the new versions are listed, and not served
        wait_until(lambda: (SOFTMAX, 3) in client.index(), "softmax/3 in the index", process)
        assert client.index()[(SOFTMAX, 3)][0] == "UNAVAILABLE"
        assert client.index()[(SOFTMAX, 3)][1].strip()
        time.sleep(NEGATIVE_WAIT_SECONDS)  # ten poll periods: a polling server would have loaded them
        assert client.metadata_versions(SOFTMAX) == [2]
        assert client.metadata_versions(CNN) == [1]
        assert client.served("extra") != [1]
        assert_answer(client, reference, SOFTMAX, 2)

        client.load(SOFTMAX)  # returns once the new version is ready: no waiting after it
        assert client.model_ready(SOFTMAX, 3) is True
        assert client.metadata_versions(SOFTMAX) == [3]
        assert_answer(client, reference, SOFTMAX, 3)
        assert client.metadata_versions(CNN) == [1]  # only the model asked for
        client.load("extra")
        assert client.metadata_versions("extra") == [1]
        assert client.health("extra") == SERVING
        wait_until(lambda: client.health(f"{SOFTMAX}/2") == NOT_SERVING, "softmax/2 NOT_SERVING", process)


def test_the_index_lists_every_version_on_disk_and_in_memory(servers: Servers, models_repo: Path) -> None:
    process = start(servers, models_repo, *EXPLICIT)
    with Client(process.target) as client:
        index = client.index()
        on_disk = {(SOFTMAX, 1), (SOFTMAX, 2), (SOFTMAX, 3), (CNN, 1), (CNN, 2)}
        assert set(index) == on_disk, index
        assert {key for key, (state, _) in index.items() if state == "READY"} == {(SOFTMAX, 3), (CNN, 2)}
        assert all(reason.strip() for state, reason in index.values() if state == "UNAVAILABLE"), index
        assert set(client.index(ready=True)) == {(SOFTMAX, 3), (CNN, 2)}
        # a served version whose folder is gone stays in memory, so it stays in the index
        os.rename(models_repo / SOFTMAX / "3", models_repo.parent / "softmax-3")
        assert client.index()[(SOFTMAX, 3)][0] == "READY"
        assert client.model_ready(SOFTMAX, 3) is True
        client.unload(CNN)
        wait_until(lambda: unloaded(client, CNN), "cnn UNAVAILABLE in the index", process)
        for version in (1, 2):
            state, reason = client.index()[(CNN, version)]
            assert state == "UNAVAILABLE" and reason.strip(), (version, state, reason)
        assert set(client.index(ready=True)) == {(SOFTMAX, 3)}


def test_load_of_an_unknown_model_is_not_found(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=(1,))
    process = start(servers, repo, *EXPLICIT)
    with Client(process.target) as client:
        code, message = failure(lambda: client.load("letters"))
        assert code == grpc.StatusCode.NOT_FOUND and "letters" in message, message
        assert client.metadata_versions(SOFTMAX) == [1] and client.metadata_versions(CNN) == [1]


@pytest.mark.parametrize("corruption", ["bad_sha256", "truncate"])
def test_load_of_a_corrupt_version_fails_precondition_and_keeps_what_is_served(
    servers: Servers, tmp_path: Path, corruption: str
) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1, 2), cnn=(1,))
    reference = Reference(repo)
    process = start(servers, repo, *EXPLICIT)
    with Client(process.target) as client:
        write_softmax(repo, 3, **{corruption: True})
        code, message = failure(lambda: client.load(SOFTMAX))
        assert code == grpc.StatusCode.FAILED_PRECONDITION, message
        if corruption == "bad_sha256":
            assert "sha256" in message, message
        assert message.strip()
        assert client.metadata_versions(SOFTMAX) == [2]
        assert_answer(client, reference, SOFTMAX, 2)
        assert client.health(SOFTMAX) == SERVING and client.health(f"{SOFTMAX}/2") == SERVING
        state, reason = client.index()[(SOFTMAX, 3)]
        assert state == "UNAVAILABLE" and reason.strip(), (state, reason)
        # a pinned load of a good version still works after the failure
        client.load(SOFTMAX, 1)
        assert client.metadata_versions(SOFTMAX) == [1]


def test_load_with_a_version_pins_it_and_load_without_returns_to_the_policy(
    servers: Servers, models_repo: Path
) -> None:
    reference = Reference(models_repo)
    process = start(servers, models_repo, *EXPLICIT)
    with Client(process.target) as client:
        client.load(SOFTMAX, 1)  # rollback
        assert client.model_ready(SOFTMAX, 1) is True
        assert client.metadata_versions(SOFTMAX) == [1]
        assert_answer(client, reference, SOFTMAX, 1)
        probabilities, response = client.classify(SOFTMAX)
        assert response.model_version == 1
        np.testing.assert_allclose(probabilities, reference(SOFTMAX, 1), atol=ATOL)
        wait_until(lambda: client.model_ready(SOFTMAX, 3) is False, "softmax/3 not ready", process)
        wait_until(lambda: client.health(f"{SOFTMAX}/3") == NOT_SERVING, "softmax/3 NOT_SERVING", process)
        assert failure(lambda: client.infer(SOFTMAX, "3"))[0] == grpc.StatusCode.NOT_FOUND
        client.load(SOFTMAX, 2)
        assert client.metadata_versions(SOFTMAX) == [2]
        assert_answer(client, reference, SOFTMAX, 2)
        client.load(SOFTMAX)  # the policy again: latest:1
        assert client.metadata_versions(SOFTMAX) == [3]
        assert_answer(client, reference, SOFTMAX, 3)
        assert client.metadata_versions(CNN) == [2]  # untouched throughout


def test_unload_drains_the_calls_in_flight_then_unloads_every_version(servers: Servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_softmax(repo, 1, slow_size=SLOWISH_SIZE)
    write_softmax(repo, 2, slow_size=SLOWISH_SIZE)
    write_cnn(repo, 1)
    reference = Reference(repo)
    process = start(servers, repo, *EXPLICIT, "--version-policy", "all", "--max-batch-size", "1",
                    "--grace-seconds", "60")
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [1, 2], CNN: [1]})
        in_flight = [client.infer_future(SOFTMAX, str(1 + k % 2), timeout=120) for k in range(4)]
        wait_until(lambda: process.metric(INFLIGHT) >= 4, "4 calls in flight", process)
        assert not all(f.done() for f in in_flight), "every call was answered before the unload: nothing was tested"
        client.unload(SOFTMAX, timeout=120)
        assert failure(lambda: client.infer(SOFTMAX))[0] == grpc.StatusCode.NOT_FOUND  # no new calls
        for k, future in enumerate(in_flight):
            response = future.result()  # answered, never CANCELLED
            assert int(response.model_version) == 1 + k % 2
            got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(-1, 10)
            np.testing.assert_allclose(got, reference(SOFTMAX, 1 + k % 2), atol=ATOL)
        wait_until(lambda: unloaded(client, SOFTMAX), "softmax UNAVAILABLE in the index", process)
        assert all(reason.strip() for (model, _), (_, reason) in client.index().items() if model == SOFTMAX)
        assert client.health(SOFTMAX) == NOT_SERVING
        assert client.health(f"{SOFTMAX}/1") == NOT_SERVING and client.health(f"{SOFTMAX}/2") == NOT_SERVING
        assert client.model_ready(SOFTMAX, 1) is not True
        code, message = failure(lambda: client.classify(SOFTMAX))
        assert code == grpc.StatusCode.NOT_FOUND and CNN in message, message
        assert_answer(client, reference, CNN, 1)  # the other model serves on
        client.load(SOFTMAX)
        assert client.metadata_versions(SOFTMAX) == [1, 2]
        assert client.health(SOFTMAX) == SERVING
    assert process.terminate(60) == 0, process.log()


def test_a_bad_model_control_value_is_a_usage_error(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=())
    code, log = start_fails(repo, "--model-control", "manual")
    assert code == 2 and "--model-control" in log, log


# -- --max-loaded-versions ---------------------------------------------------------------------

@pytest.mark.parametrize("control", ["poll", "explicit"])
def test_a_start_plan_beyond_max_loaded_versions_fails(models_repo: Path, control: str) -> None:
    code, log = start_fails(models_repo, "--version-policy", "all", "--max-loaded-versions", "4",
                            "--model-control", control)
    assert code == 1, log
    assert "--max-loaded-versions" in error_line(log), log
    assert "Traceback" not in log


def test_a_start_plan_within_max_loaded_versions_starts(servers: Servers, models_repo: Path) -> None:
    process = start(servers, models_repo, "--version-policy", "all", "--max-loaded-versions", "5")
    with Client(process.target) as client:
        assert client.metadata_versions(SOFTMAX) == [1, 2, 3] and client.metadata_versions(CNN) == [1, 2]


def test_a_load_beyond_max_loaded_versions_is_resource_exhausted_and_changes_nothing(
    servers: Servers, models_repo: Path
) -> None:
    reference = Reference(models_repo)
    process = start(servers, models_repo, *EXPLICIT, "--max-loaded-versions", "3")
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [3], CNN: [2]})  # 2 of 3
        write_policy(models_repo, SOFTMAX, '{"version_policy": "latest:2"}')
        client.load(SOFTMAX)  # 3 of 3
        assert client.metadata_versions(SOFTMAX) == [2, 3]
        write_policy(models_repo, CNN, '{"version_policy": "all"}')
        code, message = failure(lambda: client.load(CNN))  # would be 4
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, message
        assert "--max-loaded-versions" in message, message
        assert client.metadata_versions(SOFTMAX) == [2, 3] and client.metadata_versions(CNN) == [2]
        assert_answer(client, reference, CNN, 2)
        assert_answer(client, reference, SOFTMAX, 2, "2")
        assert set(client.index(ready=True)) == {(SOFTMAX, 2), (SOFTMAX, 3), (CNN, 2)}
        client.unload(SOFTMAX)
        wait_until(lambda: unloaded(client, SOFTMAX), "softmax unloaded", process)
        client.load(CNN)  # 2 of 3 now
        assert client.metadata_versions(CNN) == [1, 2]


# -- memory ------------------------------------------------------------------------------------

def test_memory_does_not_grow_over_many_loads_and_unloads(servers: Servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_wide_version(repo, 1, seed=1)
    write_wide_version(repo, 2, seed=2)
    write_softmax(repo, 1)  # so that something is served between the cycles
    reference = Reference(repo)
    process = start(servers, repo, *EXPLICIT)
    pid = process.process.pid  # `python -m digitserve serve`: the server itself, no wrapper
    samples: dict[int, int] = {}
    with Client(process.target) as client:
        for cycle in range(1, MEMORY_CYCLES + 1):
            version = 1 + cycle % 2  # alternate pinned versions
            client.load("wide", version)
            assert_answer(client, reference, "wide", version)
            client.unload("wide")
            wait_until(lambda: unloaded(client, "wide"), f"wide unloaded (cycle {cycle})", process)
            if cycle in (MEMORY_WARMUP_CYCLES, MEMORY_CYCLES):
                samples[cycle] = rss_bytes(pid)
        assert client.metadata_versions(SOFTMAX) == [1]
    growth = samples[MEMORY_CYCLES] - samples[MEMORY_WARMUP_CYCLES]
    assert growth < RSS_GROWTH_BOUND, (
        f"RSS grew by {growth / 2**20:.1f} MiB from cycle {MEMORY_WARMUP_CYCLES} "
        f"({samples[MEMORY_WARMUP_CYCLES] / 2**20:.1f} MiB) to cycle {MEMORY_CYCLES} "
        f"({samples[MEMORY_CYCLES] / 2**20:.1f} MiB)"
    )
