"""The client's exceptions, and the mapping of the service's HTTP errors onto them."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from ._job import Job

class ClientError(Exception):
    """A request the service refused or could not answer, with the service's own explanation.

    Parameters
    ----------
    message : str
        What went wrong: the server's plain-text message where it sent one, so a user reads the
        service's reason rather than a requests traceback.
    status : int or None
        The HTTP status code; None where no HTTP answer came (connection refused, time-out,
        configuration, a job that failed).
    url : str or None
        The URL of the request, for messages and logs.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class ConfigurationError(ClientError):
    """No service URL was given (argument, environment or config file), or the config file is bad."""


class AuthenticationError(ClientError):
    """401 or 403 on authentication: a missing, wrong or expired token (or another owner's job)."""


class InvalidPhaseError(ClientError):
    """403 for an action the job's phase does not allow (run a COMPLETED job, abort a finished one)."""


class NotFoundError(ClientError):
    """404: no such job (deleted, destroyed, never existed), result or model."""


class ServiceBusyError(ClientError):
    """503 (or 429): the service is overloaded or starting; try again after `retry_after` seconds.

    Parameters
    ----------
    retry_after : float or None
        Seconds the server asked the client to wait (``Retry-After``), None when it did not say.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, status, url)
        self.retry_after = retry_after


class JobFailedError(ClientError):
    """A job ended in ERROR or ABORTED; `error_summary` is the server's errorSummary message.

    Parameters
    ----------
    job : Job
        The failed job, refreshed: its parameters and times explain the failure.
    """

    def __init__(self, job: Job) -> None:
        summary = job.error_message
        if job.phase == "ABORTED":
            message = f"job {job.job_id} was aborted" + (f": {summary}" if summary else "")
        else:
            message = f"job {job.job_id} failed: {summary or 'no error message'}"
        super().__init__(message, None, job.url)
        self.job = job
        self.phase = job.phase
        self.error_summary = summary


class WaitTimeoutError(ClientError, TimeoutError):
    """`Job.wait` gave up after its `timeout`; the job goes on running on the server."""


def _message(response: requests.Response) -> str:
    """The server's explanation: its plain text, else the HTML title, else the reason phrase."""
    kind = response.headers.get("Content-Type", "")
    text = response.text.strip() if response.content else ""
    if "html" in kind:
        match = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
        text = match.group(1).strip() if match else ""
    elif "xml" in kind and text:  # a DALI error VOTable: the QUERY_STATUS INFO carries the message
        match = re.search(r'<INFO[^>]*name="QUERY_STATUS"[^>]*>(.*?)</INFO>', text, re.S)
        text = match.group(1).strip() if match else text
    return text or f"{response.status_code} {response.reason or 'error'}"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


_PHASE_WORDS = re.compile(r"\b(PENDING|QUEUED|EXECUTING|COMPLETED|ERROR|ABORTED|HELD|SUSPENDED|ARCHIVED)\b")


def _raise_for_status(response: requests.Response) -> None:
    """Map an HTTP error to the client's exceptions, keeping the server's message."""
    status = response.status_code
    if status < 400:
        return
    message, url = _message(response), response.url
    if status in (401, 403):
        # UWS also answers 403 to an action the job's phase does not allow; its message names the phase
        if status == 403 and _PHASE_WORDS.search(message):
            raise InvalidPhaseError(message, status, url)
        raise AuthenticationError(message, status, url)
    if status == 404:
        raise NotFoundError(message, status, url)
    if status in (429, 503):
        raise ServiceBusyError(message, status, url, _retry_after(response))
    raise ClientError(message, status, url)
