"""A finished detection's result files: the catalogue in its formats, the regions, the provenance.

Everything is written into the job's work folder, then published together, so a crash or an
abort never leaves a half-written result visible. A disk that fills up (or turns read-only)
while they are written ends the job in ERROR with a message saying so, not with the bare
``OSError`` of whichever file happened to be the last straw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from astropy.table import Table

from ..catalogue import CATALOGUE_FORMATS, write_catalogue
from ..uws import JobFiles, JobResult, file_error
from ._prepare import PreparedJob
from ._request import ImagePath
from ._writer_pool import WriterProcesses

__all__ = ["JobOutcome", "ResultWriter", "write_result_files"]

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    """What a finished job publishes: its result files, and what makes them doubtful or incomplete."""

    results: list[JobResult]
    warnings: list[str]


class ResultWriter:
    """Writes and publishes a job's results; `job_url` builds the job's absolute URL (provenance).

    With `processes`, the files are written in those processes (`WriterProcesses`), off this
    process's interpreter lock; they are published from here either way.
    """

    def __init__(self, files: JobFiles, job_url: Callable[[str], str] | None = None,
                 processes: WriterProcesses | None = None) -> None:
        self.files = files
        self.job_url = job_url or (lambda job_id: job_id)
        #: where the files are written: these processes, or (None) the calling thread
        self.processes = processes

    def write(self, prepared: PreparedJob, table: Table) -> JobOutcome:
        """Write the catalogue in its formats and the provenance, then publish them together.

        The catalogue's warnings (unknown unit, no beam, an image outside the model's domain)
        travel with the outcome to the job's jobInfo. A full disk raises `StorageFullError`
        (a read-only one `StorageUnavailableError`), whose message the job's error summary shows.
        """
        try:
            return self._write(prepared, table)
        except OSError as exc:
            error = file_error(exc, "write the job's results")
            if error is None:
                raise
            log.error("job %s: could not write its results in %s: %s", prepared.job.job_id, prepared.work, exc)
            raise error from exc

    def _write(self, prepared: PreparedJob, table: Table) -> JobOutcome:
        from ..provenance import ProvenanceRecord, software_versions

        job, request, card, work = prepared.job, prepared.request, prepared.card, prepared.work
        table.meta["job_url"] = self.job_url(job.job_id)
        main = CATALOGUE_FORMATS[request.response_format]
        outputs = [("result", f"result{main.result_suffix}", main.name, main.media_type)]
        if main.name != "votable":
            outputs.append(("votable", "catalogue.xml", "votable", CATALOGUE_FORMATS["votable"].media_type))
        outputs.append(("regions", "regions.reg", "ds9", CATALOGUE_FORMATS["ds9"].media_type))

        # a data-root IMAGE is stored resolved, a server path: provenance names it as its user does
        shown = getattr(prepared.image, "name", "") or request.image.name
        on_disk = isinstance(request.image, ImagePath)
        parameters = {p.name: shown if on_disk and p.name.upper() == "IMAGE" else p.value for p in job.parameters}
        record = ProvenanceRecord(
            job_id=job.job_id,
            job_url=self.job_url(job.job_id),
            owner=job.owner,
            started=prepared.started,
            ended=None,
            card=card,
            image_name=request.image.name,
            image_sha256=prepared.image_sha,
            hdu=prepared.hdu,
            region=request.region or (f"PIXELS {request.pixels}" if request.pixels else None),
            parameters=parameters,
            device=prepared.device,
            precision=prepared.precision if card.is_network else None,
            n_sources=len(table),
            catalogue_file="result" + main.result_suffix,
            software=software_versions(),
        )
        files = [(name, fmt) for _, name, fmt, _ in outputs]
        if self.processes is not None:
            self.processes.run(write_result_files, table, work, files, record)
        else:
            write_result_files(table, work, files, record)
        results = [JobResult(result_id, name, media) for result_id, name, _, media in outputs]
        results.append(JobResult("provenance", "provenance.json", "application/json"))

        for result in results:  # all written: publish them together
            target = self.files.publish(job.job_id, work / result.file_name)
            result.size = target.stat().st_size
        log.info("job %s: %d sources with %s in %.2f s", job.job_id, len(table), card.name, time.time() - prepared.time)
        return JobOutcome(results, [str(w) for w in table.meta.get("warnings", ()) or ()])


def write_result_files(table: Table, work: Path, files: list[tuple[str, str]], record: Any) -> None:
    """Write the catalogue as each ``(file name, format)`` of `files` and the provenance, into `work`.

    A function of plain, picklable values, so that `WriterProcesses` can run it in another
    process; the caller publishes the files once every one is written.
    """
    from ..provenance import write_provenance

    for name, fmt in files:
        write_catalogue(table, work / name, fmt)
    write_provenance(record, work / "provenance.json", "json")
