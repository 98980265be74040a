"""Prometheus metrics of the service, on a registry of its own (several services per process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..uws import Phase, SqlJobStore


class _JobPhaseCollector:
    """Jobs per phase, read from the store at scrape time (always true, even after a restart)."""

    def __init__(self, store: SqlJobStore) -> None:
        self.store = store

    def collect(self):
        family = GaugeMetricFamily("cianna_otf_jobs", "Jobs in the store by phase", labels=["phase"])
        for phase in (Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.COMPLETED, Phase.ERROR, Phase.ABORTED):
            family.add_metric([phase.value], self.store.count([phase]))
        yield family


class ServiceMetrics:
    """Counters and histograms the handlers and workers update, plus the job-phase gauge."""

    def __init__(self, store: SqlJobStore) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_JobPhaseCollector(store))
        self.jobs_created = Counter("cianna_otf_jobs_created", "Jobs created", ["model"], registry=self.registry)
        self.http_requests = Counter(
            "cianna_otf_http_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry)
        self.request_seconds = Histogram(
            "cianna_otf_http_request_seconds", "HTTP request handling time", ["endpoint"], registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
