"""The pyvo scenarios (``pyvo_scenarios.py``) against the standalone server."""

from __future__ import annotations


import pytest

import pyvo_scenarios
from pyvo_scenarios import HoldingExecutor


@pytest.fixture
def service_settings(service_settings):
    """The conftest settings, with the executor that can keep a job QUEUED (for abort)."""
    return service_settings.changed(executor_class=HoldingExecutor)


@pytest.mark.parametrize("scenario", pyvo_scenarios.SCENARIOS, ids=lambda s: s.__name__.removeprefix("scenario_"))
def test_pyvo_scenario(standalone, sky_fits, scenario):
    with standalone.session("alice") as session:
        scenario(standalone.url, session, sky_fits)


def test_jobs_are_private(standalone, sky_fits):
    """bob's pyvo sees neither alice's jobs in the list nor their contents."""
    alice, bob = standalone.session("alice"), standalone.session("bob")
    job = pyvo_scenarios.create_job(standalone.url, alice, sky_fits, run=False)
    import pyvo
    from pyvo.dal import DALServiceError

    assert job.job_id not in {j.jobid for j in pyvo.dal.TAPService(standalone.url, session=bob).get_job_list()}
    with pytest.raises(DALServiceError):
        pyvo.dal.AsyncTAPJob(job.url, session=bob)
    response = bob.get(job.url)
    assert response.status_code in (403, 404) and b"classic" not in response.content and b"<uws:" not in response.content


def test_unknown_model_card_is_404(standalone):
    response = standalone.session("alice").get(f"{standalone.url}/models/no-such-model")
    assert response.status_code == 404
