"""A job's image, wherever it is: an upload in the job's folder, a URL, a file in a data root.

What comes back is always a local file the pipeline can memory-map, and its sha256 for the
provenance. Downloads stay within the configured size and wait limits and stop at once when the
job is cancelled.
"""

from __future__ import annotations

import http.client
import threading
import urllib.request
from pathlib import Path

from ..errors import ImageError, UserInputError
from ..hashing import file_sha256
from ..uws import JobFiles
from ._outcomes import JobCancelled
from ._request import ImageSource, ImageUrl, UploadedImage

__all__ = ["ImageFetcher", "image_sha256"]


class ImageFetcher:
    """Turns a request's image reference into a local file."""

    def __init__(self, files: JobFiles, max_download_bytes: int, download_timeout: float) -> None:
        self.files = files
        self.max_download_bytes = int(max_download_bytes)
        self.download_timeout = float(download_timeout)

    def local_file(self, job_id: str, image: ImageSource, work: Path, cancelled: threading.Event) -> Path:
        """The image of job `job_id` as a local file (downloaded into `work` for a URL)."""
        if isinstance(image, UploadedImage):
            path = self.files.upload_file(job_id, image.parameter)
            if not path.is_file():
                raise ImageError("the uploaded image is missing from the job directory")
            return path
        if isinstance(image, ImageUrl):
            return self.download(image.url, work / "image.fits", cancelled)
        path = Path(image.path)
        if not path.is_file():
            raise ImageError(f"the image {path.name} no longer exists in the data directory")
        return path

    def download(self, url: str, target: Path, cancelled: threading.Event | None = None) -> Path:
        """Fetch an http(s) image to `target` within the download limits; `ImageError` if it fails."""
        cancelled = cancelled or threading.Event()
        limit = self.max_download_bytes
        try:
            with urllib.request.urlopen(url, timeout=self.download_timeout) as response, target.open("wb") as out:
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


def image_sha256(path: Path) -> str:
    """The image file's sha256 (cached by path, size and time: many jobs read one survey image)."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ImageError(f"the image {path.name} cannot be read ({exc.strerror or exc})") from None
