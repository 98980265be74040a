"""Open a FITS image for detection without reading it whole.

Radio survey images are large (the SKA SDC1 image is 32768 x 32768 float32, 4 GB), so the
pixels stay memory-mapped and every later step reads only the window it needs. This module
also normalises the many header shapes found in practice (4-D FREQ/STOKES images, data in an
extension, celestial WCS mixed with spectral axes) into one simple `SkyImage`, and reads it as
an astronomer would: the brightness unit (`parse_brightness_unit`), the restoring beam from
whichever header style holds it (`read_beam`), or an estimate of it from the pixels
(`estimate_beam`), with a plain-language warning for everything it could not know.

Integer images stored with BSCALE/BZERO/BLANK (AIPS, NOD2 and other single-dish exports, unsigned
16-bit cameras) stay memory-mapped too: their raw integers are scaled window by window
(`ScaledPixels`), to the numbers astropy's own scaled read gives, with BLANK pixels as NaN.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
from collections import OrderedDict
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

__all__ = ["SkyImage", "ScaledPixels", "open_image", "MIN_IMAGE_SIDE"]

log = logging.getLogger(__name__)

#: Smallest image side searched: a restoring beam spans 2.5-5 pixels in survey images, and a
#: source needs its beam and some background around it to be told from the noise.
MIN_IMAGE_SIDE = 8


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
    wcs_problem : str or None
        Why the header's celestial WCS cannot be used (bad CTYPE, zero CDELT, a singular CD
        matrix, a latitude beyond 90 degrees...), when the header has one; ``wcs`` is then None,
        the image is searched in pixel coordinates and sky columns are left empty.
    """

    data: Any
    wcs: WCS | None
    beam: Beam | None
    header: fits.Header
    path: str | None
    hdu: int
    hdu_name: str = ""
    name: str = ""  # as the user knows the file (results and messages never show a server path)
    brightness: BrightnessUnit | None = None
    warnings: list[str] = field(default_factory=list)
    plane: tuple[int, ...] = ()
    wcs_problem: str | None = None
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

    try:
        index = _choose_hdu(hdul, hdu, name)
        chosen = hdul[index]
        scaling = _scaling(chosen) if path is not None else None
        if scaling is not None:
            # astropy applies BSCALE/BZERO/BLANK only by reading the whole image into memory: read the
            # raw integers through the memory map instead, and scale each window as it is read
            hdul.close()
            hdul = _open_file(path, name, raw=True)
            chosen = hdul[index]
        header = chosen.header
        try:
            data = chosen.section if isinstance(chosen, fits.CompImageHDU) else chosen.data
        except Exception as exc:  # truncated or corrupt data segment
            raise ImageError(f"{name}: the image data of HDU {index} cannot be read ({_reason(exc, path, name)}).") from exc
        if data is None:
            raise ImageError(f"{name}: HDU {index} holds no image data.")
        data, plane = _drop_degenerate_axes(data, name, index)
        if scaling is not None:
            data = ScaledPixels(data, *scaling)
        ny, nx = int(data.shape[0]), int(data.shape[1])
        if min(nx, ny) < MIN_IMAGE_SIDE:
            raise ImageError(f"{name}: the image is {nx} x {ny} pixels; detection needs at least "
                             f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}.")
        brightness = brightness or parse_brightness_unit(header.get("BUNIT"))
        wcs, wcs_problem = _cached_celestial_wcs(path, index, header, name, (nx, ny))

        image = SkyImage(
            data=data,
            wcs=wcs,
            beam=None,
            header=header,
            path=path,
            hdu=index,
            hdu_name=str(header.get("EXTNAME", "")).strip(),
            name=name,
            brightness=brightness,
            plane=plane,
            wcs_problem=wcs_problem,
            _hdul=hdul,
        )
    except BaseException:
        if path is not None:  # an HDUList given by the caller stays the caller's
            hdul.close()
        raise
    if wcs_problem:
        image.warnings.append(
            f"The header's celestial WCS cannot be used ({wcs_problem}): the image is searched in pixel "
            "coordinates, so ra, dec and pa are left empty and only PIXELS regions can be used.")
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


#: The pixel types FITS defines (BITPIX).
_BITPIX_VALUES = (8, 16, 32, 64, -32, -64)


