"""A job as the client sees it: its UWS document parsed, waited on, its results fetched."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from lxml import etree

from ._errors import ClientError, JobFailedError, NotFoundError, WaitTimeoutError

if TYPE_CHECKING:
    from astropy.table import Table
    from regions import Regions

    from ._client import Client

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
ProgressCallback = Callable[[int, int], Any]


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
