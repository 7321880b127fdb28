"""The serving benchmark and the GPU check run end to end (briefly: these are smoke tests, not measurements)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from digitserve.bench.http_echo import default_replies
from digitserve.bench.loadgen import LoadGenerator, LoadSpec
from tests.support.commands import digitserve


def test_bench_serve_runs_every_phase_and_writes_json(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = digitserve(
        "bench", "serve", "--repo", str(repo), "--data", str(mnist_dir), "--seconds", "0.6", "--warmup", "0.2",
        "--output", str(output), timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    phases = ["a_server", "b_server_c1", "b_server_c64", "b_echo_c1", "b_echo_c64", "c_no_batching_c1",
              "c_no_batching_c64"]
    for phase in phases:
        row = results[phase]
        assert row["errors"] == {} and row["requests"] > 0 and row["images_per_s"] > 0, (phase, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert results["a_in_process"]["images_per_s"] > 0
    assert results["a_server"]["mean_batch_size"] == 64.0  # 64-image requests are never split or merged
    assert results["c_no_batching_c64"]["mean_batch_size"] == 1.0
    assert results["b_echo_c1"]["reply_bytes"] == results["b_server_c1"]["reply_bytes"]  # same message sizes
    assert results["b_echo_c1"]["request_bytes"] == results["b_server_c1"]["request_bytes"]
    assert results["prediction_check"]["labels_equal"] and results["prediction_check"]["max_abs_diff"] < 1e-5
    assert set(results["ratios"]) == {"a_server_vs_in_process", "b_server_vs_echo_c1", "b_server_vs_echo_c64",
                                      "c_batching_vs_off_c64", "c_batching_vs_off_c1"}  # phase d not asked for
    assert all(isinstance(value, float) for value in results["ratios"].values())
    assert "b_server_vs_echo_c64" in done.stdout and "(a) server, 64 images/call, conc 8" in done.stdout


@pytest.mark.slow  # a smoke run of a measurement tool, 15-40 s: `make test-slow`
def test_bench_serve_phase_e_splits_the_load_over_two_models(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bench-e.json"
    done = digitserve(
        "bench", "serve", "--repo", str(repo), "--data", str(mnist_dir), "--phases", "e", "--seconds", "0.6",
        "--warmup", "0.2", "--output", str(output), timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    one, two = results["e_one_model"], results["e_two_models"]
    for row in (one, two):
        assert row["errors"] == {} and row["requests"] > 0 and row["mean_batch_size"] == 64.0, row
    assert one["requests_by_model"] == {"digits": one["requests"]}
    split = two["requests_by_model"]
    assert set(split) == {"digits", "digits-b"} and abs(split["digits"] - split["digits-b"]) <= 8  # round robin
    for name, check in results["e_prediction_check"].items():
        assert check["answered_by"] == f"{name}/1" and check["labels_equal"] and check["max_abs_diff"] < 1e-5
    assert set(results["ratios"]) == {"e_two_models_vs_one"} and results["ratios"]["e_two_models_vs_one"] > 0
    assert "(e) two models, load split over both" in done.stdout


HTTP_ROWS = [f"h_{side}_{kind}_c{c}" for side in ("server", "echo") for kind in ("json", "binary") for c in (1, 64)]


@pytest.mark.slow  # a smoke run of a measurement tool, 15-40 s: `make test-slow`
def test_bench_serve_phase_h_loads_http_against_its_echo(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "bench-h.json"
    done = digitserve(
        "bench", "serve", "--repo", str(repo), "--data", str(mnist_dir), "--phases", "b,h", "--seconds", "0.6",
        "--warmup", "0.2", "--output", str(output), timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    for phase in [*HTTP_ROWS, "h_server_json_64", "h_server_binary_64"]:
        row = results[phase]
        assert row["errors"] == {} and row["requests"] > 0 and row["images_per_s"] > 0, (phase, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    assert results["h_in_process"]["images_per_s"] > 0
    for kind in ("json", "binary"):
        assert results[f"h_server_{kind}_64"]["mean_batch_size"] == 64.0  # HTTP calls reach the same data plane
        assert results[f"h_server_{kind}_c1"]["mean_batch_size"] == 1.0
        server, echo = results[f"h_server_{kind}_c1"], results[f"h_echo_{kind}_c1"]
        assert echo["request_bytes"] == server["request_bytes"]  # the same requests to both
        check = results["h_prediction_check"][kind]
        assert check["labels_equal"] and check["max_abs_diff"] < 1e-5 and check["images"] == 128
    assert results["h_prediction_check"]["binary"]["content_type"] == "application/octet-stream"
    assert results["h_prediction_check"]["json"]["content_type"] == "application/json"
    # The echo answers a recorded real reply: a binary one exactly as large, a JSON one within a few digits.
    assert results["h_echo_binary_c1"]["reply_bytes"] == results["h_server_binary_c1"]["reply_bytes"]
    json_sizes = results["h_echo_json_c1"]["reply_bytes"], results["h_server_json_c1"]["reply_bytes"]
    assert abs(json_sizes[0] - json_sizes[1]) <= 0.1 * json_sizes[1], json_sizes
    assert set(results["ratios"]) == {
        "b_server_vs_echo_c1", "b_server_vs_echo_c64", "h_json_c64_vs_echo", "h_binary_c64_vs_echo",
        "h_json_c1_vs_echo", "h_binary_c1_vs_echo", "h_binary_64_vs_in_process", "h_json_64_vs_in_process",
        "h_binary_c64_vs_grpc_c64",
    }
    assert all(isinstance(value, float) for value in results["ratios"].values())
    assert "(h) HTTP binary, 1 image/call, conc 64" in done.stdout and "h_binary_c64_vs_grpc_c64" in done.stdout


def test_http_load_counts_other_statuses_as_errors_and_the_echo_answers_in_kind() -> None:
    """The HTTP load against bench/http_echo.py on its own: a 200 is a call (with the reply's body
    size), any other status an error under its number; binary requests get the binary reply."""
    echo = subprocess.Popen([sys.executable, "-m", "digitserve.bench.http_echo"], stdout=subprocess.PIPE, text=True)
    try:
        line = echo.stdout.readline() if echo.stdout else ""
        match = re.search(r"listening on http://(127\.0\.0\.1:\d+)", line)
        assert match, line
        with LoadGenerator(1) as load:

            def run(path: str, headers: tuple[tuple[str, str], ...] = ()) -> Any:
                return load.run(LoadSpec(
                    target=match.group(1), method=path, payloads=(b"{}", b"[]"), images_per_request=1,
                    concurrency=3, seconds=0.3, warmup_seconds=0.1, protocol="http", headers=headers,
                ))

            as_json = run("/v2/models/digits/infer", (("content-type", "application/json"),))
            as_binary = run("/v2/models/digits/versions/1/infer", (("inference-header-content-length", "2"),))
            missing = run("/v2/models/digits/nowhere")
    finally:
        echo.terminate()
        echo.wait(15)
    json_reply, binary_reply, _ = default_replies()
    for result, size in ((as_json, len(json_reply)), (as_binary, len(binary_reply))):
        assert result.errors == {} and len(result.latencies) > 0 and result.reply_bytes == size
    assert missing.completed == 0 and list(missing.errors) == ["HTTP 404"] and missing.errors["HTTP 404"] > 0


def gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "digitserve.bench.gpu_check", *args], capture_output=True, text=True, timeout=240
    )


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: the GPU check is run for real instead")
def test_gpu_check_fails_clearly_without_cuda(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "gpu.json"
    done = gpu_check("--repo", str(repo), "--data", str(mnist_dir), "--images", "100", "--output", str(output))
    assert done.returncode == 1
    assert "digitserve serve exited with code 1: --device cuda: " in done.stderr
    assert "has no CUDAExecutionProvider" in done.stderr and "--device cpu" in done.stderr
    result = json.loads(output.read_text())
    assert result["ok"] is False and "no CUDAExecutionProvider" in result["error"]


@pytest.mark.skipif(not cuda_available(), reason="needs onnxruntime-gpu and an NVIDIA GPU")
def test_gpu_check_on_a_gpu(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    done = gpu_check("--repo", str(repo), "--data", str(mnist_dir), "--images", "2000", "--seconds", "2",
                     "--output", str(tmp_path / "gpu.json"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_check_comparison_and_measurement_run_on_cpu(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    """Everything but CUDA itself: two servers, the parity comparison, the throughput runs."""
    output = tmp_path / "gpu.json"
    done = gpu_check("--repo", str(repo), "--data", str(mnist_dir), "--device", "cpu", "--images", "300",
                     "--seconds", "0.3", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["ok"] and result["parity"]["labels_equal"] == 300 and result["parity"]["max_abs_diff"] <= 1e-4
    assert result["provider"] == {"cuda_server": "CPUExecutionProvider", "cpu_server": "CPUExecutionProvider"}
    for device in ("cuda", "cpu"):
        for load in ("batch64_c8", "single_c64"):
            assert result["throughput"][device][load]["images_per_s"] > 0
            assert result["throughput"][device][load]["errors"] == {}


@pytest.mark.slow  # a smoke run of a measurement tool, 15-40 s: `make test-slow`
def test_bench_profile_samples_the_live_server(repo: Path, mnist_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "profile"
    done = digitserve(
        "bench", "profile", "--repo", str(repo), "--data", str(mnist_dir), "--seconds", "2", "--concurrency", "8",
        "--channels", "2", "--output-dir", str(out), timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["load"]["errors"] == {} and summary["load"]["requests_per_s"] > 0
    assert summary["samples"] > 0 and (out / "stacks.txt").stat().st_size > 0
    assert "event loop" in summary["threads"] and 0 < summary["model_run_share"] < 1  # the model ran, not only it
    assert 0 < summary["server_cpu_us_per_call_outside_model_run"] < summary["server_cpu_us_per_call"]
    assert "server CPU per call" in done.stdout and "top functions by own time" in done.stdout


def test_profile_summary_folds_lines_and_finds_the_model(tmp_path: Path) -> None:
    from digitserve.bench.profile_serve import summarise

    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "thread (0x1): MainThread;run (a.py:3);Handle._run (asyncio/events.py:80) 6\n"
        "thread (0x1): MainThread;run (a.py:4);Handle._run (asyncio/events.py:95) 2\n"
        "thread (0x2): digitserve-model_0;OnnxModel.run (serve/model.py:63);Session.run (ort.py:395) 2\n"
    )
    summary = summarise(stacks, top=5)
    assert summary["samples"] == 10 and summary["model_run_share"] == 0.2
    assert summary["threads"] == {"event loop": 0.8, "model": 0.2}
    assert summary["own"][0] == ("Handle._run (asyncio/events.py)", 0.8)  # line numbers folded into one function
