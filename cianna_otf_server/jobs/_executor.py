"""A pool of worker threads that runs detection jobs one per thread.

This is the simple executor the job service starts with; the batching scheduler implements the
same `JobExecutor` interface and replaces it by configuration, so nothing else changes.
"""

from __future__ import annotations

import logging
import threading

from ..uws import ExecutionCallbacks, Job
from ._fair_pool import OwnerFairPool
from ._outcomes import report_failure
from ._runner import JobRunner

log = logging.getLogger(__name__)


class LocalPoolExecutor:
    """Runs each QUEUED job on one of `workers` threads (GPU and CPU work stays off the event loop).

    Owners take the threads in turn, and with two or more threads no owner holds them all.
    """

    def __init__(self, runner: JobRunner, workers: int = 1) -> None:
        self.runner = runner
        self.workers = max(1, int(workers))
        self._callbacks: ExecutionCallbacks | None = None
        self._pool: OwnerFairPool | None = None
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def attach(self, callbacks: ExecutionCallbacks) -> None:
        self._callbacks = callbacks

    def start(self) -> None:
        if self._pool is None:
            self._pool = OwnerFairPool(self.workers, name="cianna-otf-job")

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            for event in self._cancel.values():
                event.set()
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None

    def submit(self, job: Job) -> None:
        if self._pool is None:
            self.start()
        with self._lock:
            self._cancel.setdefault(job.job_id, threading.Event())
        assert self._pool is not None
        self._pool.submit(job.owner, lambda: self._run(job))

    def cancel(self, job_id: str) -> None:
        with self._lock:
            event = self._cancel.get(job_id)
        if event is not None:
            event.set()

    def _run(self, job: Job) -> None:
        callbacks = self._callbacks
        assert callbacks is not None
        with self._lock:
            cancelled = self._cancel.setdefault(job.job_id, threading.Event())
        try:
            if cancelled.is_set() or not callbacks.job_started(job.job_id):
                return
            outcome = self.runner.run(job, cancelled, lambda done, total: callbacks.job_progress(job.job_id, done, total))
            callbacks.job_completed(job.job_id, outcome.results, outcome.warnings)
        except Exception as exc:  # the worker must survive anything a job does
            report_failure(callbacks, job.job_id, exc)
        finally:
            with self._lock:
                self._cancel.pop(job.job_id, None)