def _bitpix_problem(file: Path) -> str | None:
    """What is wrong with the primary header's BITPIX, read from its cards, or None.

    Only a plain (uncompressed) primary header is looked at; anything else is left to astropy.
    """
    try:
        with open(file, "rb") as handle:
            head = handle.read(2880)
    except OSError:
        return None
    if not head.startswith(b"SIMPLE  ="):
        return None
    for start in range(0, len(head) - 79, 80):
        card = head[start:start + 80].decode("ascii", "replace")
        if card.startswith("END") and not card[3:].strip():
            return None
        if card.startswith("BITPIX  ="):
            text = card[10:].split("/", 1)[0].strip()
            try:
                value = int(text)
            except ValueError:
                return f"BITPIX = {text!r} is not a number"
            if value not in _BITPIX_VALUES:
                return (f"BITPIX = {value} is not a FITS pixel type "
                        f"({', '.join(str(v) for v in _BITPIX_VALUES)})")
            return None
    return None


def _open_file(path: str, name: str, raw: bool = False) -> fits.HDUList:
    """Open with memmap; turn every failure into one sentence naming the file.

    With `raw`, integer pixels are left unscaled (BSCALE/BZERO/BLANK are applied by `ScaledPixels`).
    """
    file = Path(path)
    if not file.exists():
        raise ImageError(f"{name}: no such file.")
    if file.is_dir():
        raise ImageError(f"{name}: is a folder, not a FITS file.")
    if file.stat().st_size == 0:
        raise ImageError(f"{name}: the file is empty.")
    bitpix = _bitpix_problem(file)
    if bitpix is not None:  # astropy would misread the data as a header ("missing END card")
        raise ImageError(f"{name}: not a readable FITS file ({bitpix}).")
    try:
        hdul = fits.open(path, memmap=True, mode="readonly", lazy_load_hdus=False, do_not_scale_image_data=raw)
    except OSError as exc:
        raise ImageError(f"{name}: not a readable FITS file ({_reason(exc, path, name)}).") from exc
    except Exception as exc:  # astropy raises various errors on garbage
        raise ImageError(f"{name}: not a readable FITS file ({type(exc).__name__}: {_reason(exc, path, name)}).") from exc
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
    return data, (0,) * len(extra)


#: Celestial WCSs of recently opened files, by file identity and HDU (`_cached_celestial_wcs`).
_WCS_CACHE: OrderedDict[tuple, tuple[WCS | None, str | None]] = OrderedDict()
_WCS_CACHE_SIZE = 64
_WCS_CACHE_LOCK = threading.Lock()


def _cached_celestial_wcs(path: str | None, index: int, header: fits.Header, name: str,
                          size: tuple[int, int]) -> tuple[WCS | None, str | None]:
    """`_celestial_wcs`, remembered for a file that has not changed, each caller given its own copy.

    Interactive use opens the same image for every click: parsing its WCS (wcslib reads the
    whole header as text) was the costliest part of a small job's opening, ~40 times what a copy
    costs. The key is the file's identity (device, inode, size, modification time) and the HDU,
    so an edited or replaced file is parsed again. Each caller gets a deep copy: wcslib's
    structures are not shared between threads.
    """
    if path is None:
        return _celestial_wcs(header, name, size)
    try:
        stat = os.stat(path)
    except OSError:
        return _celestial_wcs(header, name, size)
    key = (os.path.abspath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, index, size)
    with _WCS_CACHE_LOCK:
        found = _WCS_CACHE.get(key)
        if found is not None:
            _WCS_CACHE.move_to_end(key)
    if found is None:
        found = _celestial_wcs(header, name, size)
        with _WCS_CACHE_LOCK:
            _WCS_CACHE[key] = found
            while len(_WCS_CACHE) > _WCS_CACHE_SIZE:
                _WCS_CACHE.popitem(last=False)
    wcs, problem = found
    return (copy.deepcopy(wcs) if wcs is not None else None), problem


