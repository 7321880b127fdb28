"""The server-side phases of `digitserve bench serve`: start servers and the echo, load them, read metrics.

Each phase loads a real server (or the echo) through the shared LoadGenerator and reads the
server's Prometheus counters before and after, so the result also says how many images each
model execution carried (mean batch size) and how busy the model was (compute share).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from digitserve.bench.launch import BenchServer, ServerFailed, reusable_port
from digitserve.bench.loadgen import LoadGenerator, LoadSpec
from digitserve.bench.serve_bench import ARTIFACTS, METHODS, request_payloads

log = logging.getLogger(__name__)

METRICS_LINE = re.compile(r"metrics on http://[^:]+:(\d+)/metrics")
COUNTERS = ("nv_inference_count", "nv_inference_exec_count", "nv_inference_compute_infer_duration_us")


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds all cores have spent busy (not idle, not waiting for I/O) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def in_process(repo: Path, name: str, batches: list[np.ndarray], seconds: float, warmup: float,
               artifact: str = "onnx") -> dict[str, Any]:
    """ONNX Runtime in this process, through the server's own loader and settings, back to back."""
    from digitserve.serve.model import load_model
    from digitserve.serve.settings import ServeSettings

    settings = ServeSettings(repo=repo, name=name, device="cpu", metrics_port=None, poll_seconds=0,
                             artifact=artifact)  # type: ignore[arg-type]
    model = load_model(settings)
    pixels = [(b.astype(np.float32) / np.float32(255.0)) for b in batches]
    latencies: list[float] = []
    cpu = time.process_time()
    start = time.monotonic()
    measure_from, stop_at = start + warmup, start + warmup + seconds
    i = 0
    while (began := time.monotonic()) < stop_at:
        model.run(pixels[i % len(pixels)])
        if began >= measure_from:
            latencies.append(time.monotonic() - began)
        i += 1
    cpu = time.process_time() - cpu
    ms = np.array(latencies) * 1000.0
    elapsed = float(sum(latencies))
    return {
        "images_per_request": len(batches[0]),
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "images_per_s": round(len(latencies) * len(batches[0]) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "intra_op_threads": settings.session_threads,
        "cpu_us_per_image": round(cpu / (i * len(batches[0])) * 1e6, 1),
    }


def scrape(port: int) -> dict[str, float]:
    """Sums of the counters above, from one server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        match = re.match(r"^(\w+?)(?:_total)?(?:\{[^}]*\})? (\S+)$", line)
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(2))
    return totals


class Phases:
    """Servers, echoes and load for phases a to e and h (see serve_bench's module doc)."""

    def __init__(self, args: argparse.Namespace, repo: Path, folder: Path):
        self.args = args
        self.repo = repo
        self.folder = folder
        self.load: LoadGenerator | None = None
        self._logs = 0

    def __enter__(self) -> Phases:
        self.load = LoadGenerator(self.args.load_processes)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.load is not None:
            self.load.close()

    @contextlib.contextmanager
    def servers(self, extra: list[str], repo: Path | None = None, http: bool = False) -> Iterator[list[BenchServer]]:
        """`--server-processes` servers on one port (SO_REUSEPORT when more than one), serving
        --name of the bench's repository; or `repo` without --name (`extra` may give --model);
        `http`: the KServe V2 HTTP/REST binding too, on one port of its own (shared the same way)."""
        count = self.args.server_processes
        cores = len(os.sched_getaffinity(0))
        flags = ["--device", "cpu", "--metrics-port", "0", "--intra-op-threads", str(max(1, cores // count))]
        flags += [*self.args.server_arg, *extra]
        port = 0
        if count > 1:
            flags.append("--reuse-port")
            port = reusable_port()
        if http:
            flags += ["--http-port", str(reusable_port() if count > 1 else 0)]
        started: list[BenchServer] = []
        try:
            for _ in range(count):
                self._logs += 1
                log_path = self.folder / f"serve-{self._logs}.log"
                name = None if repo else self.args.name
                started.append(BenchServer(repo or self.repo, flags, log_path, name, port).wait_serving())
                port = started[0].port
            yield started
        finally:
            for server in started:
                server.close()

    @contextlib.contextmanager
    def echo(self, reply_bytes: int) -> Iterator[tuple[str, int]]:
        command = [sys.executable, "-m", "digitserve.bench.echo", "--reply-bytes", str(reply_bytes)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            line = process.stdout.readline() if process.stdout else ""
            match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if not match:
                raise ServerFailed(f"the echo server did not start (it printed {line!r})")
            yield match.group(1), process.pid
        finally:
            process.terminate()
            process.wait(15)

    @contextlib.contextmanager
    def http_echo(self, json_reply: bytes, binary_reply: bytes, binary_header_length: int) -> Iterator[tuple[str, int]]:
        """bench/http_echo.py answering with these replies (recorded from the real server)."""
        json_file, binary_file = self.folder / "http-reply.json", self.folder / "http-reply.bin"
        json_file.write_bytes(json_reply)
        binary_file.write_bytes(binary_reply)
        command = [sys.executable, "-m", "digitserve.bench.http_echo", "--json-reply", str(json_file),
                   "--binary-reply", str(binary_file), "--binary-header-length", str(binary_header_length)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            line = process.stdout.readline() if process.stdout else ""
            match = re.search(r"listening on http://(127\.0\.0\.1:\d+)", line)
            if not match:
                raise ServerFailed(f"the HTTP echo did not start (it printed {line!r})")
            yield match.group(1), process.pid
        finally:
            process.terminate()
            process.wait(15)

    def phase(self, target: str, payloads: tuple[bytes, ...], images: int, concurrency: int,
              servers: list[BenchServer] | None = None, pids: list[int] | None = None,
              models: tuple[tuple[str, tuple[bytes, ...]], ...] = (),
              http: tuple[str, tuple[tuple[str, str], ...]] | None = None) -> dict[str, Any]:
        """Load `target` (served by `servers`, or by the processes `pids`) and summarise;
        `models`: spread the calls round robin over these models (LoadSpec.models); `http`: an
        HTTP load instead of gRPC, (the path POSTed to, the headers of every request)."""
        assert self.load is not None
        ports = [int(m.group(1)) for s in servers or [] if (m := METRICS_LINE.search(s.log()))]
        pids = pids or [s.process.pid for s in servers or []]
        before = [scrape(p) for p in ports]
        cpu_before, busy_before, wall_before = sum(process_cpu(p) for p in pids), machine_busy(), time.monotonic()
        path, headers = http or (METHODS[self.args.api], ())
        spec = LoadSpec(
            target=target, method=path, payloads=payloads, images_per_request=images,
            concurrency=concurrency, seconds=self.args.seconds, warmup_seconds=self.args.warmup,
            max_requests=self.args.max_requests, channels=self.args.channels, models=models,
            protocol="http" if http else "grpc", headers=headers,
        )
        result = self.load.run(spec)
        wall = time.monotonic() - wall_before
        server_cpu = sum(process_cpu(p) for p in pids) - cpu_before
        other_cpu = machine_busy() - busy_before - server_cpu - result.cpu_seconds
        summary = result.summary()
        summary["reply_bytes"] = result.reply_bytes
        summary["request_bytes"] = len(spec.groups()[0][1][0])
        done = max(1, result.completed)
        summary["server_cpu_us_per_request"] = round(server_cpu / done * 1e6, 1)
        summary["load_cpu_us_per_request"] = round(result.cpu_seconds / done * 1e6, 1)
        cores = len(os.sched_getaffinity(0))
        summary["cpu_share"] = {  # of all cores over the phase: who used the machine
            "server": round(server_cpu / (wall * cores), 3),
            "load": round(result.cpu_seconds / (wall * cores), 3),
            "other": round(max(0.0, other_cpu) / (wall * cores), 3),
        }
        if ports:
            after = [scrape(p) for p in ports]
            delta = {k: sum(a[k] - b[k] for a, b in zip(after, before, strict=True)) for k in COUNTERS}
            if delta["nv_inference_exec_count"]:
                summary["mean_batch_size"] = round(delta["nv_inference_count"] / delta["nv_inference_exec_count"], 2)
            window = self.args.warmup + self.args.seconds
            summary["model_busy_share"] = round(delta["nv_inference_compute_infer_duration_us"] / 1e6 / window, 3)
        log.info("%s%s c=%d x%d: %s", "http " if http else "", target, concurrency, images, summary)
        return summary

    def check_predictions(self, target: str, batch: np.ndarray, artifact: str = "onnx",
                          model_name: str | None = None) -> dict[str, Any]:
        """Predictions over gRPC (through the Client) against in-process ONNX Runtime; `model_name`:
        ask that model of the server (the reference is always --name of the bench's repository)."""
        from digitserve.client import Client
        from digitserve.serve.model import load_model
        from digitserve.serve.settings import ServeSettings

        model = load_model(ServeSettings(repo=self.repo, name=self.args.name, device="cpu", metrics_port=None,
                                         artifact=artifact))  # type: ignore[arg-type]
        expected = model.run(batch.astype(np.float32) / np.float32(255.0))
        asked = model_name or self.args.name
        with Client(target, api=self.args.api, encoding=self.args.encoding, model=asked) as client:
            answer = client.classify(batch)
        got = answer.probabilities
        return {
            "images": len(batch),
            "max_abs_diff": float(np.abs(got - expected).max()),
            "labels_equal": bool((got.argmax(1) == expected.argmax(1)).all()),
            **({"answered_by": f"{answer.model_name}/{answer.model_version}"} if model_name else {}),
        }

    def two_model_repo(self) -> tuple[Path, list[str]]:
        """Phase e's repository: the served version of --name copied as two models, NAME and NAME-b.

        The same export twice (same version number, same files, each verified against its own
        manifest copy), so the two servers differ only in how many models they hold.
        """
        from digitserve.repository import ModelRepository

        name = self.args.name
        version = ModelRepository(self.repo, name).latest_complete_version()
        repo = self.folder / "repo-e"
        names = [name, f"{name}-b"]
        for model in names:
            shutil.copytree(self.repo / name / str(version), repo / model / str(version))
        log.info("phase e: version %d of %r copied to %s as %s", version, name, repo, " and ".join(names))
        return repo, names

    def measure(self, phases: set[str], batches: list[np.ndarray], batch_payloads: tuple[bytes, ...],
                singles: list[np.ndarray], single_payloads: tuple[bytes, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if phases & {"a", "b"}:
            with self.servers([]) as servers:
                target = servers[0].target
                out["prediction_check"] = self.check_predictions(target, np.concatenate(batches[:2]))
                if "a" in phases:
                    # The reference before and after the server's turn (the server idles meanwhile);
                    # the faster of the two counts, so noise from elsewhere cannot flatter the server.
                    seconds, warmup = self.args.seconds, self.args.warmup
                    before = in_process(self.repo, self.args.name, batches, seconds / 2, warmup)
                    out["a_server"] = self.phase(target, batch_payloads, 64, 8, servers)
                    after = in_process(self.repo, self.args.name, batches, seconds / 2, warmup)
                    best = max(before, after, key=lambda r: r["images_per_s"])
                    out["a_in_process"] = {**best, "runs_images_per_s": [before["images_per_s"], after["images_per_s"]]}
                if "b" in phases:
                    out["b_server_c1"] = self.phase(target, single_payloads, 1, 1, servers)
                    out["b_server_c64"] = self.phase(target, single_payloads, 1, 64, servers)
        if "b" in phases:
            with self.echo(out["b_server_c1"]["reply_bytes"]) as (target, pid):
                out["b_echo_c1"] = self.phase(target, single_payloads, 1, 1, pids=[pid])
                out["b_echo_c64"] = self.phase(target, single_payloads, 1, 64, pids=[pid])
        if "c" in phases:
            with self.servers(["--max-batch-size", "1"]) as servers:
                out["c_no_batching_c1"] = self.phase(servers[0].target, single_payloads, 1, 1, servers)
                out["c_no_batching_c64"] = self.phase(servers[0].target, single_payloads, 1, 64, servers)
        if "d" in phases:
            for kind, artifact in ARTIFACTS.items():
                with self.servers(["--artifact", artifact]) as servers:
                    target = servers[0].target
                    out[f"d_prediction_check_{kind}"] = self.check_predictions(
                        target, np.concatenate(batches[:2]), artifact)
                    out[f"d_server_{kind}"] = self.phase(target, batch_payloads, 64, 8, servers)
                    # The server idles meanwhile, as in phase a.
                    out[f"d_in_process_{kind}"] = in_process(
                        self.repo, self.args.name, batches, self.args.seconds, self.args.warmup, artifact)
        if "e" in phases:
            repo, names = self.two_model_repo()
            routes = tuple((name, request_payloads(self.args, batches, name)) for name in names)
            # Every request names its model in both runs, so the requests are alike byte for byte
            # (but for the "-b"); e1 sends them all to NAME, e2 alternates NAME and NAME-b.
            with self.servers(["--model", names[0]], repo) as servers:
                out["e_one_model"] = self.phase(servers[0].target, routes[0][1], 64, 8, servers, models=routes[:1])
            with self.servers([], repo) as servers:
                out["e_prediction_check"] = {
                    name: self.check_predictions(servers[0].target, np.concatenate(batches[:2]), model_name=name)
                    for name in names
                }
                out["e_two_models"] = self.phase(servers[0].target, routes[0][1], 64, 8, servers, models=routes)
        if "h" in phases:
            from digitserve.bench.http_phase import measure_http

            out.update(measure_http(self, batches, singles))
        return out
