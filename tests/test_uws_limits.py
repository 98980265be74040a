"""Limits and the end of jobs: upload size (413), queue limits (503 + Retry-After), the execution
duration and destruction time enforced by the reaper, and ABORT in PENDING, QUEUED and EXECUTING.

A "slow job" downloads a FITS file from a local server that trickles it (64 KiB every 50 ms):
it stays EXECUTING until stopped, and stops within a chunk when aborted."""

from __future__ import annotations

import http.client
import time
from datetime import timedelta

import pytest

from cianna_otf_server.uws import format_time, utc_now
from uws_helpers import NS, ImageServer, create, image_job, is_nil, job_id, phase, text, wait_for


@pytest.fixture
def image_server(sky_fits):
    server = ImageServer(sky_fits.read_bytes())
    yield server
    server.close()


@pytest.fixture(params=["batching", "pool"])
def any_executor(request, service_settings):
    """Run a test with the batching scheduler and with the one-job-per-thread pool."""
    service_settings.executor = request.param
    service_settings.workers = 1
    return request.param


def slow_job(standalone, image_server, session=None, expect_executing: bool = True, **params) -> str:
    """A job that stays EXECUTING (it downloads a slowly served image); waits until it executes."""
    session = session or standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": f"{image_server.url}/slow.fits", "PHASE": "RUN", **params})
    if expect_executing:
        assert text(wait_for(session, url, {"EXECUTING", "ERROR", "COMPLETED", "ABORTED"}, timeout=10), "phase") \
            == "EXECUTING"
    return url


def job_files(standalone, url):
    directory = standalone.context.files.job_dir(job_id(url))
    return directory, sorted(p.name for p in (directory / "results").glob("*")) if directory.exists() else None


# -- upload size ----------------------------------------------------------------------------------
@pytest.fixture
def small_uploads(service_settings):
    service_settings.max_upload_bytes = 100_000
    return service_settings


def test_upload_over_the_limit_is_413(small_uploads, standalone, sky_fits):
    session = standalone.session("alice")
    body = sky_fits.read_bytes()
    assert len(body) > 100_000
    response = session.post(f"{standalone.url}/async", files={"IMAGE": ("sky.fits", body)}, allow_redirects=False)
    assert response.status_code == 413
    assert "100000" in response.text and "Traceback" not in response.text
    # far over the limit (1 GB declared): refused from the headers alone, before any body is sent
    # (a client that sent the body anyway could see the connection closed under it: plain HTTP/1.1)
    connection = http.client.HTTPConnection("127.0.0.1", standalone.port, timeout=10)
    connection.putrequest("POST", f"{standalone.settings.root_path}async")
    connection.putheader("Authorization", "Bearer tok-alice")
    connection.putheader("Content-Type", "multipart/form-data; boundary=XYZ")
    connection.putheader("Content-Length", str(10**9))
    connection.endheaders()
    refused = connection.getresponse()
    assert refused.status == 413 and b"limited to 100000 bytes" in refused.read()
    connection.close()
    # the same limit applies to an upload that replaces a PENDING job's image
    url = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    response = session.post(f"{url}/parameters", files={"IMAGE": ("sky.fits", body)}, allow_redirects=False)
    assert response.status_code == 413
    assert session.get(f"{url}/parameters/IMAGE").text == "http://example.org/x.fits"
    # under the limit is fine
    small = create(standalone, session, files={"IMAGE": ("small.fits", b"SIMPLE" * 100)})
    assert session.get(f"{small}/parameters/IMAGE").content == b"SIMPLE" * 100
    assert len(list((standalone.context.files.root / "jobs").iterdir())) == 2  # nothing left by the refusals


# -- storage per user ---------------------------------------------------------------------------
@pytest.fixture
def small_storage(service_settings):
    service_settings.max_storage_per_owner_mb = 1
    return service_settings


