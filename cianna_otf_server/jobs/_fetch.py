"""A job's image, wherever it is: an upload in the job's folder, a URL, a file in a data root.

What comes back is always a local file the pipeline can memory-map, and its sha256 for the
provenance. Downloads follow the service's `UrlPolicy` (which URLs, which addresses, checked at
every redirect hop and at connect time), stay within the size limit and a total deadline, and
stop at once when the job is cancelled. Every failure to fetch reads the same to the user: what
answered, or did not, at an address the service refused is nobody's business but the operator's
(the log has the reason).
"""

from __future__ import annotations

import http.client
import logging
import os
import stat
import threading
import time
import urllib.request
from pathlib import Path

from ..errors import ImageError, UserInputError
from ..hashing import file_sha256
from ..uws import JobFiles
from ._outcomes import JobCancelled
from ._request import ImageSource, ImageUrl, UploadedImage
from ._url_policy import UrlPolicy, UrlRefused

__all__ = ["ImageFetcher", "image_sha256"]

log = logging.getLogger(__name__)

#: Redirects followed before a fetch is given up.
MAX_REDIRECTS = 5


class ImageFetcher:
    """Turns a request's image reference into a local file."""

    def __init__(self, files: JobFiles, max_download_bytes: int, download_timeout: float,
                 policy: UrlPolicy | None = None, download_deadline: float = 300.0,
                 data_roots: tuple[Path, ...] = ()) -> None:
        self.files = files
        self.data_roots = tuple(Path(root).resolve() for root in data_roots)
        self.max_download_bytes = int(max_download_bytes)
        self.download_timeout = float(download_timeout)
        self.download_deadline = float(download_deadline)
        # without a policy (direct use of the pipeline's job layer) URLs are fetched from public hosts
        self.policy = policy or UrlPolicy(enabled=True)

    def local_file(self, job_id: str, image: ImageSource, work: Path, cancelled: threading.Event) -> Path:
        """The image of job `job_id` as a local file (downloaded into `work` for a URL)."""
        if isinstance(image, UploadedImage):
            path = self.files.upload_file(job_id, image.parameter)
            if not path.is_file():
                raise ImageError("the uploaded image is missing from the job directory")
            return path
        if isinstance(image, ImageUrl):
            return self.download(image.url, work / "image.fits", cancelled)
        raise TypeError("a data-root image is opened with open_data_file")

    def open_data_file(self, path_text: str) -> tuple[int, Path]:
        """Open a data-root image once, at run time, and check where the opened file really is.

        The path was checked when the job was made; between then and now the file (or a folder
        above it) may have been replaced by a link to a file outside the roots. So the file is
        opened without following a final link, and the real path of what was opened is checked
        against the roots. The job reads (and hashes) the opened file through its descriptor.
        Every refusal reads the same, whether or not something exists outside.

        Returns
        -------
        int, Path
            The open descriptor (the caller closes it) and a path that reads that very file.
        """
        path = Path(path_text)
        refusal = ImageError(f"the image {path.name} is not available in the data directories")
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            raise refusal from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise refusal
            through_fd = Path(f"/proc/self/fd/{fd}")
            if through_fd.exists():
                real, readable = Path(os.path.realpath(through_fd)), through_fd
            else:  # no procfs: the real path of the name, and the same file as the one opened
                real = Path(os.path.realpath(path))
                if not os.path.samestat(os.stat(real), os.fstat(fd)):
                    raise refusal
                readable = real
            if self.data_roots and not any(real.is_relative_to(root) for root in self.data_roots):
                log.warning("data-root image %s now leads outside the roots (%s): refused", path, real)
                raise refusal
        except BaseException:
            os.close(fd)
            raise
        return fd, readable

    def download(self, url: str, target: Path, cancelled: threading.Event | None = None) -> Path:
        """Fetch an http(s) image to `target` within the policy and limits; `ImageError` if it fails.

        Raises
        ------
        UserInputError
            The URL is refused by the policy, or the image is larger than the limit.
        ImageError
            Anything else: one neutral message, whatever the cause.
        JobCancelled
            The job was cancelled during the download.
        """
        cancelled = cancelled or threading.Event()
        try:
            self.policy.check_url(url)
        except UrlRefused as exc:
            raise UserInputError(f"IMAGE {url}: {exc}") from None
        limit = self.max_download_bytes
        deadline = time.monotonic() + self.download_deadline
        opener = urllib.request.build_opener(_GuardedHTTPHandler(self.policy), _GuardedHTTPSHandler(self.policy),
                                             _CheckedRedirects(self.policy))
        try:
            with opener.open(url, timeout=self.download_timeout) as response, target.open("wb") as out:
                expected = response.headers.get("Content-Length", "")
                if expected.isdigit() and int(expected) > limit:
                    raise UserInputError(f"the image at {url} is larger than the {limit}-byte limit")
                # the deadline closes the connection from outside: a server that drips a byte per
                # read timeout would otherwise hold the download (and its preparation slot) for ever
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), response.close)
                watchdog.daemon = True
                watchdog.start()
                try:
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
                finally:
                    watchdog.cancel()
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"the download took longer than {self.download_deadline:g} s")
                if expected.isdigit() and size < int(expected):  # read1 does not raise IncompleteRead
                    raise OSError(f"the download was cut short after {size} of {expected} bytes")
        except (UserInputError, JobCancelled):
            raise
        except UrlRefused as exc:
            log.warning("fetch of %s refused: %s", url, exc)
            raise ImageError(_neutral(url)) from None
        except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
            # AttributeError: a response closed by the deadline while it was being read
            log.warning("fetch of %s failed: %s", url, getattr(exc, "reason", None) or exc or type(exc).__name__)
            if time.monotonic() >= deadline:
                raise ImageError(f"{_neutral(url)} within {self.download_deadline:g} s") from None
            raise ImageError(_neutral(url)) from None
        return target


def _neutral(url: str) -> str:
    return f"could not fetch the image from {url}"


class _GuardedHTTPConnection(http.client.HTTPConnection):
    policy: UrlPolicy

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = self.policy.connect


class _GuardedHTTPSConnection(http.client.HTTPSConnection):
    policy: UrlPolicy

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = self.policy.connect


def _connection_class(base: type, policy: UrlPolicy) -> type:
    return type(base.__name__, (base,), {"policy": policy})


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    """Plain HTTP whose connections go only to addresses the policy allows."""

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self._connection = _connection_class(_GuardedHTTPConnection, policy)

    def http_open(self, req):  # noqa: ANN001 - urllib's signature
        return self.do_open(self._connection, req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    """HTTPS whose connections go only to addresses the policy allows (certificates checked as usual)."""

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self._connection = _connection_class(_GuardedHTTPSConnection, policy)

    def https_open(self, req):  # noqa: ANN001 - urllib's signature
        return self.do_open(self._connection, req, context=self._context)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed only to URLs the policy allows, and only a few."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, policy: UrlPolicy) -> None:
        super().__init__()
        self.policy = policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        self.policy.check_url(newurl)  # UrlRefused: the fetch fails with the neutral message
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def image_sha256(path: Path) -> str:
    """The image file's sha256 (cached by path, size and time: many jobs read one survey image)."""
    try:
        return file_sha256(path)
    except OSError as exc:
        raise ImageError(f"the image {path.name} cannot be read ({exc.strerror or exc})") from None
