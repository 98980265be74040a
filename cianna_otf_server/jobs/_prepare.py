"""Everything a job needs before its pixels meet a network: model, image, region, plan.

`JobPreparer.prepare` reads the job's typed request and returns a `PreparedJob`: the model card,
the image opened memory-mapped (fetched first if it is a URL), the searched box, the precision,
and, for a network, the `YoloDetection` already planned (domain, noise map, tiles), which the
worker pool runs in one go and the batching scheduler feeds from shared batches.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from astropy.table import Table

from ..errors import ImageError
from ..hashing import file_sha256
from ..models import ModelCard, ModelRegistry
from ..pipeline import PixelBox, SkyImage, YoloDetection, detect, open_image, parse_region, resolve_precision
from ..uws import Job, JobFiles, utc_now
from ._fetch import ImageFetcher
from ._url_policy import UrlPolicy
from ._parameters import DetectionRequest, request_from_job
from ._request import ImagePath, UploadedImage

__all__ = ["RunnerLimits", "PreparedJob", "JobPreparer"]

Progress = Callable[[int, int], None]


@dataclass
class RunnerLimits:
    """Limits on what one job may read."""

    max_image_pixels: int = 32768 * 32768
    max_download_bytes: int = 1024**3
    download_timeout: float = 60.0
    download_deadline: float = 300.0
    url_policy: UrlPolicy = field(default_factory=lambda: UrlPolicy(enabled=True))
    #: The data roots a path IMAGE must still be inside when the job runs (empty: not checked again).
    data_roots: tuple[Path, ...] = ()


@dataclass
class PreparedJob:
    """A job ready to detect.

    Attributes
    ----------
    job, request : the stored job and its typed request.
    card : the model.
    image : the image, memory-mapped; `close` releases it.
    image_sha : sha256 of the image file (provenance).
    box : the searched box (region of interest) in image pixels.
    precision, device : how the network runs.
    started : when the job started (provenance).
    work : the job's work folder, where results are written before they are published.
    detection : for a network, the planned detection (None for the classic finder).
    time : when preparation ended (``time.time()``), for the log.
    """

    job: Job
    request: DetectionRequest
    card: ModelCard
    image: SkyImage
    image_sha: str
    box: PixelBox
    precision: str
    device: str
    started: datetime
    work: Path
    detection: YoloDetection | None
    time: float

    @property
    def hdu(self) -> int | str | None:
        return self.image.hdu

    def detect_whole(self, progress: Progress | None = None) -> Table:
        """The classic finder's catalogue, in one call (networks go through `detection`)."""
        r = self.request
        return detect(self.image, self.card, region=r.region, pixels=r.pixels, threshold=r.threshold,
                      min_size=r.min_size, progress=progress)

    def close(self) -> None:
        self.image.close()


class JobPreparer:
    """Prepares jobs: the registry gives the model, the fetcher the image file."""

    def __init__(self, registry: ModelRegistry, files: JobFiles, *, device: str = "cpu",
                 limits: RunnerLimits | None = None) -> None:
        self.registry = registry
        self.files = files
        self.device = device
        self.limits = limits or RunnerLimits()
        self.fetcher = ImageFetcher(files, self.limits.max_download_bytes, self.limits.download_timeout,
                                    self.limits.url_policy, self.limits.download_deadline,
                                    self.limits.data_roots)

    def prepare(self, job: Job, cancelled: threading.Event) -> PreparedJob:
        """Model, image (fetched, checked, opened), region and, for a network, the planned detection."""
        request = request_from_job(job)
        started_at = utc_now()
        card = self.registry.get(request.model)
        if card.is_network:
            self.registry.verify(card.name)
        work = self.files.work_dir(job.job_id)
        name = self.image_name(request)
        if isinstance(request.image, ImagePath):  # opened once, here, and read through what was opened
            fd, path = self.fetcher.open_data_file(request.image.path)
            try:
                image_sha = _checksum(path, name)
                image = open_image(path, hdu=request.hdu, unit=request.unit, beam=request.beam, name=name)
            finally:
                os.close(fd)
        else:
            path = self.fetcher.local_file(job.job_id, request.image, work, cancelled)
            image_sha = _checksum(path, name)
            image = open_image(path, hdu=request.hdu, unit=request.unit, beam=request.beam, name=name)
        try:
            pixels = int(image.shape[0]) * int(image.shape[1])
            if pixels > self.limits.max_image_pixels:
                raise ImageError(
                    f"the image has {pixels} pixels; this service accepts at most {self.limits.max_image_pixels}")
            box = parse_region(request.region, request.pixels, image)
            precision = request.precision or card.default_precision
            detection = None
            if card.is_network:
                precision = resolve_precision(precision, card, self.device)
                detection = YoloDetection(image, card, box, precision=precision, threshold=request.threshold,
                                          nms=request.nms, min_size=request.min_size, device=self.device)
        except BaseException:
            image.close()
            raise
        return PreparedJob(job=job, request=request, card=card, image=image, image_sha=image_sha, box=box,
                           precision=precision, device=self.device, started=job.start_time or started_at,
                           work=work, detection=detection, time=time.time())

    def image_name(self, request: DetectionRequest) -> str:
        """The job's image as its owner knows it, for messages: never a path of the server's own folders.

        A data-root file is named by its path under its data root (``surveys/field1.fits``), an
        upload as the uploaded parameter, a URL by the file name at its end; the job's folder and
        the descriptor the file is read through stay out of what the user reads.
        """
        image = request.image
        if isinstance(image, ImagePath):
            path = Path(image.path)
            for root in self.fetcher.data_roots:
                if path.is_relative_to(root):
                    return path.relative_to(root).as_posix()
            return path.name
        if isinstance(image, UploadedImage):
            return f"the uploaded {image.parameter}"
        return image.name


def _checksum(path: Path, name: str) -> str:
    """The image file's sha256 (provenance); an unreadable file is named as the user knows it."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ImageError(f"the image {name} cannot be read ({exc.strerror or type(exc).__name__})") from None


