"""The UWS 1.1 job list: owner isolation, PHASE (repeatable, union), AFTER, LAST (newest first),
combinations (AND), ARCHIVED only when asked for, and 400 for bad filter values."""

from __future__ import annotations

import time

import pytest

from cianna_otf_server.uws import Phase
from uws_helpers import XLINK, assert_valid, create, image_job, job_id, text, wait_for


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    from lxml import etree

    return [ref.get("id") for ref in etree.fromstring(response.content)]


@pytest.fixture
def jobs(standalone, sky_fits):
    """alice: a COMPLETED, an ABORTED, two PENDING and an ARCHIVED job, created in that order
    a few milliseconds apart; bob: one PENDING job. Returns (by name, creation times)."""
    alice = standalone.session("alice")
    made = {}
    made["completed"] = image_job(standalone, sky_fits, alice)
    assert text(wait_for(alice, made["completed"]), "phase") == "COMPLETED"
    for name in ("aborted", "pending1", "pending2", "archived"):
        time.sleep(0.01)
        made[name] = create(standalone, alice, data={"IMAGE": "http://example.org/x.fits"})
    alice.post(f"{made['aborted']}/phase", data={"PHASE": "ABORT"})
    standalone.context.store.update(job_id(made["archived"]), phase=Phase.ARCHIVED)
    made["bob"] = create(standalone, standalone.session("bob"), data={"IMAGE": "http://example.org/y.fits"})
    by_name = {name: job_id(url) for name, url in made.items()}
    times = {name: standalone.context.store.get(jid).creation_time for name, jid in by_name.items()}
    return by_name, times


def test_list_is_valid_and_per_owner_without_archived(standalone, jobs, uws_schema):
    by_name, _ = jobs
    response = standalone.session("alice").get(f"{standalone.url}/async")
    root = assert_valid(uws_schema, response.content)
    assert root.get("version") == "1.1"
    listed = [ref.get("id") for ref in root]
    assert listed == [by_name[n] for n in ("completed", "aborted", "pending1", "pending2")]  # oldest first
    for ref in root:
        assert ref.get(f"{{{XLINK}}}href") == f"{standalone.settings.root_path}async/{ref.get('id')}"
        assert text(ref, "ownerId") == "alice"
    assert ids(standalone.session("bob").get(f"{standalone.url}/async")) == [by_name["bob"]]


def test_phase_filter_is_a_union_and_archived_only_when_asked(standalone, jobs):
    by_name, _ = jobs
    alice = standalone.session("alice")
    url = f"{standalone.url}/async"
    assert ids(alice.get(url, params={"PHASE": "PENDING"})) == [by_name["pending1"], by_name["pending2"]]
    assert ids(alice.get(url, params=[("PHASE", "COMPLETED"), ("PHASE", "ABORTED")])) == [
        by_name["completed"], by_name["aborted"]]
    assert ids(alice.get(url, params={"PHASE": "ARCHIVED"})) == [by_name["archived"]]
    assert ids(alice.get(url, params=[("PHASE", "ARCHIVED"), ("PHASE", "ABORTED")])) == [
        by_name["aborted"], by_name["archived"]]
    assert ids(alice.get(url, params={"PHASE": "EXECUTING"})) == []
    assert ids(alice.get(url, params={"phase": "pending"})) == [by_name["pending1"], by_name["pending2"]]


def test_after_last_and_their_combination(standalone, jobs):
    by_name, times = jobs
    alice = standalone.session("alice")
    url = f"{standalone.url}/async"
    from cianna_otf_server.uws import format_time

    after = format_time(times["aborted"])  # strictly after the ABORTED job's creation
    assert ids(alice.get(url, params={"AFTER": after})) == [by_name["pending1"], by_name["pending2"]]
    with_offset = times["aborted"].astimezone().isoformat()  # the same instant in local time with an offset
    assert ids(alice.get(url, params={"AFTER": with_offset})) == [by_name["pending1"], by_name["pending2"]]
    assert ids(alice.get(url, params={"AFTER": "2000-01-01T00:00:00Z"})) == [
        by_name[n] for n in ("completed", "aborted", "pending1", "pending2")]
    assert ids(alice.get(url, params={"AFTER": "2999-01-01T00:00:00Z"})) == []

    assert ids(alice.get(url, params={"LAST": "2"})) == [by_name["pending2"], by_name["pending1"]]  # newest first
    assert ids(alice.get(url, params={"LAST": "100"})) == [
        by_name[n] for n in ("pending2", "pending1", "aborted", "completed")]
    assert len(ids(alice.get(url, params={"LAST": str(10**30)}))) == 4  # huge but valid

    # combined with AND
    assert ids(alice.get(url, params={"PHASE": "PENDING", "LAST": "1"})) == [by_name["pending2"]]
    assert ids(alice.get(url, params={"PHASE": "COMPLETED", "AFTER": after})) == []
    assert ids(alice.get(url, params=[("PHASE", "COMPLETED"), ("PHASE", "PENDING"), ("AFTER", after),
                                      ("LAST", "1")])) == [by_name["pending2"]]
    assert ids(alice.get(url, params={"PHASE": "ARCHIVED", "AFTER": after})) == [by_name["archived"]]


@pytest.mark.parametrize("params", [
    {"PHASE": "FINISHED"}, {"PHASE": ""}, {"AFTER": "yesterday"}, {"AFTER": "2026-02-30T00:00:00Z"},
    {"AFTER": "9999-12-31T23:59:59-05:00"}, {"LAST": "0"}, {"LAST": "-3"}, {"LAST": "two"}, {"LAST": "1.5"},
])
def test_bad_filters_are_400(standalone, params):
    response = standalone.session("alice").get(f"{standalone.url}/async", params=params)
    assert response.status_code == 400, (params, response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "Traceback" not in response.text
    assert list(params)[0] in response.text  # names the offending filter
