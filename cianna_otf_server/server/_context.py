"""Everything one running service holds: configuration, registry, job store, executor, metrics.

Both hosting modes (standalone tornado and the Jupyter extension) build exactly one
`ServiceContext` from a `ServiceConfig` and hand it to the same handlers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import UnknownModelError
from ..jobs import DetectionParameterPolicy, DetectionRunner, LocalPoolExecutor, WriterProcesses
from ..models import ModelRegistry
from ..uws import JobEvents, JobFiles, JobService, JobStore, PostgresJobStore, SqlJobStore
from ..uws._storage import DATABASE_FILE
from ._config import ServiceConfig
from ._memory import trim_free_memory
from ._metrics import ServiceMetrics

log = logging.getLogger(__name__)


def open_job_store(config: ServiceConfig) -> SqlJobStore:
    """The configured job store: PostgreSQL when `database_url` is set, else SQLite in the data folder."""
    if config.database_url:
        return PostgresJobStore(config.database_url)
    return JobStore(config.data_path / DATABASE_FILE)


class ServiceContext:
    """The service's parts, wired once; `start()` begins work, `stop()` ends it cleanly."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.device = config.resolved_device()
        self.data_dir = config.data_path
        self.root_path = config.root_path
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = ModelRegistry(config.model_paths)
        try:  # say so at start, not in every job that names no model
            self.registry.get(config.default_model)
        except UnknownModelError as exc:
            log.warning("the default model is not available (%s): jobs must name a MODEL", exc)
        self.store = open_job_store(config)
        self.files = JobFiles(self.data_dir)
        self.events = JobEvents()
        self.metrics = ServiceMetrics(self.store)
        writers = config.resolved_writer_processes()
        self.writer_processes = WriterProcesses(writers) if writers else None
        self.runner = DetectionRunner(self.registry, self.files, device=self.device,
                                      limits=config.runner_limits(), job_url=self.job_url,
                                      writer_processes=self.writer_processes)
        self.executor = self._make_executor(self.runner)
        # blocking request work (opening an image to rank the models for it) runs here, off the event loop
        self.blocking = ThreadPoolExecutor(max_workers=2, thread_name_prefix="otf-request")
        self.policy = DetectionParameterPolicy(
            self.registry, data_roots=config.data_root_paths, default_model=config.default_model,
            url_policy=config.url_policy(),
        )
        self.service = JobService(self.store, self.files, self.executor, self.policy,
                                  self.href, config.service_limits(), self.events)
        self._reaper: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None

    def _make_executor(self, runner: DetectionRunner) -> Any:
        config = self.config
        if config.executor_class is not None:
            return config.executor_class(runner, config)
        if config.executor == "pool":
            return LocalPoolExecutor(runner, config.workers)
        from ..scheduler import BatchingScheduler, SchedulerMetrics

        if config.executor == "ray":  # Ray is imported when the executor connects, never before
            from ..scheduler import RayExecutor

            return RayExecutor(runner, config, SchedulerMetrics(self.metrics.registry))

        return BatchingScheduler(runner, config.scheduler_settings(), SchedulerMetrics(self.metrics.registry))

    def href(self, job_id: str, path: str = "") -> str:
        """Root-relative URL of a job resource (correct under any Jupyter base_url)."""
        url = f"{self.root_path}async/{job_id}"
        return f"{url}/{path}" if path else url

    def job_url(self, job_id: str) -> str:
        """The job's URL as written into its catalogue and provenance.

        Absolute only with a configured `public_url`: a request's Host header is the client's to
        choose, and a URL learnt from one request would be written into other users' results.
        Without one, the job's path on the service.
        """
        base = self.config.public_url.rstrip("/")
        return f"{base}{self.href(job_id)}"

    def start(self) -> None:
        """Start workers, requeue interrupted jobs, and run the reaper on the current event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self.events.bind(loop)
        interval = self.config.thread_switch_interval
        if interval and sys.getswitchinterval() > interval:
            sys.setswitchinterval(interval)  # the loop wins the interpreter lock back from busy workers
        self.service.startup()
        if self.writer_processes is not None:
            self.writer_processes.start()  # in the background: the first jobs do not wait for it
        if self._reaper is None:
            self._reaper = loop.create_task(self._reap_forever())
            self._deadlines = loop.create_task(self._stop_overdue_forever())
            self._trimmer = loop.create_task(self._trim_memory_forever()) if self.config.trim_memory_seconds else None
        log.info("CIANNA On-The-Fly service at %s (data in %s, device %s)", self.root_path,
                 self.data_dir, self.device)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.reaper_interval_seconds)
            try:
                self.service.reap()
            except Exception:  # the reaper must keep running
                log.exception("job reaper failed")

    async def _trim_memory_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.trim_memory_seconds)
            try:  # off the loop: trimming large heaps takes a few milliseconds
                await loop.run_in_executor(self.blocking, trim_free_memory)
            except Exception:  # the service runs on without it
                log.exception("returning free memory failed")

    #: Seconds between checks of the running jobs' execution durations.
    DEADLINE_INTERVAL = 0.5

    async def _stop_overdue_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.DEADLINE_INTERVAL, self.config.reaper_interval_seconds))
            try:
                self.service.stop_overdue()
            except Exception:  # the watch must keep running
                log.exception("execution-duration check failed")

    def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._deadlines.cancel()
            if self._trimmer is not None:
                self._trimmer.cancel()
            self._reaper = None
        self.service.shutdown(wait=True)  # running jobs stop at their next patch and are requeued at restart
        self.blocking.shutdown(wait=False, cancel_futures=True)
        if self.writer_processes is not None:
            self.writer_processes.close()
        self.store.close()
