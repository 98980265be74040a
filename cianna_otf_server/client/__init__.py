"""The Python client of CIANNA On-The-Fly, shared by the notebook widget and the command line.

It speaks only the public IVOA UWS 1.1 interface (``/async``, ``/models``), so whatever it can
do, any UWS client (pyvo included) can do too, and it works unchanged against both hosting
modes: the standalone server (``cianna-otf serve``) and the Jupyter server extension
(``{base_url}cianna-otf``).

Job documents are parsed with lxml (a core dependency) rather than pyvo: pyvo is an optional
extra, and the client needs the service's own ``jobInfo`` progress element, which pyvo does not
expose. The documents are plain UWS 1.1, so pyvo's ``AsyncTAPJob(job.url, session=...)`` can
drive the same jobs.

Examples
--------
>>> from cianna_otf_server.client import Client
>>> client = Client("http://127.0.0.1:8750", token="SECRET")          # doctest: +SKIP
>>> job = client.submit("sky.fits", model="classic")                     # doctest: +SKIP
>>> sources = job.wait(progress=print).table()                            # doctest: +SKIP
"""

from __future__ import annotations

try:
    import requests  # noqa: F401
except ImportError as exc:  # pragma: no cover - requests comes with the [client] extra
    raise ImportError("the CIANNA On-The-Fly client needs requests: pip install 'cianna-otf[client]'") from exc

from ._client import Client
from ._config import DEFAULT_TIMEOUT, TOKEN_ENV, URL_ENV, config_path, has_configured_token
from ._describe import client_message, format_job, iso_time, job_dict, short_time
from ._errors import (
    AuthenticationError,
    ClientError,
    ConfigurationError,
    InvalidPhaseError,
    JobFailedError,
    NotFoundError,
    ServiceBusyError,
    WaitTimeoutError,
)
from ._job import ACTIVE_PHASES, FINAL_PHASES, JOBINFO_NS, UWS_NS, Job, JobSummary, ProgressCallback

__all__ = [
    "ACTIVE_PHASES",
    "AuthenticationError",
    "Client",
    "ClientError",
    "ConfigurationError",
    "FINAL_PHASES",
    "InvalidPhaseError",
    "Job",
    "JobFailedError",
    "JobSummary",
    "NotFoundError",
    "ServiceBusyError",
    "WaitTimeoutError",
    "client_message",
    "config_path",
    "has_configured_token",
    "format_job",
    "iso_time",
    "job_dict",
    "short_time",
    "DEFAULT_TIMEOUT",
    "JOBINFO_NS",
    "ProgressCallback",
    "TOKEN_ENV",
    "URL_ENV",
    "UWS_NS",
]
