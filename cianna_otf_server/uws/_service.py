"""The UWS verbs: create, start, abort, delete, get (with WAIT), list, and the updates.

`JobService` owns the job state machine. It stores through a `SqlJobStore`, keeps files through
`JobFiles`, hands QUEUED jobs to an executor (a worker pool now, the batching scheduler later:
both implement `JobExecutor`) and receives its callbacks. Handlers call it; it never sees HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from ..errors import StorageError
from ._errors import (
    InvalidPhaseError,
    InvalidRequestError,
    PayloadTooLargeError,
    OwnerQuotaError,
    ServiceBusyError,
    StorageQuotaError,
    UnknownJobError,
    UnknownResourceError,
)
from ._events import JobEvents
from ._files import JobFiles
from ._models import (
    ValidatedParameters,
    ABORTABLE_PHASES,
    ACTIVE_PHASES,
    ErrorSummary,
    Job,
    JobFilter,
    JobParameter,
    JobResult,
    Phase,
    parse_time,
    utc_now,
)
from ._sql import SqlJobStore
from ._storage import file_error
from ._xml import has_non_xml_characters, xml_safe

log = logging.getLogger(__name__)

#: Parameters the UWS layer itself interprets; they are job fields, not detection parameters.
#: Bounds of a request's fields: a job list or document must stay small whatever a client sends.
MAX_PARAMETERS = 64
MAX_NAME_CHARS = 64
MAX_VALUE_CHARS = 4096

UWS_CONTROL = {"PHASE", "RUNID", "EXECUTIONDURATION", "DESTRUCTION", "ACTION", "WAIT", "REQUEST"}



class _AllOwners(str):
    """The owner argument that reaches every owner's jobs (a service administrator's requests).

    A distinct object, never a user name: comparisons are by identity, so a user who calls
    themselves "*" or anything else reaches only their own jobs.
    """

    __slots__ = ()


ALL_OWNERS = _AllOwners("(all owners)")

@dataclass
class Upload:
    """An inline (multipart) upload for parameter `name`, received into the file `path` (`size` bytes).

    Uploads are streamed to disk as they arrive; keeping one for a job moves the file.
    """

    name: str
    filename: str
    path: Path
    size: int


@dataclass
class ServiceLimits:
    """Configurable limits; each one, when hit, gives the user a clear message."""

    max_upload_bytes: int = 2 * 1024**3
    max_queued_per_owner: int = 100
    max_queued_patches_per_owner: int = 0  # patches of one user's queued/running jobs; 0 = no limit
    max_queued_total: int = 1000
    max_storage_per_owner: int = 0  # bytes of job files (uploads, results) per user; 0 = no limit
    retry_after_seconds: int = 30
    default_execution_duration: int = 3600  # seconds; 0 = unlimited
    max_execution_duration: int = 24 * 3600
    default_destruction: timedelta = field(default_factory=lambda: timedelta(days=7))
    max_destruction: timedelta = field(default_factory=lambda: timedelta(days=30))
    max_wait_seconds: float = 300.0  # below pyvo's 600 s client-side timeout


class ParameterPolicy(Protocol):
    """Validates and normalises a job's parameters (detection knobs, model names, regions)."""

    def validate(self, parameters: list[JobParameter]) -> ValidatedParameters:
        """The canonical parameters and the worker's typed request, or `InvalidRequestError` with a clear message."""


class ExecutionCallbacks(Protocol):
    """What an executor reports back to the service."""

    def job_started(self, job_id: str) -> bool: ...
    def job_progress(self, job_id: str, done: int, total: int) -> None: ...
    def job_completed(self, job_id: str, results: list[JobResult], warnings: Sequence[str] = ()) -> None: ...
    def job_failed(self, job_id: str, message: str, detail: str | None = None, error_type: str = "fatal") -> None: ...
    def job_stopped(self, job_id: str) -> None: ...


class JobExecutor(Protocol):
    """Runs QUEUED jobs. The local worker pool and the batching scheduler both implement it."""

    def attach(self, callbacks: ExecutionCallbacks) -> None: ...
    def submit(self, job: Job) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def start(self) -> None: ...
    def shutdown(self, wait: bool = True) -> None: ...


class PatchCounting(Protocol):
    """An executor that knows how many patches each owner's jobs still hold (the batching scheduler)."""

    def queued_patches(self, owner: str | None) -> int: ...


