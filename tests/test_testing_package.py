"""The shipped test doubles work as the README shows, against a real server."""

from __future__ import annotations

from cianna_otf_server.server import ServiceConfig
from cianna_otf_server.testing import (
    HoldingExecutor,
    ServiceThread,
    assert_uws_valid,
    job_phase,
    uws_text,
    wait_for_phase,
)


def _create(service: ServiceThread, session, sky_fits, run_id: str) -> str:
    with open(sky_fits, "rb") as handle:
        response = session.post(f"{service.url}/async", data={"MODEL": "classic", "RUNID": run_id, "PHASE": "RUN"},
                                files={"IMAGE": ("sky.fits", handle, "application/fits")}, allow_redirects=False)
    assert response.status_code == 303, response.text
    return f"http://127.0.0.1:{service.port}{response.headers['Location']}"


def test_holding_executor_holds_only_hold_jobs(tmp_path, sky_fits, uws_schema):
    service = ServiceThread(ServiceConfig(data_dir=tmp_path / "service", executor_class=HoldingExecutor))
    try:
        alice = service.session("alice")
        held = _create(service, alice, sky_fits, "hold-1")
        free = _create(service, alice, sky_fits, "free-1")
        root = wait_for_phase(alice, free, {"COMPLETED", "ERROR"}, timeout=60)
        assert uws_text(root, "phase") == "COMPLETED"
        assert_uws_valid(uws_schema, alice.get(free).content)
        assert job_phase(alice, held) == "QUEUED"
        assert alice.post(f"{held}/phase", data={"PHASE": "ABORT"}).status_code in (200, 303)
        assert job_phase(alice, held) == "ABORTED"
        # the other owner's token is refused the job
        assert service.session("bob").get(held).status_code == 404
    finally:
        service.stop()