def test_a_user_over_their_storage_share_gets_403_until_they_delete_jobs(small_storage, standalone):
    alice, bob = standalone.session("alice"), standalone.session("bob")
    blob = b"SIMPLE" * 100_000  # 600 kB
    first = create(standalone, alice, files={"IMAGE": ("a.fits", blob)})
    refused = alice.post(f"{standalone.url}/async", files={"IMAGE": ("b.fits", blob)}, allow_redirects=False)
    assert refused.status_code == 403
    assert "MB of the 1.0 MB each user may keep" in refused.text and "delete finished jobs" in refused.text
    assert "Traceback" not in refused.text
    assert len(list((standalone.context.files.root / "jobs").iterdir())) == 1  # nothing left by the refusal
    # nor can a PENDING job's image be replaced by a larger one over the share
    replaced = alice.post(f"{first}/parameters", files={"IMAGE": ("c.fits", blob)}, allow_redirects=False)
    assert replaced.status_code == 403 and "each user may keep" in replaced.text
    assert alice.get(f"{first}/parameters/IMAGE").content == blob  # the image it had is kept
    create(standalone, bob, files={"IMAGE": ("b.fits", blob)})  # another user's share is their own
    assert alice.delete(first, allow_redirects=False).status_code in (200, 303)
    create(standalone, alice, files={"IMAGE": ("b.fits", blob)})  # room again


# -- queue limits ---------------------------------------------------------------------------------
@pytest.fixture
def small_queue(service_settings):
    service_settings.max_queued_per_owner = 1
    service_settings.max_queued_total = 2
    return service_settings


