"""Shutdown and overload lose nothing: real server processes, real signals, load from another process.

The load comes from `tests.support.load` in a process of its own (see its docstring). Nothing
here times the server: the assertions are about which status each call got and how it exited.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.serve_models import Weights, write_version
from tests.support.server import ServeProcess, Servers

ROOT = Path(__file__).resolve().parents[2]


def load(process: ServeProcess, shape: str, *args: str, timeout: float = 120) -> dict:
    """Run the load generator against `process`; its JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.load", shape, "--target", process.target, *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("images", [1, 64])
def test_every_call_issued_before_sigterm_is_answered(servers: Servers, model_repo: Path, images: int) -> None:
    process = servers.serve("--repo", str(model_repo), "--max-queue-images", str(200 * 64)).wait_serving()
    report = load(process, "burst", "--calls", "200", "--images", str(images), "--signal-pid",
                  str(process.process.pid), "--signal-after", "0.02")
    assert report["codes"] == {"OK": 200}, process.log()
    assert process.wait(60) == 0, process.log()
    assert "refusing new calls" in process.log()


def test_a_steady_load_through_sigterm_sees_no_cancelled_call(servers: Servers, model_repo: Path) -> None:
    process = servers.serve("--repo", str(model_repo)).wait_serving()
    report = load(process, "steady", "--concurrency", "64", "--seconds", "3", "--signal-pid",
                  str(process.process.pid), "--signal-after", "1")
    codes = report["codes"]
    assert codes.get("OK", 0) > 0
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes  # never CANCELLED, never INTERNAL
    assert process.wait(60) == 0, process.log()


def test_the_lame_duck_phase_lets_a_client_that_watches_health_leave_without_a_failure(
    servers: Servers, model_repo: Path
) -> None:
    process = servers.serve("--repo", str(model_repo), "--drain-delay-seconds", "1").wait_serving()
    report = load(process, "steady", "--concurrency", "16", "--seconds", "30", "--watch-health",
                  "--signal-pid", str(process.process.pid), "--signal-after", "1")
    assert set(report["codes"]) == {"OK"}, report
    assert process.wait(60) == 0, process.log()
    assert "lame duck" in process.log()


def test_a_load_that_outlasts_the_grace_is_refused_unavailable_and_exits_3(
    servers: Servers, model_repo: Path
) -> None:
    # Callers that never stop (no health watching, no retry elsewhere) keep the drain busy: the
    # grace runs out, the last second of it refuses with UNAVAILABLE, and the exit code says the
    # grace was not enough. Only the transport's own stop may cancel what it still holds.
    process = servers.serve("--repo", str(model_repo), "--grace-seconds", "3").wait_serving()
    report = load(process, "steady", "--concurrency", "8", "--seconds", "6", "--signal-pid",
                  str(process.process.pid), "--signal-after", "0.5")
    codes = report["codes"]
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, codes
    assert codes.get("UNAVAILABLE", 0) > codes.get("CANCELLED", 0), codes
    assert process.wait(60) == 3, process.log()
    assert "the grace period ran out" in process.log()


def test_overload_fails_fast_with_resource_exhausted_or_deadline_and_recovers(
    servers: Servers, tmp_path: Path, weights: Weights
) -> None:
    # A model of about 10-20 ms per batch whatever its size, batches of 8: 128 callers of 8
    # images each offer far more than it computes, and the queue holds 8 batches.
    write_version(tmp_path, 1, weights, slow_size=800)
    process = servers.serve("--repo", str(tmp_path), "--max-batch-size", "8", "--max-queue-images", "64",
                            "--max-request-images", "8").wait_serving()
    before = load(process, "steady", "--concurrency", "2", "--seconds", "1", "--images", "8")
    assert set(before["codes"]) == {"OK"}, before
    overload = load(process, "steady", "--concurrency", "128", "--seconds", "10", "--images", "8",
                    "--timeout", "1")
    codes = overload["codes"]
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, codes
    assert codes.get("OK", 0) > 0 and codes.get("RESOURCE_EXHAUSTED", 0) > 0, codes  # served and refused
    assert process.metric("digitserve_queue_images") == 0  # nothing left behind
    after = load(process, "steady", "--concurrency", "2", "--seconds", "1", "--images", "8")
    assert set(after["codes"]) == {"OK"}, after
    assert sum(after["ok_per_bucket"][:4]) > 0  # answering again within the first second
