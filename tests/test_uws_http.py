"""UWS 1.1 over HTTP against the real standalone server: every resource of the job tree, the
verbs the standard allows with their status codes, XML valid against UWS.xsd, times, hrefs,
ownership and authentication."""

from __future__ import annotations

import pytest
import requests

from uws_helpers import (
    NS,
    TIME,
    VOTABLE_NS,
    XLINK,
    absolute,
    assert_valid,
    create,
    image_job,
    is_nil,
    job_id,
    parse,
    phase,
    text,
    wait_for,
)

RESOURCES = ["", "/phase", "/executionduration", "/destruction", "/error", "/quote", "/owner", "/results",
             "/results/result", "/parameters", "/parameters/MODEL"]


@pytest.fixture
def completed(standalone, sky_fits):
    """A COMPLETED classic job of alice's on the 256 px image."""
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session, RUNID="run-42")
    root = wait_for(session, url)
    assert text(root, "phase") == "COMPLETED", parse_error(session, url)
    return url


def parse_error(session, url):
    return session.get(url).text


def test_create_pending_job_and_read_every_resource(standalone, uws_schema):
    session = standalone.session("alice")
    response = session.post(f"{standalone.url}/async", data={"MODEL": "classic", "IMAGE": "http://example.org/x.fits",
                                                             "RUNID": "my run"}, allow_redirects=False)
    assert response.status_code == 303
    url = absolute(standalone, response.headers["Location"])

    response = session.get(url)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    root = assert_valid(uws_schema, response.content)
    assert root.tag == "{%s}job" % NS["uws"] and root.get("version") == "1.1"
    assert text(root, "jobId") == job_id(url)
    assert text(root, "runId") == "my run"
    assert text(root, "ownerId") == "alice"
    assert text(root, "phase") == "PENDING"
    for name in ("quote", "startTime", "endTime"):
        assert is_nil(root, name), name  # unknown required values: xsi:nil, never empty
    for name in ("creationTime", "destruction"):
        assert TIME.match(text(root, name)), text(root, name)
    assert "+00:00" not in response.text
    assert int(text(root, "executionDuration")) == standalone.settings.default_execution_duration
    # element order fixed by UWS.xsd (validation checks it too)
    names = [etree_name(child) for child in root]
    assert names[:5] == ["jobId", "runId", "ownerId", "phase", "quote"]

    assert session.get(f"{url}/phase").text == "PENDING"
    assert session.get(f"{url}/owner").text == "alice"
    assert session.get(f"{url}/executionduration").text == text(root, "executionDuration")
    destruction = session.get(f"{url}/destruction").text
    assert TIME.match(destruction) and destruction == text(root, "destruction")
    quote = session.get(f"{url}/quote")
    assert quote.status_code == 200 and "+00:00" not in quote.text
    assert session.get(f"{url}/error").status_code == 404  # no error yet
    results = session.get(f"{url}/results")
    assert results.status_code == 200
    assert len(assert_valid(uws_schema, results.content)) == 0
    params = session.get(f"{url}/parameters")
    proot = assert_valid(uws_schema, params.content)
    values = {p.get("id"): p.text for p in proot}
    assert values["MODEL"] == "classic" and values["IMAGE"] == "http://example.org/x.fits"
    assert "RUNID" not in values  # a job field, not a parameter
    assert session.get(f"{url}/parameters/model").text == "classic"  # names are case-insensitive
    assert session.get(f"{url}/parameters/NOPE").status_code == 404
    assert session.get(f"{url}/results/result").status_code == 404


def etree_name(element) -> str:
    return element.tag.split("}", 1)[1]


