"""UWS 1.1 blocking WAIT on the job resource, with and without PHASE=."""

from __future__ import annotations

import threading
import time

import pytest

from uws_helpers import ImageServer, create, image_job, parse, text, wait_for

PENDING_JOB = {"IMAGE": "http://example.org/x.fits"}


def timed_get(session, url, **params):
    started = time.monotonic()
    response = session.get(url, params=params)
    return response, time.monotonic() - started


def later(delay: float, function, *args, **kwargs) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), function(*args, **kwargs)), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def image_server(sky_fits):
    server = ImageServer(sky_fits.read_bytes())
    yield server
    server.close()


def test_wait_returns_at_once_for_a_final_phase(standalone, sky_fits):
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session)
    assert text(wait_for(session, url), "phase") == "COMPLETED"
    for params in ({"WAIT": "20"}, {"WAIT": "-1"}, {"WAIT": "20", "PHASE": "COMPLETED"},
                   {"WAIT": "20", "PHASE": "EXECUTING"}):
        response, elapsed = timed_get(session, url, **params)
        assert response.status_code == 200
        assert text(parse(response.content), "phase") == "COMPLETED"
        assert elapsed < 1.0, (params, elapsed)


def test_wait_returns_at_once_when_phase_does_not_match(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    for other in ("QUEUED", "EXECUTING", "COMPLETED"):
        response, elapsed = timed_get(session, url, WAIT="20", PHASE=other)
        assert response.status_code == 200
        assert text(parse(response.content), "phase") == "PENDING"
        assert elapsed < 1.0, (other, elapsed)


def test_wait_times_out_with_the_unchanged_job(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    for params in ({"WAIT": "1"}, {"WAIT": "1", "PHASE": "PENDING"}):
        response, elapsed = timed_get(session, url, **params)
        assert response.status_code == 200
        assert text(parse(response.content), "phase") == "PENDING"
        assert 0.9 <= elapsed < 3.0, (params, elapsed)
    response, elapsed = timed_get(session, url, WAIT="0")
    assert response.status_code == 200 and elapsed < 1.0


@pytest.mark.parametrize("with_phase", [False, True])
def test_wait_wakes_promptly_on_a_phase_change(standalone, with_phase):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    params = {"WAIT": "20", **({"PHASE": "PENDING"} if with_phase else {})}
    later(0.5, standalone.session("alice").post, f"{url}/phase", data={"PHASE": "ABORT"})
    response, elapsed = timed_get(session, url, **params)
    assert response.status_code == 200
    assert text(parse(response.content), "phase") == "ABORTED"
    assert 0.4 <= elapsed < 3.0, elapsed  # woken by the change, far before the 20 s timeout


def test_wait_follows_a_running_job(standalone, image_server):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": f"{image_server.url}/slow.fits", "PHASE": "RUN"})
    root = wait_for(session, url, {"EXECUTING"}, timeout=10)
    assert text(root, "phase") == "EXECUTING"
    later(0.5, standalone.session("alice").post, f"{url}/phase", data={"PHASE": "ABORT"})
    response, elapsed = timed_get(session, url, WAIT="20", PHASE="EXECUTING")
    assert text(parse(response.content), "phase") == "ABORTED"
    assert elapsed < 3.0, elapsed


def test_wait_wakes_when_the_job_is_deleted(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    later(0.5, standalone.session("alice").delete, url)
    response, elapsed = timed_get(session, url, WAIT="20")
    assert response.status_code == 404
    assert elapsed < 3.0


@pytest.fixture
def short_wait(service_settings):
    service_settings.max_wait_seconds = 1.0
    return service_settings


def test_wait_is_capped_by_max_wait_seconds(short_wait, standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    for wait in ("-1", "600", "1e300", "inf"):
        response, elapsed = timed_get(session, url, WAIT=wait)
        assert response.status_code == 200
        assert text(parse(response.content), "phase") == "PENDING"
        assert 0.9 <= elapsed < 3.0, (wait, elapsed)


@pytest.mark.parametrize("params", [{"WAIT": "soon"}, {"WAIT": "nan"}, {"WAIT": ""}, {"WAIT": "5", "PHASE": "DONE"}])
def test_bad_wait_parameters_are_400(standalone, params):
    session = standalone.session("alice")
    url = create(standalone, session, data=PENDING_JOB)
    response, elapsed = timed_get(session, url, **params)
    assert response.status_code == 400, (params, response.text)
    assert elapsed < 1.0
