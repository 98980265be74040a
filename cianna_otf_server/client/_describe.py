"""Jobs and client errors described for people (plain text) and for programs (JSON-able data).

The command line and the terminal dashboard show jobs the same way; both take these from here.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._config import URL_ENV
from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._job import Job

__all__ = ["client_message", "format_job", "iso_time", "job_dict", "short_time"]


def client_message(exc: Exception) -> str:
    """A client error as one line for a person; a missing URL says where a URL can come from."""
    if isinstance(exc, ConfigurationError) and str(exc).startswith("no service URL"):
        return f"no service URL: give --url URL or set ${URL_ENV} (or 'url' in the client config file)"
    return str(exc)


def iso_time(value: datetime | None) -> str | None:
    """An instant as ISO 8601 with ``Z`` (None stays None)."""
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain JSON-able data (the fields of the UWS job document)."""
    done, total = job.progress
    return {
        "job_id": job.job_id,
        "url": job.url,
        "phase": job.phase,
        "run_id": job.run_id,
        "owner": job.owner,
        "creation_time": iso_time(job.creation_time),
        "start_time": iso_time(job.start_time),
        "end_time": iso_time(job.end_time),
        "destruction": iso_time(job.destruction),
        "execution_duration": job.execution_duration,
        "progress": {"done": done, "total": total},
        "parameters": dict(job.parameters),
        "results": {result_id: job.result_url(result_id) for result_id in job.results},
        "error": job.error_message,
        "warnings": list(job.warnings),
    }


def short_time(value: datetime | None) -> str:
    """An instant to the second, for tables (``-`` when unknown)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def format_job(job: Job) -> str:
    """A job for a person: one ``label  value`` line per known field."""
    done, total = job.progress
    lines = [(label, value) for label, value in (
        ("job", job.job_id),
        ("url", job.url),
        ("phase", job.phase),
        ("progress", f"{done}/{total}" if total else ""),
        ("model", job.parameters.get("MODEL", "")),
        ("image", job.parameters.get("IMAGE", "")),
        ("run id", job.run_id or ""),
        ("owner", job.owner or ""),
        ("created", short_time(job.creation_time) if job.creation_time else ""),
        ("started", short_time(job.start_time) if job.start_time else ""),
        ("ended", short_time(job.end_time) if job.end_time else ""),
        ("destruction", short_time(job.destruction) if job.destruction else ""),
        ("results", ", ".join(job.results)),
        ("error", job.error_message or ""),
    ) if value]
    others = {k: v for k, v in job.parameters.items() if k not in ("MODEL", "IMAGE")}
    if others:
        lines.append(("parameters", " ".join(f"{k}={v}" for k, v in sorted(others.items()))))
    return "\n".join(f"{label:<12} {value}" for label, value in lines)
