"""The batching scheduler: patches of many jobs that share a model and precision run together.

Flow of a YOLO job: a prepare thread opens the image and plans the tiles; reader threads cut
raw patches ahead (bounded per job); each device worker (one per GPU, or one for the CPU)
picks the group (model version, precision) whose batch is full or whose oldest patch has
waited `max_wait`, composes a batch across jobs (owners in turn, fewest remaining patches
first, so a click is not stuck behind a survey), normalises it on the device, runs it, and
hands each job its outputs; post-processing threads decode them, the smallest job's first, and
a large job's catalogue is built on finishing threads shared out between owners once its last
patch is back, so a survey's catalogue never holds up another user's click. Classic
(non-network) jobs run on threads of their own, shared out between owners too.

`BatchingScheduler` implements the job service's `JobExecutor` interface.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from astropy.table import Table

from ..errors import UserInputError
from ..jobs import JobCancelled, JobRunner, OwnerFairPool, PreparedJob, report_failure
from ..models import ModelCard
from ..uws import ExecutionCallbacks, Job
from ._cache import ModelCache, ModelKey, model_key
from ._device import DeviceRunner, Launched, OutOfDeviceMemory
from ._metrics import SchedulerMetrics
from ._pool import PinnedPool, release_all
from ._priority_pool import PriorityPool
from ._work import JobWork, ReadyPatch

if TYPE_CHECKING:  # torch is imported when a network is first loaded
    import torch

log = logging.getLogger(__name__)


#: Jobs of at most this many patches build their catalogue on the thread that decoded their last
#: batch; larger ones hand it to the owner-fair finishing threads.
SMALL_JOB_PATCHES = 16

#: A job whose batches were lost with their device this many times fails (a batch that kills
#: every worker it runs on must not circulate for ever).
MAX_REQUEUES = 8

#: Seconds past its due time that a batch is left to an idle device already holding its model
#: before another device loads the model to run it (remote devices only).
AFFINITY_GRACE = 0.05


class DeviceLost(RuntimeError):
    """A remote device (a Ray actor, its node) went away with a batch: the batch runs again elsewhere."""


@dataclass
class SchedulerSettings:
    """Tuning of the scheduler; the defaults suit one GPU or a laptop CPU."""

    devices: list[str] = field(default_factory=lambda: ["cpu"])
    batch_size: dict[str, int] = field(default_factory=dict)  # device kind -> patches per batch
    max_wait: float = 0.02  # seconds the oldest ready patch may wait for a fuller batch
    prefetch: int = 0  # cut patches held ahead per job (0: two batches)
    readers: int = 2  # threads cutting patches
    prepare_threads: int = 2
    prepare_per_owner: int | None = None  # preparations one owner may run at once (None: prepare_threads - 1)
    post_threads: int = 2  # catalogue writing, and whole-image (classic) jobs on as many threads again
    model_budget_bytes: int = 4 * 1024**3  # resident networks per device
    compile: bool = False  # torch.compile networks on GPUs (faster; each batch size compiles once)

    def batch_for(self, device: str) -> int:
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return int(self.batch_size.get(device, self.batch_size.get(kind, 64 if kind == "cuda" else 2)))


@dataclass
class _Group:
    """Jobs whose patches may share a batch."""

    key: ModelKey
    card: ModelCard
    jobs: list[JobWork] = field(default_factory=list)
    batch_limit: int | None = None  # lowered after an out-of-memory error
    turn: int = 0  # round-robin position over owners


class BatchingScheduler:
    """Runs detection jobs with cross-job batching on one or more devices."""

    SWITCH_INTERVAL = 0.0005  # seconds (Python's default is 0.005)

    def __init__(self, runner: JobRunner, settings: SchedulerSettings | None = None,
                 metrics: SchedulerMetrics | None = None,
                 device_runner_factory: Callable[[str, SchedulerMetrics], DeviceRunner] | None = None) -> None:
        self.runner = runner
        self.settings = settings or SchedulerSettings()
        self.metrics = metrics or SchedulerMetrics()
        self._callbacks: ExecutionCallbacks | None = None
        self._cond = threading.Condition()
        self._groups: dict[tuple, _Group] = {}
        self._works: dict[str, JobWork] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._pools: dict[tuple[int, ...], PinnedPool] = {}
        self._running = False
        self._threads: list[threading.Thread] = []
        self._requeues: dict[str, int] = {}
        self.cache = ModelCache(self._load, self.settings.model_budget_bytes,
                                on_load=self.metrics.model_loaded, on_hit=self.metrics.model_hit)
        factory = device_runner_factory or DeviceRunner
        if factory is DeviceRunner:
            self.devices = [DeviceRunner(device, self.metrics, compile=self.settings.compile)
                            for device in self.settings.devices]
        else:
            self.devices = [factory(device, self.metrics) for device in self.settings.devices]
        if sum(1 for d in self.devices if getattr(d, "is_cuda", False)) > 1:
            # CUDA graph capture on one GPU's worker broke the other workers' launches when tried
            # on two GPUs; with several GPUs, batches run eagerly until that is resolved
            for runner in self.devices:
                runner.use_graphs = False
            log.info("several GPUs: CUDA graphs are off, batches run eagerly")
        self._prepare: OwnerFairPool | None = None
        self._whole: OwnerFairPool | None = None
        self._reader = self._post = self._finish = None
        self.metrics.watch(self)

    # -- JobExecutor -------------------------------------------------------------------------
    def attach(self, callbacks: ExecutionCallbacks) -> None:
        self._callbacks = callbacks

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        s = self.settings
        if any(d.is_cuda for d in self.devices) and sys.getswitchinterval() > self.SWITCH_INTERVAL:
            # the device thread returns to Python after every CUDA call and must win the
            # interpreter lock back from readers and post-processing at once to keep a GPU fed
            sys.setswitchinterval(self.SWITCH_INTERVAL)
        # preparation (opening, fetching, validating images) and whole-image jobs are shared out
        # between owners, so one owner's slow downloads or many classic jobs never hold them all
        self._prepare = OwnerFairPool(s.prepare_threads, s.prepare_per_owner, name="otf-prepare")
        self._whole = OwnerFairPool(s.post_threads, name="otf-whole")
        self._reader = ThreadPoolExecutor(s.readers, thread_name_prefix="otf-reader")
        # decoding by urgency (a click's batch before a survey's queued ones), and the catalogues of
        # large jobs on threads of their own, shared out between owners: a survey's second NMS,
        # measurement and files never hold the threads another user's click is decoded on
        self._post = PriorityPool(s.post_threads, name="otf-post")
        self._finish = OwnerFairPool(s.post_threads, name="otf-finish")
        for device in self.devices:
            thread = threading.Thread(target=self._device_loop, args=(device,), daemon=True,
                                      name=f"otf-device-{device.device}")
            thread.start()
            self._threads.append(thread)

    def shutdown(self, wait: bool = True) -> None:
        with self._cond:
            self._running = False
            for event in self._cancel.values():
                event.set()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(30 if wait else 0)
        self._threads = []
        for fair in (self._prepare, self._whole, self._post, self._finish):
            if fair is not None:
                fair.shutdown(wait=wait)
        if self._reader is not None:
            self._reader.shutdown(wait=wait, cancel_futures=True)
        self._prepare = self._whole = self._reader = self._post = self._finish = None

    def submit(self, job: Job) -> None:
        if not self._running:
            self.start()
        with self._cond:
            cancelled = self._cancel.setdefault(job.job_id, threading.Event())
        self.metrics.job_queued(job.job_id)
        self._prepare.submit(job.owner, lambda: self._prepare_job(job, cancelled))

    def cancel(self, job_id: str) -> None:
        with self._cond:
            event = self._cancel.get(job_id)
            if event is not None:
                event.set()
            work = self._works.pop(job_id, None)
            if work is not None:
                work.drop_ready()
                self._detach(work)
            self._cond.notify_all()
        if work is not None:
            work.prepared.close()

    # -- preparation ----------------------------------------------------------------------------
    def _prepare_job(self, job: Job, cancelled: threading.Event) -> None:
        callbacks = self._callbacks
        assert callbacks is not None
        if cancelled.is_set() or not callbacks.job_started(job.job_id):
            self._forget(job.job_id)
            return
        self.metrics.job_started(job.job_id)
        try:
            prepared = self.runner.prepare(job, cancelled)
        except BaseException as exc:  # noqa: BLE001 - reported to the job
            self._fail(job.job_id, exc)
            return
        detection = prepared.detection
        if detection is None:
            self._run_whole(job, prepared, cancelled)
            return
        key = model_key(prepared.card, prepared.precision, "any")
        batch = max(self.settings.batch_for(d.device) for d in self.devices)
        work = JobWork(job.job_id, job.owner, prepared.card, key, detection, prepared,
                       prefetch=self.settings.prefetch or 2 * batch)
        callbacks.job_progress(job.job_id, 0, work.total)
        with self._cond:
            if cancelled.is_set():
                prepared.close()
                return
            self._works[job.job_id] = work
            group = self._groups.get(key.group)
            if group is None:
                group = self._groups[key.group] = _Group(key, prepared.card)
            group.jobs.append(work)
            self._schedule_fill(work)

    def _run_whole(self, job: Job, prepared: PreparedJob, cancelled: threading.Event) -> None:
        """Jobs without a network (the classic finder) run in one go on a post thread."""
        def run() -> None:
            try:
                table = prepared.detect_whole(lambda d, t: self._progress(job.job_id, d, t, cancelled))
                self._complete(job.job_id, prepared, table)
            except BaseException as exc:  # noqa: BLE001
                prepared.close()
                self._fail(job.job_id, exc)
        self._whole.submit(job.owner, run)

    # -- reading patches ---------------------------------------------------------------------
    def _schedule_fill(self, work: JobWork) -> None:
        """Ask a reader thread to cut more of `work`'s patches (call under the lock)."""
        if work.needs_fill() and self._reader is not None:
            work.filling = True
            self._reader.submit(self._fill, work)

    def _fill(self, work: JobWork) -> None:
        chunk = 8
        try:
            while True:
                with self._cond:
                    wanted = min(chunk, work.prefetch - len(work.ready), work.total - work.next_tile)
                    if wanted <= 0 or work.cancelled.is_set() or not self._running:
                        work.filling = False
                        return
                    tiles = work.tiles[work.next_tile: work.next_tile + wanted]
                    work.next_tile += wanted
                pool = self._pool_for(work)
                patches = [work.cut(tile, pool) for tile in tiles]
                with self._cond:
                    work.ready.extend(patches)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - an unreadable image fails its job only
            with self._cond:
                work.filling = False
            self._fail_work(work, exc)

    def _pool_for(self, work: JobWork) -> PinnedPool | None:
        """The pinned buffer pool for this job's patch shape (GPUs only)."""
        if not any(d.is_cuda for d in self.devices):
            return None
        shape = (work.channels, work.patch_size[1], work.patch_size[0])
        with self._cond:
            pool = self._pools.get(shape)
            if pool is None:
                batch = max(self.settings.batch_for(d.device) for d in self.devices)
                pool = self._pools[shape] = PinnedPool(shape, max(4 * batch, 128))
            return pool

    # -- batching ------------------------------------------------------------------------------
    def _due(self, group: _Group, batch: int, now: float) -> tuple[bool, float]:
        """Whether the group should run now, else when its oldest patch will have waited enough."""
        ready = sum(len(w.ready) for w in group.jobs)
        if ready == 0:
            return False, math.inf
        if ready >= batch:
            return True, now
        oldest = min(w.oldest_ready() for w in group.jobs if w.ready)
        deadline = oldest + self.settings.max_wait
        return deadline <= now, deadline

    def _compose(self, group: _Group, batch: int) -> list[tuple[JobWork, list[ReadyPatch]]]:
        """Owners take turns; each owner's job with the fewest remaining patches goes first."""
        owners: dict[str | None, list[JobWork]] = {}
        for work in group.jobs:
            if work.ready:
                owners.setdefault(work.owner, []).append(work)
        for jobs in owners.values():
            jobs.sort(key=lambda w: (w.remaining, w.submitted_at))
        order = sorted(owners, key=str)
        if order:
            shift = group.turn % len(order)
            order = order[shift:] + order[:shift]
            group.turn += 1
        taken: dict[str, tuple[JobWork, list[ReadyPatch]]] = {}
        room = batch
        while room > 0 and order:
            quota = max(1, room // len(order))
            still = []
            for owner in order:
                jobs = [w for w in owners[owner] if w.ready]
                if not jobs or room <= 0:
                    continue
                work = jobs[0]
                patches = work.take(min(quota, room))
                room -= len(patches)
                entry = taken.setdefault(work.job_id, (work, []))
                entry[1].extend(patches)
                if any(w.ready for w in owners[owner]):
                    still.append(owner)
            order = still
        for work, _ in taken.values():
            self._schedule_fill(work)
        return list(taken.values())

    def _next_batch(self, device: DeviceRunner, block: bool = True
                    ) -> tuple[_Group, list[tuple[JobWork, list[ReadyPatch]]]] | None:
        """The next due batch; blocks until one is due unless `block` is False (None then).

        A remote device ranks the due groups by `device.affinity(group)` (0: it holds the model,
        1: it would load it, 2: a less loaded device holds it) so that batches go where their
        model is resident, and loads elsewhere only when the holders are busy.
        """
        affinity = getattr(device, "affinity", None)
        with self._cond:
            while self._running:
                now = time.monotonic()
                best, best_rank, wake = None, (math.inf, math.inf), math.inf
                for group in self._groups.values():
                    batch = group.batch_limit or self.settings.batch_for(device.device)
                    due, deadline = self._due(group, batch, now)
                    if due:
                        oldest = min(w.oldest_ready() for w in group.jobs if w.ready)
                        place = affinity(group.key.group) if affinity is not None else 0
                        if place >= 2:  # an idle device holds this model: leave the batch to it a moment
                            overdue = oldest + self.settings.max_wait + AFFINITY_GRACE
                            if now < overdue:
                                wake = min(wake, overdue)
                                continue
                            place = 1
                        if (place, oldest) < best_rank:
                            best, best_rank = group, (place, oldest)
                    else:
                        wake = min(wake, deadline)
                if best is not None:
                    batch = best.batch_limit or self.settings.batch_for(device.device)
                    return best, self._compose(best, batch)
                if not block:
                    return None
                self._cond.wait(timeout=min(max(wake - now, 0.001), 0.5) if wake < math.inf else 0.5)
        return None

    def _device_loop(self, device: DeviceRunner) -> None:
        """Launch a batch, then collect the previous one while the device computes this one."""
        pending = None
        clock = self.metrics.device_time(device.device)
        bind = getattr(device, "bind_thread", None)
        if bind is not None:
            try:
                bind()
            except Exception:  # noqa: BLE001 - serve anyway: each batch then fails its jobs with
                # the device's error, instead of a dead worker leaving them EXECUTING for ever
                log.exception("device worker %s: could not bind the device", device.device)
        ready = getattr(device, "ready", None)  # remote devices: False while their worker is away
        pipelined = getattr(device, "pipelined", device.is_cuda)  # launch returns before the batch is run
        while True:
            if ready is not None and pending is None and not ready():
                if not self._running:
                    return
                with clock("waiting for the device"):
                    time.sleep(0.1)
                continue
            with clock("waiting for patches"):
                picked = self._next_batch(device, block=pending is None)
            launched = None
            if picked is not None and picked[1]:
                try:
                    with clock("staging and launching"):
                        launched = self._launch(device, *picked)
                except BaseException:  # noqa: BLE001 - the worker must keep serving
                    log.exception("device worker %s: unexpected failure", device.device)
            if pending is not None:
                try:
                    with clock("waiting for results"):
                        self._collect(device, *pending)
                except BaseException:  # noqa: BLE001
                    log.exception("device worker %s: unexpected failure", device.device)
            pending = launched
            if pending is not None and not pipelined:
                # a CPU batch is already computed when launch returns: hand it out now rather
                # than after the next batch (which would add a whole batch of latency)
                try:
                    with clock("waiting for results"):
                        self._collect(device, *pending)
                except BaseException:  # noqa: BLE001
                    log.exception("device worker %s: unexpected failure", device.device)
                pending = None
            if picked is None and pending is None and not self._running:
                return

    def _launch(self, device: DeviceRunner, group: _Group, parts: list[tuple[JobWork, list[ReadyPatch]]]):
        """Queue a batch on the device; returns what `_collect` needs, or None if it did not run."""
        key = ModelKey(group.key.name, group.key.version, group.key.weights, group.key.signature,
                       group.key.precision, device.device)
        try:
            # a remote device loads the network where it runs: it is handed the key
            network = key if getattr(device, "remote", False) else self.cache.get(group.card, key)
        except BaseException as exc:  # noqa: BLE001 - fails the jobs that need this model only
            message = f"model {group.key.name} could not be loaded: {exc}"
            for _, patches in parts:
                release_all(patches)
            for work in list(group.jobs):
                self._fail_work(work, exc if isinstance(exc, UserInputError) else UserInputError(message))
            return None
        batch = [p for _, patches in parts for p in patches]
        try:
            launched = device.launch(network, group.card, batch)
        except OutOfDeviceMemory:
            self._shrink(device, group, parts, len(batch))
            return None
        except DeviceLost as exc:
            self._requeue(device, parts, exc)
            return None
        except BaseException as exc:  # noqa: BLE001 - a failing forward fails the jobs in the batch
            release_all(batch)
            for work, _ in parts:
                self._fail_work(work, exc)
            return None
        return group, parts, launched

    def _collect(self, device: DeviceRunner, group: _Group, parts: list[tuple[JobWork, list[ReadyPatch]]],
                 launched: Launched) -> None:
        try:
            outputs, elapsed = device.collect(launched)
        except DeviceLost as exc:
            self._requeue(device, parts, exc)
            return
        except OutOfDeviceMemory:  # a remote device reports it with the results
            self._shrink(device, group, parts, sum(len(patches) for _, patches in parts))
            return
        except BaseException as exc:  # noqa: BLE001
            for work, patches in parts:
                release_all(patches)
                self._fail_work(work, exc)
            return
        for _, patches in parts:  # the copies to the device are done: the buffers can be reused
            release_all(patches)
        size = sum(len(patches) for _, patches in parts)
        self.metrics.batch_done(group.key.name, device.device, size, elapsed)
        owners = len({work.owner for work, _ in parts})  # a shared service batches its users together
        log.info("batch model=%s precision=%s size=%d jobs=%d owners=%d device=%s ms=%.1f", group.key.name,
                 group.key.precision, size, len(parts), owners, device.device, 1000 * elapsed)
        offset = 0
        for work, patches in parts:
            share = outputs[offset: offset + len(patches)]
            offset += len(patches)
            self._post.submit(work.total, lambda w=work, p=patches, o=share: self._decode(w, p, o))

    def _shrink(self, device: DeviceRunner, group: _Group, parts: list[tuple[JobWork, list[ReadyPatch]]],
                size: int) -> None:
        """After an out-of-memory error: halve the group's batch and put the patches back."""
        new_limit = max(1, size // 2)
        log.warning("out of memory on %s with a batch of %d; retrying with %d", device.device, size, new_limit)
        with self._cond:
            group.batch_limit = new_limit
            for work, patches in parts:
                work.give_back(patches)
            self._cond.notify_all()
        if size == 1:  # cannot be split further: these jobs cannot run on this device
            for work, _ in parts:
                self._fail_work(work, UserInputError("the model does not fit in the device memory"))

    def _requeue(self, device: DeviceRunner, parts: list[tuple[JobWork, list[ReadyPatch]]],
                 exc: BaseException) -> None:
        """A batch lost with its device: its patches go back to the front of their jobs' queues,
        for any device to run again (at least once; a patch's outputs are only ever decoded once,
        since the lost batch's never arrive)."""
        size = sum(len(patches) for _, patches in parts)
        log.warning("device %s lost a batch of %d patches (%s); queued again", device.device, size, exc)
        exhausted = []
        with self._cond:
            for work, patches in parts:
                if work.failed or work.cancelled.is_set():
                    continue
                count = self._requeues[work.job_id] = self._requeues.get(work.job_id, 0) + 1
                work.give_back(patches)
                if count >= MAX_REQUEUES:
                    exhausted.append(work)
            self._cond.notify_all()
        for work in exhausted:
            self._fail_work(work, RuntimeError(f"the job's batches were lost with their device {MAX_REQUEUES} "
                                               f"times, the last time on {device.device}: {exc}"))

    # -- post-processing ---------------------------------------------------------------------
    def _decode(self, work: JobWork, patches: list[ReadyPatch], outputs: np.ndarray) -> None:
        if work.cancelled.is_set() or work.failed:
            return
        try:
            work.decode(patches, outputs)
        except BaseException as exc:  # noqa: BLE001 - a post-processing crash fails this job only
            self._fail_work(work, exc)
            return
        with self._cond:
            work.done += len(patches)
            work.in_flight -= len(patches)
            finished = work.done >= work.total and not work.failed and not work.cancelled.is_set()
            if finished:
                self._works.pop(work.job_id, None)
                self._detach(work)
        self._progress(work.job_id, work.done, work.total, work.cancelled, throttle=not finished, work=work)
        if finished:
            finish = self._finish
            if work.total <= SMALL_JOB_PATCHES or finish is None:
                self._finish_job(work)  # a click's catalogue: cheaper than a hand-over
            else:
                finish.submit(work.owner, lambda: self._finish_job(work))

    def _finish_job(self, work: JobWork) -> None:
        """The catalogue of a job whose patches are all decoded, and its result files."""
        try:
            table = work.detection.catalogue()
            self._complete(work.job_id, work.prepared, table)
        except BaseException as exc:  # noqa: BLE001
            self._fail(work.job_id, exc)

    def _progress(self, job_id: str, done: int, total: int, cancelled: threading.Event,
                  throttle: bool = False, work: JobWork | None = None) -> None:
        if cancelled.is_set():
            raise JobCancelled(job_id)
        if throttle and work is not None:
            now = time.monotonic()
            if now - work.last_progress < 0.5:
                return
            work.last_progress = now
        if self._callbacks is not None:
            self._callbacks.job_progress(job_id, done, total)

    def _complete(self, job_id: str, prepared: PreparedJob, table: Table) -> None:
        with self._cond:
            cancelled = self._cancel.get(job_id)
        try:
            if cancelled is not None and cancelled.is_set():
                raise JobCancelled(job_id)
            outcome = self.runner.finish(prepared, table)
        except BaseException as exc:  # noqa: BLE001
            aborted = cancelled is not None and cancelled.is_set()  # aborted while finishing: nothing kept
            self._fail(job_id, JobCancelled(job_id) if aborted else exc)
            return
        finally:
            prepared.close()
        self._forget(job_id)
        self.metrics.job_finished(job_id)
        if self._callbacks is not None:
            self._callbacks.job_completed(job_id, outcome.results, outcome.warnings)

    def _fail_work(self, work: JobWork, exc: BaseException) -> None:
        with self._cond:
            if work.failed:
                return
            work.failed = True
            work.drop_ready()
            self._works.pop(work.job_id, None)
            self._detach(work)
        work.prepared.close()
        self._fail(work.job_id, exc)

    def _fail(self, job_id: str, exc: BaseException) -> None:
        self._forget(job_id)
        self.metrics.job_finished(job_id)
        if self._callbacks is not None:
            report_failure(self._callbacks, job_id, exc)

    def _detach(self, work: JobWork) -> None:
        for gkey, group in list(self._groups.items()):
            if work in group.jobs:
                group.jobs.remove(work)
                if not group.jobs:
                    del self._groups[gkey]

    def _forget(self, job_id: str) -> None:
        with self._cond:
            self._cancel.pop(job_id, None)
            self._requeues.pop(job_id, None)

    # -- introspection (metrics, tests) ------------------------------------------------------------
    def queued_patches(self, owner: str | None) -> int:
        """Patches the owner's prepared jobs have still to run (cut or not; the service's patch quota)."""
        with self._cond:
            return sum(w.total - w.done for w in self._works.values() if w.owner == owner)

    def queue_depths(self) -> dict[str, int]:
        """Patches waiting (cut or not) per model."""
        with self._cond:
            depths: dict[str, int] = {}
            for group in self._groups.values():
                waiting = sum(w.total - w.done - w.in_flight for w in group.jobs)
                depths[group.key.name] = depths.get(group.key.name, 0) + waiting
            return depths

    def _load(self, card: ModelCard, device: str, precision: str) -> torch.nn.Module:
        from ..pipeline import prepare_network

        network = prepare_network(card, device=device, precision=precision)
        return DeviceRunner.optimise(network, device)
