"""What becomes of a job that does not complete: one policy, used by every executor.

A failure is one of four kinds, told apart by the exception's type, never by its message:

* **stopped** (`JobCancelled`): aborted, deleted or out of time; the job service has already
  decided the phase, so the executor only says the job has stopped;
* **usage** (`UserInputError`, `UWSError`): the request or its image is wrong; the job ends in
  ERROR with the message, written for the user (UWS error type ``fatal``);
* **transient** (`MemoryError`, `ComputeUnavailableError`): the machine, not the request, ran
  short, or the compute back end is away; the job ends in ERROR with advice or the reason (UWS
  error type ``transient``: the same job may work later or smaller);
* **internal**: anything else, a defect; ERROR with the exception named and the traceback as
  the error detail, and logged.

Messages go to the job's owner, who knows nothing of the server's folders: an absolute path in
one (a model file, a job's work folder, the descriptor a data-root file is read through) is
shown as its last part (`without_server_paths`); the log keeps internal failures whole.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..errors import ComputeUnavailableError, UserInputError
from ..uws import ExecutionCallbacks, UWSError

__all__ = ["FailureKind", "Failure", "JobCancelled", "classify_failure", "report_failure", "without_server_paths"]

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


# An absolute POSIX path of at least two parts, not inside a URL ('//host/...') or a word ('Jy/beam').
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])(/(?:[^\s/'\"()\[\],;:<>]+/)+[^\s/'\"()\[\],;:<>]*)")


def without_server_paths(message: str, roots: Iterable[str | Path] = ()) -> str:
    """`message` with every absolute path shown as the user may know it.

    A path inside one of `roots` (the data roots) becomes its path under that root; any other
    absolute path (the service's data folder, a job's folder, a model file, ``/proc/self/fd/7``)
    becomes its last part. URLs and units such as ``Jy/beam`` are left alone.
    """
    resolved = [Path(root) for root in roots]

    def shown(match: re.Match[str]) -> str:
        path = Path(match.group(1))
        for root in resolved:
            if path != root and path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return path.name or match.group(1)

    return _ABSOLUTE_PATH.sub(shown, message)


def classify_failure(exc: BaseException) -> Failure:
    """The failure an exception raised while running a job stands for (its message free of server paths)."""
    if isinstance(exc, JobCancelled):
        return Failure(FailureKind.STOPPED, "the job was stopped")
    if isinstance(exc, (UserInputError, UWSError)):
        return Failure(FailureKind.USAGE, without_server_paths(str(exc)))
    if isinstance(exc, MemoryError):
        return Failure(FailureKind.TRANSIENT, "the job ran out of memory; try a smaller region or image")
    if isinstance(exc, ComputeUnavailableError):
        return Failure(FailureKind.TRANSIENT, without_server_paths(str(exc)))
    detail = "".join(traceback.format_exception(exc))
    return Failure(FailureKind.INTERNAL, "internal error while running the job: "
                   f"{type(exc).__name__}: {without_server_paths(str(exc))}", detail)


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