def _celestial_wcs(header: fits.Header, name: str, size: tuple[int, int]) -> tuple[WCS | None, str | None]:
    """The celestial WCS of the header, or None and, when the header claims one, why it cannot be used.

    A header without sky axes (a pixel-only image) has no WCS and nothing to say. A header whose
    CTYPEs name sky coordinates but whose WCS does not work (an unknown projection, a zero CDELT,
    a singular CD matrix, a latitude beyond 90 degrees) would otherwise give NaN or nonsense
    positions: the image is searched in pixel coordinates instead, and the reason is reported.
    """
    import warnings

    axes = _sky_axes(header)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            full = WCS(header)
            celestial = full.celestial
    except Exception as exc:  # a broken WCS is not fatal: pixel regions still work
        log.info("%s: the WCS cannot be parsed (%s); sky coordinates will be missing.", name, exc)
        if not axes:
            return None, None
        return None, _header_wcs_problem(header, axes) or _wcslib_reason(exc)
    if celestial.naxis != 2 or not celestial.has_celestial:
        if not axes:
            return None, None
        named = " and ".join(f"CTYPE{i} = {str(header.get(f'CTYPE{i}', '')).strip()!r}" for i in axes)
        return None, f"{named} do not make a pair of sky axes" if len(axes) > 1 else f"{named} has no partner axis"
    from ._orientation import wcs_problem

    problem = wcs_problem(celestial, *size)
    if problem is not None:
        log.info("%s: the celestial WCS cannot be used (%s); sky coordinates will be missing.", name, problem)
        return None, _header_wcs_problem(header, axes) or problem
    return celestial, None


def _sky_axes(header: fits.Header) -> list[int]:
    """FITS numbers of the axes whose CTYPE names a sky coordinate (RA, DEC, GLON, GLAT, xLON, xyLT, ...)."""
    count = int(header.get("WCSAXES", header.get("NAXIS", 0)) or 0)
    axes = []
    for number in range(1, count + 1):
        coordinate = str(header.get(f"CTYPE{number}", "")).strip().upper().split("-", 1)[0]
        if (coordinate in ("RA", "DEC") or (len(coordinate) == 4 and coordinate[1:] in ("LON", "LAT"))
                or (len(coordinate) == 4 and coordinate[2:] in ("LN", "LT"))):
            axes.append(number)
    return axes


def _is_latitude(header: fits.Header, number: int) -> bool:
    coordinate = str(header.get(f"CTYPE{number}", "")).strip().upper().split("-", 1)[0]
    return coordinate == "DEC" or coordinate.endswith(("LAT", "LT"))


def _header_wcs_problem(header: fits.Header, axes: list[int]) -> str | None:
    """The header value that breaks the sky axes, in the header's own words, when one is plainly wrong."""
    def number(key: str) -> float | None:
        value = header.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    cd = {(i, j): number(f"CD{i}_{j}") for i in axes for j in axes}
    has_cd = any(value is not None for value in cd.values())
    for axis in axes:
        if not has_cd and number(f"CDELT{axis}") == 0:
            return f"CDELT{axis} is 0"
        crval = number(f"CRVAL{axis}")
        if _is_latitude(header, axis) and crval is not None and abs(crval) > 90:
            return f"CRVAL{axis} = {crval:g} is a latitude beyond +/-90 degrees"
    if has_cd and len(axes) == 2:
        (a, b) = axes
        matrix = np.array([[cd[(a, a)] or 0.0, cd[(a, b)] or 0.0], [cd[(b, a)] or 0.0, cd[(b, b)] or 0.0]])
        scale = float(np.max(np.abs(matrix)))
        if scale == 0 or abs(float(np.linalg.det(matrix))) <= 1e-12 * scale * scale:
            return f"the CD matrix (CD{a}_{a}, CD{a}_{b}, CD{b}_{a}, CD{b}_{b}) is singular"
    return None


