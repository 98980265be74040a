"""The batching scheduler with the real job service, store, runner and a small real network."""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cianna_otf_server.scheduler import BatchingScheduler, DeviceRunner, OutOfDeviceMemory, SchedulerSettings
from cianna_otf_server.sky.simulate import write_simulation
from cianna_otf_server.uws import OwnerQuotaError, Phase, ServiceLimits

sys.path.insert(0, str(Path(__file__).parent))
from executor_harness import Harness  # noqa: E402
from yolo_models import write_tiny_yolo  # noqa: E402
BATCH_LOG = re.compile(r"batch model=(\S+) precision=\S+ size=(\d+) jobs=(\d+)")
OWNERS_LOG = re.compile(r"batch .* owners=(\d+)")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scheduler-images")
    write_simulation(root / "small.fits", 64, seed=1)  # 2 x 2 = 4 patches of 64 px
    write_simulation(root / "big.fits", 1024, seed=2)  # 22 x 22 = 484 patches
    write_simulation(root / "survey.fits", 2048, seed=3)  # 43 x 43 = 1849 patches
    return root


@pytest.fixture
def make_harness(tmp_path, images):
    made = []

    def make(**kwargs) -> Harness:
        factory = kwargs.pop("device_runner_factory", None)
        limits = kwargs.pop("limits", None)
        settings = SchedulerSettings(**kwargs)
        harness = Harness(tmp_path / f"h{len(made)}", images,
                          lambda runner: BatchingScheduler(runner, settings, device_runner_factory=factory), limits)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def _batches(caplog) -> list[tuple[str, int, int]]:
    return [(m.group(1), int(m.group(2)), int(m.group(3)))
            for r in caplog.records if (m := BATCH_LOG.search(r.getMessage()))]


