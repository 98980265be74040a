"""A job from request to result files: prepare, detect, write.

`DetectionRunner` is the jobs layer as executors see it (`JobRunner`, a typed contract): the
worker pool calls `run` for a whole job in one thread; the batching scheduler calls `prepare`,
feeds the prepared `YoloDetection` from its shared batches, and hands the catalogue to
`finish`. It knows the pipeline and the result files, not HTTP and not the job phases (the
executors report those to the service through the one failure policy of `_outcomes`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from astropy.table import Table

from ..models import ModelCard, ModelRegistry
from ..uws import Job, JobFiles
from ._outcomes import JobCancelled
from ._prepare import JobPreparer, PreparedJob, RunnerLimits
from ._results import JobOutcome, ResultWriter
from ._writer_pool import WriterProcesses

if TYPE_CHECKING:  # torch is imported when a network is first loaded
    import torch

__all__ = ["JobRunner", "DetectionRunner", "NetworkSource"]

Progress = Callable[[int, int], None]


class NetworkSource(Protocol):
    """Where a runner takes its loaded networks from (the scheduler's model cache, or a test's)."""

    def get(self, card: ModelCard, device: str, precision: str) -> torch.nn.Module: ...


class JobRunner(Protocol):
    """What an executor needs from the jobs layer."""

    def prepare(self, job: Job, cancelled: threading.Event) -> PreparedJob: ...
    def finish(self, prepared: PreparedJob, table: Table) -> JobOutcome: ...
    def run(self, job: Job, cancelled: threading.Event, progress: Progress) -> JobOutcome: ...


class DetectionRunner:
    """Turns a stored job into result files.

    Parameters
    ----------
    registry : the model registry.
    files : the job file layout.
    device : torch device for networks.
    limits : what a job may read.
    job_url : builds the job's absolute URL (recorded in the provenance).
    networks : optional cache with ``get(card, device, precision)`` returning a loaded network.
    writer_processes : optional processes that write the result files (`WriterProcesses`).
    """

    def __init__(self, registry: ModelRegistry, files: JobFiles, *, device: str = "cpu",
                 limits: RunnerLimits | None = None, job_url: Callable[[str], str] | None = None,
                 networks: NetworkSource | None = None, writer_processes: WriterProcesses | None = None) -> None:
        self.preparer = JobPreparer(registry, files, device=device, limits=limits)
        self.writer = ResultWriter(files, job_url, writer_processes)
        self.registry, self.files, self.device = registry, files, device
        self.networks = networks

    @property
    def limits(self) -> RunnerLimits:
        return self.preparer.limits

    def prepare(self, job: Job, cancelled: threading.Event) -> PreparedJob:
        return self.preparer.prepare(job, cancelled)

    def finish(self, prepared: PreparedJob, table: Table) -> JobOutcome:
        return self.writer.write(prepared, table)

    def run(self, job: Job, cancelled: threading.Event, progress: Progress) -> JobOutcome:
        """Run a whole job in this thread (the worker pool's way)."""
        from ..pipeline import prepare_network, run_detection

        prepared = self.prepare(job, cancelled)
        try:
            def report(done: int, total: int) -> None:
                if cancelled.is_set():
                    raise JobCancelled(job.job_id)
                progress(done, total)

            if prepared.detection is None:
                table = prepared.detect_whole(report)
            else:
                card = prepared.card
                network = (self.networks.get(card, self.device, prepared.precision) if self.networks is not None
                           else prepare_network(card, device=self.device, precision=prepared.precision))
                table = run_detection(prepared.detection, network, progress=report)
            if cancelled.is_set():
                raise JobCancelled(job.job_id)
            return self.finish(prepared, table)
        finally:
            prepared.close()
