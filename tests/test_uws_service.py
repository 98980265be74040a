"""JobService races and recovery, with a real SQLite JobStore and job directories on tmp_path
and an executor that only records what it is asked (the test plays the worker)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from cianna_otf_server.testing import PassPolicy, RecordingExecutor
from cianna_otf_server.uws import (
    InvalidPhaseError,
    JobFiles,
    JobResult,
    JobService,
    JobStore,
    Phase,
    UnknownJobError,
    utc_now,
)


def make_service(tmp_path, store=None):
    store = store or JobStore(tmp_path / "jobs.sqlite")
    files = JobFiles(tmp_path / "data")
    executor = RecordingExecutor()
    service = JobService(store, files, executor, PassPolicy(), lambda job_id, path="": f"/async/{job_id}/{path}")
    return service, store, files, executor


@pytest.fixture
def setup(tmp_path):
    service, store, files, executor = make_service(tmp_path)
    yield service, store, files, executor
    store.close()


def executing_job(service, files, owner="alice"):
    """A job the 'worker' has started, with a result file already published (as a runner does)."""
    job = service.create(owner, [("IMAGE", "x.fits"), ("PHASE", "RUN")])
    assert job.phase == Phase.QUEUED
    assert service.job_started(job.job_id)
    work = files.work_dir(job.job_id)
    (work / "partial.tmp").write_bytes(b"half")
    result = files.result_file(job.job_id, "result.xml")
    result.write_bytes(b"<VOTABLE/>")
    return job.job_id, [JobResult("result", "result.xml", "application/x-votable+xml", 10)]


def test_abort_then_worker_completes(setup):
    service, store, files, executor = setup
    job_id, results = executing_job(service, files)
    aborted = service.abort("alice", job_id)
    assert aborted.phase == Phase.ABORTED and job_id in executor.cancelled
    service.job_completed(job_id, results)  # the worker finishes a moment later
    job = store.get(job_id)
    assert job.phase == Phase.ABORTED and job.results == []
    assert not any((files.job_dir(job_id) / "results").glob("*"))
    assert not (files.job_dir(job_id) / "work").exists()
    service.job_failed(job_id, "late failure")  # nor may a late failure change it
    assert store.get(job_id).phase == Phase.ABORTED and store.get(job_id).error is None


def test_worker_completes_then_abort_is_refused(setup):
    service, store, files, executor = setup
    job_id, results = executing_job(service, files)
    service.job_completed(job_id, results)
    with pytest.raises(InvalidPhaseError):
        service.abort("alice", job_id)
    job = store.get(job_id)
    assert job.phase == Phase.COMPLETED and [r.result_id for r in job.results] == ["result"]
    assert files.result_file(job_id, "result.xml").read_bytes() == b"<VOTABLE/>"


def test_abort_racing_completion_never_mixes_states(tmp_path):
    service, store, files, executor = make_service(tmp_path)
    for _ in range(40):
        job_id, results = executing_job(service, files)
        barrier = threading.Barrier(2)

        def abort():
            barrier.wait()
            try:
                service.abort("alice", job_id)
            except InvalidPhaseError:
                pass

        def complete():
            barrier.wait()
            service.job_completed(job_id, results)

        threads = [threading.Thread(target=abort), threading.Thread(target=complete)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        job = store.get(job_id)
        published = list((files.job_dir(job_id) / "results").glob("*"))
        if job.phase == Phase.COMPLETED:
            assert len(job.results) == 1 and len(published) == 1
        else:
            assert job.phase == Phase.ABORTED and job.results == [] and published == []
    store.close()


def test_complete_or_fail_after_delete_leaves_nothing(setup):
    service, store, files, executor = setup
    job_id, results = executing_job(service, files)
    service.delete("alice", job_id)
    assert store.get(job_id) is None and not files.job_dir(job_id).exists()
    # the worker, unaware, publishes again (re-creating the directory) and reports completion
    files.result_file(job_id, "result.xml").parent.mkdir(parents=True)
    files.result_file(job_id, "result.xml").write_bytes(b"<VOTABLE/>")
    service.job_completed(job_id, results)
    assert store.get(job_id) is None and not files.job_dir(job_id).exists()
    files.work_dir(job_id)
    service.job_failed(job_id, "boom")
    assert store.get(job_id) is None and not files.job_dir(job_id).exists()
    files.work_dir(job_id)
    service.job_stopped(job_id)
    assert not files.job_dir(job_id).exists()
    with pytest.raises(UnknownJobError):
        service.get("alice", job_id)
    assert service.job_started(job_id) is False


def test_job_stopped_keeps_a_job_interrupted_by_shutdown(setup):
    service, store, files, executor = setup
    job_id, _ = executing_job(service, files)
    service.job_stopped(job_id)  # shutdown: the job is still EXECUTING and will be requeued
    assert store.get(job_id).phase == Phase.EXECUTING
    assert (files.job_dir(job_id) / "work" / "partial.tmp").exists()


def test_recover_requeues_executing_and_queued_jobs(tmp_path):
    service, store, files, executor = make_service(tmp_path)
    executing, _ = executing_job(service, files)
    store.update(executing, progress_done=3, progress_total=9)
    queued = service.create("bob", [("IMAGE", "y.fits"), ("PHASE", "RUN")]).job_id
    pending = service.create("alice", [("IMAGE", "z.fits")]).job_id
    done, results = executing_job(service, files)
    service.job_completed(done, results)
    store.close()

    # a new process over the same database and directories
    service, store, files, executor = make_service(tmp_path)
    service.startup()
    assert executor.started
    assert executor.submitted == [executing, queued]
    job = store.get(executing)
    assert job.phase == Phase.QUEUED and job.start_time is None and job.progress_done == 0
    assert not (files.job_dir(executing) / "work").exists()  # the partial output is gone
    assert store.get(queued).phase == Phase.QUEUED
    assert store.get(pending).phase == Phase.PENDING
    assert store.get(done).phase == Phase.COMPLETED
    # the requeued job runs normally
    assert service.job_started(executing)
    service.job_completed(executing, [])
    assert store.get(executing).phase == Phase.COMPLETED
    store.close()


def test_reaper_enforces_duration_and_destruction(setup):
    service, store, files, executor = setup
    job_id, _ = executing_job(service, files)
    store.update(job_id, execution_duration=1)
    later = utc_now() + timedelta(seconds=5)
    destroyed, overdue = service.reap(later)
    assert overdue == [job_id] and destroyed == [] and job_id in executor.cancelled
    job = store.get(job_id)
    assert job.phase == Phase.ERROR and "execution duration of 1 s" in job.error.message
    assert not (files.job_dir(job_id) / "work").exists()

    from cianna_otf_server.uws import format_time

    soon = format_time(utc_now() + timedelta(hours=1))
    doomed = service.create("alice", [("IMAGE", "x.fits"), ("DESTRUCTION", soon)]).job_id
    kept = service.create("alice", [("IMAGE", "x.fits")]).job_id
    destroyed, _ = service.reap(store.get(doomed).destruction + timedelta(seconds=1))
    assert doomed in destroyed and kept not in destroyed
    assert store.get(doomed) is None and not files.job_dir(doomed).exists()
    assert store.get(kept) is not None


def test_parameters_frozen_after_pending_and_bad_phase_refused(setup):
    from cianna_otf_server.uws import InvalidRequestError

    service, store, files, executor = setup
    job = service.create("alice", [("IMAGE", "x.fits")])
    service.update_parameters("alice", job.job_id, [("THRESHOLD", "3"), ("RUNID", "r")])
    assert store.get(job.job_id).parameter("THRESHOLD") == "3" and store.get(job.job_id).run_id == "r"
    with pytest.raises(InvalidRequestError):
        service.update_parameters("alice", job.job_id, [("PHASE", "EXPLODE")])
    service.start("alice", job.job_id)
    with pytest.raises(InvalidPhaseError):
        service.update_parameters("alice", job.job_id, [("THRESHOLD", "4")])
    assert store.get(job.job_id).parameter("THRESHOLD") == "3"
    with pytest.raises(InvalidRequestError):
        service.create("alice", [("IMAGE", "x\x00.fits")])
