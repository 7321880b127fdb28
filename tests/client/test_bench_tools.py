"""The serving benchmark and the GPU check run end to end (briefly: these are smoke tests, not measurements)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
