"""The images viewers sent over SAMP: where each one is, and which part of the sky it covers.

A viewer names an image by URL (``image.load.fits``) and later only points at the sky
(``coord.pointAt.sky``), so the bridge keeps the images it was sent, newest first, with their
celestial WCS, to find the one under a pointed position. The WCS is read here from the header
alone (a local file, or the first bytes of a remote one), never from the pixels.

How an image reaches the detection service depends on its URL:

* ``file://``: a local file, which the client uploads;
* ``http(s)://`` on this machine (``localhost``, ``127.x``, ``::1``): what Aladin Desktop and
  others serve from their own built-in web server. The service, often on another machine, cannot
  reach it, so the bridge downloads the image and uploads it;
* any other ``http(s)://`` URL: passed by reference, the service fetches it (where it allows
  URL images).
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from ._api import SampBridgeError

__all__ = ["Footprint", "ImageMemory", "RememberedImage", "resolve_image"]

log = logging.getLogger(__name__)

#: Bytes of a remote image read to find its header: the primary header and, for most files,
#: the first extension's (the pixels are not needed to know the footprint).
HEADER_BYTES = 2 * 1024 * 1024
#: Largest loopback image the bridge downloads to upload it again.
MAX_DOWNLOAD_BYTES = 4 * 1024**3
_CHUNK = 1024 * 1024


class Footprint:
    """The sky area of one image: its celestial WCS and pixel size.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A 2-D celestial WCS.
    shape : tuple of int
        (ny, nx) pixels.
    """

    def __init__(self, wcs: Any, shape: tuple[int, int]) -> None:
        import numpy as np
        from astropy.coordinates import SkyCoord

        self.wcs = wcs
        self.shape = shape
        ny, nx = shape
        xs = np.array([(nx - 1) / 2, -0.5, nx - 0.5, -0.5, nx - 0.5])
        ys = np.array([(ny - 1) / 2, -0.5, -0.5, ny - 0.5, ny - 0.5])
        points = wcs.pixel_to_world(xs, ys)
        self.centre: SkyCoord = points[0]
        # the angular radius of the circle through the corners: a cheap first test, and it keeps
        # a point on the far side of the sphere (which some projections map into the pixel
        # grid) from counting as inside
        self.radius_deg = float(np.nanmax(self.centre.separation(points[1:]).deg))

    def contains(self, ra: float, dec: float) -> bool:
        """True when (ra, dec), ICRS degrees, falls on a pixel of the image."""
        import numpy as np
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        point = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
        if not np.isfinite(self.radius_deg) or self.centre.separation(point).deg > self.radius_deg * 1.01:
            return False
        try:
            x, y = self.wcs.world_to_pixel(point)
        except Exception:  # noqa: BLE001 - wcslib refuses points it cannot project: outside
            return False
        ny, nx = self.shape
        return bool(np.isfinite(x) and np.isfinite(y) and -0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5)


def footprint_from_hdus(hdus: Any) -> Footprint | None:
    """The footprint of the first HDU holding a 2-D (or more) image with a celestial WCS."""
    import warnings

    from astropy.wcs import WCS

    for index in range(64):  # lazily: each HDU is read only when the previous ones had no WCS
        try:
            header = hdus[index].header
        except IndexError:
            break
        except Exception:  # noqa: BLE001 - a truncated remote file ends in a broken HDU
            break
        if int(header.get("NAXIS", 0) or 0) < 2:
            continue
        with warnings.catch_warnings():  # FITS files are full of harmless WCS warnings
            warnings.simplefilter("ignore")
            try:
                wcs = WCS(header).celestial
            except Exception:  # noqa: BLE001 - a broken WCS: try the next HDU
                continue
        if wcs.naxis != 2:
            continue
        shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
        if min(shape) > 0:
            return Footprint(wcs, shape)
    return None


def read_footprint(source: str | Path | bytes) -> Footprint | None:
    """The footprint of a FITS file (path) or of its first bytes; None if it has no celestial WCS.

    Raises
    ------
    SampBridgeError
        The file cannot be read or is not FITS.
    """
    from astropy.io import fits

    try:
        if isinstance(source, bytes):
            opened = fits.open(io.BytesIO(source), lazy_load_hdus=True, ignore_missing_end=True)
        else:
            opened = fits.open(source, lazy_load_hdus=True, memmap=True)
    except (OSError, ValueError, TypeError) as exc:
        what = "the image" if isinstance(source, bytes) else str(source)
        raise SampBridgeError(f"image not readable: {what} is not a FITS file ({exc})") from None
    with opened as hdus:
        return footprint_from_hdus(hdus)


@dataclass
class RememberedImage:
    """One image a viewer sent.

    Attributes
    ----------
    key : str
        The viewer's ``image-id``, else the URL: what later messages name it by.
    url : str
        The URL as sent.
    source : str
        What the client submits: a local path (uploaded) or an http(s) URL (by reference).
    name : str
        A short name for tables and messages.
    footprint : Footprint or None
        Its sky area; None where the header could not be read (it is then never "pointed at").
    """

    key: str
    url: str
    source: str
    name: str
    footprint: Footprint | None = None

    def contains(self, ra: float, dec: float) -> bool:
        return self.footprint is not None and self.footprint.contains(ra, dec)


class ImageMemory:
    """The images viewers sent, by key, most recently sent last; thread-safe and bounded.

    Parameters
    ----------
    limit : int
        How many images to remember; the oldest are forgotten first.
    """

    def __init__(self, limit: int = 100) -> None:
        self._images: OrderedDict[str, RememberedImage] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def add(self, image: RememberedImage) -> None:
        """Remember `image` as the most recent (replacing one of the same key or URL)."""
        with self._lock:
            for key in [k for k, old in self._images.items() if k == image.key or old.url == image.url]:
                del self._images[key]
            self._images[image.key] = image
            while len(self._images) > self.limit:
                self._images.popitem(last=False)

    def get(self, key_or_url: str) -> RememberedImage | None:
        """The image of this ``image-id`` or URL, if one was sent."""
        with self._lock:
            if key_or_url in self._images:
                return self._images[key_or_url]
            return next((i for i in self._images.values() if i.url == key_or_url), None)

    def latest(self) -> RememberedImage | None:
        with self._lock:
            return next(reversed(self._images.values()), None)

    def containing(self, ra: float, dec: float) -> RememberedImage | None:
        """The most recently sent image on which (ra, dec) falls."""
        with self._lock:
            newest_first = list(reversed(self._images.values()))
        return next((image for image in newest_first if image.contains(ra, dec)), None)


def image_name(url: str, given: str | None = None) -> str:
    """The viewer's name for the image, else the file name of its URL."""
    if given and given.strip():
        return given.strip()
    path = urlparse(url).path
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1]) if path else ""
    return name or "image"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def file_url_path(url: str) -> Path:
    """The local path of a ``file:`` URL (``file:///a/b``, ``file:/a/b``, ``file://localhost/a/b``)."""
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise SampBridgeError(f"image not readable: {url} is a file on another host ({parsed.netloc})")
    return Path(url2pathname(unquote(parsed.path)))


