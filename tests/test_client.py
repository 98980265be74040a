"""`cianna_otf_server.client.Client` against the real standalone server, and once inside Jupyter.

The client only speaks the public UWS API, so these tests also pin what a notebook or the
command line sees: progress while waiting, the catalogue, regions, provenance, filters, and the
server's own messages in the exceptions.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import requests
from pyvo_scenarios import HoldingExecutor

from cianna_otf_server.client import (
    AuthenticationError,
    Client,
    ClientError,
    ConfigurationError,
    InvalidPhaseError,
    Job,
    JobFailedError,
    NotFoundError,
    ServiceBusyError,
    WaitTimeoutError,
)
from cianna_otf_server.client._client import _region_parameter
from cianna_otf_server.client._errors import _raise_for_status

pytest_plugins = ["pytest_jupyter.jupyter_server"]

WAIT = 60.0  # seconds: every job here takes well under one


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch, tmp_path):
    """No developer's environment or ~/.config leaks into a test."""
    monkeypatch.delenv("CIANNA_OTF_URL", raising=False)
    monkeypatch.delenv("CIANNA_OTF_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def service_settings(service_settings):
    """The conftest settings with the executor that keeps RUNID=hold* jobs QUEUED (for abort)."""
    return service_settings.changed(executor_class=HoldingExecutor)


@pytest.fixture
def client(standalone) -> Client:
    with Client(standalone.url, token="tok-alice") as client:
        yield client


# -- the happy path ----------------------------------------------------------------------------
def test_submit_upload_wait_and_results(client, sky_fits):
    """Upload + run, wait with progress, then the catalogue, VOTable, regions and provenance."""
    from regions import Regions

    job = client.submit(sky_fits, model="classic", run_id="first")
    assert isinstance(job, Job) and job.phase in ("QUEUED", "EXECUTING", "COMPLETED")
    assert job.url == f"{client.url}/async/{job.job_id}"
    assert job.parameters["MODEL"] == "classic" and job.run_id == "first"
    assert job.parameters["IMAGE"].endswith(f"/async/{job.job_id}/parameters/IMAGE")  # uploaded, not by path

    seen: list[tuple[int, int]] = []
    assert job.wait(timeout=WAIT, progress=lambda done, total: seen.append((done, total))) is job
    assert job.phase == "COMPLETED" and job.error_message is None
    assert seen and seen[-1] == job.progress and job.progress[0] == job.progress[1] > 0
    assert set(job.results) >= {"result", "regions", "provenance"}

    table = job.table()
    assert len(table) > 0 and {"ra", "dec"} <= set(table.colnames)
    assert str(table["ra"].unit) == "deg"
    assert job.votable().lstrip().startswith(b"<?xml") and b"VOTABLE" in job.votable()[:400]

    regions = job.regions()
    assert isinstance(regions, Regions) and len(regions) == len(table)

    provenance = job.provenance()
    assert isinstance(provenance, dict) and "activity" in provenance and "entity" in provenance
    assert job.provenance("provn").startswith("document")

    again = client.job(job.job_id)  # by id, and by URL
    assert again.phase == "COMPLETED" and client.job(job.url).job_id == job.job_id


def test_submit_bytes_region_pixels_and_models(client, sky_fits):
    """Models, bytes upload, SODA region, pixel box and knobs reach the job parameters."""
    cards = client.models()
    assert "classic" in {card["name"] for card in cards}
    assert client.model("classic")["name"] == "classic"
    assert client.info()["user"] == "alice"

    job = client.submit(sky_fits.read_bytes(), region="CIRCLE 0 -30 0.02", precision="fp32",
                        threshold=0.5, hdu=0).wait(timeout=WAIT)
    assert job.parameters["CIRCLE"] == "0 -30 0.02" and job.parameters["PRECISION"] == "fp32"
    assert job.parameters["THRESHOLD"] == "0.5" and job.parameters["HDU"] == "0"
    boxed = client.submit(sky_fits, pixels=(1, 100, 1, 100)).wait(timeout=WAIT)
    assert boxed.parameters["PIXELS"] == "1 100 1 100"
    assert len(boxed.table()) <= len(client.submit(sky_fits).wait(timeout=WAIT).table())

    assert _region_parameter("RANGE 1 2 3 4") == ("POS", "RANGE 1 2 3 4")
    assert _region_parameter("polygon 0 0 1 0 1 1") == ("POLYGON", "0 0 1 0 1 1")
    with pytest.raises(ValueError, match="SODA"):
        client.submit(sky_fits, region="BOX 1 2 3 4")


def test_submit_by_reference(client, sky_fits, tmp_path, monkeypatch):
    """Paths the client cannot open go by reference; upload=False sends a local one by reference too."""
    inside = tmp_path / "data" / "sky.fits"  # the fixture's data root is tmp_path
    inside.parent.mkdir()
    inside.write_bytes(sky_fits.read_bytes())
    monkeypatch.chdir(tmp_path / "data")  # "data/sky.fits" is not a file from here, only on the server
    relative = client.submit("data/sky.fits", run=False)
    assert relative.parameters["IMAGE"] == str(inside)  # resolved by the server under its data root
    in_place = client.submit(inside, upload=False).wait(timeout=WAIT)
    assert in_place.parameters["IMAGE"] == str(inside) and len(in_place.table()) > 0
    with pytest.raises(FileNotFoundError):
        client.submit("data/sky.fits", upload=True)
    with pytest.raises(ClientError, match="does not exist") as caught:
        client.submit(str(tmp_path / "missing.fits"))
    assert caught.value.status == 400


# -- listing, abort, delete --------------------------------------------------------------------
def test_jobs_filters_abort_delete(client, sky_fits):
    started = datetime.now(timezone.utc) - timedelta(seconds=1)
    done = client.submit(sky_fits, run_id="done").wait(timeout=WAIT)
    pending = client.submit(sky_fits, run=False)
    held = client.submit(sky_fits, run_id="hold-me")
    assert pending.phase == "PENDING" and held.phase == "QUEUED"

    every = {s.job_id: s for s in client.jobs()}
    assert {done.job_id, pending.job_id, held.job_id} <= set(every)
    assert every[done.job_id].phase == "COMPLETED" and every[done.job_id].run_id == "done"
    assert every[done.job_id].owner == "alice" and every[done.job_id].url == done.url
    assert every[done.job_id].job().phase == "COMPLETED"
    assert {s.job_id for s in client.jobs(phase="COMPLETED")} == {done.job_id}
    assert {s.job_id for s in client.jobs(phase=["PENDING", "QUEUED"])} == {pending.job_id, held.job_id}
    assert [s.job_id for s in client.jobs(last=1)] == [held.job_id]
    assert {s.job_id for s in client.jobs(after=started)} == set(every)
    assert client.jobs(after=datetime.now(timezone.utc) + timedelta(hours=1)) == []
    with pytest.raises(ClientError, match="not a UWS phase") as caught:
        client.jobs(phase="SLEEPING")
    assert caught.value.status == 400

    with pytest.raises(WaitTimeoutError):
        held.wait(timeout=0.3)
    assert held.abort() is held and held.phase == "ABORTED"
    with pytest.raises(JobFailedError, match="aborted") as failed:
        held.wait(timeout=WAIT)
    assert failed.value.phase == "ABORTED"
    assert held.wait(raise_on_error=False).phase == "ABORTED"
    with pytest.raises(InvalidPhaseError, match="ABORTED") as refused:
        held.run()
    assert refused.value.status == 403

    with pytest.raises(ClientError, match="PENDING"):
        pending.wait(timeout=WAIT)  # nothing would ever start it: refuse rather than block
    with pytest.raises(ClientError, match="COMPLETED"):
        pending.table()
    assert pending.run().wait(timeout=WAIT).phase == "COMPLETED"

    pending.delete()
    assert pending.deleted
    with pytest.raises(NotFoundError):
        pending.refresh()
    assert pending.job_id not in {s.job_id for s in client.jobs()}


# -- errors --------------------------------------------------------------------------------------
def test_errors_carry_the_server_message(standalone, client, sky_fits):
    with pytest.raises(AuthenticationError) as caught:
        Client(standalone.url, token="wrong").models()
    assert caught.value.status == 401 and "authentication required" in caught.value.message
    with pytest.raises(AuthenticationError):
        Client(standalone.url).jobs()  # no token at all

    with pytest.raises(NotFoundError) as missing:
        client.job("no-such-job")
    assert missing.value.status == 404 and "no-such-job" in missing.value.message
    with pytest.raises(NotFoundError):
        client.model("no-such-model")

    with pytest.raises(ClientError) as unknown:
        client.submit(sky_fits, model="no-such-model")
    assert type(unknown.value) is ClientError and unknown.value.status == 400
    assert "unknown model 'no-such-model'" in unknown.value.message and "classic" in unknown.value.message

    job = client.submit(b"this is not a FITS file\n" * 200)
    with pytest.raises(JobFailedError, match="FITS") as failed:
        job.wait(timeout=WAIT)
    assert failed.value.job is job and job.phase == "ERROR"
    assert "not a readable FITS file" in failed.value.error_summary == job.error_message
    with pytest.raises(JobFailedError):
        job.table()

    # another owner's job looks like no job at all, and bob's list does not hold it
    bob = Client(standalone.url, token="tok-bob")
    with pytest.raises((NotFoundError, AuthenticationError)):
        bob.job(job.job_id)
    assert job.job_id not in {s.job_id for s in bob.jobs()}

    with pytest.raises(ClientError, match="cannot reach") as unreachable:
        Client("http://127.0.0.1:9", timeout=2).models()
    assert unreachable.value.status is None
    assert unreachable.value.__cause__ is None and unreachable.value.__suppress_context__


def test_busy_and_html_errors_are_mapped():
    """503 with Retry-After -> ServiceBusyError; an HTML 403 page (Jupyter) -> its title, not HTML."""
    def response(status: int, body: str, kind: str, **headers: str) -> requests.Response:
        made = requests.Response()
        made.status_code, made._content, made.url = status, body.encode(), "http://h/async"
        made.headers.update({"Content-Type": kind, **headers})
        return made

    with pytest.raises(ServiceBusyError) as busy:
        _raise_for_status(response(503, "the queue is full; try again later\n", "text/plain", **{"Retry-After": "7"}))
    assert busy.value.retry_after == 7.0 and busy.value.message == "the queue is full; try again later"
    with pytest.raises(AuthenticationError) as forbidden:
        _raise_for_status(response(403, "<html><title>403: Forbidden</title><body>...</body></html>", "text/html"))
    assert forbidden.value.message == "403: Forbidden"


# -- configuration -------------------------------------------------------------------------------
def test_config_precedence(monkeypatch, tmp_path):
    """Arguments beat environment variables, which beat the config file; per key."""
    config = tmp_path / "xdg" / "cianna-otf" / "client.toml"
    with pytest.raises(ConfigurationError, match="no service URL"):
        Client()

    config.parent.mkdir(parents=True)
    config.write_text('url = "http://file:1/"\ntoken = "file-token"\n')
    from_file = Client()
    assert from_file.url == "http://file:1" and from_file.token == "file-token"
    assert from_file.session.headers["Authorization"] == "Bearer file-token"

    monkeypatch.setenv("CIANNA_OTF_URL", "http://env:2")
    partly = Client()
    assert partly.url == "http://env:2" and partly.token == "file-token"
    monkeypatch.setenv("CIANNA_OTF_TOKEN", "env-token")
    assert Client().token == "env-token"

    explicit = Client("http://arg:3/user/alice/cianna-otf/", token="arg-token")
    assert explicit.url == "http://arg:3/user/alice/cianna-otf" and explicit.token == "arg-token"
    assert explicit.session.headers["Authorization"] == "token arg-token"  # Jupyter's scheme there
    assert Client("http://arg:3", auth_scheme="token").session.headers["Authorization"] == "token env-token"

    session = requests.Session()
    session.headers["X-Test"] = "kept"
    assert Client("http://arg:3", session=session).session is session

    config.write_text("url = [unclosed")
    with pytest.raises(ConfigurationError, match="client.toml"):
        Client(token="t")


def test_config_file_drives_a_real_server(standalone, sky_fits, tmp_path):
    config = tmp_path / "xdg" / "cianna-otf" / "client.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{standalone.url}"\ntoken = "tok-alice"\n')
    assert Client().info()["user"] == "alice"


# -- inside Jupyter -------------------------------------------------------------------------------
@pytest.fixture
def jp_server_config(tmp_path):
    return {
        "ServerApp": {"jpserver_extensions": {"cianna_otf_jupyter": True}},
        "CiannaOTF": {"data_dir": str(tmp_path / "otf"), "max_wait_seconds": 20.0, "device": "cpu"},
    }


@pytest.fixture
def jp_base_url():
    return "/user/alice/"


async def test_jupyter_extension(jp_serverapp, http_server, jp_http_port, jp_base_url, sky_fits):
    """The same client inside Jupyter: ``token`` scheme chosen from the URL, Bearer also accepted."""
    await jp_serverapp.extension_manager.start_all_extensions()
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}cianna-otf"
    token = jp_serverapp.identity_provider.token

    def notebook():
        client = Client(url, token=token)
        assert client.auth_scheme == "token"
        job = client.submit(sky_fits, model="classic", run_id="nb")
        assert job.url.startswith(url + "/async/")
        seen: list[tuple[int, int]] = []
        job.wait(timeout=WAIT, progress=lambda done, total: seen.append((done, total)))
        table = job.table()
        bearer = Client(url, token=token, auth_scheme="Bearer")
        listed = {s.job_id for s in bearer.jobs(phase="COMPLETED")}
        with pytest.raises(AuthenticationError) as refused:
            Client(url, token="wrong").jobs()
        failed = client.submit(b"not FITS\n" * 100)
        with pytest.raises(JobFailedError, match="FITS"):
            failed.wait(timeout=WAIT)
        job.delete()
        with pytest.raises(NotFoundError):
            client.job(job.job_id)
        return job, table, seen, listed, refused.value

    job, table, seen, listed, refused = await asyncio.to_thread(notebook)
    assert len(table) > 0 and {"ra", "dec"} <= set(table.colnames)
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert job.job_id in listed
    assert refused.status == 403