def test_queue_limits_are_429_for_a_user_and_503_for_the_service(small_queue, standalone, image_server):
    """A user at their own limit gets 429 (their quota); a full service 503 (for everyone); both with Retry-After."""
    alice, bob = standalone.session("alice"), standalone.session("bob")
    running = slow_job(standalone, image_server, alice)
    response = alice.post(f"{standalone.url}/async", data={"IMAGE": "http://example.org/x.fits", "PHASE": "RUN"},
                          allow_redirects=False)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Traceback" not in response.text and "queued" in response.text
    # a PENDING job is fine, but running it is refused the same way
    pending = create(standalone, alice, data={"IMAGE": "http://example.org/x.fits"})
    response = alice.post(f"{pending}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
    assert response.status_code == 429 and "Retry-After" in response.headers
    assert phase(alice, pending) == "PENDING"
    # the limit is per owner: bob may run one ...
    bobs = create(standalone, bob, data={"IMAGE": f"{image_server.url}/slow.fits", "PHASE": "RUN"})
    assert phase(bob, bobs) in ("QUEUED", "EXECUTING")
    # ... and then the whole service is full, for anyone
    response = standalone.session("bob").post(f"{standalone.url}/async",
                                              data={"IMAGE": "http://example.org/x.fits", "PHASE": "RUN"},
                                              allow_redirects=False)
    assert response.status_code == 503 and "Retry-After" in response.headers and "full" in response.text
    # once alice's running job is gone, her pending one can run
    alice.post(f"{running}/phase", data={"PHASE": "ABORT"})
    assert alice.post(f"{pending}/phase", data={"PHASE": "RUN"}, allow_redirects=False).status_code == 303
    assert phase(alice, pending) != "PENDING"
    bob.post(f"{bobs}/phase", data={"PHASE": "ABORT"})


# -- execution duration and destruction -------------------------------------------------------------
@pytest.fixture
def slow_reaper(service_settings):
    """The destruction sweep only every 30 s: execution durations must not wait for it."""
    service_settings.reaper_interval_seconds = 30.0
    return service_settings


def test_execution_duration_holds_to_the_second(slow_reaper, standalone, image_server):
    session = standalone.session("alice")
    started = time.monotonic()
    url = slow_job(standalone, image_server, session, expect_executing=False, EXECUTIONDURATION="1")
    root = wait_for(session, url, timeout=20)
    elapsed = time.monotonic() - started
    assert text(root, "phase") == "ERROR" and "execution duration of 1 s" in session.get(f"{url}/error").text
    assert 1.0 <= elapsed < 4.0, elapsed


def test_execution_duration_is_enforced(any_executor, standalone, image_server):
    session = standalone.session("alice")
    started = time.monotonic()
    # on a loaded machine the 1 s limit may already have stopped the job when first looked at
    url = slow_job(standalone, image_server, session, expect_executing=False, EXECUTIONDURATION="1")
    assert session.get(f"{url}/executionduration").text == "1"
    root = wait_for(session, url, timeout=10)
    elapsed = time.monotonic() - started
    assert text(root, "phase") == "ERROR"
    assert 1.0 <= elapsed < 5.0, elapsed
    message = root.find("uws:errorSummary/uws:message", NS).text
    assert "execution duration of 1 s" in message
    assert root.findall("uws:results/uws:result", NS) == []
    error = session.get(f"{url}/error")
    assert error.status_code == 200 and b"execution duration" in error.content
    assert image_server.slow_disconnected.wait(5)  # the worker really stopped downloading
    time.sleep(0.3)
    directory, results = job_files(standalone, url)
    assert results == [] and not (directory / "work").exists()


def test_destruction_is_enforced_by_the_reaper(standalone, sky_fits):
    session = standalone.session("alice")
    soon = format_time(utc_now() + timedelta(seconds=1.5))
    url = image_job(standalone, sky_fits, session, DESTRUCTION=soon)
    assert session.get(f"{url}/destruction").text == soon
    assert text(wait_for(session, url), "phase") == "COMPLETED"
    directory = standalone.context.files.job_dir(job_id(url))
    assert (directory / "results").is_dir()
    deadline = time.monotonic() + 5
    while session.get(url).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session.get(url).status_code == 404
    assert session.get(f"{url}/results/result").status_code == 404
    assert job_id(url) not in session.get(f"{standalone.url}/async").text
    assert not directory.exists()


# -- abort ------------------------------------------------------------------------------------------
def test_abort_pending(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    response = session.post(f"{url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert response.status_code == 303
    root = wait_for(session, url, timeout=1)
    assert text(root, "phase") == "ABORTED" and is_nil(root, "startTime")
    assert session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False).status_code == 403


def test_abort_queued_never_runs(any_executor, standalone, image_server):
    session = standalone.session("alice")
    # slow jobs until the executor is saturated and one stays QUEUED (the pool runs one job per
    # worker thread, the batching scheduler prepares a few at once)
    slow = []
    for _ in range(8):
        url = create(standalone, session, data={"IMAGE": f"{image_server.url}/slow.fits", "PHASE": "RUN"})
        slow.append(url)
        time.sleep(0.3)
        if phase(session, url) == "QUEUED":
            break
    queued = slow.pop()
    assert phase(session, queued) == "QUEUED"
    assert session.post(f"{queued}/phase", data={"PHASE": "ABORT"}, allow_redirects=False).status_code == 303
    assert phase(session, queued) == "ABORTED"
    for url in slow:
        session.post(f"{url}/phase", data={"PHASE": "ABORT"})
    time.sleep(0.5)  # the executor is free again and would have picked the queued job up by now
    root = wait_for(session, queued, timeout=1)
    assert text(root, "phase") == "ABORTED" and is_nil(root, "startTime")
    assert root.findall("uws:results/uws:result", NS) == []
    directory, results = job_files(standalone, queued)
    assert results == [] and not any((directory / "work").glob("*"))


def test_abort_executing_stops_the_job_and_leaves_nothing(any_executor, standalone, image_server):
    session = standalone.session("alice")
    url = slow_job(standalone, image_server, session)
    started = time.monotonic()
    response = session.post(f"{url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False)
    assert response.status_code == 303
    assert phase(session, url) == "ABORTED"
    assert image_server.slow_disconnected.wait(5)  # the worker stopped reading the image
    assert time.monotonic() - started < 3
    time.sleep(0.3)
    root = wait_for(session, url, timeout=1)
    assert text(root, "phase") == "ABORTED"
    assert root.findall("uws:results/uws:result", NS) == []
    assert session.get(f"{url}/results/result").status_code == 404
    directory, results = job_files(standalone, url)
    assert results == [] and not (directory / "work").exists()
    assert session.post(f"{url}/phase", data={"PHASE": "ABORT"}, allow_redirects=False).status_code == 403


def test_delete_executing_job_removes_everything(any_executor, standalone, image_server):
    session = standalone.session("alice")
    url = slow_job(standalone, image_server, session)
    directory = standalone.context.files.job_dir(job_id(url))
    assert session.delete(url, allow_redirects=False).status_code == 303
    assert image_server.slow_disconnected.wait(5)
    time.sleep(0.3)
    assert session.get(url).status_code == 404
    assert not directory.exists()
