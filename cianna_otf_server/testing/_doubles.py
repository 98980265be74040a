"""Executors and a parameter policy that make a job service's timing a test's to decide."""

from __future__ import annotations

from typing import Any

from ..jobs import JobRunner, LocalPoolExecutor
from ..uws import ExecutionCallbacks, Job, JobParameter, ValidatedParameters

__all__ = ["HoldingExecutor", "RecordingExecutor", "PassPolicy"]


class HoldingExecutor(LocalPoolExecutor):
    """The local worker pool, except that jobs with a RUNID starting with ``hold`` stay QUEUED.

    Configured as ``executor_class`` (the service calls ``executor_class(runner, config)``), so a
    test can abort or delete a job it knows is still queued, with no race against a fast worker.
    """

    def __init__(self, runner: JobRunner, config: Any) -> None:
        super().__init__(runner, getattr(config, "workers", 1))
        #: The ids of the jobs being held.
        self.held: set[str] = set()

    def submit(self, job: Job) -> None:
        if (job.run_id or "").startswith("hold"):
            self.held.add(job.job_id)
            return
        super().submit(job)

    def cancel(self, job_id: str) -> None:
        self.held.discard(job_id)
        super().cancel(job_id)


class RecordingExecutor:
    """An executor that runs nothing: it records what it is asked, and the test plays the worker.

    The service's callbacks are kept in `callbacks`, so ``executor.callbacks.job_started(job_id)``
    and the others move a job exactly as a worker would.
    """

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.cancelled: list[str] = []
        self.started = False
        self.callbacks: ExecutionCallbacks | None = None

    def attach(self, callbacks: ExecutionCallbacks) -> None:
        self.callbacks = callbacks

    def start(self) -> None:
        self.started = True

    def submit(self, job: Job) -> None:
        self.submitted.append(job.job_id)

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def shutdown(self, wait: bool = True) -> None:
        pass


class PassPolicy:
    """A parameter policy that accepts every parameter as given (for tests of the job state machine)."""

    def validate(self, parameters: list[JobParameter]) -> ValidatedParameters:
        return ValidatedParameters(parameters)