def test_submit_reports_upload_progress(client, sky_fits, monkeypatch):
    """upload_progress streams the multipart body: (sent, total) climbs to the file size, the job runs."""
    import io
    import os

    size = os.path.getsize(sky_fits)
    seen: list[tuple[int, int]] = []
    job = client.submit(sky_fits, model="classic", run_id="streamed",
                        upload_progress=lambda sent, total: seen.append((sent, total)))
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert len(seen) > 2 and all(total == size for _, total in seen)
    assert [sent for sent, _ in seen] == sorted(sent for sent, _ in seen)
    assert job.parameters["MODEL"] == "classic" and job.run_id == "streamed"
    assert job.parameters["IMAGE"].endswith(f"/async/{job.job_id}/parameters/IMAGE")
    assert job.wait(timeout=WAIT).phase == "COMPLETED"
    reference = client.submit(sky_fits, model="classic").wait(timeout=WAIT)
    assert len(job.table()) == len(reference.table()) > 0  # the server received the same image

    # an open file and an in-memory file take the same path
    with open(sky_fits, "rb") as handle:
        seen.clear()
        job = client.submit(handle, upload_progress=lambda sent, total: seen.append((sent, total)))
        assert seen[-1] == (size, size)
    seen.clear()
    other = client.submit(io.BytesIO(b"SIMPLE"), run=False,
                          upload_progress=lambda sent, total: seen.append((sent, total)))
    assert seen[-1] == (6, 6) and other.phase == "PENDING"
    assert job.wait(timeout=WAIT).phase == "COMPLETED"
