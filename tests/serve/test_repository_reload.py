"""Hot reload of a models_repo: new versions, retired versions, corrupt and vanished files, model
folders that come and go, policy files, SIGHUP, and all of it under a closed-loop load.

Every test has its own repository and its own real server process, polling every 0.2 s
(`--poll-seconds 0.2`). Every wait polls a condition the server reports (ModelMetadata,
ModelReady, health, RepositoryIndex, its log); nothing is timed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.serve.repository_fixtures import (
    CNN,
    NOT_SERVING,
    POLL,
    SERVING,
    SLOWISH_SIZE,
    SOFTMAX,
    Client,
    Reference,
    failure,
    make_repository,
    start,
    wait_served,
    wait_until,
    write_cnn,
    write_policy,
    write_softmax,
)
from tests.support.server import Servers

ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-5
INFLIGHT = "digitserve_inflight_calls"


def assert_answer(client: Client, reference: Reference, name: str, version: int, asked: str = "") -> None:
    probabilities, response = client.infer(name, asked)
    assert (response.model_name, int(response.model_version)) == (name, version), response
    np.testing.assert_allclose(probabilities, reference(name, version), atol=ATOL)


def move_out(folder: Path, elsewhere: Path) -> None:
    """Take `folder` out of the repository in one rename (a poll sees it whole or gone)."""
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, elsewhere)


def add_model(repo: Path, staging: Path, name: str, version: int) -> None:
    """A new model folder with one complete version, appearing in one rename."""
    write_softmax(staging, version)
    os.rename(staging / SOFTMAX, repo / name)


def kept_line(name: str, version: int) -> str:
    """A log line about `name` version `version` saying it is kept (served from memory)."""
    return rf"(?im)^(?=.*\b{name}\b)(?=.*\b{version}\b).*\b(memory|kept)\b"


def index_state(client: Client, name: str, version: int) -> tuple[str, str] | None:
    return client.index().get((name, version))


# -- new and retired versions ------------------------------------------------------------------

def test_a_new_version_loads_beside_the_others_and_becomes_the_newest(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=(1,))
    reference = Reference(repo)
    process = start(servers, repo, *POLL, "--version-policy", "latest:2")
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [1], CNN: [1]})
        write_softmax(repo, 2)
        wait_served(client, process, {SOFTMAX: [1, 2]})
        assert_answer(client, reference, SOFTMAX, 2)  # the newest
        assert_answer(client, reference, SOFTMAX, 1, "1")  # the other still serves
        assert client.health(f"{SOFTMAX}/2") == SERVING and client.health(f"{SOFTMAX}/1") == SERVING

        reference.session(SOFTMAX, 1)
        write_softmax(repo, 3)  # latest:2 now admits 2 and 3: 1 leaves
        wait_served(client, process, {SOFTMAX: [2, 3]})
        assert_answer(client, reference, SOFTMAX, 3)
        assert_answer(client, reference, SOFTMAX, 2, "2")
        wait_until(lambda: client.health(f"{SOFTMAX}/1") == NOT_SERVING, "softmax/1 NOT_SERVING", process)
        assert client.model_ready(SOFTMAX, 1) is False
        code, message = failure(lambda: client.infer(SOFTMAX, "1"))
        assert code == grpc.StatusCode.NOT_FOUND and "2" in message and "3" in message, message
        assert client.metadata_versions(CNN) == [1]  # the other model untouched
        assert client.health(SOFTMAX) == SERVING and client.health("") == SERVING


def test_a_retired_version_finishes_its_calls_in_flight_then_unloads(servers: Servers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_softmax(repo, 1, slow_size=SLOWISH_SIZE)  # slow enough that calls stay in flight
    reference = Reference(repo)
    process = start(servers, repo, *POLL, "--max-batch-size", "1", "--grace-seconds", "60")
    with Client(process.target) as client:
        in_flight = [client.infer_future(SOFTMAX, "1", timeout=120) for _ in range(6)]
        wait_until(lambda: process.metric(INFLIGHT) >= 6, "6 calls in flight", process)
        write_softmax(repo, 2)  # latest:1: version 1 leaves the policy
        wait_served(client, process, {SOFTMAX: [2]})
        pending = sum(not f.done() for f in in_flight)
        assert pending > 0, "every call was answered before version 1 retired: nothing was tested"
        for future in in_flight:
            response = future.result()  # never CANCELLED or UNAVAILABLE
            assert response.model_version == "1"
            got = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(-1, 10)
            np.testing.assert_allclose(got, reference(SOFTMAX, 1), atol=ATOL)
        wait_until(lambda: client.health(f"{SOFTMAX}/1") == NOT_SERVING, "softmax/1 NOT_SERVING", process)
        wait_until(lambda: (index_state(client, SOFTMAX, 1) or ("",))[0] == "UNAVAILABLE",
                   "softmax/1 unloaded (UNAVAILABLE in the index)", process)
        state, reason = index_state(client, SOFTMAX, 1)
        assert reason.strip(), "an UNAVAILABLE entry says why"
        assert failure(lambda: client.infer(SOFTMAX, "1"))[0] == grpc.StatusCode.NOT_FOUND
        assert_answer(client, reference, SOFTMAX, 2)
    assert process.terminate(60) == 0, process.log()


# -- served versions whose files go bad --------------------------------------------------------

def corrupt_file(version_dir: Path) -> None:
    path = version_dir / "onnx" / "model.onnx"
    path.write_bytes(b"\0" * path.stat().st_size)


def delete_file(version_dir: Path) -> None:
    (version_dir / "onnx" / "model.onnx").unlink()


@pytest.mark.parametrize("damage", [corrupt_file, delete_file], ids=["corrupt", "deleted"])
def test_a_served_version_whose_file_goes_bad_keeps_serving_from_memory(
    servers: Servers, tmp_path: Path, damage
) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1, 2), cnn=(1,))
    reference = Reference(repo)
    reference.session(SOFTMAX, 2)  # before the file goes
    process = start(servers, repo, *POLL)
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [2], CNN: [1]})
        damage(repo / SOFTMAX / "2")
        process.send_signal(signal.SIGHUP)  # and a poll: both must keep it
        process.wait_for_log(kept_line(SOFTMAX, 2), timeout=60)
        for _ in range(3):  # several polls later, still the same
            assert_answer(client, reference, SOFTMAX, 2)
            assert client.model_ready(SOFTMAX, 2) is True
            assert client.health(f"{SOFTMAX}/2") == SERVING
        assert client.metadata_versions(SOFTMAX) == [2]
        assert "Traceback" not in process.log()


def test_a_served_version_whose_folder_disappears_keeps_serving_from_memory(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=(1,))
    reference = Reference(repo)
    reference.session(SOFTMAX, 1)
    process = start(servers, repo, *POLL)
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [1], CNN: [1]})
        move_out(repo / SOFTMAX / "1", tmp_path / "gone" / "1")  # softmax/ stays, empty
        process.send_signal(signal.SIGHUP)
        process.wait_for_log(kept_line(SOFTMAX, 1), timeout=60)
        assert_answer(client, reference, SOFTMAX, 1)
        assert client.model_ready(SOFTMAX, 1) is True
        assert index_state(client, SOFTMAX, 1)[0] == "READY"  # in memory, so in the index


# -- new versions that are corrupt -------------------------------------------------------------

@pytest.mark.parametrize("corruption", ["bad_sha256", "truncate"])
def test_a_corrupt_new_version_is_not_served_and_the_previous_keeps_serving(
    servers: Servers, tmp_path: Path, corruption: str
) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=(1,))
    reference = Reference(repo)
    process = start(servers, repo, *POLL)
    with Client(process.target) as client:
        write_softmax(repo, 2, **{corruption: True})
        wait_until(lambda: re.search(r"\bsoftmax\b.*\b2\b.*not served|version 2.*not served", process.log()),
                   "the log saying version 2 is not served", process)
        state, reason = index_state(client, SOFTMAX, 2)
        assert state == "UNAVAILABLE" and reason.strip(), (state, reason)
        if corruption == "bad_sha256":
            assert "sha256" in reason, reason
        assert client.metadata_versions(SOFTMAX) == [1]
        assert_answer(client, reference, SOFTMAX, 1)
        assert client.health("") == SERVING and client.health(SOFTMAX) == SERVING
        assert client.model_ready(SOFTMAX, 2) is False

        write_softmax(repo, 3)  # a good one after it is served
        wait_served(client, process, {SOFTMAX: [3]})
        assert_answer(client, reference, SOFTMAX, 3)


# -- model folders -----------------------------------------------------------------------------

def test_a_model_folder_that_appears_is_served_and_one_that_disappears_is_unloaded(
    servers: Servers, tmp_path: Path
) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=())
    reference = Reference(repo)
    process = start(servers, repo, *POLL)
    with Client(process.target) as client:
        code, _ = failure(lambda: client.infer(CNN))
        assert code == grpc.StatusCode.NOT_FOUND
        staging = tmp_path / "staging"
        write_cnn(staging, 1)
        os.rename(staging / CNN, repo / CNN)
        wait_served(client, process, {CNN: [1]})
        assert_answer(client, reference, CNN, 1)
        assert client.health(CNN) == SERVING and client.health(f"{CNN}/1") == SERVING
        assert client.metadata_versions(SOFTMAX) == [1]

        move_out(repo / CNN, tmp_path / "removed" / CNN)
        wait_until(lambda: client.served(CNN) == grpc.StatusCode.NOT_FOUND, "cnn NOT_FOUND", process)
        code, message = failure(lambda: client.infer(CNN))
        assert code == grpc.StatusCode.NOT_FOUND and SOFTMAX in message, message
        assert client.health(CNN) != SERVING and client.health(f"{CNN}/1") != SERVING
        assert not any(name == CNN for name, _ in client.index(ready=True))
        assert_answer(client, reference, SOFTMAX, 1)
        assert client.health("") == SERVING


# -- policy files ------------------------------------------------------------------------------

def test_a_policy_file_change_takes_effect_on_the_next_poll(servers: Servers, models_repo: Path) -> None:
    reference = Reference(models_repo)
    process = start(servers, models_repo, *POLL)
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [3], CNN: [2]})
        write_policy(models_repo, SOFTMAX, '{"version_policy": "specific:1"}')  # rollback
        wait_served(client, process, {SOFTMAX: [1]})
        assert_answer(client, reference, SOFTMAX, 1)
        wait_until(lambda: client.health(f"{SOFTMAX}/3") == NOT_SERVING, "softmax/3 NOT_SERVING", process)
        assert client.model_ready(SOFTMAX, 3) is False
        write_policy(models_repo, SOFTMAX, '{"version_policy": "specific:1,3"}')
        wait_served(client, process, {SOFTMAX: [1, 3]})
        assert_answer(client, reference, SOFTMAX, 3)
        (models_repo / SOFTMAX / "serving.json").unlink()  # back to the default, latest:1
        wait_served(client, process, {SOFTMAX: [3]})
        write_policy(models_repo, CNN, '{"version_policy": "all"}')
        wait_served(client, process, {CNN: [1, 2], SOFTMAX: [3]})


def test_a_bad_policy_file_on_reload_is_refused_and_the_model_keeps_its_versions(
    servers: Servers, models_repo: Path
) -> None:
    reference = Reference(models_repo)
    write_policy(models_repo, SOFTMAX, '{"version_policy": "latest:2"}')
    process = start(servers, models_repo, *POLL)
    policy_file = models_repo / SOFTMAX / "serving.json"
    with Client(process.target) as client:
        wait_served(client, process, {SOFTMAX: [2, 3]})
        write_policy(models_repo, SOFTMAX, '{"version_policy": "newest"}')
        process.wait_for_log(re.escape(str(policy_file)), timeout=60)
        assert client.metadata_versions(SOFTMAX) == [2, 3]
        assert_answer(client, reference, SOFTMAX, 3)
        assert_answer(client, reference, SOFTMAX, 2, "2")
        assert client.health("") == SERVING
        write_policy(models_repo, SOFTMAX, '{"version_policy": "latest:1"}')  # fixed: polling goes on
        wait_served(client, process, {SOFTMAX: [3]})
        assert "Traceback" not in process.log()


def test_sighup_reloads_at_once_without_polling(servers: Servers, tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "repo", softmax=(1,), cnn=(1,))
    reference = Reference(repo)
    process = start(servers, repo)  # --poll-seconds 0 (the test default): only SIGHUP reloads
    with Client(process.target) as client:
        write_softmax(repo, 2)
        write_policy(repo, CNN, '{"version_policy": "all"}')
        write_cnn(repo, 2)
        process.send_signal(signal.SIGHUP)
        wait_served(client, process, {SOFTMAX: [2], CNN: [1, 2]})
        assert_answer(client, reference, SOFTMAX, 2)
        assert_answer(client, reference, CNN, 2)


# -- everything under load ---------------------------------------------------------------------

@dataclass
class Timeline:
    """The newest version of each model over time: state k may answer from the start of the
    transition that made it until the end of the transition that replaced it."""

    states: list[tuple[float, dict[str, int]]]  # (begins, newest per model)
    ends: list[float] = field(default_factory=list)  # when state k was last possible
    transitions: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, what: str, begin: float, done: float, newest: dict[str, int]) -> None:
        self.ends.append(done)
        self.states.append((begin, newest))
        self.transitions.append((what, begin, done))

    def allowed(self, model: str, sent: float, received: float) -> set[int]:
        ends = [*self.ends, float("inf")]
        return {newest[model] for (begins, newest), until in zip(self.states, ends, strict=True)
                if begins <= received and sent <= until}


def test_transitions_under_load_fail_no_call(servers: Servers, tmp_path: Path) -> None:
    from tests.serve.repository_load import IMAGE

    repo = make_repository(tmp_path / "repo", softmax=(1, 2), cnn=(1, 2))
    write_policy(repo, CNN, '{"version_policy": "all"}')
    reference = Reference(repo)
    for name, version in ((SOFTMAX, 1), (SOFTMAX, 2), (CNN, 1), (CNN, 2)):
        reference.session(name, version)
    process = start(servers, repo, *POLL, "--grace-seconds", "30")
    client = Client(process.target)
    wait_served(client, process, {SOFTMAX: [2], CNN: [1, 2]})

    ready, stop, out = tmp_path / "load.ready", tmp_path / "load.stop", tmp_path / "calls.json"
    load = subprocess.Popen(
        [sys.executable, "-m", "tests.serve.repository_load", "--target", process.target,
         "--models", f"{SOFTMAX},{CNN}", "--concurrency", "8", "--ready-file", str(ready),
         "--stop-file", str(stop), "--out", str(out), "--max-seconds", "400"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: ready.exists() or load.poll() is not None, "the load answering", process)
        assert load.poll() is None, load.communicate()
        timeline = Timeline([(float("-inf"), {SOFTMAX: 2, CNN: 2})])
        answered = lambda: process.metric("nv_inference_request_success_total")  # noqa: E731

        def transition(what: str, change, done, newest: dict[str, int]) -> None:
            begin = time.monotonic()
            change()
            wait_until(done, what, process)
            timeline.add(what, begin, time.monotonic(), newest)
            before = answered()  # and the load goes on answering on the new state
            wait_until(lambda: answered() >= before + 50, f"50 answers after {what}", process)

        transition("a new version: softmax 3", lambda: write_softmax(repo, 3),
                   lambda: client.served(SOFTMAX) == [3], {SOFTMAX: 3, CNN: 2})
        transition("a corrupt new version: softmax 4", lambda: write_softmax(repo, 4, bad_sha256=True),
                   lambda: "sha256" in (index_state(client, SOFTMAX, 4) or ("", ""))[1]
                   and re.search(r"version 4.*not served|\bsoftmax\b.*\b4\b.*not served", process.log()),
                   {SOFTMAX: 3, CNN: 2})
        transition("a policy change: softmax pinned to 1",
                   lambda: write_policy(repo, SOFTMAX, '{"version_policy": "specific:1"}'),
                   lambda: client.served(SOFTMAX) == [1], {SOFTMAX: 1, CNN: 2})
        transition("a removed version: cnn/1", lambda: move_out(repo / CNN / "1", tmp_path / "gone" / "1"),
                   lambda: client.served(CNN) == [2] or re.search(kept_line(CNN, 1), process.log()),
                   {SOFTMAX: 1, CNN: 2})
        transition("a model folder added: extra", lambda: add_model(repo, tmp_path / "staging", "extra", 1),
                   lambda: client.served("extra") == [1], {SOFTMAX: 1, CNN: 2})
        transition("a model folder removed: extra", lambda: move_out(repo / "extra", tmp_path / "gone" / "extra"),
                   lambda: client.served("extra") == grpc.StatusCode.NOT_FOUND, {SOFTMAX: 1, CNN: 2})
        stop.write_text("stop\n")
        stdout, stderr = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
        client.close()
    assert load.returncode == 0, stderr
    calls = json.loads(out.read_text())
    failed = [c for c in calls if c["code"] != "OK"]
    assert not failed, f"{len(failed)} of {len(calls)} calls failed, e.g. {failed[:5]}\n{process.log()}"

    pixels = IMAGE.astype(np.float32).reshape(1, 784) / np.float32(255.0)
    expected = {(name, v): reference(name, v, pixels)[0] for name, v in
                ((SOFTMAX, 1), (SOFTMAX, 2), (SOFTMAX, 3), (CNN, 1), (CNN, 2))}
    wrong = []
    for call in calls:
        allowed = timeline.allowed(call["model"], call["sent"], call["received"])
        key = (call["model"], call["version"])
        if call["answered_by"] != call["model"] or call["version"] not in allowed:
            wrong.append((call, allowed))
        elif not np.allclose(call["probabilities"], expected[key], atol=ATOL):
            wrong.append((call, "probabilities are not that version's"))
    assert not wrong, f"{len(wrong)} answers from versions not served then, e.g. {wrong[:3]}"
    for what, begin, done in timeline.transitions:  # the load ran through every transition
        assert any(c["sent"] <= done and c["received"] >= begin for c in calls), what
    seen = {(c["api"], c["model"]) for c in calls}
    assert seen == {("v2", SOFTMAX), ("v2", CNN), ("digits", SOFTMAX), ("digits", CNN)}, seen
    assert process.terminate(60) == 0, process.log()
