"""Run one detection job: fetch its image, detect, write catalogue, regions and provenance.

The runner is what a worker does with a job; it knows the pipeline and the result files, not
HTTP and not the job phases (the executor reports those to the service).
"""

from __future__ import annotations

import hashlib
import http.client
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


@dataclass
class JobOutcome:
    """What a finished job publishes: its result files, and what makes them doubtful or incomplete."""

    results: list[JobResult]
    warnings: list[str]


@dataclass
class PreparedJob:
    """A job ready to detect: its model, its opened image and region, where its files go."""

    job: Job
    request: DetectionRequest
    card: Any
    image: Any  # SkyImage (memory-mapped)
    image_sha: str
    box: Any  # PixelBox
    precision: str
    device: str
    started: Any
    work: Path
    time: float

    @property
    def hdu(self) -> int | str | None:
        return getattr(self.image, "hdu", self.request.hdu)

    def detect_whole(self, progress: Progress | None = None, network: Any = None):
        """Detect in one call (classic models, or the worker pool); returns the catalogue."""
        from ..pipeline import detect

        r = self.request
        return detect(self.image, self.card, region=r.region, pixels=r.pixels, precision=self.precision,
                      device=self.device, threshold=r.threshold, nms=r.nms, min_size=r.min_size,
                      network=network, progress=progress)

    def yolo_detection(self):
        """The incremental detection state the batching scheduler feeds patch outputs into."""
        from ..pipeline import YoloDetection

        r = self.request
        return YoloDetection(self.image, self.card, self.box, precision=self.precision, threshold=r.threshold,
                             nms=r.nms, min_size=r.min_size, device=self.device)

    def close(self) -> None:
        self.image.close()


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

    def run(self, job: Job, cancelled: threading.Event, progress: Progress) -> JobOutcome:
        """Run a whole job in this thread (the simple worker pool's way)."""
        prepared = self.prepare(job, cancelled)
        try:
            network = None
            if prepared.card.is_network and self.networks is not None:
                network = self.networks.get(prepared.card, self.device, prepared.precision)

            def report(done: int, total: int) -> None:
                if cancelled.is_set():
                    raise JobCancelled(job.job_id)
                progress(done, total)

            table = prepared.detect_whole(report, network=network)
            if cancelled.is_set():
                raise JobCancelled(job.job_id)
            return self.finish(prepared, table)
        finally:
            prepared.close()

    def prepare(self, job: Job, cancelled: threading.Event) -> "PreparedJob":
        """Everything before the detection itself: model, image (fetched, checked, opened), region."""
        from ..pipeline import open_image, parse_region

        request = request_from_job(job)
        started_at = utc_now()
        card = self.registry.get(request.model)
        if card.is_network:
            self.registry.verify(card.name)
        work = self.files.work_dir(job.job_id)
        image_path = self._image_path(job, request, work, cancelled)
        image_sha = _sha256(image_path)
        image = open_image(image_path, hdu=request.hdu, unit=request.unit, beam=request.beam)
        try:
            pixels = int(image.data.shape[0]) * int(image.data.shape[1])
            if pixels > self.limits.max_image_pixels:
                raise ImageError(
                    f"the image has {pixels} pixels; this service accepts at most {self.limits.max_image_pixels}")
            box = parse_region(request.region, request.pixels, image)
        except BaseException:
            image.close()
            raise
        precision = request.precision or card.default_precision
        if card.is_network:
            from ..pipeline import resolve_precision

            precision = resolve_precision(precision, card, self.device)
        return PreparedJob(job=job, request=request, card=card, image=image, image_sha=image_sha, box=box,
                           precision=precision, device=self.device, started=job.start_time or started_at,
                           work=work, time=time.time())

    def finish(self, prepared: "PreparedJob", table) -> JobOutcome:
        """Write the catalogue in its formats and the provenance, then publish them together.

        The catalogue's warnings (unknown unit, no beam, an image outside the model's domain)
        travel with the outcome to the job's jobInfo.
        """
        from ..provenance import ProvenanceRecord, write_provenance

        job, request, card, work = prepared.job, prepared.request, prepared.card, prepared.work
        table.meta["job_url"] = self.job_url(job.job_id)
        media_type, extension = FORMATS[request.response_format]
        outputs = [("result", f"result{extension}", request.response_format, media_type)]
        if request.response_format != "votable":
            outputs.append(("votable", "catalogue.xml", "votable", FORMATS["votable"][0]))
        outputs.append(("regions", "regions.reg", "ds9", FORMATS["ds9"][0]))
        results: list[JobResult] = []
        for result_id, name, fmt, media in outputs:
            write_catalogue(table, work / name, fmt)
            results.append(JobResult(result_id, name, media))

        record = ProvenanceRecord(
            job_id=job.job_id,
            job_url=self.job_url(job.job_id),
            owner=job.owner,
            started=prepared.started,
            ended=None,
            card=card,
            image_name=Path(request.image).name if not request.image.startswith("upload:") else request.image[7:],
            image_sha256=prepared.image_sha,
            hdu=prepared.hdu,
            region=request.region or (f"PIXELS {request.pixels}" if request.pixels else None),
            parameters={p.name: p.value for p in job.parameters},
            device=prepared.device,
            precision=prepared.precision if card.is_network else None,
            n_sources=len(table),
            catalogue_file="result" + extension,
        )
        write_provenance(record, work / "provenance.json", "json")
        results.append(JobResult("provenance", "provenance.json", "application/json"))

        for result in results:  # all written: publish them together
            target = self.files.publish(job.job_id, work / result.file_name)
            result.size = target.stat().st_size
        log.info("job %s: %d sources with %s in %.2f s", job.job_id, len(table), card.name, time.time() - prepared.time)
        return JobOutcome(results, [str(w) for w in table.meta.get("warnings", ()) or ()])

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

    def download(self, url: str, target: Path, cancelled: threading.Event | None = None) -> Path:
        """Fetch an http(s) image to `target` within the download limits; `ImageError` if it fails."""
        return self._download(url, target, cancelled or threading.Event())

    def _download(self, url: str, target: Path, cancelled: threading.Event) -> Path:
        limit = self.limits.max_download_bytes
        try:
            with urllib.request.urlopen(url, timeout=self.limits.download_timeout) as response, target.open("wb") as out:
                # read1: whatever has arrived, so a slow server never delays an abort by a whole chunk
                read = getattr(response, "read1", response.read)
                size = 0
                while chunk := read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise UserInputError(f"the image at {url} is larger than the {limit}-byte limit")
                    if cancelled.is_set():
                        raise JobCancelled(url)
                    out.write(chunk)
                expected = response.headers.get("Content-Length", "")
                if expected.isdigit() and size < int(expected):  # read1 does not raise IncompleteRead
                    raise ImageError(f"the download of {url} was cut short after {size} of {expected} bytes")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if isinstance(exc, UserInputError):
                raise
            reason = getattr(exc, "reason", None) or exc or type(exc).__name__
            raise ImageError(f"could not fetch the image from {url}: {reason}") from None
        return target


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    """The file's sha256, cached by (path, size, mtime): many jobs often read one survey image."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _SHA_LOCK:
        cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _SHA_LOCK:
        if len(_SHA_CACHE) > 4096:
            _SHA_CACHE.clear()
        _SHA_CACHE[key] = value
    return value