def test_completed_job_results_and_xml(standalone, completed, uws_schema):
    session = standalone.session("alice")
    response = session.get(completed)
    root = assert_valid(uws_schema, response.content)
    assert "+00:00" not in response.text
    assert text(root, "runId") == "run-42"
    for name in ("creationTime", "startTime", "endTime", "destruction"):
        assert TIME.match(text(root, name)), name
    assert text(root, "startTime") <= text(root, "endTime")
    assert root.find("uws:errorSummary", NS) is None
    results = root.findall("uws:results/uws:result", NS)
    ids = {r.get("id") for r in results}
    assert {"result", "regions", "provenance"} <= ids
    root_path = standalone.settings.root_path
    for result in results:
        href = result.get(f"{{{XLINK}}}href")
        assert href == f"{root_path}async/{job_id(completed)}/results/{result.get('id')}"
        body = session.get(absolute(standalone, href))
        assert body.status_code == 200
        assert int(result.get("size")) == len(body.content)
        assert body.headers["Content-Type"].startswith(result.get("mime-type"))
    # the results resource alone
    rroot = assert_valid(uws_schema, session.get(f"{completed}/results").content)
    assert {r.get("id") for r in rroot} == ids
    catalogue = session.get(f"{completed}/results/result")
    assert b"VOTABLE" in catalogue.content[:500]
    assert session.get(f"{completed}/results/nope").status_code == 404
    # the job list shows it with a valid jobref
    jobs = assert_valid(uws_schema, session.get(f"{standalone.url}/async").content)
    assert jobs.get("version") == "1.1"
    (ref,) = [r for r in jobs if r.get("id") == job_id(completed)]
    assert ref.get(f"{{{XLINK}}}href") == f"{root_path}async/{job_id(completed)}"
    assert text(ref, "phase") == "COMPLETED" and text(ref, "runId") == "run-42"
    assert text(ref, "ownerId") == "alice" and TIME.match(text(ref, "creationTime"))


def test_actions_not_allowed_in_final_phase_are_403_with_text(standalone, completed):
    session = standalone.session("alice")
    for resource, data in [("/phase", {"PHASE": "RUN"}), ("/phase", {"PHASE": "ABORT"}),
                           ("/executionduration", {"EXECUTIONDURATION": "10"}),
                           ("/parameters", {"THRESHOLD": "3"}), ("", {"THRESHOLD": "3"})]:
        response = session.post(f"{completed}{resource}", data=data, allow_redirects=False)
        assert response.status_code == 403, (resource, data, response.status_code)
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "COMPLETED" in response.text  # says why
    assert phase(session, completed) == "COMPLETED"


def test_model_cards_and_unknown_model(standalone):
    session = standalone.session("alice")
    assert session.get(f"{standalone.url}/models/classic").json()["name"] == "classic"
    response = session.get(f"{standalone.url}/models/no-such-model")
    assert response.status_code == 404 and "no-such-model" in response.text
    listed = {card["name"]: card for card in session.get(f"{standalone.url}/models").json()["models"]}
    assert [name for name, card in listed.items() if card["default"]] == ["yolo-demo"], "one default, flagged"
    assert listed["yolo-demo"]["family"] == "yolo-cianna"


def test_phase_run_at_creation_is_queued_before_the_redirect(standalone, sky_fits):
    session = standalone.session("alice")
    with open(sky_fits, "rb") as handle:
        response = session.post(f"{standalone.url}/async", data={"PHASE": "RUN"},
                                files={"IMAGE": ("sky.fits", handle)}, allow_redirects=False)
    assert response.status_code == 303
    url = absolute(standalone, response.headers["Location"])
    # read straight from the store, with no request in between
    job = standalone.context.store.get(job_id(url))
    assert job.phase.value in ("QUEUED", "EXECUTING", "COMPLETED")
    assert text(wait_for(session, url), "phase") == "COMPLETED"


def test_post_phase_run_and_redirects(standalone, sky_fits):
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session, run=False)
    assert phase(session, url) == "PENDING"
    response = session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
    assert response.status_code == 303
    assert absolute(standalone, response.headers["Location"]) == url
    assert phase(session, url) in ("QUEUED", "EXECUTING", "COMPLETED")
    assert session.post(f"{url}/phase", data={"PHASE": "SUSPEND"}, allow_redirects=False).status_code == 400
    assert session.post(f"{url}/phase", data={}, allow_redirects=False).status_code == 400
    assert text(wait_for(session, url), "phase") == "COMPLETED"


def test_executionduration_and_destruction_updates(standalone):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    response = session.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "120"}, allow_redirects=False)
    assert response.status_code == 303 and absolute(standalone, response.headers["Location"]) == url
    assert session.get(f"{url}/executionduration").text == "120"
    # over the maximum: the server shortens it (UWS allows that)
    session.post(f"{url}/executionduration", data={"EXECUTIONDURATION": "1e12"})
    assert session.get(f"{url}/executionduration").text == str(standalone.settings.max_execution_duration)
    for bad in ("soon", "-5", "nan", ""):
        response = session.post(f"{url}/executionduration", data={"EXECUTIONDURATION": bad}, allow_redirects=False)
        assert response.status_code == 400, bad

    response = session.post(f"{url}/destruction", data={"DESTRUCTION": "2099-01-01T00:00:00Z"}, allow_redirects=False)
    assert response.status_code == 303 and absolute(standalone, response.headers["Location"]) == url
    destruction = session.get(f"{url}/destruction").text
    assert TIME.match(destruction)  # capped at the maximum lifetime, so earlier than asked
    assert destruction < "2099-01-01T00:00:00.000Z"
    soon = "2030-01-01T00:00:00+01:00"
    session.post(f"{url}/destruction", data={"DESTRUCTION": soon})
    value = session.get(f"{url}/destruction").text
    assert value.endswith("Z") and "+" not in value
    for bad in ("tomorrow", "2026-13-45T00:00:00Z", "9999-12-31T23:59:59-05:00"):
        response = session.post(f"{url}/destruction", data={"DESTRUCTION": bad}, allow_redirects=False)
        assert response.status_code == 400, bad


