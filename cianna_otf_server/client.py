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

import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlparse

from lxml import etree

try:
    import requests
except ImportError as exc:  # pragma: no cover - requests comes with the [client] extra
    raise ImportError("the CIANNA On-The-Fly client needs requests: pip install 'cianna-otf[client]'") from exc

if TYPE_CHECKING:  # imported lazily at run time: astropy and regions are slow to import
    from astropy.table import Table
    from regions import Regions

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
    "config_path",
]

URL_ENV = "CIANNA_OTF_URL"
TOKEN_ENV = "CIANNA_OTF_TOKEN"

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
JOBINFO_NS = "urn:cianna-otf:jobinfo"
_NS = {"uws": UWS_NS}

#: Phases in which a job may still change by itself (WAIT blocks on them).
ACTIVE_PHASES = frozenset({"QUEUED", "EXECUTING"})
#: Phases a job never leaves (except to be deleted or archived).
FINAL_PHASES = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED"})

#: Seconds one blocking WAIT request asks for: well below the server's cap (300 s by default)
#: and below the idle timeouts of the proxies (JupyterHub, nginx) that often sit in front of it.
DEFAULT_WAIT_STEP = 60.0
#: Seconds one WAIT asks for when a progress callback is given: progress does not change the
#: phase, so the server would not answer earlier; short steps keep a progress bar moving.
PROGRESS_WAIT_STEP = 1.0
#: Seconds for connecting and for reading an ordinary (non-blocking) response.
DEFAULT_TIMEOUT = 60.0

ProgressCallback = Callable[[int, int], Any]


# -- exceptions ------------------------------------------------------------------------------
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


