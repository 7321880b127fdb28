"""Prometheus metrics, with Triton's names where they fit, served by prometheus-client.

Counters (prometheus-client exposes each with the `_total` suffix of the Prometheus convention):
    nv_inference_request_success{model,version}          calls answered
    nv_inference_request_failure{model,version,reason}   calls failed; reason = gRPC status name
    nv_inference_count{model,version}                    images computed
    nv_inference_exec_count{model,version}               model executions (batches)
    nv_inference_request_duration_us{model,version}      total time of successful calls
    nv_inference_queue_duration_us{model,version}        total time chunks waited in the queue
    nv_inference_compute_infer_duration_us{model,version} total time the model ran
    digitserve_dropped_images{reason}                    images dropped unrun: cancelled, expired
    digitserve_reloads{result}                           hot reloads: success, failure
Histograms: digitserve_batch_size, digitserve_queue_duration_seconds,
    digitserve_compute_duration_seconds, digitserve_request_duration_seconds.
Gauges: digitserve_execution_provider{provider} (1 for the active one),
    digitserve_model_version{model} (the newest version served), digitserve_artifact{artifact} (1 for
    the one served: onnx or onnx-int8), digitserve_queue_images,
    digitserve_inflight_calls (inference calls being handled),
    digitserve_ready (1 when serving, 0 when loading or draining).

Each server owns its registry, so several servers can live in one process (tests).

With `--workers N` (serve/workers.py) every worker writes its samples to prometheus-client's
multiprocess files (PROMETHEUS_MULTIPROC_DIR) and the supervisor serves their sum on the one metrics
port (`SupervisorMetrics`), with digitserve_worker_restarts (counter) of its own. Counters and
histograms add up, a dead worker's included; each gauge states how its workers' values combine
(`multiprocess_mode`, live workers only): queue, in-flight calls and ready add up (ready counts the
workers serving), the provider and artifact take the max, the version the min (every worker serves
at least that version).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
    values,
)

log = logging.getLogger(__name__)

PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
REFRESH_SECONDS = 0.25
"""How often a worker copies its queue depth into its multiprocess file (no callback gauges there)."""


def multiprocess_mode() -> bool:
    """Whether prometheus-client writes samples to PROMETHEUS_MULTIPROC_DIR (chosen at its import)."""
    return values.ValueClass is not values.MutexValue


class _VersionCounters:
    """One served version's labelled counters, looked up once instead of on every call."""

    def __init__(self, metrics: Metrics, name: str, version: str):
        self.success = metrics.success.labels(name, version)
        self.request_us = metrics.request_us.labels(name, version)
        self.inferences = metrics.inferences.labels(name, version)
        self.executions = metrics.executions.labels(name, version)
        self.compute_us = metrics.compute_us.labels(name, version)
        self.queue_us = metrics.queue_us.labels(name, version)


