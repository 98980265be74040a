"""Open a FITS image for detection without reading it whole.

Radio survey images are large (the SKA SDC1 image is 32768 x 32768 float32, 4 GB), so the
pixels stay memory-mapped and every later step reads only the window it needs. This module
also normalises the many header shapes found in practice (4-D FREQ/STOKES images, data in an
extension, celestial WCS mixed with spectral axes) into one simple `SkyImage`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales

from ..errors import ImageError

__all__ = ["SkyImage", "open_image"]

log = logging.getLogger(__name__)


@dataclass
class SkyImage:
    """A 2-D sky image, memory-mapped where the file allows it.

    Attributes
    ----------
    data : array-like
        2-D ``[y, x]`` pixel values (image units, usually Jy/beam). A numpy memmap (or a lazy
        section for compressed images): slice it, never convert it whole.
    wcs : astropy.wcs.WCS or None
        The celestial part of the header's WCS, or None when the header has none.
    beam : tuple of float or None
        Restoring beam ``(bmaj, bmin, bpa)`` in degrees, from BMAJ/BMIN/BPA.
    header : astropy.io.fits.Header
        The header of the chosen HDU (unmodified).
    path : str or None
        The file the image came from (None for an in-memory HDUList).
    hdu : int
        Index of the chosen HDU in the file.
    hdu_name : str
        EXTNAME of the chosen HDU ("" for an unnamed primary).
    """

    data: Any
    wcs: WCS | None
    beam: tuple[float, float, float] | None
    header: fits.Header
    path: str | None
    hdu: int
    hdu_name: str = ""
    _hdul: fits.HDUList | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``, numpy order."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H) = (nx, ny)`` in pixels."""
        return (int(self.data.shape[1]), int(self.data.shape[0]))

    @property
    def is_memory_mapped(self) -> bool:
        """True when the pixels are read from the file on demand (a memory map), not held in memory."""
        import mmap

        base = self.data
        while base is not None:
            if isinstance(base, (np.memmap, mmap.mmap)):
                return True
            base = getattr(base, "base", None)
        return False

    @property
    def unit(self) -> str:
        """BUNIT of the header ('' when absent)."""
        return str(self.header.get("BUNIT", "")).strip()

    @property
    def pixel_scale_arcsec(self) -> float | None:
        """Mean pixel side in arcsec (geometric mean of the two axes), None without a WCS."""
        if self.wcs is None:
            return None
        scales = proj_plane_pixel_scales(self.wcs)  # degrees per pixel
        value = float(np.sqrt(abs(scales[0] * scales[1]))) * 3600.0
        return value if math.isfinite(value) and value > 0 else None

    @property
    def beam_area_pix(self) -> float | None:
        """Area of the Gaussian restoring beam in pixels (pi*bmaj*bmin/(4 ln 2)); converts Jy/beam sums to Jy."""
        if self.beam is None or self.pixel_scale_arcsec is None:
            return None
        scale_deg = self.pixel_scale_arcsec / 3600.0
        bmaj, bmin = self.beam[0] / scale_deg, self.beam[1] / scale_deg
        return float(np.pi * bmaj * bmin / (4.0 * np.log(2.0)))

    def window(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """Read pixels ``[y0:y1, x0:x1]`` (0-based, half-open, inside the image) as float32."""
        return np.asarray(self.data[y0:y1, x0:x1], dtype=np.float32)

    def close(self) -> None:
        """Release the file (the memmap stays valid until its last view is dropped)."""
        if self._hdul is not None and self.path is not None:
            self._hdul.close()


def open_image(source: str | Path | fits.HDUList, hdu: int | str | None = None) -> SkyImage:
    """Open a FITS image (a path or an in-memory HDUList) as a 2-D `SkyImage`.

    Parameters
    ----------
    source : str, Path or HDUList
        The FITS file, or an HDUList already in memory.
    hdu : int or str, optional
        HDU index or EXTNAME. By default the first HDU holding image data with two or more axes.

    Returns
    -------
    SkyImage
        With degenerate axes (NAXIS3/NAXIS4 = 1, e.g. FREQ or STOKES) dropped.

    Raises
    ------
    ImageError
        The file is missing, not FITS, empty, has no 2-D image, or holds a real cube.
    """
    if isinstance(source, fits.HDUList):
        hdul, path, name = source, None, "the in-memory FITS image"
    else:
        path = str(source)
        name = Path(path).name
        hdul = _open_file(path, name)

    index = _choose_hdu(hdul, hdu, name)
    chosen = hdul[index]
    header = chosen.header
    try:
        data = chosen.section if isinstance(chosen, fits.CompImageHDU) else chosen.data
    except Exception as exc:  # truncated or corrupt data segment
        raise ImageError(f"{name}: the image data of HDU {index} cannot be read ({exc}).") from exc
    if data is None:
        raise ImageError(f"{name}: HDU {index} holds no image data.")
    data = _drop_degenerate_axes(data, name, index)

    return SkyImage(
        data=data,
        wcs=_celestial_wcs(header, name),
        beam=_beam(header),
        header=header,
        path=path,
        hdu=index,
        hdu_name=str(header.get("EXTNAME", "")).strip(),
        _hdul=hdul,
    )


def _open_file(path: str, name: str) -> fits.HDUList:
    """Open with memmap; turn every failure into one sentence naming the file."""
    file = Path(path)
    if not file.exists():
        raise ImageError(f"{name}: no such file.")
    if file.is_dir():
        raise ImageError(f"{name}: is a folder, not a FITS file.")
    if file.stat().st_size == 0:
        raise ImageError(f"{name}: the file is empty.")
    try:
        hdul = fits.open(path, memmap=True, mode="readonly", lazy_load_hdus=False)
    except OSError as exc:
        raise ImageError(f"{name}: not a readable FITS file ({exc}).") from exc
    except Exception as exc:  # astropy raises various errors on garbage
        raise ImageError(f"{name}: not a readable FITS file ({type(exc).__name__}: {exc}).") from exc
    if len(hdul) == 0:
        raise ImageError(f"{name}: the FITS file has no HDU.")
    return hdul


def _is_image(hdu: Any) -> bool:
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return False
    naxis = int(hdu.header.get("ZNAXIS", hdu.header.get("NAXIS", 0)) or 0)
    return naxis >= 2


def _choose_hdu(hdul: fits.HDUList, hdu: int | str | None, name: str) -> int:
    if hdu is None:
        for index, item in enumerate(hdul):
            if _is_image(item):
                return index
        raise ImageError(f"{name}: no HDU holds a 2-D image.")
    if isinstance(hdu, str) and hdu.strip().lstrip("-").isdigit():
        hdu = int(hdu.strip())
    if isinstance(hdu, int):
        if not 0 <= hdu < len(hdul):
            raise ImageError(f"{name}: HDU {hdu} does not exist (the file has {len(hdul)} HDUs).")
        index = hdu
    else:
        wanted = str(hdu).strip().upper()
        names = [str(item.header.get("EXTNAME", "")).strip().upper() for item in hdul]
        if wanted not in names:
            raise ImageError(f"{name}: no HDU named {hdu!r}.")
        index = names.index(wanted)
    if not _is_image(hdul[index]):
        raise ImageError(f"{name}: HDU {hdu!r} is not an image with two or more axes.")
    return index


def _drop_degenerate_axes(data: Any, name: str, index: int) -> Any:
    """Index away leading length-1 axes (numpy order: NAXIS4, NAXIS3 come first)."""
    shape = tuple(int(n) for n in data.shape)
    if len(shape) < 2 or min(shape[-2:]) < 1:
        raise ImageError(f"{name}: HDU {index} is not a 2-D image (shape {shape}).")
    extra = shape[:-2]
    if any(n != 1 for n in extra):
        raise ImageError(
            f"{name}: HDU {index} is a cube of shape {shape} (numpy order); "
            "only 2-D images, or images whose extra axes have length 1, can be searched."
        )
    if extra:
        data = data[(0,) * len(extra)]
    if min(shape[-2:]) < 2:
        raise ImageError(f"{name}: HDU {index} is not a 2-D image (shape {shape}).")
    return data


def _celestial_wcs(header: fits.Header, name: str) -> WCS | None:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            full = WCS(header)
            celestial = full.celestial
    except Exception as exc:  # a broken WCS is not fatal: pixel regions still work
        log.warning("%s: the WCS cannot be parsed (%s); sky coordinates will be missing.", name, exc)
        return None
    if celestial.naxis != 2 or not celestial.has_celestial:
        return None
    return celestial


def _beam(header: fits.Header) -> tuple[float, float, float] | None:
    """BMAJ/BMIN/BPA in degrees; None when absent or not finite (BPA defaults to 0)."""
    try:
        bmaj = float(header["BMAJ"])
        bmin = float(header.get("BMIN", bmaj))
        bpa = float(header.get("BPA", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    if not (math.isfinite(bmaj) and math.isfinite(bmin) and bmaj > 0 and bmin > 0):
        return None
    return (bmaj, bmin, bpa if math.isfinite(bpa) else 0.0)