# -- configuration ---------------------------------------------------------------------------
def config_path() -> Path:
    """The client config file: ``$XDG_CONFIG_HOME/cianna-otf/client.toml`` (``~/.config`` by default).

    A file rather than only environment variables, so a user sets the URL and token once on a
    login node and every notebook and shell finds them.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cianna-otf" / "client.toml"


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
        import tomli as tomllib

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the client config file {path}: {exc}") from None
    return data


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, ""):
            return value
    return None


# -- parsing helpers -------------------------------------------------------------------------
def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _format_time(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _text(element: etree._Element, name: str) -> str | None:
    child = element.find(f"uws:{name}", _NS)
    if child is None or child.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    return child.text


def _xml(content: bytes, url: str) -> etree._Element:
    try:
        return etree.fromstring(content, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise ClientError(f"the service answered {url} with a document that is not XML: {exc}", None, url) from None


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


# -- records ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobSummary:
    """One entry of the job list (a UWS ``jobref``): enough for a table, without fetching the job.

    Attributes
    ----------
    job_id, url, phase : str
        Identity and state; `url` is absolute.
    run_id, owner : str or None
        The client's label (RUNID) and the owner.
    creation_time : datetime or None
        When the job was created (UTC).
    """

    job_id: str
    url: str
    phase: str
    run_id: str | None = None
    owner: str | None = None
    creation_time: datetime | None = None
    client: Client | None = field(default=None, repr=False, compare=False)

    def job(self) -> Job:
        """The full job (one request)."""
        if self.client is None:
            raise ClientError("this summary is not attached to a client")
        return self.client.job(self.url)


class Job:
    """A UWS job on the service: its state (refreshed on demand), results and controls.

    Made by `Client.submit` or `Client.job`; the attributes reflect the last fetched job document,
    so call `refresh` (or `wait`) to see a newer state.

    Attributes
    ----------
    url : str
        The job's absolute URL; pyvo's ``AsyncTAPJob(url, session=...)`` drives the same job.
    job_id, phase : str
    run_id, owner : str or None
    creation_time, start_time, end_time, destruction : datetime or None
    execution_duration : int or None
        Seconds allowed to run (0: unlimited).
    parameters : dict of str to str
        Parameter values as the service recorded them (upper-case names).
    error_message : str or None
        The errorSummary message of a failed job.
    progress : tuple of int
        (done, total) work units from the service's jobInfo; (0, 0) before work starts.
    warnings : list of str
        What makes a completed job's catalogue doubtful or incomplete (an image outside the
        model's domain, an unknown unit or beam), from the service's jobInfo.
    """

    def __init__(self, client: Client, url: str, document: bytes | None = None) -> None:
        self._client = client
        self.url = url
        self.job_id = url.rstrip("/").rsplit("/", 1)[-1]
        self.phase = "UNKNOWN"
        self.warnings: list[str] = []
        self.run_id: str | None = None
        self.owner: str | None = None
        self.creation_time: datetime | None = None
        self.start_time: datetime | None = None
        self.end_time: datetime | None = None
        self.destruction: datetime | None = None
        self.execution_duration: int | None = None
        self.parameters: dict[str, str] = {}
        self._results: dict[str, tuple[str, str | None]] = {}
        self.error_message: str | None = None
        self.error_type: str | None = None
        self.progress: tuple[int, int] = (0, 0)
        self.deleted = False
        if document is None:
            self.refresh()
        else:
            self._update(document)

    def __repr__(self) -> str:
        done, total = self.progress
        extra = f" {done}/{total}" if total else ""
        return f"<Job {self.job_id} {self.phase}{extra}>"

    # -- state --------------------------------------------------------------------------------
    def _update(self, document: bytes) -> None:
        root = _xml(document, self.url)
        if root.tag != f"{{{UWS_NS}}}job":
            raise ClientError(f"{self.url} is not a UWS job (root element {root.tag})", None, self.url)
        self.job_id = _text(root, "jobId") or self.job_id
        self.phase = (_text(root, "phase") or "UNKNOWN").strip().upper()
        self.run_id = _text(root, "runId")
        self.owner = _text(root, "ownerId")
        self.creation_time = _parse_time(_text(root, "creationTime"))
        self.start_time = _parse_time(_text(root, "startTime"))
        self.end_time = _parse_time(_text(root, "endTime"))
        self.destruction = _parse_time(_text(root, "destruction"))
        duration = _text(root, "executionDuration")
        self.execution_duration = int(duration) if duration and duration.strip().isdigit() else None
        self.parameters = {
            (p.get("id") or "").upper(): (p.text or "")
            for p in root.iterfind("uws:parameters/uws:parameter", _NS)
        }
        self._results = {
            r.get("id"): (urljoin(self.url, r.get(f"{{{XLINK_NS}}}href") or ""), r.get("mime-type"))
            for r in root.iterfind("uws:results/uws:result", _NS)
        }
        summary = root.find("uws:errorSummary", _NS)
        if summary is not None:
            self.error_message = (_text(summary, "message") or "").strip() or None
            self.error_type = summary.get("type")
        else:
            self.error_message = self.error_type = None
        self.warnings = [(w.text or "").strip() for w in root.iterfind(f"uws:jobInfo/{{{JOBINFO_NS}}}warning", _NS)]
        progress = root.find(f"uws:jobInfo/{{{JOBINFO_NS}}}progress", _NS)
        if progress is not None:
            try:
                self.progress = (int(progress.get("done", 0)), int(progress.get("total", 0)))
            except ValueError:
                pass

    def refresh(self, wait: float | None = None, phase: str | None = None) -> Job:
        """Fetch the job document again; optionally block server-side until the phase changes.

        Parameters
        ----------
        wait : float, optional
            Seconds for UWS ``WAIT`` (the server answers as soon as the phase changes, or after
            this long, whichever is first; it caps the value). None fetches at once.
        phase : str, optional
            Only wait while the job is still in this phase (UWS ``PHASE=`` with ``WAIT``), so a
            change that happened since the last fetch answers at once instead of being missed.

        Returns
        -------
        Job
            self, for chaining.
        """
        params: dict[str, str] = {}
        timeout: float | tuple[float, float] = self._client.timeout
        if wait is not None:
            params["WAIT"] = f"{wait:g}"
            if phase:
                params["PHASE"] = phase
            timeout = (self._client.timeout, max(wait, 0) + self._client.timeout)
        response = self._client._request("GET", self.url, params=params, timeout=timeout)
        self._update(response.content)
        return self

    @property
    def results(self) -> list[str]:
        """Identifiers of the job's results (``result``, ``regions``, ``provenance`` when done)."""
        return list(self._results)

    def result_url(self, result_id: str = "result") -> str:
        """The absolute URL of one result, as listed in the job document."""
        if result_id not in self._results:
            self._require_completed()
            raise NotFoundError(f"job {self.job_id} has no result {result_id!r} (it has {self.results})",
                                None, self.url)
        return self._results[result_id][0]

    @property
    def finished(self) -> bool:
        """True once the job is in a phase it will not leave by itself."""
        return self.phase in FINAL_PHASES

    def _require_completed(self) -> None:
        if self.phase in ("ERROR", "ABORTED"):
            raise JobFailedError(self)
        if self.phase != "COMPLETED":
            raise ClientError(f"job {self.job_id} is {self.phase}: results exist once it is COMPLETED "
                              "(call job.wait() first)", None, self.url)

    def raise_if_error(self) -> Job:
        """Raise `JobFailedError` if the job ended in ERROR or ABORTED; else return self."""
        if self.phase in ("ERROR", "ABORTED"):
            raise JobFailedError(self)
        return self

    # -- waiting ------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None, progress: ProgressCallback | None = None,
             raise_on_error: bool = True, wait_step: float | None = None) -> Job:
        """Block until the job finishes, with the server's blocking ``WAIT`` (no busy polling).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait in all; None waits as long as it takes.
        progress : callable, optional
            Called as ``progress(done, total)`` (work units from the job's jobInfo) whenever the
            numbers change, and once at the end, so a caller can drive a progress bar.
        raise_on_error : bool
            Raise `JobFailedError` (with the server's errorSummary) if the job ends in ERROR or
            ABORTED, so ``job.wait().table()`` never silently reads a failed job. False returns
            the failed job for the caller to inspect.
        wait_step : float, optional
            Seconds per WAIT request; defaults to 60 s, or 1 s with a progress callback (the
            server only answers early on a phase change, not on progress).

        Returns
        -------
        Job
            self, refreshed and finished.

        Raises
        ------
        WaitTimeoutError
            The job was still running after `timeout`; it goes on running.
        ClientError
            The job is PENDING (nothing would ever start it: call `run` first).
        """
        step = wait_step or (PROGRESS_WAIT_STEP if progress else DEFAULT_WAIT_STEP)
        deadline = None if timeout is None else time.monotonic() + timeout
        reported: tuple[int, int] | None = None
        while True:
            if progress is not None and self.progress != reported:
                reported = self.progress
                progress(*reported)
            if self.phase not in ACTIVE_PHASES:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeoutError(f"job {self.job_id} is still {self.phase} after {timeout:g} s; "
                                       "it goes on running on the server", None, self.url)
            self.refresh(wait=step if remaining is None else max(0.0, min(step, remaining)), phase=self.phase)
        if self.phase == "PENDING":
            raise ClientError(f"job {self.job_id} is PENDING: nothing will start it; call job.run() first",
                              None, self.url)
        if raise_on_error:
            self.raise_if_error()
        return self

    # -- controls -----------------------------------------------------------------------------
    def run(self) -> Job:
        """Start a PENDING job (UWS ``PHASE=RUN``); it is QUEUED or later on return."""
        self._client._request("POST", f"{self.url}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
        return self.refresh()

    def abort(self) -> Job:
        """Abort the job (UWS ``PHASE=ABORT``); queued work is dropped and the job ends ABORTED."""
        self._client._request("POST", f"{self.url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
        return self.refresh()

    def delete(self) -> None:
        """Delete the job and its files on the server; the job URL answers 404 afterwards."""
        self._client._request("DELETE", self.url, allow_redirects=False)
        self.deleted = True

    # -- results ------------------------------------------------------------------------------
    def fetch(self, result_id: str = "result", **params: str) -> bytes:
        """The raw bytes of one result (for saving to a file as the service made it)."""
        self._require_completed()
        return self._client._request("GET", self.result_url(result_id), params=params or None).content

    def votable(self) -> bytes:
        """The catalogue (result ``result``) as the VOTable bytes the service wrote."""
        return self.fetch("result")

    def table(self) -> Table:
        """The catalogue as an astropy Table: ra/dec in degrees with their UCDs, one row per source.

        Reads VOTable by default, and CSV or FITS where the job asked for ``RESPONSEFORMAT``.
        """
        from astropy.table import Table

        content = self.fetch("result")
        mime = (self._results["result"][1] or "").lower()
        if "csv" in mime:
            return Table.read(content.decode("utf-8"), format="ascii.csv")
        if "fits" in mime:
            return Table.read(io.BytesIO(content), format="fits")
        from astropy.io.votable import parse_single_table

        return parse_single_table(io.BytesIO(content)).to_table(use_names_over_ids=True)

    def regions(self) -> Regions:
        """The detections as sky regions (the ``regions`` result, DS9 format), for plotting or DS9."""
        from regions import Regions

        return Regions.parse(self.fetch("regions").decode("utf-8"), format="ds9")

    def provenance(self, fmt: str = "json") -> dict[str, Any] | str:
        """The W3C PROV record of the job: a dict for ``json``, text for ``provn`` and ``xml``."""
        content = self.fetch("provenance", RESPONSEFORMAT=fmt)
        if fmt.lower() in ("json", "prov-json", "application/json"):
            return json.loads(content)
        return content.decode("utf-8")


# -- streamed uploads ------------------------------------------------------------------------
#: Bytes read and sent at a time when an upload reports its progress.
UPLOAD_CHUNK = 1 << 20


class _MultipartStream:
    """A ``multipart/form-data`` body sent in chunks, reporting ``(sent, total)`` as it goes.

    requests sends an iterable with a ``__len__`` as a plain (not chunked) body with that
    Content-Length, so the server sees the same request as for ``files=``; the file is read
    1 MiB at a time and never held whole in memory. Iterating again starts over (the file is
    reopened or sought back), so a retried request resends the whole body.
    """

    def __init__(self, fields: list[tuple[str, str]], name: str, filename: str, content_type: str,
                 source: bytes | Path | IO[bytes], progress: ProgressCallback) -> None:
        self.boundary = f"cianna-otf-{os.urandom(12).hex()}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.source = source
        self.progress = progress
        if not isinstance(source, (bytes, bytearray, Path)) and not (
                hasattr(source, "seekable") and source.seekable()):
            source = self.source = source.read()  # a pipe or socket: its size is known only once read
        if isinstance(source, (bytes, bytearray)):
            self.size = len(source)
        elif isinstance(source, Path):
            self.size = source.stat().st_size
        else:
            self.start = source.tell()
            self.size = source.seek(0, io.SEEK_END) - self.start
            source.seek(self.start)
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote_field(key)}"\r\n\r\n'
            .encode("utf-8") + str(value).encode("utf-8") + b"\r\n"
            for key, value in fields
        )
        self.head = head + (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote_field(name)}"; '
            f'filename="{_quote_field(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode("utf-8")
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self.total = len(self.head) + self.size + len(self.tail)

    def __len__(self) -> int:
        return self.total

    def _file_chunks(self) -> Iterable[bytes]:
        if isinstance(self.source, (bytes, bytearray)):
            view = memoryview(self.source)
            for offset in range(0, self.size, UPLOAD_CHUNK):
                yield bytes(view[offset:offset + UPLOAD_CHUNK])
            return
        if isinstance(self.source, Path):
            handle: IO[bytes] = self.source.open("rb")
            close = True
        else:
            handle, close = self.source, False
            handle.seek(self.start)
        try:
            left = self.size
            while left > 0:
                chunk = handle.read(min(UPLOAD_CHUNK, left))
                if not chunk:
                    raise ClientError(f"the file {getattr(handle, 'name', '')} shrank while it was uploaded")
                left -= len(chunk)
                yield chunk
        finally:
            if close:
                handle.close()

    def __iter__(self):
        sent = 0
        self.progress(0, self.size)
        yield self.head
        for chunk in self._file_chunks():
            yield chunk
            sent += len(chunk)
            self.progress(sent, self.size)
        yield self.tail


