"""Open a FITS image for detection without reading it whole.

Radio survey images are large (the SKA SDC1 image is 32768 x 32768 float32, 4 GB), so the
pixels stay memory-mapped and every later step reads only the window it needs. This module
also normalises the many header shapes found in practice (4-D FREQ/STOKES images, data in an
extension, celestial WCS mixed with spectral axes) into one simple `SkyImage`, and reads it as
an astronomer would: the brightness unit (`parse_brightness_unit`), the restoring beam from
whichever header style holds it (`read_beam`), or an estimate of it from the pixels
(`estimate_beam`), with a plain-language warning for everything it could not know.
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

from ..errors import ImageError, UserInputError
from ._beam import KEYWORDS, Beam, estimate_beam, parse_beam, read_beam
from ._units import PER_BEAM, PER_PIXEL, BrightnessUnit, parse_brightness_unit

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
    beam : Beam or None
        Restoring beam (FWHM axes in degrees, position angle east of north), from the header
        (BMAJ/BMIN/BPA, AIPS history or a CASA BEAMS table), a user's override, or estimated from
        the pixels (``beam.estimated``); None when none is known or can be estimated.
    header : astropy.io.fits.Header
        The header of the chosen HDU (unmodified).
    path : str or None
        The file the image came from (None for an in-memory HDUList).
    hdu : int
        Index of the chosen HDU in the file.
    hdu_name : str
        EXTNAME of the chosen HDU ("" for an unnamed primary).
    brightness : BrightnessUnit
        What the pixel values are (from BUNIT or a user's override); by default read from the
        header's BUNIT.
    warnings : list of str
        Sentences for the user about what the reader could not know (unknown unit, no beam,
        estimated beam), in the order found.
    plane : tuple of int
        0-based index taken along each axis beyond the second (FITS order: NAXIS3, NAXIS4, ...),
        e.g. ``(0, 0)`` for a (RA, DEC, FREQ, STOKES) image; () for a plain 2-D image.
    """

    data: Any
    wcs: WCS | None
    beam: Beam | None
    header: fits.Header
    path: str | None
    hdu: int
    hdu_name: str = ""
    brightness: BrightnessUnit | None = None
    warnings: list[str] = field(default_factory=list)
    plane: tuple[int, ...] = ()
    _hdul: fits.HDUList | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.brightness is None:
            self.brightness = parse_brightness_unit(self.header.get("BUNIT"))
        if isinstance(self.beam, tuple):  # (bmaj, bmin, bpa) in degrees, as older callers give it
            bmaj, bmin, bpa = (float(v) for v in self.beam)
            self.beam = Beam(bmaj, bmin, bpa, KEYWORDS)

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
        """The brightness unit as written: BUNIT of the header or the user's override ('' when absent)."""
        return self.brightness.text if self.brightness is not None else ""

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
        """Area of the Gaussian beam in pixels (pi*bmaj*bmin/(4 ln 2)), estimated beams included.

        The scale of a point source, for detection. Integrated flux densities must use
        `flux_beam_area_pix`, which refuses an estimated beam.
        """
        if self.beam is None or self.pixel_scale_arcsec is None:
            return None
        return self.beam.area_pixels(self.pixel_scale_arcsec)

    @property
    def flux_beam_area_pix(self) -> float | None:
        """Beam area in pixels for turning Jy/beam sums into Jy; None unless the beam is recorded or given.

        An estimated beam is good to a few per cent at best, and a flux density scaled by a guess
        would look as trustworthy as a measured one, so none is given.
        """
        if self.beam is None or self.beam.estimated:
            return None
        return self.beam_area_pix

    @property
    def beam_pixels(self) -> tuple[float, float, float] | None:
        """The beam on the pixel grid at the image centre, see `Beam.in_pixels`.

        ``(major, minor, angle)``: FWHM axes in pixels and the major axis's angle in the pixel
        frame (degrees from +y towards -x); None without a beam or a WCS.
        """
        if self.beam is None or self.wcs is None:
            return None
        ny, nx = self.shape
        return self.beam.in_pixels(self.wcs, (nx - 1) / 2.0, (ny - 1) / 2.0)

    @property
    def to_jy_per_beam(self) -> float | None:
        """Factor turning pixel values into Jy/beam; None when the unit (or, for Jy/pixel, the beam) is unknown.

        ``brightness.to_jy`` for per-beam units; ``to_jy * flux_beam_area_pix`` for per-pixel
        units with a recorded or given beam.
        """
        brightness = self.brightness
        if brightness is None or not brightness.known or brightness.to_jy is None:
            return None
        if brightness.per == PER_BEAM:
            return brightness.to_jy
        area = self.flux_beam_area_pix
        if brightness.per == PER_PIXEL and area is not None:
            return brightness.to_jy * area
        return None

    def window(self, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
        """Read pixels ``[y0:y1, x0:x1]`` (0-based, half-open, inside the image) as float32."""
        return np.asarray(self.data[y0:y1, x0:x1], dtype=np.float32)

    def close(self) -> None:
        """Release the file (the memmap stays valid until its last view is dropped)."""
        if self._hdul is not None and self.path is not None:
            self._hdul.close()


def open_image(source: str | Path | fits.HDUList, hdu: int | str | None = None, *,
               unit: str | None = None, beam: str | Beam | None = None, estimate: bool = True,
               name: str | None = None) -> SkyImage:
    """Open a FITS image (a path or an in-memory HDUList) as a 2-D `SkyImage`.

    Parameters
    ----------
    source : str, Path or HDUList
        The FITS file, or an HDUList already in memory.
    hdu : int or str, optional
        HDU index or EXTNAME. By default the first HDU holding image data with two or more axes.
    unit : str, optional
        Brightness unit replacing BUNIT (``"Jy/beam"``, ``"mJy/beam"``, ``"Jy/pixel"``, ...).
    beam : str or Beam, optional
        Restoring beam replacing the header's: ``"bmaj bmin pa"`` (arcsec, arcsec, degrees; see
        `parse_beam`) or a `Beam`.
    estimate : bool
        When no beam is recorded or given, estimate one from the pixels (reads at most a
        2048 x 2048 central window). False skips it, e.g. to only look at the image.
    name : str, optional
        The file's name in messages (default: the path's last part).

    Returns
    -------
    SkyImage
        With degenerate axes (NAXIS3/NAXIS4 = 1, e.g. FREQ or STOKES) dropped and, in
        ``warnings``, a sentence for each thing it could not know.

    Raises
    ------
    ImageError
        The file is missing, not FITS, empty, has no 2-D image, or holds a real cube.
    UserInputError
        `unit` is not a flux density per beam or per pixel, or `beam` is malformed: an explicit
        choice is never silently ignored.
    """
    brightness = _brightness_override(unit)
    beam_override = _beam_override(beam)
    if isinstance(source, fits.HDUList):
        hdul, path, name = source, None, "the in-memory FITS image"
    else:
        path = str(source)
        name = name or Path(path).name  # a file read through a descriptor is named as the user knows it
        hdul = _open_file(path, name)

    index = _choose_hdu(hdul, hdu, name)
    chosen = hdul[index]
    header = chosen.header
    try:
        data = chosen.section if isinstance(chosen, fits.CompImageHDU) else chosen.data
    except ValueError as exc:
        if "memory-mapped" not in str(exc) or path is None:
            raise ImageError(f"{name}: the image data of HDU {index} cannot be read ({exc}).") from exc
        # integers with BSCALE/BZERO/BLANK (AIPS, NOD2 and other single-dish exports): astropy
        # scales them only when it reads them whole, so such an image is read into memory
        hdul.close()
        hdul = fits.open(path, memmap=False, mode="readonly")
        chosen = hdul[index]
        header = chosen.header
        data = chosen.data
    except Exception as exc:  # truncated or corrupt data segment
        raise ImageError(f"{name}: the image data of HDU {index} cannot be read ({exc}).") from exc
    if data is None:
        raise ImageError(f"{name}: HDU {index} holds no image data.")
    data, plane = _drop_degenerate_axes(data, name, index)
    brightness = brightness or parse_brightness_unit(header.get("BUNIT"))

    image = SkyImage(
        data=data,
        wcs=_celestial_wcs(header, name),
        beam=None,
        header=header,
        path=path,
        hdu=index,
        hdu_name=str(header.get("EXTNAME", "")).strip(),
        brightness=brightness,
        plane=plane,
        _hdul=hdul,
    )
    if not brightness.known:
        image.warnings.append(f"{_sentence(brightness.problem)}; pixel values are used as they are, "
                              "as if they were Jy/beam.")
    channel, pol = _channel_and_pol(header, plane)
    image.beam = beam_override or read_beam(header, hdul, plane=channel, pol=pol)
    if image.beam is None:
        _estimate_beam(image, name, estimate)
    for text in image.warnings:
        log.info("%s: %s", name, text)
    return image


_NO_BEAM = ("the image records no restoring beam (no BMAJ/BMIN keywords, AIPS CLEAN history or CASA BEAMS "
            "table): integrated fluxes and sizes are not given because the restoring beam is unknown")


def _estimate_beam(image: SkyImage, name: str, estimate: bool) -> None:
    """Give a beamless image an estimated beam, or say that it has none."""
    found = None
    if estimate:
        try:
            found = estimate_beam(image.data, image.pixel_scale_arcsec, wcs=image.wcs)
        except Exception as exc:  # an estimate is a courtesy: never fail the opening for it
            log.warning("%s: the restoring beam could not be estimated (%s: %s)", name, type(exc).__name__, exc)
    image.beam = found
    if found is not None:
        image.warnings.append(f"{_sentence(_NO_BEAM)}; detection uses a beam of {found.describe()} "
                              "estimated from the image.")
    elif not estimate:
        image.warnings.append(f"{_sentence(_NO_BEAM)}.")
    else:
        reason = "without a celestial WCS" if image.wcs is None else "from its pixels"
        image.warnings.append(f"{_sentence(_NO_BEAM)}; none could be estimated {reason} either.")


def _brightness_override(unit: str | None) -> BrightnessUnit | None:
    """The user's unit, which must be a known flux density per beam or per pixel."""
    if unit is None or not str(unit).strip():
        return None
    brightness = parse_brightness_unit(unit, label="UNIT")
    if not brightness.known:
        raise UserInputError(f"{_sentence(brightness.problem)}; give a flux density per beam or per pixel, "
                             "e.g. Jy/beam, mJy/beam or Jy/pixel.")
    return brightness


def _beam_override(beam: str | Beam | None) -> Beam | None:
    if beam is None or isinstance(beam, Beam):
        return beam
    if not str(beam).strip():
        return None
    return parse_beam(str(beam))


def _sentence(text: str | None) -> str:
    text = text or ""
    return text[:1].upper() + text[1:]


def _channel_and_pol(header: fits.Header, plane: tuple[int, ...]) -> tuple[int, int]:
    """Indices along the spectral and STOKES axes of the plane taken (0 when the axis is absent)."""
    channel = pol = None
    for offset, index in enumerate(plane):
        ctype = str(header.get(f"CTYPE{3 + offset}", "")).strip().upper()
        if ctype.startswith("STOKES"):
            pol = index if pol is None else pol
        elif channel is None:
            channel = index
    return (channel or 0, pol or 0)


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


def _drop_degenerate_axes(data: Any, name: str, index: int) -> tuple[Any, tuple[int, ...]]:
    """Index away leading length-1 axes (numpy order: NAXIS4, NAXIS3 come first).

    Returns the 2-D data and the index taken along each extra axis, in FITS order.
    """
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
    return data, (0,) * len(extra)


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