def test_runid_round_trip_and_parameter_updates_while_pending(standalone, uws_schema):
    session = standalone.session("alice")
    url = create(standalone, session, data={"IMAGE": "http://example.org/a.fits", "RUNID": "first"})
    response = session.post(f"{url}/parameters", data={"THRESHOLD": "4.5", "image": "http://example.org/b.fits"},
                            allow_redirects=False)
    assert response.status_code == 303 and absolute(standalone, response.headers["Location"]) == url
    params = {p.get("id"): p.text for p in assert_valid(uws_schema, session.get(f"{url}/parameters").content)}
    assert params["THRESHOLD"] == "4.5" and params["IMAGE"] == "http://example.org/b.fits"
    # POST to the job itself also updates parameters (and RUNID) while PENDING
    response = session.post(url, data={"NMS": "0.3", "RUNID": "second"}, allow_redirects=False)
    assert response.status_code == 303
    root = assert_valid(uws_schema, session.get(url).content)
    assert text(root, "runId") == "second"
    assert {p.get("id"): p.text for p in root.find("uws:parameters", NS)}["NMS"] == "0.3"
    # bad values are refused and leave the job unchanged
    response = session.post(f"{url}/parameters", data={"THRESHOLD": "lots"}, allow_redirects=False)
    assert response.status_code == 400
    assert session.get(f"{url}/parameters/THRESHOLD").text == "4.5"
    # once not PENDING, parameters are frozen
    session.post(f"{url}/phase", data={"PHASE": "ABORT"})
    assert phase(session, url) == "ABORTED"
    response = session.post(f"{url}/parameters", data={"THRESHOLD": "3"}, allow_redirects=False)
    assert response.status_code == 403 and "ABORTED" in response.text
    assert session.get(f"{url}/parameters/THRESHOLD").text == "4.5"


