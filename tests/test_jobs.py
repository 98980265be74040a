"""The job layer on its own: the typed request, the parameter policy, preparation, results, failures."""

from __future__ import annotations

import threading

import pytest

from cianna_otf_server.errors import ImageError, UserInputError
from cianna_otf_server.jobs import (DetectionParameterPolicy, DetectionRequest, DetectionRunner, FailureKind,
                                    ImagePath, ImageUrl, JobCancelled, RunnerLimits, UploadedImage,
                                    classify_failure, report_failure, request_from_job)
from cianna_otf_server.models import default_registry
from cianna_otf_server.uws import InvalidRequestError, Job, JobFiles, JobParameter, Phase, utc_now


def _params(**values) -> list[JobParameter]:
    return [JobParameter(k, str(v)) for k, v in values.items()]


@pytest.fixture
def policy(tmp_path):
    return DetectionParameterPolicy(default_registry(), data_roots=[tmp_path], allow_http=True)


def test_the_request_is_typed_once_and_round_trips(policy, tmp_path, sky_fits):
    image = tmp_path / "sky.fits"
    image.write_bytes(sky_fits.read_bytes())
    validated = policy.validate(_params(MODEL="classic", IMAGE=str(image), circle="0.0 -30.0 0.01", threshold="4.5",
                                        bunit="mJy/beam", RESPONSEFORMAT="text/csv"))
    request = DetectionRequest.from_spec(validated.spec)
    assert request.image == ImagePath(str(image.resolve())) and request.model == "classic"
    assert request.region == "CIRCLE 0.0 -30.0 0.01" and request.threshold == 4.5
    assert request.unit == "mJy/beam" and request.response_format == "csv"
    assert DetectionRequest.from_spec(request.to_spec()) == request
    url = policy.validate(_params(IMAGE="https://example.org/a/sky.fits?x=1")).spec
    assert DetectionRequest.from_spec(url).image == ImageUrl("https://example.org/a/sky.fits?x=1")
    assert DetectionRequest.from_spec(url).image.name == "sky.fits" and url["model"] == "yolo-demo"
    upload = policy.validate([JobParameter("IMAGE", "/x/parameters/IMAGE", by_reference=True)]).spec
    assert DetectionRequest.from_spec(upload).image == UploadedImage("IMAGE")
    assert policy.validate(_params(MODEL="classic")).spec is None  # no IMAGE yet: nothing to run


def test_a_stored_spec_is_what_the_runner_reads(policy):
    validated = policy.validate(_params(IMAGE="https://example.org/sky.fits", PIXELS="1 10 1 10"))
    job = Job("j1", "alice", Phase.QUEUED, utc_now(), parameters=validated.parameters, spec=validated.spec)
    assert request_from_job(job).pixels == "1 10 1 10"
    legacy = Job("j2", "alice", Phase.QUEUED, utc_now(), parameters=validated.parameters)  # stored before specs
    assert request_from_job(legacy) == request_from_job(job)
    with pytest.raises(InvalidRequestError, match="no IMAGE"):
        request_from_job(Job("j3", "alice", Phase.QUEUED, utc_now(), parameters=_params(MODEL="classic")))


@pytest.mark.parametrize(("params", "message"), [
    ({"UNIT": "K"}, "temperature"),
    ({"BEAM": "6 five 30"}, "BEAM"),
    ({"HDU": "-1"}, "HDU"),
    ({"CIRCLE": "1 2"}, "CIRCLE"),
    ({"CIRCLE": "1 2 3", "PIXELS": "1 2 1 2"}, "one region"),
    ({"MODEL": "nope"}, "nope"),
    ({"NOPE": "1"}, "unknown parameter"),
])
def test_bad_parameters_are_refused_with_the_reason(policy, params, message):
    with pytest.raises(InvalidRequestError, match=message):
        policy.validate(_params(IMAGE="https://example.org/sky.fits", **params))


def test_failures_are_classified_by_type():
    assert classify_failure(JobCancelled("j")).kind is FailureKind.STOPPED
    usage = classify_failure(ImageError("not FITS"))
    assert usage.kind is FailureKind.USAGE and usage.message == "not FITS" and usage.error_type == "fatal"
    memory = classify_failure(MemoryError())
    assert memory.kind is FailureKind.TRANSIENT and memory.error_type == "transient"
    try:
        raise KeyError("bug")
    except KeyError as exc:
        internal = classify_failure(exc)
    assert internal.kind is FailureKind.INTERNAL and "KeyError" in internal.message and "Traceback" in internal.detail

    class Callbacks:
        def __init__(self):
            self.calls = []

        def job_stopped(self, job_id):
            self.calls.append(("stopped", job_id))

        def job_failed(self, job_id, message, detail=None, error_type="fatal"):
            self.calls.append(("failed", job_id, message, error_type))

    callbacks = Callbacks()
    report_failure(callbacks, "a", JobCancelled("a"))
    report_failure(callbacks, "b", UserInputError("bad region"))
    report_failure(callbacks, "c", MemoryError())
    assert callbacks.calls == [("stopped", "a"), ("failed", "b", "bad region", "fatal"),
                               ("failed", "c", "the job ran out of memory; try a smaller region or image", "transient")]


