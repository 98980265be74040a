"""Run one detection job: fetch its image, detect, write catalogue, regions and provenance.

The runner is what a worker does with a job; it knows the pipeline and the result files, not
HTTP and not the job phases (the executor reports those to the service).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalogue import FORMATS, write_catalogue
from ..errors import ImageError, UserInputError
from ..uws import Job, JobFiles, JobResult, utc_now
from ._parameters import DetectionRequest, request_from_job

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


class JobCancelled(Exception):
    """Raised inside a running job when it was aborted, deleted or ran out of time."""


@dataclass
class RunnerLimits:
    """Limits on what one job may read."""

    max_image_pixels: int = 32768 * 32768
    max_download_bytes: int = 8 * 1024**3
    download_timeout: float = 60.0


class DetectionRunner:
    """Turns a stored job into result files.

    Parameters
    ----------
    registry : the model registry.
    files : the job file layout.
    device : torch device for networks.
    job_url : builds the job's absolute URL (recorded in the provenance).
    networks : optional cache with ``get(card, device, precision)`` returning a loaded network.
    """

    def __init__(self, registry, files: JobFiles, *, device: str = "cpu", limits: RunnerLimits | None = None,
                 job_url: Callable[[str], str] | None = None, networks: Any = None) -> None:
        self.registry = registry
        self.files = files
        self.device = device
        self.limits = limits or RunnerLimits()
        self.job_url = job_url or (lambda job_id: job_id)
        self.networks = networks

    def run(self, job: Job, cancelled: threading.Event, progress: Progress) -> list[JobResult]:
        from ..pipeline import detect, open_image
        from ..provenance import ProvenanceRecord, write_provenance

        request = request_from_job(job)
        started_at = utc_now()
        card = self.registry.get(request.model)
        if card.is_network:
            self.registry.verify(card.name)
        started = time.time()
        work = self.files.work_dir(job.job_id)
        image_path = self._image_path(job, request, work, cancelled)
        image_sha = _sha256(image_path)

        def report(done: int, total: int) -> None:
            if cancelled.is_set():
                raise JobCancelled(job.job_id)
            progress(done, total)

        image = open_image(image_path, hdu=request.hdu)
        try:
            pixels = int(image.data.shape[0]) * int(image.data.shape[1])
            if pixels > self.limits.max_image_pixels:
                raise ImageError(
                    f"the image has {pixels} pixels; this service accepts at most {self.limits.max_image_pixels}")
            precision = request.precision or card.default_precision
            network = None
            if card.is_network and self.networks is not None:
                network = self.networks.get(card, self.device, precision)
            table = detect(
                image, card, region=request.region, pixels=request.pixels, precision=precision,
                device=self.device, threshold=request.threshold, nms=request.nms, min_size=request.min_size,
                network=network, progress=report,
            )
            hdu_index = getattr(image, "hdu", request.hdu)
        finally:
            image.close()
        if cancelled.is_set():
            raise JobCancelled(job.job_id)
        table.meta["job_url"] = self.job_url(job.job_id)

        media_type, extension = FORMATS[request.response_format]
        outputs = [("result", f"result{extension}", request.response_format, media_type)]
        if request.response_format != "votable":
            outputs.append(("votable", "catalogue.xml", "votable", FORMATS["votable"][0]))
        outputs.append(("regions", "regions.reg", "ds9", FORMATS["ds9"][0]))
        results: list[JobResult] = []
        for result_id, name, fmt, media in outputs:
            path = work / name
            write_catalogue(table, path, fmt)
            results.append(JobResult(result_id, name, media))

        record = ProvenanceRecord(
            job_id=job.job_id,
            job_url=self.job_url(job.job_id),
            owner=job.owner,
            started=job.start_time or started_at,
            ended=None,
            card=card,
            image_name=Path(request.image).name if not request.image.startswith("upload:") else request.image[7:],
            image_sha256=image_sha,
            hdu=hdu_index,
            region=request.region or (f"PIXELS {request.pixels}" if request.pixels else None),
            parameters={p.name: p.value for p in job.parameters},
            device=self.device,
            precision=precision if card.is_network else None,
            n_sources=len(table),
            catalogue_file="result" + extension,
        )
        write_provenance(record, work / "provenance.json", "json")
        results.append(JobResult("provenance", "provenance.json", "application/json"))

        for result in results:  # all written: publish them together
            target = self.files.publish(job.job_id, work / result.file_name)
            result.size = target.stat().st_size
        log.info("job %s: %d sources with %s in %.2f s", job.job_id, len(table), card.name, time.time() - started)
        return results

    def _image_path(self, job: Job, request: DetectionRequest, work: Path, cancelled: threading.Event) -> Path:
        if request.image.startswith("upload:"):
            path = self.files.upload_file(job.job_id, request.image[len("upload:"):])
            if not path.is_file():
                raise ImageError("the uploaded image is missing from the job directory")
            return path
        if request.image.startswith(("http://", "https://")):
            return self._download(request.image, work / "image.fits", cancelled)
        path = Path(request.image)
        if not path.is_file():
            raise ImageError(f"the image {path.name} no longer exists in the data directory")
        return path

    def _download(self, url: str, target: Path, cancelled: threading.Event) -> Path:
        limit = self.limits.max_download_bytes
        try:
            with urllib.request.urlopen(url, timeout=self.limits.download_timeout) as response, target.open("wb") as out:
                size = 0
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise UserInputError(f"the image at {url} is larger than the {limit}-byte limit")
                    if cancelled.is_set():
                        raise JobCancelled(url)
                    out.write(chunk)
        except OSError as exc:
            raise ImageError(f"could not fetch the image from {url}: {getattr(exc, 'reason', exc)}") from None
        return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["DetectionRunner", "JobCancelled", "RunnerLimits"]