class JobService:
    """The UWS job state machine, shared by the standalone server and the Jupyter extension."""

    def __init__(
        self,
        store: SqlJobStore,
        files: JobFiles,
        executor: JobExecutor,
        policy: ParameterPolicy,
        href: Callable[[str, str], str],
        limits: ServiceLimits | None = None,
        events: JobEvents | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.executor = executor
        self.policy = policy
        self.href = href
        self.limits = limits or ServiceLimits()
        self.events = events or JobEvents()
        executor.attach(self)

    # -- lifecycle ------------------------------------------------------------------------
    def startup(self) -> None:
        """Start the executor, remove folders no job owns, requeue what was QUEUED or EXECUTING."""
        self.executor.start()
        self.reap_orphan_folders()
        self.recover()

    def shutdown(self, wait: bool = True) -> None:
        self.executor.shutdown(wait=wait)

    def recover(self) -> list[str]:
        """After a restart: EXECUTING jobs go back to QUEUED (their partial output is discarded)."""
        requeued = []
        for job_id in self.store.ids_in_phase([Phase.EXECUTING]):
            self.files.discard_partial(job_id)
            if self.store.transition(job_id, [Phase.EXECUTING], phase=Phase.QUEUED, start_time=None,
                                     progress_done=0):
                log.warning("job %s was executing when the service stopped; queued again", job_id)
        for job_id in self.store.ids_in_phase([Phase.QUEUED]):
            job = self.store.get(job_id)
            if job is not None:
                self.executor.submit(job)
                requeued.append(job_id)
        return requeued

    def reap_orphan_folders(self) -> list[str]:
        """Remove the job folders that no job in the store owns; return their names.

        They are what a deleted or replaced database leaves behind (or a crash between a
        folder's creation and its job's row): nothing can reach them, and uploads are large.
        """
        jobs = self.files.root / "jobs"
        known = self.store.job_ids()
        orphans = sorted(p.name for p in jobs.iterdir() if p.is_dir() and p.name not in known) \
            if jobs.is_dir() else []
        for name in orphans:
            shutil.rmtree(jobs / name, ignore_errors=True)
        if orphans:
            shown = ", ".join(orphans[:10]) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
            log.warning("removed %d job folder(s) under %s that no job in the database owns: %s",
                        len(orphans), jobs, shown)
        return orphans

    # -- access ---------------------------------------------------------------------------
    def get(self, owner: str | None, job_id: str) -> Job:
        """The job, if it exists and belongs to `owner` (another owner's job is reported unknown).

        `ALL_OWNERS` (a service administrator's reach) reaches every job.
        """
        job = self.store.get(job_id)
        if job is None or (owner is not ALL_OWNERS and job.owner != owner):
            raise UnknownJobError(f"no job {job_id!r}")
        return job

    async def wait(self, owner: str | None, job_id: str, timeout: float, phase: Phase | None = None) -> Job:
        """UWS blocking WAIT: return when the job leaves `phase` (or any change), or at the timeout.

        Returns at once if the job is not in an active phase, or if `phase` no longer matches.
        A negative timeout means "as long as the server allows" (`max_wait_seconds`).
        """
        if math.isnan(timeout):
            raise InvalidRequestError("WAIT must be a number of seconds, not NaN")
        job = self.get(owner, job_id)
        limit = self.limits.max_wait_seconds
        timeout = limit if timeout < 0 else min(timeout, limit)
        deadline = asyncio.get_running_loop().time() + timeout
        start_phase = job.phase
        while job.phase in ACTIVE_PHASES and (phase is None or job.phase == phase):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            # this process's own changes wake the waiter at once; another replica's (a shared
            # store) are seen by reading the record again within the store's polling bound
            poll = getattr(self.store, "change_poll_seconds", None)
            await self.events.wait(job_id, remaining if poll is None else min(remaining, poll))
            job = self.get(owner, job_id)
            if phase is None and job.phase != start_phase:
                break
        return job

    def list_jobs(self, owner: str | None, filters: JobFilter) -> list[Job]:
        """`owner`'s jobs matching the UWS filters; every owner's for `ALL_OWNERS`."""
        if owner is ALL_OWNERS:
            return self.store.list(None, filters, all_owners=True)
        return self.store.list(owner, filters)

    def result_path(self, owner: str | None, job_id: str, result_id: str):
        job = self.get(owner, job_id)
        for result in job.results:
            if result.result_id == result_id:
                return self.files.result_file(job_id, result.file_name), result
        raise UnknownResourceError(f"job {job_id} has no result {result_id!r}")

    def upload_path(self, owner: str | None, job_id: str, name: str):
        job = self.get(owner, job_id)
        for parameter in job.parameters:
            if parameter.name.upper() == name.upper() and parameter.by_reference:
                path = self.files.upload_file(job_id, parameter.name)
                if path.is_file():
                    return path
        raise UnknownResourceError(f"job {job_id} has no uploaded parameter {name!r}")

    # -- creation -------------------------------------------------------------------------
    def create(self, owner: str | None, parameters: list[tuple[str, str]], uploads: Iterable[Upload] = ()) -> Job:
        """Create a job from form parameters and uploads; ``PHASE=RUN`` queues it before returning."""
        uploads = list(uploads)
        control, detection = self._split(parameters)
        run = control.get("PHASE")
        if run is not None and run.strip().upper() != "RUN":
            raise InvalidRequestError(f"PHASE={run} is not allowed at creation; use PHASE=RUN or nothing")
        for upload in uploads:
            if upload.size > self.limits.max_upload_bytes:
                raise PayloadTooLargeError(
                    f"upload {upload.name!r} is {upload.size} bytes; the limit is {self.limits.max_upload_bytes}"
                )
        job_id = secrets.token_hex(8)
        now = utc_now()
        for upload in uploads:
            detection = [p for p in detection if p.name.upper() != upload.name.upper()]
            detection.append(JobParameter(upload.name.upper(), self.href(job_id, f"parameters/{upload.name.upper()}"),
                                          by_reference=True, is_post=True))
        validated = self.policy.validate(detection)
        job = Job(
            job_id=job_id,
            owner=owner,
            phase=Phase.PENDING,
            creation_time=now,
            run_id=control.get("RUNID"),
            execution_duration=self._execution_duration(control.get("EXECUTIONDURATION")),
            destruction=self._destruction(control.get("DESTRUCTION"), now),
            parameters=validated.parameters,
            spec=validated.spec,
        )
        if run is not None:
            self._check_queue_room(owner)
        self._check_storage_room(owner, sum(upload.size for upload in uploads))
        try:
            self.files.create(job_id)
            for upload in uploads:
                self.files.store_upload(job_id, upload.name.upper(), upload.path)
            self.store.add(job)
        except OSError as exc:  # the job folder: a full or read-only disk is the service's failure
            self.files.delete(job_id)
            error = file_error(exc, "create the job")
            if error is None:
                raise
            log.error("could not create job %s in %s: %s", job_id, self.files.root, exc)
            raise error from exc
        except BaseException:  # the store rolled back: no row, and now no folder
            self.files.delete(job_id)
            raise
        if run is not None:
            try:
                self._queue(job)
            except StorageError:  # created but not queued: the client never learns its id, so undo it
                self._undo_creation(job_id)
                raise
        return self.store.get(job_id) or job

    def _undo_creation(self, job_id: str) -> None:
        try:
            self.executor.cancel(job_id)
            self.store.delete(job_id)
        except StorageError:
            log.error("job %s was created but could not be queued nor removed; it stays PENDING", job_id)
            return
        self.files.delete(job_id)

    async def run_sync(self, owner: str | None, parameters: list[tuple[str, str]], uploads: Iterable[Upload],
                       timeout: float) -> Job:
        """Create and queue a job (any ``PHASE`` given is replaced by RUN), then wait for its end.

        Returns the job once it is no longer QUEUED or EXECUTING, or after `timeout` seconds
        (then still running: the caller continues with it as an asynchronous job).
        """
        parameters = [(k, v) for k, v in parameters if k.upper() != "PHASE"] + [("PHASE", "RUN")]
        job = self.create(owner, parameters, uploads)
        deadline = asyncio.get_running_loop().time() + timeout
        while job.phase in (Phase.QUEUED, Phase.EXECUTING):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            job = await self.wait(owner, job.job_id, left)
        return job

    def _split(self, parameters: list[tuple[str, str]]) -> tuple[dict[str, str], list[JobParameter]]:
        if len(parameters) > MAX_PARAMETERS:
            raise InvalidRequestError(f"a job takes at most {MAX_PARAMETERS} parameters, not {len(parameters)}")
        control: dict[str, str] = {}
        detection: list[JobParameter] = []
        for name, value in parameters:
            key = name.upper()
            if len(name) > MAX_NAME_CHARS:
                raise InvalidRequestError(f"a parameter name is longer than {MAX_NAME_CHARS} characters")
            if len(value) > MAX_VALUE_CHARS:  # never echoed: the name alone, cut short
                raise InvalidRequestError(
                    f"parameter {xml_safe(name[:40])!r} is longer than {MAX_VALUE_CHARS} characters")
            if has_non_xml_characters(name) or has_non_xml_characters(value):
                raise InvalidRequestError(
                    f"parameter {xml_safe(name)!r} holds control characters, which a UWS job cannot carry")
            if key in UWS_CONTROL:
                control[key] = value
            else:
                detection = [p for p in detection if p.name.upper() != key]  # last one wins
                detection.append(JobParameter(key, value))
        return control, detection

    def _execution_duration(self, text: str | None) -> int:
        if text is None:
            return self.limits.default_execution_duration
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            raise InvalidRequestError(f"EXECUTIONDURATION must be a number of seconds, not {text!r}")
        if number < 0:
            raise InvalidRequestError("EXECUTIONDURATION must not be negative")
        limit = self.limits.max_execution_duration
        if limit and (number == 0 or number > limit):
            return limit  # UWS: the server may shorten what is asked for
        return int(min(number, 2**31 - 1))  # xs:int in the job document

    def _destruction(self, text: str | None, now: datetime) -> datetime:
        latest = now + self.limits.max_destruction
        if text is None:
            return now + self.limits.default_destruction
        try:
            when = parse_time(text)
        except ValueError:
            raise InvalidRequestError(f"DESTRUCTION must be an ISO 8601 instant, not {text!r}") from None
        return min(when, latest)

    def _check_queue_room(self, owner: str | None) -> None:
        waiting = [Phase.QUEUED, Phase.EXECUTING]
        if self.store.count(waiting) >= self.limits.max_queued_total:
            raise ServiceBusyError("the service queue is full; try again later",
                                   retry_after=self.limits.retry_after_seconds)
        if self.store.count(waiting, owner, any_owner=False) >= self.limits.max_queued_per_owner:
            raise OwnerQuotaError(
                f"you have {self.limits.max_queued_per_owner} jobs queued or running, the most allowed; "
                "wait for some to finish", retry_after=self.limits.retry_after_seconds)
        self._check_patch_room(owner)

    def _check_patch_room(self, owner: str | None) -> None:
        """Refuse a new job (429) while its owner's jobs hold their share of patches.

        The job count alone lets one user queue a few whole-survey jobs, hundreds of thousands
        of patches, ahead of everybody's clicks on a shared GPU. The patches a job holds are known
        once it is prepared, so a user under the limit may start one more job of any size; then
        they wait until their backlog drains below it.
        """
        limit = self.limits.max_queued_patches_per_owner
        counting = getattr(self.executor, "queued_patches", None)
        if not limit or counting is None:
            return
        held = counting(owner)
        if held >= limit:
            raise OwnerQuotaError(
                f"your queued and running jobs hold {held} patches still to run, the most allowed is {limit}; "
                "wait for them to progress (or abort one)", retry_after=self.limits.retry_after_seconds)

    def _check_storage_room(self, owner: str | None, incoming: int) -> None:
        """Refuse a new job when its owner's jobs already hold their share of the disk (403).

        A shared service's disk is every user's: one user's uploads and results must not fill
        it for the others (a full disk fails everybody's jobs). Deleting finished jobs, or
        letting them reach their destruction time, makes room.
        """
        limit = self.limits.max_storage_per_owner
        if not limit:
            return
        jobs = self.store.list(owner, JobFilter(), include_archived=True)
        used = sum(self.files.job_bytes(job.job_id) for job in jobs)
        if used + incoming > limit:
            mb = 1024 * 1024
            raise StorageQuotaError(
                f"your {len(jobs)} jobs hold {used / mb:.1f} MB of the {limit / mb:.1f} MB each user may keep"
                + (f" and this job brings {incoming / mb:.1f} MB more" if incoming else "")
                + "; delete finished jobs (DELETE on the job's URL) to make room")

    def _queue(self, job: Job) -> None:
        if self.store.transition(job.job_id, [Phase.PENDING, Phase.HELD], phase=Phase.QUEUED):
            self.events.notify(job.job_id)
            queued = self.store.get(job.job_id)
            if queued is not None:
                self.executor.submit(queued)

    # -- verbs ----------------------------------------------------------------------------
    def start(self, owner: str | None, job_id: str) -> Job:
        job = self.get(owner, job_id)
        if job.phase == Phase.QUEUED or job.phase == Phase.EXECUTING:
            return job  # already running: RUN is idempotent
        if job.phase not in (Phase.PENDING, Phase.HELD):
            raise InvalidPhaseError(f"job {job_id} is {job.phase.value}; only PENDING or HELD jobs can be run")
        self._check_queue_room(owner)
        self._queue(job)
        return self.get(owner, job_id)

    def abort(self, owner: str | None, job_id: str) -> Job:
        job = self.get(owner, job_id)
        if job.phase not in ABORTABLE_PHASES:
            raise InvalidPhaseError(f"job {job_id} is {job.phase.value}; it can no longer be aborted")
        if self.store.transition(job_id, ABORTABLE_PHASES, phase=Phase.ABORTED, end_time=utc_now()):
            self.executor.cancel(job_id)
            self.files.discard_partial(job_id)
            self.events.notify(job_id)
        return self.get(owner, job_id)

    def delete(self, owner: str | None, job_id: str) -> None:
        self.get(owner, job_id)
        self._destroy(job_id)

    def _destroy(self, job_id: str) -> None:
        self.executor.cancel(job_id)
        self.store.delete(job_id)
        self.files.delete(job_id)
        self.events.notify(job_id)

    def update_execution_duration(self, owner: str | None, job_id: str, text: str) -> Job:
        job = self.get(owner, job_id)
        if job.phase not in (Phase.PENDING, Phase.HELD):
            raise InvalidPhaseError(f"job {job_id} is {job.phase.value}; executionduration can change only while PENDING")
        self.store.update(job_id, execution_duration=self._execution_duration(text))
        return self.get(owner, job_id)

    def update_destruction(self, owner: str | None, job_id: str, text: str) -> Job:
        job = self.get(owner, job_id)
        self.store.update(job_id, destruction=self._destruction(text, job.creation_time))
        return self.get(owner, job_id)

    def update_parameters(self, owner: str | None, job_id: str, parameters: list[tuple[str, str]],
                          uploads: Iterable[Upload] = ()) -> Job:
        """POST to a PENDING job's parameters (or job URL): merge, revalidate, store."""
        job = self.get(owner, job_id)
        uploads = list(uploads)
        control, new = self._split(parameters)
        action = control.get("PHASE", "").strip().upper()
        if action not in ("", "RUN", "ABORT"):
            raise InvalidRequestError(f"PHASE={control['PHASE']} is not allowed; use PHASE=RUN or PHASE=ABORT")
        if (new or uploads) and job.phase != Phase.PENDING:
            raise InvalidPhaseError(f"job {job_id} is {job.phase.value}; parameters can change only while PENDING")
        if new or uploads:
            merged = {p.name.upper(): p for p in job.parameters}
            for parameter in new:
                merged[parameter.name.upper()] = parameter
            for upload in uploads:
                if upload.size > self.limits.max_upload_bytes:
                    raise PayloadTooLargeError(
                        f"upload {upload.name!r} is {upload.size} bytes; the limit is {self.limits.max_upload_bytes}")
                merged[upload.name.upper()] = JobParameter(
                    upload.name.upper(), self.href(job_id, f"parameters/{upload.name.upper()}"), True, True)
            validated = self.policy.validate(list(merged.values()))
            if uploads:  # the owner's, whoever sends it (an administrator included)
                self._check_storage_room(job.owner, sum(upload.size for upload in uploads))
            for upload in uploads:
                self.files.store_upload(job_id, upload.name.upper(), upload.path)
            self.store.replace_parameters(job_id, validated.parameters, validated.spec)
        if "RUNID" in control:
            self.store.update(job_id, run_id=control["RUNID"])
        if "EXECUTIONDURATION" in control:
            self.update_execution_duration(owner, job_id, control["EXECUTIONDURATION"])
        if "DESTRUCTION" in control:
            self.update_destruction(owner, job_id, control["DESTRUCTION"])
        if action == "RUN":
            self.start(owner, job_id)
        elif action == "ABORT":
            self.abort(owner, job_id)
        return self.get(owner, job_id)

    # -- executor callbacks -----------------------------------------------------------------
    def job_started(self, job_id: str) -> bool:
        """QUEUED -> EXECUTING; False tells the executor the job was aborted or deleted meanwhile."""
        changed = self.store.transition(job_id, [Phase.QUEUED], phase=Phase.EXECUTING, start_time=utc_now())
        if changed:
            self.events.notify(job_id)
        return changed

    def job_progress(self, job_id: str, done: int, total: int) -> None:
        try:
            self.store.update(job_id, progress_done=int(done), progress_total=int(total))
        except StorageError:  # progress is only shown: the job goes on, its end is recorded or it is requeued
            pass

    def job_completed(self, job_id: str, results: list[JobResult], warnings: Sequence[str] = ()) -> None:
        """Publish a job's results; `warnings` (what makes them doubtful or incomplete) go in its jobInfo."""
        try:
            completed = self.store.complete(job_id, results, utc_now(), warnings)
        except StorageError as exc:  # the results are written but cannot be recorded
            self.files.clear_results(job_id)  # the space they take is what the store may lack
            self.job_failed(job_id, str(exc), error_type="transient")
            return
        if completed:
            self.events.notify(job_id)
        else:  # aborted, timed out or deleted while finishing: nothing of it is kept
            self._drop_output(job_id)

    def job_failed(self, job_id: str, message: str, detail: str | None = None, error_type: str = "fatal") -> None:
        try:
            failed = self.store.set_error(job_id, ErrorSummary(message, error_type, detail),
                                          [Phase.QUEUED, Phase.EXECUTING], utc_now())
        except StorageError:  # nothing can be recorded: the job keeps its phase, and a restart requeues it
            log.error("job %s failed (%s), and its failure could not be recorded", job_id, message)
            self.files.discard_partial(job_id)
            return
        if failed:
            self.files.discard_partial(job_id)
            self.events.notify(job_id)
        else:  # it had already been aborted, stopped or deleted
            self._drop_output(job_id)

    def job_stopped(self, job_id: str) -> None:
        """The executor stopped a job on request (abort, delete, time limit, shutdown).

        A job still EXECUTING was stopped by a shutdown: it keeps its phase and `recover`
        requeues it. Otherwise whatever the interrupted run wrote is removed.
        """
        job = self.store.get(job_id)
        if job is None or job.phase != Phase.EXECUTING:
            self._drop_output(job_id)

    def _drop_output(self, job_id: str) -> None:
        """Remove what a run that is no longer wanted wrote (the whole directory of a deleted job)."""
        job = self.store.get(job_id)
        if job is None:
            self.files.delete(job_id)
            return
        self.files.discard_partial(job_id)
        if job.phase != Phase.COMPLETED:
            self.files.clear_results(job_id)

    # -- housekeeping ---------------------------------------------------------------------------
    def reap(self, now: datetime | None = None) -> tuple[list[str], list[str]]:
        """Delete jobs past their destruction time; stop jobs past their execution duration."""
        now = now or utc_now()
        destroyed = self.store.expired(now)
        for job_id in destroyed:
            log.info("destroying job %s (destruction time reached)", job_id)
            self._destroy(job_id)
        return destroyed, self.stop_overdue(now)

    def stop_overdue(self, now: datetime | None = None) -> list[str]:
        """Stop the EXECUTING jobs past their execution duration (ERROR with a message saying so).

        Cheap (the running jobs only), so the host calls it every half second: a job's limit
        holds to within a second, not to the destruction sweep's interval.
        """
        now = now or utc_now()
        overdue = []
        for job_id in self.store.ids_in_phase([Phase.EXECUTING]):
            job = self.store.get(job_id)
            if job is None or not job.execution_duration or job.start_time is None:
                continue
            if now - job.start_time > timedelta(seconds=job.execution_duration):
                overdue.append(job_id)
                self.executor.cancel(job_id)
                message = (f"the job ran longer than its execution duration of {job.execution_duration} s "
                           "and was stopped")
                if self.store.set_error(job_id, ErrorSummary(message), [Phase.EXECUTING], now):
                    self.files.discard_partial(job_id)
                    self.events.notify(job_id)
        return overdue