def _job(files: JobFiles, policy, sky_fits, **params) -> Job:
    validated = policy.validate([JobParameter("IMAGE", "/x/parameters/IMAGE", by_reference=True),
                                 *_params(**params)])
    files.create("job1")
    job = Job("job1", "alice", Phase.EXECUTING, utc_now(), parameters=validated.parameters, spec=validated.spec)
    files.store_upload("job1", "IMAGE", sky_fits.read_bytes())
    return job


def test_the_runner_prepares_detects_and_publishes(tmp_path, policy, sky_fits):
    files = JobFiles(tmp_path / "data")
    runner = DetectionRunner(default_registry(), files, job_url=lambda job_id: f"https://svc/async/{job_id}")
    job = _job(files, policy, sky_fits, MODEL="classic", RESPONSEFORMAT="csv")
    seen = []
    outcome = runner.run(job, threading.Event(), lambda done, total: seen.append((done, total)))
    assert {r.result_id for r in outcome.results} == {"result", "votable", "regions", "provenance"}
    assert seen[-1] == (1, 1)
    published = files.result_file("job1", "result.csv")
    assert published.is_file() and published.read_text().startswith("id,")


def test_preparation_refuses_an_image_over_the_limit_and_plans_networks(tmp_path, policy, sky_fits):
    files = JobFiles(tmp_path / "data")
    small = DetectionRunner(default_registry(), files, limits=RunnerLimits(max_image_pixels=100))
    with pytest.raises(ImageError, match="at most 100"):
        small.prepare(_job(files, policy, sky_fits, MODEL="classic"), threading.Event())
    runner = DetectionRunner(default_registry(), files)
    prepared = runner.prepare(_job(files, policy, sky_fits, MODEL="yolo-demo"), threading.Event())
    try:
        assert prepared.detection is not None and len(prepared.detection.plan) >= 1
        assert prepared.detection.domain.convention == "snr" and prepared.image_sha and prepared.precision == "fp32"
    finally:
        prepared.close()
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(JobCancelled):
        runner.run(_job(files, policy, sky_fits, MODEL="classic"), cancelled, lambda d, t: None)


def test_writer_processes_write_the_same_files_and_survive_a_killed_process(tmp_path, policy, sky_fits):
    import os
    import signal

    from cianna_otf_server.jobs import WriterProcesses

    def run(folder: str, processes=None):
        files = JobFiles(tmp_path / folder)
        runner = DetectionRunner(default_registry(), files, job_url=lambda job_id: f"https://svc/async/{job_id}",
                                 writer_processes=processes)
        job = _job(files, policy, sky_fits, MODEL="classic", RESPONSEFORMAT="csv")
        outcome = runner.run(job, threading.Event(), lambda done, total: None)
        return files, outcome

    here, local = run("threads")
    writers = WriterProcesses(1)
    try:
        pids = [f.result(timeout=120) for f in writers.start()]
        assert pids and os.getpid() not in pids  # the files are written by another process
        there, remote = run("processes", writers)
        assert [(r.result_id, r.size) for r in remote.results] == [(r.result_id, r.size) for r in local.results]
        for name in ("result.csv", "regions.reg"):
            assert there.result_file("job1", name).read_bytes() == here.result_file("job1", name).read_bytes()
        assert _votable_rows(there) == _votable_rows(here) and len(_votable_rows(here)) > 0
        provenance = there.result_file("job1", "provenance.json").read_text()
        assert "otf:torch" in provenance and '"otf:python"' in provenance  # the service's software, named
        os.kill(pids[0], signal.SIGKILL)  # a writer killed (for memory, say) loses no job
        again, outcome = run("after-kill", writers)
        assert _votable_rows(again) == _votable_rows(here)
        assert {r.result_id for r in outcome.results} == {"result", "votable", "regions", "provenance"}
    finally:
        writers.close()
    # closed (the service stopping): the calling thread writes
    closed, _ = run("closed", writers)
    assert closed.result_file("job1", "result.csv").read_bytes() == here.result_file("job1", "result.csv").read_bytes()


def _votable_rows(files: JobFiles) -> list[tuple]:
    """The published VOTable's rows (its header carries the time it was written)."""
    from astropy.table import Table

    table = Table.read(files.result_file("job1", "catalogue.xml"), format="votable")
    return [tuple(row) for row in table.as_array().tolist()]
