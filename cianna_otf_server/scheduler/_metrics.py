"""Prometheus metrics of the scheduler: queue depth, batches, throughput, latencies, model cache."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class _Gauges:
    """Queue depth per model and device memory, read at scrape time."""

    def __init__(self, metrics: "SchedulerMetrics") -> None:
        self.metrics = metrics

    def collect(self):
        scheduler = self.metrics.scheduler()
        depth = GaugeMetricFamily("cianna_otf_queue_patches", "Patches waiting per model", labels=["model"])
        memory = GaugeMetricFamily("cianna_otf_device_memory_bytes", "Allocated device memory", labels=["device"])
        resident = GaugeMetricFamily("cianna_otf_resident_model_bytes", "Memory of resident networks",
                                     labels=["device"])
        if scheduler is not None:
            for model, waiting in scheduler.queue_depths().items():
                depth.add_metric([model], waiting)
            for runner in scheduler.devices:
                used = runner.memory_bytes()
                if used is not None:
                    memory.add_metric([runner.device], used)
                resident.add_metric([runner.device], scheduler.cache.resident_bytes(runner.device))
        yield depth
        yield memory
        yield resident


class SchedulerMetrics:
    """Counters and histograms updated by the scheduler threads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.batch_size = Histogram("cianna_otf_batch_size", "Patches per batch", ["model", "device"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("cianna_otf_batch_seconds", "Time to run one batch (staging, forward, "
                                       "decode)", ["model", "device"], buckets=LATENCY_BUCKETS, registry=r)
        self.patches = Counter("cianna_otf_patches", "Patches run through a network", ["model", "device"], registry=r)
        self.job_seconds = Histogram("cianna_otf_job_phase_seconds", "Time jobs spend queued and executing",
                                     ["phase"], buckets=LATENCY_BUCKETS, registry=r)
        self.model_loads = Counter("cianna_otf_model_loads", "Networks loaded into memory", ["model"], registry=r)
        self.model_load_seconds = Histogram("cianna_otf_model_load_seconds", "Time to load a network",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("cianna_otf_model_cache_hits", "Batches served by a resident network",
                                  ["model"], registry=r)
        self.device_seconds = Counter(
            "cianna_otf_device_worker_seconds", "Where each device worker's time goes (waiting for patches: "
            "the device is starved; waiting for results: the device is the bottleneck)", ["device", "activity"],
            registry=r)
        self._scheduler_ref: Any = None
        self._times: dict[str, tuple[float, float | None]] = {}
        self._lock = threading.Lock()
        r.register(_Gauges(self))

    def device_time(self, device: str):
        """A context-manager factory adding the time spent in a block to `device_seconds`."""
        counter = self.device_seconds

        @contextlib.contextmanager
        def clock(activity: str):
            start = time.perf_counter()
            try:
                yield
            finally:
                counter.labels(device, activity).inc(time.perf_counter() - start)

        return clock

    def watch(self, scheduler: Any) -> None:
        self._scheduler_ref = weakref.ref(scheduler)

    def scheduler(self) -> Any:
        return self._scheduler_ref() if self._scheduler_ref is not None else None

    def batch_done(self, model: str, device: str, size: int, seconds: float) -> None:
        self.batch_size.labels(model, device).observe(size)
        self.batch_seconds.labels(model, device).observe(seconds)
        self.patches.labels(model, device).inc(size)

    def model_loaded(self, key: Any, seconds: float) -> None:
        self.model_loads.labels(key.name).inc()
        self.model_load_seconds.observe(seconds)

    def model_hit(self, key: Any) -> None:
        self.cache_hits.labels(key.name).inc()

    def job_queued(self, job_id: str) -> None:
        with self._lock:
            self._times[job_id] = (time.monotonic(), None)

    def job_started(self, job_id: str) -> None:
        with self._lock:
            queued, _ = self._times.get(job_id, (time.monotonic(), None))
            now = time.monotonic()
            self._times[job_id] = (queued, now)
        self.job_seconds.labels("QUEUED").observe(now - queued)

    def job_finished(self, job_id: str) -> None:
        with self._lock:
            times = self._times.pop(job_id, None)
        if times is not None and times[1] is not None:
            self.job_seconds.labels("EXECUTING").observe(time.monotonic() - times[1])
