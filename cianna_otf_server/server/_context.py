"""Everything one running service holds: settings, registry, job store, executor, metrics.

Both hosting modes (standalone tornado and the Jupyter extension) build exactly one
`ServiceContext` from `ServiceSettings` and hand it to the same handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from ..errors import UnknownModelError
from ..jobs import DetectionParameterPolicy, DetectionRunner, LocalPoolExecutor, RunnerLimits
from ..models import DEFAULT_MODEL, ModelRegistry
from ..uws import JobEvents, JobFiles, JobService, JobStore, ServiceLimits
from ._metrics import ServiceMetrics

log = logging.getLogger(__name__)


@dataclass
class ServiceSettings:
    """Configuration shared by `cianna-otf serve` and the Jupyter extension's traits."""

    data_dir: Path
    root_path: str = "/"  # URL path of the service root, ending in "/"
    models_dirs: list[Path] = field(default_factory=list)
    data_roots: list[Path] = field(default_factory=list)
    allow_http_images: bool = True
    device: str = "cpu"
    workers: int = 1
    default_model: str = DEFAULT_MODEL
    max_upload_bytes: int = 1024**3
    max_image_pixels: int = 32768 * 32768
    max_queued_per_owner: int = 100
    max_queued_total: int = 1000
    default_execution_duration: int = 3600
    max_execution_duration: int = 24 * 3600
    default_destruction_days: float = 7.0
    max_destruction_days: float = 30.0
    max_wait_seconds: float = 300.0
    sync_timeout_seconds: float = 120.0
    reaper_interval_seconds: float = 30.0
    executor_factory: Callable[..., Any] | None = None  # (runner, settings) -> JobExecutor
    executor: str = "batching"  # "batching" (the scheduler) or "pool" (one job per worker thread)
    batch_size: int = 0  # patches per batch; 0: 2 on a CPU, 64 on a GPU
    max_wait: float = 0.02  # seconds a ready patch may wait for a fuller batch
    model_budget_mb: float = 4096.0  # resident networks per device
    compile_networks: bool = False  # torch.compile networks on GPUs

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if not self.root_path.endswith("/"):
            self.root_path += "/"
        if not self.root_path.startswith("/"):
            self.root_path = "/" + self.root_path


def expand_devices(device: str) -> list[str]:
    """``cuda`` means every visible GPU (one worker each); anything else is taken as given."""
    if device == "cuda":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] or ["cpu"]
    return [device]


class ServiceContext:
    """The service's parts, wired once; `start()` begins work, `stop()` ends it cleanly."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = ModelRegistry(settings.models_dirs)
        try:  # say so at start, not in every job that names no model
            self.registry.get(settings.default_model)
        except UnknownModelError as exc:
            log.warning("the default model is not available (%s): jobs must name a MODEL", exc)
        self.store = JobStore(settings.data_dir / "jobs.sqlite")
        self.files = JobFiles(settings.data_dir)
        self.events = JobEvents()
        self.metrics = ServiceMetrics(self.store)
        runner = DetectionRunner(
            self.registry, self.files, device=settings.device,
            limits=RunnerLimits(max_image_pixels=settings.max_image_pixels),
            job_url=self.job_url,
        )
        self.runner = runner
        self.executor = self._make_executor(runner)
        # blocking request work (opening an image to rank the models for it) runs here, off the event loop
        self.blocking = ThreadPoolExecutor(max_workers=2, thread_name_prefix="otf-request")
        self.policy = DetectionParameterPolicy(
            self.registry, data_roots=settings.data_roots, allow_http=settings.allow_http_images,
            default_model=settings.default_model,
        )
        limits = ServiceLimits(
            max_upload_bytes=settings.max_upload_bytes,
            max_queued_per_owner=settings.max_queued_per_owner,
            max_queued_total=settings.max_queued_total,
            default_execution_duration=settings.default_execution_duration,
            max_execution_duration=settings.max_execution_duration,
            default_destruction=timedelta(days=settings.default_destruction_days),
            max_destruction=timedelta(days=settings.max_destruction_days),
            max_wait_seconds=settings.max_wait_seconds,
        )
        self.service = JobService(self.store, self.files, self.executor, self.policy,
                                  self.href, limits, self.events)
        self._reaper: asyncio.Task[None] | None = None
        self.public_base = ""  # scheme://host, learnt from requests, for absolute URLs in provenance

    def _make_executor(self, runner: DetectionRunner) -> Any:
        settings = self.settings
        if settings.executor_factory is not None:
            return settings.executor_factory(runner, settings)
        if settings.executor == "pool":
            return LocalPoolExecutor(runner, settings.workers)
        if settings.executor != "batching":
            raise ValueError(f"executor must be 'batching' or 'pool', not {settings.executor!r}")
        from ..scheduler import BatchingScheduler, SchedulerMetrics, SchedulerSettings

        batch = {"cpu": settings.batch_size or 2, "cuda": settings.batch_size or 64}
        scheduler_settings = SchedulerSettings(
            devices=expand_devices(settings.device), batch_size=batch, max_wait=settings.max_wait,
            model_budget_bytes=int(settings.model_budget_mb * 1024 * 1024),
            compile=settings.compile_networks,
            # job preparation and result writing are CPU work: use the cores a GPU host has
            post_threads=max(2, settings.workers, (os.cpu_count() or 2) // 2),
            prepare_threads=max(2, settings.workers, (os.cpu_count() or 2) // 4),
            readers=max(2, (os.cpu_count() or 2) // 4),
        )
        return BatchingScheduler(runner, scheduler_settings, SchedulerMetrics(self.metrics.registry))

    def href(self, job_id: str, path: str = "") -> str:
        """Root-relative URL of a job resource (correct under any Jupyter base_url)."""
        url = f"{self.settings.root_path}async/{job_id}"
        return f"{url}/{path}" if path else url

    def job_url(self, job_id: str) -> str:
        return f"{self.public_base}{self.href(job_id)}"

    def start(self) -> None:
        """Start workers, requeue interrupted jobs, and run the reaper on the current event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self.events.bind(loop)
        self.service.startup()
        if self._reaper is None:
            self._reaper = loop.create_task(self._reap_forever())
        log.info("CIANNA On-The-Fly service at %s (data in %s, device %s)", self.settings.root_path,
                 self.settings.data_dir, self.settings.device)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_seconds)
            try:
                self.service.reap()
            except Exception:  # the reaper must keep running
                log.exception("job reaper failed")

    def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        self.service.shutdown(wait=True)  # running jobs stop at their next patch and are requeued at restart
        self.blocking.shutdown(wait=False, cancel_futures=True)
        self.store.close()
