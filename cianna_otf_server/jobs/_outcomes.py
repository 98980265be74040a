"""What becomes of a job that does not complete: one policy, used by every executor.

A failure is one of four kinds, told apart by the exception's type, never by its message:

* **stopped** (`JobCancelled`): aborted, deleted or out of time; the job service has already
  decided the phase, so the executor only says the job has stopped;
* **usage** (`UserInputError`, `UWSError`): the request or its image is wrong; the job ends in
  ERROR with the message, written for the user (UWS error type ``fatal``);
* **transient** (`MemoryError`): the machine, not the request, ran short; the job ends in
  ERROR with advice (UWS error type ``transient``: the same job may work later or smaller);
* **internal**: anything else, a defect; ERROR with the exception named and the traceback as
  the error detail, and logged.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from enum import Enum

from ..errors import UserInputError
from ..uws import ExecutionCallbacks, UWSError

__all__ = ["FailureKind", "Failure", "JobCancelled", "classify_failure", "report_failure"]

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a running job when it was aborted, deleted or ran out of time."""


class FailureKind(str, Enum):
    STOPPED = "stopped"
    USAGE = "usage"
    TRANSIENT = "transient"
    INTERNAL = "internal"


@dataclass(frozen=True)
class Failure:
    """A job's failure as the service records it."""

    kind: FailureKind
    message: str
    detail: str | None = None

    @property
    def error_type(self) -> str:
        """The UWS errorSummary type: ``transient`` (may work later) or ``fatal``."""
        return "transient" if self.kind is FailureKind.TRANSIENT else "fatal"


def classify_failure(exc: BaseException) -> Failure:
    """The failure an exception raised while running a job stands for."""
    if isinstance(exc, JobCancelled):
        return Failure(FailureKind.STOPPED, "the job was stopped")
    if isinstance(exc, (UserInputError, UWSError)):
        return Failure(FailureKind.USAGE, str(exc))
    if isinstance(exc, MemoryError):
        return Failure(FailureKind.TRANSIENT, "the job ran out of memory; try a smaller region or image")
    detail = "".join(traceback.format_exception(exc))
    return Failure(FailureKind.INTERNAL, f"internal error while running the job: {type(exc).__name__}: {exc}",
                   detail)


def report_failure(callbacks: ExecutionCallbacks, job_id: str, exc: BaseException) -> Failure:
    """Tell the job service how job `job_id` ended, from the exception that ended it."""
    failure = classify_failure(exc)
    if failure.kind is FailureKind.STOPPED:
        log.info("job %s stopped", job_id)
        callbacks.job_stopped(job_id)
        return failure
    if failure.kind is FailureKind.INTERNAL:
        log.error("job %s failed: %s", job_id, failure.detail)
    callbacks.job_failed(job_id, failure.message, failure.detail, failure.error_type)
    return failure