def readable_file(url: str) -> Path:
    """The local file of a ``file:`` URL, checked to exist and be readable here (else SampBridgeError)."""
    path = file_url_path(url)
    if not path.is_file():
        raise SampBridgeError(f"image not readable: {path} does not exist on this machine")
    if not os.access(path, os.R_OK):
        raise SampBridgeError(f"image not readable: {path} (permission denied)")
    return path


def _safe_file_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "image"
    return cleaned[:80] if cleaned.lower().endswith((".fits", ".fit", ".fts", ".gz")) else f"{cleaned[:75]}.fits"


def _download(url: str, target_dir: Path, name: str, limit: int | None, timeout: float) -> Path | bytes:
    """Stream `url` into `target_dir` (limit None) or return its first `limit` bytes.

    A plain session, not the service client's: the viewer's web server must never see the
    service token.
    """
    import requests

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            if limit is not None:
                data = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    data.extend(chunk)
                    if len(data) >= limit:
                        break
                return bytes(data[:limit])
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / _safe_file_name(name)
            size = 0
            with open(target, "wb") as handle:
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        handle.close()
                        target.unlink(missing_ok=True)
                        raise SampBridgeError(f"image {url} is larger than {MAX_DOWNLOAD_BYTES >> 30} GiB")
                    handle.write(chunk)
            return target
    except requests.RequestException as exc:
        raise SampBridgeError(f"image not readable: cannot fetch {url}: {exc}") from None
    except OSError as exc:
        raise SampBridgeError(f"cannot save {url} under {target_dir}: {exc.strerror or exc}") from None


def resolve_image(url: str, image_id: str | None = None, name: str | None = None,
                  download_dir: Path | None = None, timeout: float = 60.0) -> RememberedImage:
    """What the bridge remembers of an image a viewer sent (reads its header; may download it).

    Raises
    ------
    SampBridgeError
        A URL of another scheme, a missing or unreadable local file, a file that is not FITS.
    """
    url = (url or "").strip()
    if not url:
        raise SampBridgeError("the message names no image (no url parameter)")
    scheme = urlparse(url).scheme.lower()
    title = image_name(url, name)
    key = (image_id or "").strip() or url
    if scheme == "file":
        path = readable_file(url)
        return RememberedImage(key, url, str(path), title, read_footprint(path))
    if scheme in ("http", "https"):
        if _is_loopback(urlparse(url).hostname):
            folder = (download_dir or Path.cwd()) / re.sub(r"[^A-Za-z0-9]+", "_", key)[-60:]
            local = _download(url, folder, title, None, timeout)
            return RememberedImage(key, url, str(local), title, read_footprint(local))
        footprint = None
        try:
            footprint = read_footprint(_download(url, Path("."), title, HEADER_BYTES, timeout))
        except SampBridgeError as exc:  # the service may still read it (other access, a cutout)
            log.info("no footprint for %s: %s", url, exc)
        return RememberedImage(key, url, url, title, footprint)
    raise SampBridgeError(f"image {url}: only file:// and http(s):// URLs can be used")