def test_delete_and_action_delete_redirect_to_job_list(standalone):
    session = standalone.session("alice")
    job_list = f"{standalone.settings.root_path}async"
    first = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    response = session.delete(first, allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == job_list
    assert session.get(first).status_code == 404
    assert not standalone.context.files.job_dir(job_id(first)).exists()

    second = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    response = session.post(second, data={"ACTION": "DELETE"}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == job_list
    assert session.get(second).status_code == 404
    assert session.post(second, data={"ACTION": "DELETE"}, allow_redirects=False).status_code == 404
    assert session.delete(second, allow_redirects=False).status_code == 404
    third = create(standalone, session, data={"IMAGE": "http://example.org/x.fits"})
    assert session.post(third, data={"ACTION": "EXPLODE"}, allow_redirects=False).status_code == 400
    assert session.get(third).status_code == 200


def test_unknown_job_is_404_everywhere(standalone):
    session = standalone.session("alice")
    url = f"{standalone.url}/async/0123456789abcdef"
    for resource in RESOURCES:
        response = session.get(f"{url}{resource}")
        assert response.status_code == 404, resource
        assert response.headers["Content-Type"].startswith("text/plain")
    for resource, data in [("", {"ACTION": "DELETE"}), ("/phase", {"PHASE": "RUN"}),
                           ("/executionduration", {"EXECUTIONDURATION": "5"}),
                           ("/destruction", {"DESTRUCTION": "2030-01-01T00:00:00Z"}),
                           ("/parameters", {"THRESHOLD": "3"})]:
        assert session.post(f"{url}{resource}", data=data, allow_redirects=False).status_code == 404, resource
    assert session.delete(url, allow_redirects=False).status_code == 404
    assert session.get(f"{url}", params={"WAIT": "5"}).status_code == 404


def test_another_owners_job_is_never_visible(standalone, completed):
    bob = standalone.session("bob")
    for resource in RESOURCES:
        response = bob.get(f"{completed}{resource}")
        assert response.status_code == 404, resource
        assert "alice" not in response.text and "VOTABLE" not in response.text
    for resource, data in [("", {"ACTION": "DELETE"}), ("/phase", {"PHASE": "ABORT"}),
                           ("/executionduration", {"EXECUTIONDURATION": "5"}),
                           ("/destruction", {"DESTRUCTION": "2030-01-01T00:00:00Z"}),
                           ("/parameters", {"THRESHOLD": "3"})]:
        assert bob.post(f"{completed}{resource}", data=data, allow_redirects=False).status_code == 404
    assert bob.delete(completed, allow_redirects=False).status_code == 404
    assert job_id(completed) not in bob.get(f"{standalone.url}/async").text
    assert job_id(completed) not in bob.get(f"{standalone.url}/async", params={"PHASE": "COMPLETED"}).text
    # still there for its owner
    assert standalone.session("alice").get(completed).status_code == 200


def test_authentication_is_required(standalone, completed):
    # each session reuses its connection: a 401 is answered after the request is read, and the
    # connection stays open
    anonymous = requests.Session()
    wrong = requests.Session()
    wrong.headers.update({"Authorization": "Bearer not-a-token"})
    for session in (anonymous, wrong):
        for resource in ["/async", completed.split(standalone.url, 1)[1]]:
            response = session.get(f"{standalone.url}{resource}")
            assert response.status_code == 401
            assert "alice" not in response.text and "<" not in response.text
        response = session.post(f"{standalone.url}/async", data={"IMAGE": "http://example.org/x"},
                                allow_redirects=False)
        assert response.status_code == 401
    assert "Bearer" in anonymous.get(f"{standalone.url}/async").headers.get("WWW-Authenticate", "")
    # Jupyter-style "token" scheme works too
    jupyter = requests.Session()
    jupyter.headers.update({"Authorization": "token tok-alice", "Connection": "close"})
    assert jupyter.get(completed).status_code == 200


def test_failed_job_error_resource_is_a_votable(standalone, tmp_path, uws_schema):
    session = standalone.session("alice")
    url = create(standalone, session, data={"PHASE": "RUN"},
                 files={"IMAGE": ("broken.fits", b"SIMPLE  = nonsense" * 50, "application/fits")})
    root = wait_for(session, url)
    assert text(root, "phase") == "ERROR"
    assert_valid(uws_schema, session.get(url).content)
    summary = root.find("uws:errorSummary", NS)
    assert summary is not None and summary.get("type") == "fatal"
    message = summary.find("uws:message", NS).text
    assert "FITS" in message and "Traceback" not in message
    error = session.get(f"{url}/error")
    assert error.status_code == 200
    assert "votable" in error.headers["Content-Type"]
    votable = parse(error.content)
    info = votable.find(f".//{{{VOTABLE_NS}}}INFO[@name='QUERY_STATUS']")
    assert info is not None and info.get("value") == "ERROR"
    assert "FITS" in info.text
    assert len(root.findall("uws:results/uws:result", NS)) == 0


@pytest.fixture
def service_settings_root(service_settings):
    service_settings.root_path = "/svc/uws/"
    return service_settings


def test_hrefs_include_a_non_trivial_root_path(service_settings_root, standalone, sky_fits, uws_schema):
    assert standalone.url.endswith("/svc/uws")
    session = standalone.session("alice")
    url = image_job(standalone, sky_fits, session)
    assert url.startswith(f"{standalone.url}/async/")
    root = wait_for(session, url)
    assert text(root, "phase") == "COMPLETED"
    for result in root.findall("uws:results/uws:result", NS):
        href = result.get(f"{{{XLINK}}}href")
        assert href.startswith("/svc/uws/async/"), href
        assert session.get(absolute(standalone, href)).status_code == 200
    jobs = assert_valid(uws_schema, session.get(f"{standalone.url}/async").content)
    assert jobs[0].get(f"{{{XLINK}}}href") == f"/svc/uws/async/{job_id(url)}"
    response = session.delete(url, allow_redirects=False)
    assert response.headers["Location"] == "/svc/uws/async"


def test_an_unavailable_default_model_is_reported_at_start(service_settings, caplog):

    from cianna_otf_server.server import ServiceContext

    ServiceContext(service_settings.changed(default_model="no-such-model")).store.close()
    assert any("default model is not available" in r.getMessage() and "no-such-model" in r.getMessage()
               for r in caplog.records)
