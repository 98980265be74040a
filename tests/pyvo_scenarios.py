"""pyvo scenarios: the detection service driven exactly as a user in another notebook would.

Each ``scenario_xxx(root_url, session, fits_path)`` is a plain function: ``root_url`` is the
service root without a trailing slash (``http://host:port/user/alice/cianna-otf``),
``session`` a `requests.Session` carrying the ``Authorization`` header of the hosting mode
(``Bearer TOKEN`` standalone, ``token TOKEN`` in Jupyter) and ``fits_path`` a small FITS
image. They run blocking clients, so inside an event loop call them through
``asyncio.to_thread``. They return what they made, for host-specific checks.

`scenario_abort` needs a job that stays QUEUED: the host must be configured with
`HoldingExecutor` (``executor_class`` in `ServiceConfig`, ``c.CiannaOTF.executor_class``
in Jupyter), which keeps jobs whose RUNID starts with ``hold`` queued until they are aborted
or deleted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urljoin

import pytest
import pyvo
from prov.model import ProvDocument
from pyvo.dal import DALQueryError, DALServiceError

from cianna_otf_server.testing import HoldingExecutor  # noqa: F401 - hosts configure it from here

WAIT_TIMEOUT = 60.0  # seconds: every job here takes well under one


# -- helpers: what a user writes in a notebook ---------------------------------------------
def create_job(root_url: str, session, image: Path | bytes, *, run: bool = True, filename: str = "sky.fits",
               **parameters: str) -> pyvo.dal.AsyncTAPJob:
    """POST the image (multipart) to ``{root}/async``; follow the 303 to the job."""
    data = {"MODEL": "classic", **parameters}
    if run:
        data["PHASE"] = "RUN"
    body = image if isinstance(image, bytes) else Path(image).read_bytes()
    response = session.post(f"{root_url}/async", data=data,
                            files={"IMAGE": (filename, body, "application/fits")})
    response.raise_for_status()
    assert response.history and response.history[0].status_code == 303, response.history
    job_url = response.url
    assert job_url.startswith(root_url + "/async/"), (job_url, root_url)
    return pyvo.dal.AsyncTAPJob(job_url, session=session)


def result_url(job: pyvo.dal.AsyncTAPJob, result_id: str) -> str:
    """The absolute URL of one result, resolved as pyvo does."""
    for result in job.results:
        if result.id_ == result_id:
            return urljoin(job.url, result.href)
    raise AssertionError(f"job {job.job_id} has no result {result_id!r}: {[r.id_ for r in job.results]}")


def fetch_provenance(job: pyvo.dal.AsyncTAPJob, session) -> ProvDocument:
    response = session.get(result_url(job, "provenance"))
    response.raise_for_status()
    return ProvDocument.deserialize(content=response.text, format="json")


def check_catalogue(table) -> None:
    """A catalogue a user can use: sources with ra/dec in degrees, marked as the main position."""
    assert len(table) > 0, "no sources detected in the simulated sky"
    assert "ra" in table.colnames and "dec" in table.colnames, table.colnames
    ucds = {name: _ucd(table[name]) for name in ("ra", "dec")}
    assert ucds == {"ra": "pos.eq.ra;meta.main", "dec": "pos.eq.dec;meta.main"}, ucds
    assert str(table["ra"].unit) == "deg" and str(table["dec"].unit) == "deg"
    assert ((table["dec"] >= -90) & (table["dec"] <= 90)).all()


def _ucd(column) -> str | None:
    # astropy's VOTable reader keeps the FIELD ucd in the column's meta
    return column.meta.get("ucd") or getattr(column.info, "meta", {}).get("ucd")


# -- scenarios -------------------------------------------------------------------------------
def scenario_run_and_fetch(root_url: str, session, fits_path: Path):
    """Upload + PHASE=RUN, wait, fetch the VOTable (sources, UCDs) and the PROV document."""
    job = create_job(root_url, session, fits_path)
    assert job.phase in ("QUEUED", "EXECUTING", "COMPLETED"), job.phase  # never PENDING after PHASE=RUN
    job.wait(timeout=WAIT_TIMEOUT)
    assert job.phase == "COMPLETED", (job.phase, job._job.errorsummary)
    job.raise_if_error()
    assert job.result_uri == f"{job.url}/results/result"
    table = job.fetch_result().to_table()
    check_catalogue(table)

    document = fetch_provenance(job, session)
    records = document.get_records()
    assert records, "empty provenance document"
    activities = [r for r in records if r.get_type().localpart == "Activity"]
    assert len(activities) == 1
    uploaded_sha = hashlib.sha256(Path(fits_path).read_bytes()).hexdigest()
    entity_shas = {str(value) for r in records if r.get_type().localpart == "Entity"
                   for key, value in r.attributes if key.localpart == "sha256"}
    assert uploaded_sha in entity_shas
    return job, table, document


def scenario_run_pending(root_url: str, session, fits_path: Path):
    """A job created without PHASE=RUN is PENDING; ``job.run()`` starts it; it completes."""
    job = create_job(root_url, session, fits_path, run=False, RUNID="later")
    assert job.phase == "PENDING"
    # (no job.wait() here: UWS blocks WAIT on a PENDING job up to the server's cap, then pyvo raises)
    assert job.run() is job
    job.wait(timeout=WAIT_TIMEOUT)
    assert job.phase == "COMPLETED"
    assert job._job.runid == "later"
    check_catalogue(job.fetch_result().to_table())
    with pytest.raises(DALServiceError):  # RUN on a COMPLETED job is not allowed (403)
        job.run()
    return job


def scenario_abort(root_url: str, session, fits_path: Path):
    """ABORT of a PENDING job and of a QUEUED one (needs `HoldingExecutor`): ABORTED, no results."""
    pending = create_job(root_url, session, fits_path, run=False)
    assert pending.phase == "PENDING"
    pending.abort()
    assert pending.phase == "ABORTED"
    assert pending.results == [] or not pending._job.results

    queued = create_job(root_url, session, fits_path, RUNID="hold-abort")
    assert queued.phase == "QUEUED", "the host must run with HoldingExecutor"
    queued.abort()
    assert queued.phase == "ABORTED"
    assert queued._job.endtime is not None
    with pytest.raises(DALServiceError):  # pyvo will not wait on an aborted job ...
        queued.wait(timeout=WAIT_TIMEOUT)
    with pytest.raises(DALQueryError):  # ... and reports it as an error
        queued.raise_if_error()
    with pytest.raises(DALServiceError):  # an aborted job cannot be run again (403)
        queued.run()
    assert queued.phase == "ABORTED"
    return pending, queued


def scenario_delete(root_url: str, session, fits_path: Path):
    """``job.delete()`` removes the job: 404 afterwards, gone from the job list."""
    job = create_job(root_url, session, fits_path, run=False)
    url, job_id = job.url, job.job_id
    job.delete()
    assert job.url is None
    assert session.get(url).status_code == 404
    with pytest.raises(DALServiceError):
        pyvo.dal.AsyncTAPJob(url, session=session)
    listed = {j.jobid for j in pyvo.dal.TAPService(root_url, session=session).get_job_list()}
    assert job_id not in listed
    return job_id


def scenario_job_list(root_url: str, session, fits_path: Path):
    """``TAPService(root).get_job_list()`` lists the user's jobs with their phases; filters work."""
    done = create_job(root_url, session, fits_path, RUNID="listed")
    done.wait(timeout=WAIT_TIMEOUT)
    pending = create_job(root_url, session, fits_path, run=False)
    service = pyvo.dal.TAPService(root_url, session=session)
    jobs = {j.jobid: j for j in service.get_job_list()}
    assert jobs[done.job_id].phase == "COMPLETED"
    assert jobs[done.job_id].runid == "listed"
    assert jobs[pending.job_id].phase == "PENDING"
    assert jobs[done.job_id].creationtime is not None
    completed = {j.jobid for j in service.get_job_list(phases=["COMPLETED"])}
    assert done.job_id in completed and pending.job_id not in completed
    newest = service.get_job_list(last=1)
    assert [j.jobid for j in newest] == [pending.job_id]
    pending.delete()
    return done


def scenario_failed_job(root_url: str, session, fits_path: Path):
    """A non-FITS upload: the job ends in ERROR; ``raise_if_error`` raises with the errorSummary."""
    job = create_job(root_url, session, b"this is not a FITS file\n" * 200, filename="notes.txt")
    job.wait(timeout=WAIT_TIMEOUT)
    assert job.phase == "ERROR"
    summary = job._job.errorsummary
    assert summary is not None and "FITS" in summary.message.content, summary
    with pytest.raises(DALQueryError) as caught:
        job.raise_if_error()
    assert summary.message.content in str(caught.value)
    with pytest.raises(DALQueryError):  # no result: fetch_result reports the error too
        job.fetch_result()
    error = session.get(f"{job.url}/error")
    assert error.status_code == 200 and b'value="ERROR"' in error.content
    return job


SCENARIOS = [scenario_run_and_fetch, scenario_run_pending, scenario_abort, scenario_delete, scenario_job_list,
             scenario_failed_job]

__all__ = ["HoldingExecutor", "SCENARIOS", "create_job", "fetch_provenance", "result_url",
           *(s.__name__ for s in SCENARIOS)]
