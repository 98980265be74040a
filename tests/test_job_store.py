"""The job store's contract, held by both stores: SQLite (embedded) and PostgreSQL (shared).

The PostgreSQL store runs against a real server of the test's own (the ``postgres_url``
fixture), one fresh database per test.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from cianna_otf_server.uws import (
    ErrorSummary,
    Job,
    JobFilter,
    JobParameter,
    JobResult,
    JobStore,
    Phase,
    StorageUnavailableError,
    utc_now,
)

from postgres_db import fresh_database

@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request, tmp_path):
    """Opens the store under test (again, as a restarted service does); closes them all at the end."""
    opened = []
    if request.param == "sqlite":
        def make():
            opened.append(JobStore(tmp_path / "jobs.sqlite"))
            return opened[-1]
    else:
        from cianna_otf_server.uws import PostgresJobStore

        url = fresh_database(request.getfixturevalue("postgres_url"))

        def make():
            opened.append(PostgresJobStore(url))
            return opened[-1]
    yield make
    for store in opened:
        store.close()


def job(job_id: str, owner: str | None = "alice", phase: Phase = Phase.PENDING, minutes: int = 0, **extra) -> Job:
    return Job(job_id=job_id, owner=owner, phase=phase, creation_time=utc_now() + timedelta(minutes=minutes),
               **extra)


def test_a_job_is_stored_whole_and_read_back(open_store) -> None:
    store = open_store()
    created = job("a1", run_id="survey", parameters=[JobParameter("MODEL", "classic"),
                                                     JobParameter("IMAGE", "file.fits", by_reference=True,
                                                                  is_post=True)],
                  destruction=utc_now() + timedelta(days=7), spec={"model": "classic", "n": [1, 2]})
    store.add(created)
    read = store.get("a1")
    assert read is not None
    assert (read.owner, read.run_id, read.phase, read.spec) == ("alice", "survey", Phase.PENDING, created.spec)
    assert [(p.name, p.value, p.by_reference, p.is_post) for p in read.parameters] == [
        ("MODEL", "classic", False, False), ("IMAGE", "file.fits", True, True)]
    assert read.creation_time == created.creation_time.replace(microsecond=read.creation_time.microsecond)
    assert store.get("missing") is None


def test_phase_changes_are_compare_and_set(open_store) -> None:
    store = open_store()
    store.add(job("a1"))
    assert store.transition("a1", [Phase.PENDING], phase=Phase.QUEUED)
    assert not store.transition("a1", [Phase.PENDING], phase=Phase.EXECUTING)  # it left PENDING
    assert store.transition("a1", [Phase.QUEUED], phase=Phase.EXECUTING, start_time=utc_now())
    store.update("a1", progress_done=3, progress_total=8)
    done = store.complete("a1", [JobResult("catalogue", "catalogue.xml", "application/x-votable+xml", 1234)],
                          utc_now(), warnings=["beam estimated from the image"])
    assert done and not store.complete("a1", [], utc_now())  # no longer EXECUTING: nothing changes
    read = store.get("a1")
    assert read.phase is Phase.COMPLETED and (read.progress_done, read.progress_total) == (3, 8)
    assert [(r.result_id, r.size) for r in read.results] == [("catalogue", 1234)]
    assert read.warnings == ["beam estimated from the image"]
    with pytest.raises(ValueError):
        store.update("a1", owner="mallory")  # not an updatable field


def test_errors_and_parameters_are_replaced_atomically(open_store) -> None:
    store = open_store()
    store.add(job("a1", parameters=[JobParameter("MODEL", "classic")]))
    store.replace_parameters("a1", [JobParameter("MODEL", "yolo-demo"), JobParameter("PRECISION", "fp16")],
                             spec={"model": "yolo-demo"})
    read = store.get("a1")
    assert [p.value for p in read.parameters] == ["yolo-demo", "fp16"] and read.spec == {"model": "yolo-demo"}
    assert store.set_error("a1", ErrorSummary("the image is not a FITS file", "fatal", "detail"),
                           [Phase.PENDING], utc_now())
    read = store.get("a1")
    assert read.phase is Phase.ERROR and read.error.message == "the image is not a FITS file"


def test_lists_follow_uws_filters_and_owners(open_store) -> None:
    store = open_store()
    for k, (owner, phase) in enumerate([("alice", Phase.PENDING), ("alice", Phase.COMPLETED),
                                        ("bob", Phase.QUEUED), ("alice", Phase.ARCHIVED), (None, Phase.PENDING)]):
        store.add(job(f"j{k}", owner=owner, phase=phase, minutes=k))
    ids = lambda jobs: [j.job_id for j in jobs]  # noqa: E731
    assert ids(store.list("alice", JobFilter())) == ["j0", "j1"]  # no ARCHIVED without a PHASE filter
    assert ids(store.list("alice", JobFilter(phases=(Phase.ARCHIVED,)))) == ["j3"]
    assert ids(store.list(None, JobFilter())) == ["j4"]  # the anonymous owner is an owner too
    assert ids(store.list("alice", JobFilter(last=1))) == ["j1"]
    after = store.get("j0").creation_time
    assert ids(store.list("alice", JobFilter(after=after))) == ["j1"]
    assert ids(store.list(None, JobFilter(), all_owners=True)) == ["j0", "j1", "j2", "j4"]
    assert store.ids_in_phase([Phase.PENDING, Phase.QUEUED]) == ["j0", "j2", "j4"]
    assert store.count([Phase.PENDING]) == 2 and store.count([Phase.PENDING], "alice", any_owner=False) == 1
    assert store.job_ids() == {"j0", "j1", "j2", "j3", "j4"}


def test_expiry_delete_and_a_restart_keep_what_was_acknowledged(open_store) -> None:
    store = open_store()
    store.add(job("old", destruction=utc_now() - timedelta(seconds=1)))
    store.add(job("new", destruction=utc_now() + timedelta(days=1)))
    assert store.expired(utc_now()) == ["old"]
    assert store.delete("old") and not store.delete("old")
    store.close()
    again = open_store()  # a restarted service opens the same database
    assert again.job_ids() == {"new"} and again.get("new").phase is Phase.PENDING


def test_concurrent_writers_lose_no_job(open_store) -> None:
    """Worker threads and the event loop share one store; with PostgreSQL, two replicas share one database."""
    first, second = open_store(), open_store()

    def write(store, prefix: str) -> None:
        for k in range(40):
            store.add(job(f"{prefix}{k}"))
            assert store.transition(f"{prefix}{k}", [Phase.PENDING], phase=Phase.QUEUED)

    threads = [threading.Thread(target=write, args=(first, "a")), threading.Thread(target=write, args=(second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first.count([Phase.QUEUED]) == 80 and second.count([Phase.QUEUED]) == 80
    assert len(set(first.ids_in_phase([Phase.QUEUED]))) == 80


def test_an_unreachable_postgres_server_is_a_clear_503(tmp_path) -> None:
    pytest.importorskip("psycopg")
    from cianna_otf_server.uws import PostgresJobStore

    with pytest.raises(StorageUnavailableError, match="cannot connect to the job database") as caught:
        PostgresJobStore(f"postgresql://nobody:secret@/jobs?host={tmp_path}&port=1", connect_timeout=2)
    assert "secret" not in str(caught.value)


def test_a_wait_on_one_replica_sees_another_replicas_change(postgres_url, tmp_path) -> None:
    """Two services on one PostgreSQL database: B finishes a job, a WAIT on A returns within the bound."""
    import asyncio
    import time

    from cianna_otf_server.testing import PassPolicy, RecordingExecutor
    from cianna_otf_server.uws import JobFiles, JobService, PermissionDeniedError, PostgresJobStore, UnknownJobError

    url = fresh_database(postgres_url)
    stores = [PostgresJobStore(url), PostgresJobStore(url)]
    files = JobFiles(tmp_path / "data")  # replicas share the job files
    a, b = (JobService(store, files, RecordingExecutor(), PassPolicy(), lambda job_id, path="": f"/async/{job_id}")
            for store in stores)
    try:
        created = a.create("alice", [("IMAGE", "x.fits"), ("PHASE", "RUN")])
        assert created.phase is Phase.QUEUED

        async def scenario() -> tuple[Phase, float]:
            start = time.monotonic()
            waiting = asyncio.ensure_future(a.wait("alice", created.job_id, 20.0))
            await asyncio.sleep(0.3)
            assert b.job_started(created.job_id)  # replica B's worker takes it
            job = await waiting
            return job.phase, time.monotonic() - start

        phase, seconds = asyncio.run(scenario())
        assert phase is Phase.EXECUTING and seconds < 0.3 + 2 * PostgresJobStore.change_poll_seconds + 0.5
        assert b.get("alice", created.job_id).phase is Phase.EXECUTING
        with pytest.raises((UnknownJobError, PermissionDeniedError)):
            b.get("bob", created.job_id)  # owners are kept apart across replicas too
    finally:
        for store in stores:
            store.close()
