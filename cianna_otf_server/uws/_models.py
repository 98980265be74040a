"""Typed job records mirroring the UWS 1.1 schema (job, parameter, result, error summary).

Everything above the storage layer speaks these records; only `_storage` knows SQL and only
`_xml` knows the XML shape, so each can change without the other.
"""

from __future__ import annotations

from typing import Any

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone


class Phase(str, enum.Enum):
    """UWS execution phases."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"
    UNKNOWN = "UNKNOWN"
    HELD = "HELD"
    SUSPENDED = "SUSPENDED"
    ARCHIVED = "ARCHIVED"

    def __str__(self) -> str:
        return self.value


#: Phases in which a job may still change by itself: blocking WAIT only waits in these.
ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED})
#: Phases a job never leaves except by deletion or archiving.
FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED, Phase.ARCHIVED})
#: Phases from which ABORT is allowed.
ABORTABLE_PHASES = frozenset({Phase.PENDING, Phase.QUEUED, Phase.EXECUTING, Phase.HELD, Phase.SUSPENDED})


def utc_now() -> datetime:
    """The current time, timezone-aware UTC, at millisecond resolution (what UWS clients parse)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=(now.microsecond // 1000) * 1000)


def format_time(value: datetime) -> str:
    """ISO 8601 with ``T`` and ``Z`` (``+00:00`` breaks pyvo's parser)."""
    value = value.astimezone(timezone.utc)
    # zero-padded fields (strftime leaves years below 1000 unpadded, which breaks text ordering)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond // 1000:03d}Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 instant; naive values are taken as UTC. Raises ValueError."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last representable instant
        raise ValueError(f"{text!r} is outside the representable range of dates") from None


@dataclass
class JobParameter:
    """One job parameter; an uploaded one is ``by_reference`` and its value is the URL path."""

    name: str
    value: str
    by_reference: bool = False
    is_post: bool = False


@dataclass
class JobResult:
    """A result file in the job's directory, served at ``results/{result_id}``."""

    result_id: str
    file_name: str
    mime_type: str
    size: int | None = None


@dataclass
class ErrorSummary:
    """Why a job failed; `message` is written for a person, `detail` for the error document."""

    message: str
    error_type: str = "fatal"  # or "transient"
    detail: str | None = None


@dataclass(frozen=True)
class ValidatedParameters:
    """What a parameter policy makes of a job's parameters: the canonical list (shown in the UWS
    documents) and the worker's typed request as plain data (``None`` until the job is complete
    enough to run, e.g. before its IMAGE arrives)."""

    parameters: list[JobParameter]
    spec: dict[str, Any] | None = None


@dataclass
class Job:
    """A UWS job as the service knows it."""

    job_id: str
    owner: str | None
    phase: Phase
    creation_time: datetime
    run_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    execution_duration: int = 0  # seconds, 0 = unlimited
    destruction: datetime | None = None
    quote: datetime | None = None
    parameters: list[JobParameter] = field(default_factory=list)
    results: list[JobResult] = field(default_factory=list)
    error: ErrorSummary | None = None
    progress_done: int = 0
    progress_total: int = 0
    warnings: list[str] = field(default_factory=list)  # what makes the result doubtful or incomplete
    spec: dict[str, Any] | None = None  # the worker's typed request, as plain data (opaque to UWS)

    def parameter(self, name: str) -> str | None:
        """The value of a parameter, matched case-insensitively, or None."""
        wanted = name.lower()
        for parameter in self.parameters:
            if parameter.name.lower() == wanted:
                return parameter.value
        return None

    def parameter_dict(self) -> dict[str, str]:
        """Parameters keyed by upper-case name (the service's canonical spelling)."""
        return {p.name.upper(): p.value for p in self.parameters}


@dataclass
class JobFilter:
    """Job-list filters of UWS 1.1: phases (union), AFTER (creation instant), LAST (newest n)."""

    phases: tuple[Phase, ...] = ()
    after: datetime | None = None
    last: int | None = None