def _wcslib_reason(exc: Exception) -> str:
    """WCSLIB's sentence without its source-file location ('ERROR 4 in wcs_types() at line ...')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not (line.startswith("ERROR ") and " at line " in line)] or lines
    text = (lines[0] if lines else type(exc).__name__).rstrip(".")
    return text[:1].lower() + text[1:]


def _reason(exc: BaseException, path: str | None, name: str) -> str:
    """An exception's text with the file's path shown as the name the user knows."""
    text = str(exc) or type(exc).__name__
    if path:
        text = text.replace(str(Path(path).resolve()), name).replace(str(path), name)
    return text


def _scaling(hdu: Any) -> tuple[int, Any, Any, int | None] | None:
    """``(BITPIX, BSCALE, BZERO, BLANK)`` of an uncompressed image HDU whose pixels are scaled; None otherwise."""
    if isinstance(hdu, fits.CompImageHDU) or not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)):
        return None
    header = hdu.header
    bitpix = header.get("BITPIX")
    bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
    blank = header.get("BLANK")
    if not isinstance(bitpix, int) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in (bscale, bzero)):
        return None  # let astropy judge a malformed header
    if bitpix < 0 or not isinstance(blank, int) or isinstance(blank, bool):
        blank = None  # BLANK is for integer pixels only
    if bscale == 1 and bzero == 0 and blank is None:
        return None
    return bitpix, bscale, bzero, blank


class ScaledPixels:
    """Pixels stored as scaled integers, read window by window: ``raw * BSCALE + BZERO``, BLANK as NaN.

    astropy applies BSCALE/BZERO/BLANK only by reading a whole image into memory (a 32768 x 32768
    16-bit image would take 4 GB as float32). This keeps the raw integers memory-mapped and
    scales only what is sliced, with astropy's own arithmetic and result types (float32 for
    8- and 16-bit integers, float64 for 32- and 64-bit ones and for floating-point pixels,
    unsigned integers for BZERO = 2**(BITPIX-1), int8 for BITPIX 8 with BZERO = -128), so that
    every window holds the numbers of astropy's ``hdu.data``. BLANK pixels are NaN (in every
    case: astropy leaves them as integers in unsigned images).

    Sliced like a numpy array (``pixels[y0:y1, x0:x1]``, steps included); ``np.asarray(pixels)``
    reads it whole.
    """

    def __init__(self, raw: Any, bitpix: int, bscale: Any, bzero: Any, blank: int | None) -> None:
        self.raw = raw
        self.base = raw  # what `SkyImage.is_memory_mapped` follows down to the memory map
        self.bitpix, self.bscale, self.bzero, self.blank = int(bitpix), bscale, bzero, blank
        self._target = _scaled_dtype(self.bitpix, bscale, bzero)
        dtype = self._target if self._target is not None else np.dtype(raw.dtype)
        if blank is not None and dtype.kind != "f":
            dtype = np.dtype(np.float32 if abs(self.bitpix) <= 16 else np.float64)
        self.dtype = dtype
        self.shape = tuple(int(n) for n in raw.shape)
        self.ndim = len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        out = self._scale(np.asarray(self.raw[key]))
        return out[()] if out.ndim == 0 else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    def _scale(self, raw: np.ndarray) -> np.ndarray:
        target = self._target
        if target is not None and target.kind == "u":  # the unsigned convention: wrap, as astropy does
            data = np.array(raw, dtype=target)
            data -= target.type(1 << (8 * target.itemsize - 1))
        elif target is not None and target.kind == "i":  # BITPIX 8 with BZERO = -128: signed bytes
            data = np.array(raw, dtype=target)
            data += target.type(int(self.bzero))
        else:
            data = np.array(raw, dtype=target) if target is not None else np.array(raw)
            if self.bscale != 1:
                np.multiply(data, self.bscale, data)
            if self.bzero != 0:
                data += self.bzero
        if self.blank is not None:
            blanks = raw == self.blank
            data = data.astype(self.dtype, copy=False)
            if blanks.any():
                data[blanks] = np.nan
        return data


def _scaled_dtype(bitpix: int, bscale: Any, bzero: Any) -> np.dtype | None:
    """The type astropy gives scaled pixels (``ImageHDU._dtype_for_bitpix``); None: the raw floating-point type."""
    if bscale == 1:
        if bitpix == 8 and bzero == -128:
            return np.dtype(np.int8)
        for bits, dtype in ((16, np.uint16), (32, np.uint32), (64, np.uint64)):
            if bitpix == bits and bzero == 1 << (bits - 1):
                return np.dtype(dtype)
    if bitpix > 16:
        return np.dtype(np.float64)
    if bitpix > 0:
        return np.dtype(np.float32)
    return None
