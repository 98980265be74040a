"""`/metrics` speaks Prometheus and reports the scheduler and the jobs after real work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from yolo_models import write_tiny_yolo  # noqa: E402


@pytest.fixture
def service_settings(tmp_path, service_settings):  # noqa: F811 - extends the conftest fixture
    write_tiny_yolo(tmp_path / "models")
    service_settings.models_dirs = [tmp_path / "models"]
    return service_settings


def _samples(text: str) -> dict[str, list]:
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def test_metrics_after_yolo_and_classic_jobs(standalone, sky_fits) -> None:
    session = standalone.session("alice")
    for model in ("tiny-yolo", "classic"):
        job = session.post(f"{standalone.url}/async", data={"MODEL": model, "PHASE": "RUN"},
                           files={"IMAGE": sky_fits.open("rb")})
        assert "COMPLETED" in session.get(job.url + "?WAIT=30").text
    response = session.get(f"{standalone.url}/metrics")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    families = _samples(response.text)
    jobs = {s.labels["phase"]: s.value for s in families["cianna_otf_jobs"]}
    assert jobs["COMPLETED"] == 2
    batches = [s for s in families["cianna_otf_batch_size"] if s.name.endswith("_count")]
    assert batches and batches[0].labels["model"] == "tiny-yolo" and batches[0].value >= 1
    patches = [s for s in families["cianna_otf_patches"] if s.name.endswith("_total")]
    assert sum(s.value for s in patches) == 36  # a 256 px image in 64 px patches shifted by 48 px
    loads = [s for s in families["cianna_otf_model_loads"] if s.name.endswith("_total")]
    assert [s.labels["model"] for s in loads] == ["tiny-yolo"]
    phases = {s.labels["phase"] for s in families["cianna_otf_job_phase_seconds"] if s.name.endswith("_count")}
    assert phases == {"QUEUED", "EXECUTING"}
    assert "cianna_otf_queue_patches" in families and "cianna_otf_device_worker_seconds" in families
    assert any(s.labels.get("endpoint") == "jobs" for s in families["cianna_otf_http_requests"])
