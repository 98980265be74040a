"""The service answers quickly while CPU-bound jobs run: the event loop is not starved by workers."""

from __future__ import annotations

import sys
import time

import pytest

from uws_helpers import create, phase


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def test_the_service_hands_the_interpreter_lock_back_often(standalone):
    assert sys.getswitchinterval() <= standalone.settings.thread_switch_interval


@pytest.mark.slow  # a timing: it holds on a machine doing nothing else (benchmarks/loop_latency.py measures it)
def test_creation_and_status_stay_fast_while_eight_classic_jobs_run(standalone, tmp_path):
    from cianna_otf_server.sky.simulate import write_simulation

    write_simulation(tmp_path / "big.fits", 1024, seed=5)
    session = standalone.session("alice")
    running = [create(standalone, session, data={"MODEL": "classic", "IMAGE": "big.fits", "PHASE": "RUN"})
               for _ in range(8)]
    other = standalone.session("bob")
    created, status = [], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(created) < 40:
        start = time.perf_counter()
        job = create(standalone, other, data={"MODEL": "classic", "IMAGE": "big.fits"})
        created.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert phase(other, job) == "PENDING"
        status.append(time.perf_counter() - start)
        other.delete(job, allow_redirects=False)
    busy = [phase(session, url) for url in running]
    assert "EXECUTING" in busy or "QUEUED" in busy, busy  # measured while the jobs ran
    assert _p95(created) < 0.1 and _p95(status) < 0.1, (sorted(created)[-3:], sorted(status)[-3:])