def _quote_field(text: str) -> str:
    """A form-data name or filename inside double quotes (the WHATWG escapes: quote, CR, LF)."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# -- the client ------------------------------------------------------------------------------
_REGION_SHAPES = ("CIRCLE", "POLYGON", "RANGE", "POS")


def _region_parameter(region: str) -> tuple[str, str]:
    """SODA text ("CIRCLE ra dec r", "POLYGON ...", "RANGE ra1 ra2 dec1 dec2") -> (name, value)."""
    match = re.fullmatch(r"\s*(\w+)\s*[=\s]\s*(.+?)\s*", region, re.S)
    if not match or match.group(1).upper() not in _REGION_SHAPES:
        raise ValueError(f"region {region!r} is not SODA text: use 'CIRCLE ra dec radius', "
                         "'POLYGON ra1 dec1 ra2 dec2 ...' or 'RANGE ra1 ra2 dec1 dec2' (ICRS degrees)")
    shape, value = match.group(1).upper(), match.group(2)
    if shape == "RANGE":
        return "POS", f"RANGE {value}"
    return shape, value


def _is_reference(image: str) -> bool:
    return bool(re.match(r"(?i)https?://", image))


class Client:
    """A client of one CIANNA On-The-Fly service, standalone or inside Jupyter.

    Parameters
    ----------
    url : str, optional
        The service root (``http://host:8750``, or ``{jupyter_url}{base_url}cianna-otf``).
        Else ``$CIANNA_OTF_URL``, else ``url`` in the config file (see `config_path`).
    token : str, optional
        The API token. Else ``$CIANNA_OTF_TOKEN``, else ``token`` in the config file. None with
        a `session` that already carries an ``Authorization`` header keeps that header.
    session : requests.Session, optional
        A session to reuse (proxies, certificates, JupyterHub cookies); one is made otherwise.
    auth_scheme : str, optional
        ``Bearer`` or ``token``. Else ``auth_scheme`` in the config file, else ``token`` when the
        URL path holds ``/cianna-otf`` (Jupyter's own scheme; JupyterHub identity providers may
        accept only it) and ``Bearer`` otherwise (the standalone server accepts both).
    timeout : float
        Seconds for connecting and for ordinary responses; blocking waits add their WAIT time.
    config_file : str or Path, optional
        Another config file than the default, e.g. for tests or several services.

    Raises
    ------
    ConfigurationError
        No URL anywhere, or an unreadable config file.
    """

    def __init__(self, url: str | None = None, token: str | None = None,
                 session: requests.Session | None = None, *, auth_scheme: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, config_file: str | Path | None = None) -> None:
        path = Path(config_file) if config_file is not None else config_path()
        config = _read_config(path) if (url is None or token is None or auth_scheme is None) else {}
        url = _first(url, os.environ.get(URL_ENV), config.get("url"))
        if not url:
            raise ConfigurationError(f"no service URL: pass url=..., set ${URL_ENV}, or put url = \"...\" in {path}")
        self.url = str(url).rstrip("/")
        self.token: str | None = _first(token, os.environ.get(TOKEN_ENV), config.get("token"))
        scheme = _first(auth_scheme, config.get("auth_scheme"))
        if scheme is None:
            scheme = "token" if "/cianna-otf" in urlparse(self.url).path else "Bearer"
        self.auth_scheme = str(scheme)
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        if self.token:
            self.session.headers["Authorization"] = f"{self.auth_scheme} {self.token}"

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session (its pooled connections)."""
        self.session.close()

    # -- HTTP -------------------------------------------------------------------------------
    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request; HTTP and connection errors become `ClientError` subclasses (never raw requests)."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
        except requests.Timeout:
            raise ClientError(f"the service at {self.url} did not answer in time ({method} {url})", None, url) from None
        except requests.ConnectionError as exc:
            # requests nests the cause several levels deep; the errno text is what a person needs
            found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
            reason = found.group(1).strip() if found else str(exc)
            raise ClientError(f"cannot reach the service at {self.url}: {reason}", None, url) from None
        except requests.RequestException as exc:
            raise ClientError(f"{method} {url} failed: {exc}", None, url) from None
        _raise_for_status(response)
        return response

    def _job_url(self, job: str) -> str:
        if _is_reference(job):
            return job.rstrip("/")
        return f"{self.url}/async/{quote(job, safe='')}"

    # -- service ----------------------------------------------------------------------------
    def metrics_text(self) -> str:
        """The service's Prometheus metrics, as text (for dashboards and monitoring scripts)."""
        return self._request("GET", f"{self.url}/metrics").text

    def info(self) -> dict[str, Any]:
        """The service description: version, endpoints and the user the token authenticates."""
        return self._request("GET", f"{self.url}/").json()

    def models(self) -> list[dict[str, Any]]:
        """The model cards the service offers (name, description, defaults, availability)."""
        return self._request("GET", f"{self.url}/models", headers={"Accept": "application/json"}).json()["models"]

    def model(self, name: str) -> dict[str, Any]:
        """One model card; `NotFoundError` for a model the service does not have."""
        return self._request("GET", f"{self.url}/models/{quote(name, safe='')}",
                             headers={"Accept": "application/json"}).json()

    def match(self, image: str | os.PathLike | bytes | IO[bytes], hdu: int | str | None = None,
              unit: str | None = None, beam: str | None = None, upload: bool | None = None) -> dict[str, Any]:
        """Which of the service's models fits this image? (``POST /models/match``; no job is made.)

        Parameters
        ----------
        image : path, URL, bytes or binary file
            Sent as `submit` sends it: a local file (or bytes, or an open binary file) is
            uploaded; an ``http(s)://`` URL or a path that is not a local file goes by reference
            (the server reads it; paths must lie under one of its data roots). A file of FITS
            header records alone is accepted: the noise is then not measured and the noise
            checks are skipped (the answer's warnings say so).
        hdu : int or str, optional
            HDU index or EXTNAME (default: the first 2-D image, as for a job).
        unit : str, optional
            Brightness unit replacing the header's BUNIT (``"mJy/beam"``, ``"Jy/pixel"``).
        beam : str, optional
            Restoring beam replacing the header's: ``"bmaj bmin pa"`` (arcsec, arcsec, degrees).
        upload : bool, optional
            As in `submit`: False sends a path by reference even where the file is local.

        Returns
        -------
        dict
            ``{"image": {...}, "models": [...], "warnings": [...]}``: the traits the ranking used
            (``beam_pixels``, ``pixel_scale_arcsec``, ``unit``, ``noise_jy_per_beam``, ``size``,
            ``hdu``, ``header_only``), the models best fit first (``model``, ``fit`` 0-1,
            ``reason``, ``warnings``, ``notes``, ``convention``, ``zoom``, ``status``,
            ``default``), and the image reader's warnings.

        Raises
        ------
        ClientError
            With status 400 and the server's reason for an unreadable image, an unknown HDU,
            or a bad unit or beam.
        """
        data: list[tuple[str, str]] = [(key, str(value)) for key, value in
                                       (("HDU", hdu), ("UNIT", unit), ("BEAM", beam)) if value is not None]
        files = None
        if isinstance(image, (bytes, bytearray)):
            files = {"IMAGE": ("image.fits", bytes(image), "application/fits")}
        elif hasattr(image, "read"):
            files = {"IMAGE": (Path(getattr(image, "name", "image.fits")).name, image, "application/fits")}
        else:
            text = os.fspath(image)
            local = Path(text).expanduser()
            if upload is None:
                upload = not _is_reference(text) and local.is_file()
            if upload:
                if not local.is_file():
                    raise FileNotFoundError(f"cannot upload {text}: no such file here")
                files = {"IMAGE": (local.name, local.read_bytes(), "application/fits")}
            else:
                data.append(("IMAGE", text))
        response = self._request("POST", f"{self.url}/models/match", data=data, files=files,
                                 headers={"Accept": "application/json"})
        return response.json()

    def match_models(self, image: str | os.PathLike | bytes | IO[bytes], hdu: int | str | None = None,
                     unit: str | None = None, beam: str | None = None, upload: bool | None = None
                     ) -> list[dict[str, Any]]:
        """The service's models ranked for `image`, best fit first (the ``models`` of `match`).

        Each entry: ``model``, ``fit`` (0-1), ``reason`` (one sentence), ``warnings`` (what
        would make that model's catalogue doubtful on this image), ``notes``, ``convention``
        (``absolute``, ``snr`` or ``native``), ``zoom`` (model pixels per image pixel),
        ``status`` (``available`` or not) and ``default``. Parameters as in `match`.
        """
        return self.match(image, hdu=hdu, unit=unit, beam=beam, upload=upload)["models"]

    # -- jobs -------------------------------------------------------------------------------
    def submit(self, image: str | os.PathLike | bytes | IO[bytes] | None = None, model: str | None = None,
               region: str | None = None, pixels: str | Sequence[int] | None = None,
               precision: str | None = None, threshold: float | None = None, nms: float | None = None,
               min_size: float | None = None, run: bool = True, run_id: str | None = None,
               upload: bool | None = None, upload_progress: ProgressCallback | None = None,
               **extra: Any) -> Job:
        """Create a detection job (UWS POST to ``/async``) and, by default, queue it.

        Parameters
        ----------
        image : path, URL, bytes or binary file, optional
            A local file (or bytes, or an open binary file) is uploaded as multipart form data;
            an ``http(s)://`` URL or a path that is not a local file goes by reference (the
            server reads it; paths must lie under one of its data roots).
        model : str, optional
            Model name (``Client.models``); the service's default model when None.
        region : str, optional
            Region of interest in SODA text, ICRS degrees: ``"CIRCLE ra dec radius"``,
            ``"POLYGON ra1 dec1 ra2 dec2 ..."`` or ``"RANGE ra1 ra2 dec1 dec2"``.
        pixels : str or sequence of 4 int, optional
            Region of interest in pixels ``x1 x2 y1 y2`` (FITS 1-based, inclusive).
        precision : str, optional
            ``fp32``, ``fp16`` or ``bf16``.
        threshold, nms, min_size : float, optional
            Detection knobs (defaults from the model card).
        run : bool
            Queue the job at once (``PHASE=RUN``); False leaves it PENDING for `Job.run`.
        run_id : str, optional
            A label of the caller's choosing (UWS RUNID), shown in job lists.
        upload : bool, optional
            False sends a path by reference even where the file is also visible here: on a shared
            file system the server reads a 4 GB image in place instead of receiving a copy. True
            insists on uploading (an error if the file is not local). None decides by existence.
        upload_progress : callable, optional
            ``upload_progress(sent_bytes, total_bytes)`` is called as an uploaded image goes
            out (first with 0, last with ``sent == total``, the image's size in bytes); the body
            is then streamed 1 MiB at a time instead of read whole into memory. Not called when
            the image goes by reference.
        **extra
            Further job parameters (``hdu=1``, ``responseformat="csv"``, ``executionduration``);
            names are sent upper-case, None values are left out.

        Returns
        -------
        Job
            The new job (QUEUED or later when `run`).
        """
        data: list[tuple[str, str]] = []
        files: dict[str, tuple[str, Any, str]] = {}
        if isinstance(image, (bytes, bytearray)):
            files["IMAGE"] = ("image.fits", bytes(image), "application/fits")
        elif hasattr(image, "read"):
            name = Path(getattr(image, "name", "image.fits")).name
            files["IMAGE"] = (name, image, "application/fits")
        elif image is not None:
            text = os.fspath(image)
            local = Path(text).expanduser()
            if upload is None:
                upload = not _is_reference(text) and local.is_file()
            if upload:
                if not local.is_file():
                    raise FileNotFoundError(f"cannot upload {text}: no such file here")
                files["IMAGE"] = (local.name, local if upload_progress else local.read_bytes(), "application/fits")
            else:
                data.append(("IMAGE", text))
        values: dict[str, Any] = {"MODEL": model, "PRECISION": precision, "THRESHOLD": threshold,
                                  "NMS": nms, "MIN_SIZE": min_size, "RUNID": run_id}
        if region is not None:
            name, value = _region_parameter(region)
            values[name] = value
        if pixels is not None:
            values["PIXELS"] = pixels if isinstance(pixels, str) else " ".join(str(int(p)) for p in pixels)
        for key, value in extra.items():
            values[key.upper()] = value
        data.extend((key, str(value)) for key, value in values.items() if value is not None)
        if run:
            data.append(("PHASE", "RUN"))
        if files and upload_progress is not None:
            filename, source, content_type = files["IMAGE"]
            stream = _MultipartStream(data, "IMAGE", filename, content_type, source, upload_progress)
            response = self._request("POST", f"{self.url}/async", data=stream,
                                     headers={"Content-Type": stream.content_type}, allow_redirects=False)
        else:
            response = self._request("POST", f"{self.url}/async", data=data, files=files or None,
                                     allow_redirects=False)
        location = response.headers.get("Location")
        if response.status_code != 303 or not location:
            raise ClientError(f"the service did not answer job creation with 303 See Other "
                              f"(got {response.status_code})", response.status_code, response.url)
        return Job(self, urljoin(response.url, location))

    def job(self, job: str) -> Job:
        """An existing job, by identifier or URL; `NotFoundError` if it does not exist (any more)."""
        return Job(self, self._job_url(job))

    def jobs(self, phase: str | Iterable[str] | None = None, after: datetime | str | None = None,
             last: int | None = None) -> list[JobSummary]:
        """The caller's jobs, newest first when `last` is given, filtered on the server.

        Parameters
        ----------
        phase : str or iterable of str, optional
            Only jobs in these phases (a union). ARCHIVED jobs appear only when asked for.
        after : datetime or str, optional
            Only jobs created after this instant (naive datetimes are taken as UTC).
        last : int, optional
            Only the `last` most recently created jobs.
        """
        params: list[tuple[str, str]] = []
        if phase is not None:
            phases = [phase] if isinstance(phase, str) else list(phase)
            params.extend(("PHASE", p.upper()) for p in phases)
        if after is not None:
            params.append(("AFTER", _format_time(after)))
        if last is not None:
            params.append(("LAST", str(int(last))))
        response = self._request("GET", f"{self.url}/async", params=params)
        root = _xml(response.content, response.url)
        summaries = []
        for ref in root.iterfind("uws:jobref", _NS):
            href = ref.get(f"{{{XLINK_NS}}}href") or f"async/{ref.get('id')}"
            summaries.append(JobSummary(
                job_id=ref.get("id") or "",
                url=urljoin(response.url, href).rstrip("/"),
                phase=(_text(ref, "phase") or "UNKNOWN").strip().upper(),
                run_id=_text(ref, "runId"),
                owner=_text(ref, "ownerId"),
                creation_time=_parse_time(_text(ref, "creationTime")),
                client=self,
            ))
        return summaries