class Metrics:
    """The server's metrics; also the batcher's BatchObserver."""

    def __init__(self, max_batch_size: int):
        disable_created_metrics()  # the `_created` twin of every counter only adds noise here
        self.registry = CollectorRegistry()
        r = self.registry
        mv = ["model", "version"]
        self.success = Counter("nv_inference_request_success", "Successful inference calls", mv, registry=r)
        self.failure = Counter("nv_inference_request_failure", "Failed inference calls", [*mv, "reason"], registry=r)
        self.inferences = Counter("nv_inference_count", "Images computed", mv, registry=r)
        self.executions = Counter("nv_inference_exec_count", "Model executions (batches)", mv, registry=r)
        self.request_us = Counter(
            "nv_inference_request_duration_us",
            "Cumulative successful call time (us)",
            mv,
            registry=r,
        )
        self.queue_us = Counter(
            "nv_inference_queue_duration_us",
            "Cumulative queue wait of computed chunks (us)",
            mv,
            registry=r,
        )
        self.compute_us = Counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative model execution time (us)",
            mv,
            registry=r,
        )
        self.dropped_images = Counter(
            "digitserve_dropped_images",
            "Images dropped before the model ran",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter("digitserve_reloads", "Hot reload attempts", ["result"], registry=r)
        buckets = [1.0]
        while buckets[-1] < max_batch_size:
            buckets.append(min(buckets[-1] * 2, float(max_batch_size)))
        self.batch_size = Histogram("digitserve_batch_size", "Images per model execution", buckets=buckets, registry=r)
        seconds = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
        self.queue_seconds = Histogram(
            "digitserve_queue_duration_seconds", "Queue wait per chunk", buckets=seconds, registry=r
        )
        self.compute_seconds = Histogram(
            "digitserve_compute_duration_seconds",
            "Model execution time per batch",
            buckets=seconds,
            registry=r,
        )
        self.request_seconds = Histogram(
            "digitserve_request_duration_seconds",
            "Successful call duration",
            buckets=seconds,
            registry=r,
        )
        self.provider = Gauge(
            "digitserve_execution_provider",
            "1 for the ONNX Runtime provider in use",
            ["provider"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_version = Gauge(
            "digitserve_model_version", "Version served", ["model"], registry=r, multiprocess_mode="livemin"
        )
        self.artifact = Gauge(
            "digitserve_artifact", "1 for the artifact served", ["artifact"], registry=r, multiprocess_mode="livemax"
        )
        self.queue_images = Gauge(
            "digitserve_queue_images", "Images waiting in the queue", registry=r, multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            "digitserve_ready", "1 when serving, 0 when loading or draining", registry=r, multiprocess_mode="livesum"
        )
        self.in_flight = Gauge(
            "digitserve_inflight_calls", "Inference calls being handled right now", registry=r,
            multiprocess_mode="livesum",
        )
        self._http: Any = None
        self._stop_refresh = threading.Event()
        self._versions: dict[tuple[str, int], _VersionCounters] = {}

    def _of(self, model: Any) -> _VersionCounters:
        info = model.info
        key = (info.name, info.version)
        counters = self._versions.get(key)
        if counters is None:
            counters = self._versions[key] = _VersionCounters(self, info.name, str(info.version))
        return counters

    # -- the batcher's observer ------------------------------------------------------------
    def batch_done(self, model: Any, images: int, queue_seconds: Sequence[float], compute_seconds: float) -> None:
        counters = self._of(model)
        counters.inferences.inc(images)
        counters.executions.inc()
        counters.compute_us.inc(compute_seconds * 1e6)
        counters.queue_us.inc(sum(queue_seconds) * 1e6)
        self.batch_size.observe(images)
        self.compute_seconds.observe(compute_seconds)
        for wait in queue_seconds:
            self.queue_seconds.observe(wait)

    def batch_failed(self, model: Any, images: int) -> None:
        pass  # every call in it is counted as a failure by the data plane

    def dropped(self, images: int, reason: str) -> None:
        self.dropped_images.labels(reason).inc(images)

    # -- calls and state ---------------------------------------------------------------------
    def call_succeeded(self, model: Any, seconds: float) -> None:
        counters = self._of(model)
        counters.success.inc()
        counters.request_us.inc(seconds * 1e6)
        self.request_seconds.observe(seconds)

    def call_failed(self, model: Any | None, reason: str) -> None:
        labels = (model.info.name, str(model.info.version)) if model is not None else ("", "")
        self.failure.labels(*labels, reason).inc()

    def model_loaded(self, model: Any, versions: Sequence[int]) -> None:
        """A version entered service; `versions` are its model's served versions now."""
        self.versions_changed(model.info.name, versions)
        self.artifact.labels(model.info.artifact).set(1)
        for provider in {*PROVIDERS, model.info.provider}:
            self.provider.labels(provider).set(1 if provider == model.info.provider else 0)

    def versions_changed(self, name: str, versions: Sequence[int]) -> None:
        """digitserve_model_version follows the newest served version; a model served no more has none."""
        if versions:
            self.model_version.labels(name).set(max(versions))
        else:
            with contextlib.suppress(KeyError):  # never served
                self.model_version.remove(name)

    def track_queue(self, queued_images: Callable[[], int]) -> None:
        if not multiprocess_mode():
            self.queue_images.set_function(lambda: float(queued_images()))
            return

        def refresh() -> None:  # the supervisor reads files, so the value must be written
            while not self._stop_refresh.wait(REFRESH_SECONDS):
                self.queue_images.set(queued_images())

        threading.Thread(target=refresh, name="metrics-queue-refresh", daemon=True).start()

    # -- the HTTP endpoint -------------------------------------------------------------------
    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0 picks a port); return the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        self._stop_refresh.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class SupervisorMetrics:
    """The /metrics of `--workers N`: the workers' multiprocess files under `path`, summed, and
    the supervisor's own restart counter. PROMETHEUS_MULTIPROC_DIR must name `path` before
    prometheus-client is first imported in the workers (serve/workers.py sets it)."""

    def __init__(self, path: str):
        self.path = path
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=path)
        self.restarts = Counter(
            "digitserve_worker_restarts",
            "Worker processes that died and were started again",
            registry=None if multiprocess_mode() else self.registry,  # in multiprocess mode: in the files
        )
        self._http: Any = None

    def worker_gone(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters stay in the sums)."""
        multiprocess.mark_process_dead(pid, self.path)

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