def test_patches_of_several_jobs_share_batches(make_harness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cianna_otf_server.scheduler")
    h = make_harness(batch_size={"cpu": 16}, max_wait=1.0)
    jobs = [h.submit("small.fits", owner=f"user{i % 2}") for i in range(6)]
    for job_id in jobs:
        job = h.wait(job_id)
        assert job.phase == Phase.COMPLETED, job.error
        assert job.progress_done == job.progress_total == 4
    batches = _batches(caplog)
    assert sum(size for _, size, _ in batches) == 24  # every patch ran exactly once
    assert max(jobs_in for _, _, jobs_in in batches) >= 3  # batches mixed several jobs
    assert len(batches) <= 3  # 24 patches in batches of up to 16
    owners = [int(m.group(1)) for r in caplog.records if (m := OWNERS_LOG.search(r.getMessage()))]
    assert max(owners) == 2  # one batch held patches of both users' jobs


def test_a_lone_job_is_flushed_after_max_wait(make_harness, caplog) -> None:
    caplog.set_level(logging.INFO, logger="cianna_otf_server.scheduler")
    h = make_harness(batch_size={"cpu": 64}, max_wait=0.3)
    start = time.monotonic()
    job = h.wait(h.submit("small.fits"))
    elapsed = time.monotonic() - start
    assert job.phase == Phase.COMPLETED
    assert _batches(caplog) == [("tiny-yolo", 4, 1)]  # one partial batch, not waiting for 64
    assert 0.3 <= elapsed < 10


class _SlowDevice(DeviceRunner):
    """A CPU runner that takes at least 20 ms a batch, like a busy GPU, so timing tests are stable."""

    def launch(self, network, card, pixels):
        time.sleep(0.02)
        return super().launch(network, card, pixels)


def test_small_job_of_another_owner_is_not_stuck_behind_a_survey(make_harness) -> None:
    h = make_harness(batch_size={"cpu": 16}, max_wait=0.01, device_runner_factory=_SlowDevice)
    big = h.submit("survey.fits", owner="survey")
    h.wait(big, phases={Phase.EXECUTING})
    time.sleep(0.2)
    submitted = time.monotonic()
    small = h.submit("small.fits", owner="clicker")
    assert h.wait(small).phase == Phase.COMPLETED
    latency = time.monotonic() - submitted
    survey = h.store.get(big)
    assert survey.progress_done < survey.progress_total  # the survey was still running meanwhile
    assert h.wait(big, timeout=300).phase == Phase.COMPLETED
    survey = h.store.get(big)
    assert latency < 0.25 * (survey.end_time - survey.start_time).total_seconds()


def test_abort_drops_pending_patches(make_harness) -> None:
    h = make_harness(batch_size={"cpu": 8}, max_wait=0.01, device_runner_factory=_SlowDevice)
    big = h.submit("survey.fits")
    h.wait(big, phases={Phase.EXECUTING})
    time.sleep(1.2)
    assert h.store.get(big).progress_done > 0
    h.service.abort("alice", big)
    time.sleep(0.5)
    job = h.store.get(big)
    assert job.phase == Phase.ABORTED and job.results == []
    assert job.progress_done < job.progress_total
    assert h.scheduler.queue_depths() == {}
    assert not any((h.service.files.job_dir(big) / "results").iterdir())
    assert h.wait(h.submit("small.fits")).phase == Phase.COMPLETED  # the scheduler keeps serving


def test_a_user_whose_jobs_hold_their_share_of_patches_waits_with_429(make_harness) -> None:
    h = make_harness(batch_size={"cpu": 8}, max_wait=0.01, device_runner_factory=_SlowDevice,
                     limits=ServiceLimits(max_queued_patches_per_owner=500))
    assert h.scheduler.queued_patches("alice") == 0
    first = h.wait(h.submit("small.fits"))  # under the limit: any job may start
    assert first.phase == Phase.COMPLETED
    big = h.submit("survey.fits")  # 1849 patches: one job may go over it
    h.wait(big, phases={Phase.EXECUTING})
    deadline = time.monotonic() + 30
    while h.scheduler.queued_patches("alice") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # prepared: its patches are counted
    held = h.scheduler.queued_patches("alice")
    assert 500 <= held <= 1849
    with pytest.raises(OwnerQuotaError) as refused:
        h.submit("small.fits")
    assert refused.value.status == 429 and refused.value.retry_after > 0
    assert "patches still to run, the most allowed is 500" in str(refused.value)
    assert h.scheduler.queued_patches("bob") == 0
    assert h.wait(h.submit("small.fits", owner="bob")).phase == Phase.COMPLETED  # the limit is per user
    h.service.abort("alice", big)
    deadline = time.monotonic() + 10
    while h.scheduler.queued_patches("alice") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert h.wait(h.submit("small.fits")).phase == Phase.COMPLETED  # room again


class _SmallMemoryDevice(DeviceRunner):
    """A CPU runner that fails like a GPU out of memory for batches larger than 4 patches."""

    sizes: list[int] = []

    def launch(self, network, card, pixels):
        type(self).sizes.append(len(pixels))
        if len(pixels) > 4:
            raise OutOfDeviceMemory("CUDA out of memory (simulated)")
        return super().launch(network, card, pixels)


def test_out_of_memory_halves_the_batch_and_loses_nothing(make_harness, caplog) -> None:
    _SmallMemoryDevice.sizes = []
    h = make_harness(batch_size={"cpu": 16}, max_wait=0.2, device_runner_factory=_SmallMemoryDevice)
    jobs = [h.submit("small.fits") for _ in range(4)]
    for job_id in jobs:
        assert h.wait(job_id).phase == Phase.COMPLETED
    sizes = _SmallMemoryDevice.sizes
    assert sizes[0] > 4 and 8 in sizes and 4 in sizes  # 16 -> 8 -> 4
    assert all(size <= 4 for size in sizes[sizes.index(4):])
    assert any("out of memory" in r.getMessage() for r in caplog.records)


class _UnboundDevice(DeviceRunner):
    """A runner whose device cannot be bound to the worker thread, nor run anything."""

    def bind_thread(self) -> None:
        raise RuntimeError("device cuda:7 is not present (simulated)")

    def launch(self, network, card, pixels):
        raise RuntimeError("device cuda:7 is not present (simulated)")


def test_a_device_that_cannot_be_bound_fails_the_jobs_instead_of_hanging(make_harness, caplog) -> None:
    h = make_harness(batch_size={"cpu": 4}, max_wait=0.01, device_runner_factory=_UnboundDevice)
    job = h.wait(h.submit("small.fits"), timeout=30)
    assert job.phase == Phase.ERROR and "not present" in str(job.error)
    assert any("could not bind the device" in r.getMessage() for r in caplog.records)


def test_new_weights_are_picked_up_and_running_jobs_keep_theirs(make_harness) -> None:
    h = make_harness(batch_size={"cpu": 8}, max_wait=0.01)
    big = h.submit("big.fits")
    h.wait(big, phases={Phase.EXECUTING})
    time.sleep(0.2)
    write_tiny_yolo(h.models, version="2", seed=7)  # a new version replaces the files on disk
    h.registry.refresh()
    small = h.submit("small.fits")
    assert h.wait(small).phase == Phase.COMPLETED
    assert h.wait(big, timeout=120).phase == Phase.COMPLETED
    versions = sorted(key.version for key in h.scheduler.cache.keys())
    assert versions == ["1", "2"]
    from astropy.io.votable import parse

    def version(job_id: str) -> str:
        infos = parse(str(h.service.files.result_file(job_id, "result.xml"))).resources[0].infos
        return next(info.value for info in infos if info.name == "model_version")

    assert version(big) == "1" and version(small) == "2"


def test_a_model_that_fails_to_load_fails_only_its_jobs(make_harness) -> None:
    h = make_harness(batch_size={"cpu": 8}, max_wait=0.01)
    write_tiny_yolo(h.models, name="broken")
    weights = h.models / "broken.dat"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated after the card was written
    h.registry.refresh()
    bad = h.submit("small.fits", model="broken")
    good = h.submit("small.fits", model="classic")
    failed = h.wait(bad)
    assert failed.phase == Phase.ERROR and "broken" in failed.error.message
    assert h.wait(good).phase == Phase.COMPLETED
    assert h.wait(h.submit("small.fits")).phase == Phase.COMPLETED


def test_a_crash_in_one_jobs_post_processing_fails_that_job_only(make_harness, monkeypatch) -> None:
    from cianna_otf_server.scheduler import JobWork

    h = make_harness(batch_size={"cpu": 16}, max_wait=0.3)
    original = JobWork.decode
    victims: set[str] = set()

    def decode(self, patches, outputs):
        if self.job_id in victims:
            raise ValueError("simulated decoding failure")
        return original(self, patches, outputs)

    monkeypatch.setattr(JobWork, "decode", decode)
    first = h.submit("small.fits")
    victims.add(first)
    second = h.submit("small.fits")
    assert h.wait(first).phase == Phase.ERROR
    assert "simulated decoding failure" in h.store.get(first).error.message
    assert h.wait(second).phase == Phase.COMPLETED


def test_batched_results_equal_the_one_job_pipeline(make_harness, images) -> None:
    """Cross-job batching and GPU-style normalisation change nothing in the catalogue."""
    from astropy.io.votable import parse_single_table

    from cianna_otf_server.pipeline import detect

    h = make_harness(batch_size={"cpu": 16}, max_wait=0.05)
    jobs = [h.submit("small.fits") for _ in range(3)] + [h.submit("big.fits", owner="bob")]
    for job_id in jobs:
        assert h.wait(job_id, timeout=120).phase == Phase.COMPLETED
    expected = detect(images / "big.fits", h.registry.get("tiny-yolo"))
    path = h.service.files.result_file(jobs[-1], "result.xml")
    got = parse_single_table(str(path)).to_table()
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(np.sort(got["ra"]), np.sort(expected["ra"]), atol=1e-9)


def test_a_click_is_not_held_up_by_two_surveys_catalogues(make_harness, monkeypatch) -> None:
    """Both post-processing threads' worth of survey catalogues being built: a third user's click still completes."""
    import threading

    from cianna_otf_server.pipeline import YoloDetection

    original = YoloDetection.catalogue
    building = threading.Semaphore(0)

    def slow_catalogue(self):
        if len(self.plan) > 100:  # a survey's second NMS, measurement and columns, made slow
            building.release()
            time.sleep(3.0)
        return original(self)

    monkeypatch.setattr(YoloDetection, "catalogue", slow_catalogue)
    h = make_harness(batch_size={"cpu": 64}, max_wait=0.01, post_threads=2)
    surveys = [h.submit("big.fits", owner=f"survey{i}") for i in range(2)]
    assert building.acquire(timeout=120)  # the first survey's catalogue is being built
    building.acquire(timeout=60)  # and (usually) the second's
    submitted = time.monotonic()
    click = h.submit("small.fits", owner="clicker")
    assert h.wait(click).phase == Phase.COMPLETED
    latency = time.monotonic() - submitted
    assert latency < 2.0, f"the click waited {latency:.1f} s behind the surveys' catalogues"
    for job_id in surveys:
        assert h.wait(job_id, timeout=120).phase == Phase.COMPLETED


def test_the_priority_pool_runs_the_most_urgent_task_first() -> None:
    import threading

    from cianna_otf_server.scheduler._priority_pool import PriorityPool

    pool = PriorityPool(1, name="test-priority")
    gate, ran = threading.Event(), []
    pool.submit(0, gate.wait)  # holds the only worker while the others queue
    for priority, name in ((256, "survey-1"), (256, "survey-2"), (4, "click"), (64, "medium")):
        pool.submit(priority, lambda n=name: ran.append(n))
    pool.submit(1, lambda: 1 / 0)  # a failing task does not end the worker
    gate.set()
    deadline = time.monotonic() + 5
    while len(ran) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran == ["click", "medium", "survey-1", "survey-2"]
    pool.shutdown()
