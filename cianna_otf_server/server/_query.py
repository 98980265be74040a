"""The UWS query parameters a request may carry, parsed in one place: job-list filters and WAIT.

Each function takes the request's (name, value) pairs and raises `InvalidRequestError` (400)
with the offending value quoted.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..uws import InvalidRequestError, JobFilter, Phase, parse_time

__all__ = ["job_filter", "wait_request"]


def _phase(value: str) -> Phase:
    try:
        return Phase(value.strip().upper())
    except ValueError:
        raise InvalidRequestError(f"PHASE={value} is not a UWS phase") from None


def job_filter(pairs: Iterable[tuple[str, str]]) -> JobFilter:
    """The job-list filter: ``PHASE=`` (repeatable, a union), ``AFTER=`` (ISO instant), ``LAST=n``."""
    phases, after, last = [], None, None
    for name, value in pairs:
        key = name.upper()
        if key == "PHASE":
            phases.append(_phase(value))
        elif key == "AFTER":
            try:
                after = parse_time(value)
            except ValueError:
                raise InvalidRequestError(f"AFTER={value} is not an ISO 8601 instant") from None
        elif key == "LAST":
            if not value.strip().isdigit() or int(value) <= 0:
                raise InvalidRequestError(f"LAST={value} must be a positive integer")
            last = int(value)
    return JobFilter(tuple(phases), after, last)


def wait_request(pairs: Iterable[tuple[str, str]]) -> tuple[float, Phase | None] | None:
    """A blocking job read's ``WAIT=`` seconds (-1: as long as allowed) and its optional ``PHASE=``.

    None without WAIT; the last value of each wins.
    """
    wait = phase_text = None
    for name, value in pairs:
        if name.upper() == "WAIT":
            wait = value
        elif name.upper() == "PHASE":
            phase_text = value
    if wait is None:
        return None
    try:
        timeout = float(wait)
    except ValueError:
        timeout = float("nan")
    if timeout != timeout:  # NaN
        raise InvalidRequestError(f"WAIT={wait} must be a number of seconds (-1: as long as allowed)")
    return timeout, _phase(phase_text) if phase_text else None
