"""The restoring beam of a radio image: read from any header style, given by a user, or estimated.

The beam turns Jy/beam sums into integrated flux densities and sets the scale of a point
source, so the reader looks for it wherever real images keep it:

1. ``BMAJ``/``BMIN``/``BPA`` keywords in degrees (CASA, WSClean, most pipelines);
2. AIPS ``HISTORY AIPS   CLEAN BMAJ=  1.5000E-03 BMIN=  1.5000E-03 BPA=   0.00`` cards (also
   IMAGR and other task names), the last one winning as later tasks overwrite the beam;
3. a CASA per-plane beam table: a binary table HDU ``BEAMS`` with columns BMAJ, BMIN, BPA
   (units in TUNITn, usually arcsec and deg), CHAN and POL, written with ``CASAMBM = T``.

An image with none of these gets a beam estimated from its pixels (`estimate_beam`), which is
good enough to detect with but not to turn pixel sums into fluxes (see `Beam.estimated`).

Conventions: FWHM axes in degrees; position angles east of north in [-90, 90), north being
that of the image's own celestial frame, as headers write BPA (equatorial for RA/DEC images,
Galactic for GLON/GLAT ones; `Beam.icrs_position_angle` gives the ICRS one); a header
ellipse written with BMIN > BMAJ is the same ellipse as (BMIN, BMAJ) at BPA + 90, so it is
swapped losslessly; a user's text with bmin > bmaj is refused instead, because the likelier
mistake there is the order of the numbers, and swapping would turn the position angle by 90.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from ..errors import UserInputError
from ._orientation import pixel_to_sky_matrix, sky_to_pixel_matrix

__all__ = [
    "Beam",
    "ESTIMATED",
    "estimate_beam",
    "parse_beam",
    "read_beam",
]

KEYWORDS = "BMAJ/BMIN/BPA keywords"
AIPS_HISTORY = "AIPS CLEAN history"
CASA_TABLE = "CASA beam table (BEAMS)"
PARAMETER = "BEAM parameter"
ESTIMATED = "estimated from the image"

_AIPS_BEAM = re.compile(
    r"AIPS\s+(?:\w+\s+)*?BMAJ\s*=\s*(?P<bmaj>[-+0-9.EeDd]+)\s+BMIN\s*=\s*(?P<bmin>[-+0-9.EeDd]+)"
    r"(?:\s+BPA\s*=\s*(?P<bpa>[-+0-9.EeDd]+))?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Beam:
    """An elliptical Gaussian restoring beam.

    Attributes
    ----------
    bmaj, bmin : float
        FWHM of the major and minor axes, degrees (``bmaj >= bmin > 0``).
    bpa : float
        Position angle of the major axis, degrees east of north in the image's own celestial
        frame (as BPA is written in headers), in [-90, 90).
    origin : str
        Where it came from: "BMAJ/BMIN/BPA keywords", "AIPS CLEAN history",
        "CASA beam table (BEAMS)", "BEAM parameter" or "estimated from the image".
    """

    bmaj: float
    bmin: float
    bpa: float
    origin: str

    @property
    def estimated(self) -> bool:
        """True for a beam guessed from the pixels: fine for detection, not for flux densities."""
        return self.origin == ESTIMATED

    def area_pixels(self, pixel_scale_arcsec: float) -> float:
        """Beam solid angle in pixels, ``pi * bmaj * bmin / (4 ln 2)``: divides Jy/beam sums into Jy.

        Parameters
        ----------
        pixel_scale_arcsec : float
            Pixel side, arcsec (the geometric mean of both sides for rectangular pixels).
        """
        scale_deg = float(pixel_scale_arcsec) / 3600.0
        return float(math.pi * (self.bmaj / scale_deg) * (self.bmin / scale_deg) / (4.0 * math.log(2.0)))

    def in_pixels(self, wcs: WCS, x: float | None = None, y: float | None = None) -> tuple[float, float, float]:
        """The beam as it lies on the pixel grid at 0-based pixel ``(x, y)``.

        Parameters
        ----------
        wcs : astropy.wcs.WCS
            The image's celestial WCS (any projection, frame, rotation or parity).
        x, y : float, optional
            Where to measure; by default the image centre (the reference pixel when the WCS
            does not know the image size).

        Returns
        -------
        (major_px, minor_px, pa_pixel_deg) : tuple of float
            FWHM axes in pixels, and the angle of the major axis in the pixel frame, degrees from
            +y towards -x in [-90, 90); equal to ``bpa`` for a north-up, east-left image.
        """
        if x is None or y is None:
            x, y = _default_position(wcs)
        matrix = sky_to_pixel_matrix(wcs, x, y, frame="native")  # pixels per degree (east, north)
        sky = _covariance(self.bmaj, self.bmin, _sky_direction(self.bpa))
        major, minor, direction = _axes(matrix @ sky @ matrix.T)
        return major, minor, _pixel_angle_of(direction)

    def icrs_position_angle(self, wcs: WCS, x: float | None = None, y: float | None = None) -> float:
        """Position angle of the major axis east of ICRS north, degrees in [-90, 90).

        Equal to ``bpa`` for equatorial images (up to the tiny FK5-ICRS frame rotation); about
        60 degrees away from it for a Galactic image, whose BPA is measured from Galactic north.
        Measured at 0-based pixel ``(x, y)`` (by default the image centre).
        """
        from ._orientation import sky_position_angle

        if x is None or y is None:
            x, y = _default_position(wcs)
        return float(sky_position_angle(self.in_pixels(wcs, x, y)[2], wcs, x, y))

    def describe(self) -> str:
        """Human text, e.g. ``6.00" x 5.00" at PA 30.0 deg``."""
        return f'{self.bmaj * 3600:.3g}" x {self.bmin * 3600:.3g}" at PA {self.bpa:.1f} deg'


def read_beam(header: fits.Header, hdul: fits.HDUList | None = None, plane: int = 0, pol: int = 0) -> Beam | None:
    """The restoring beam recorded with an image, or None when it has none.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Header of the image HDU.
    hdul : astropy.io.fits.HDUList, optional
        The whole file, to find a CASA ``BEAMS`` table (only its table is read).
    plane : int
        0-based channel: index along the (degenerate) spectral axis the image was taken from.
    pol : int
        0-based polarisation plane: index along the STOKES axis.

    Returns
    -------
    Beam or None
        From, in this order, BMAJ/BMIN/BPA keywords, AIPS HISTORY cards, the CASA beam table.
        Values that are missing, not finite or not positive are skipped.
    """
    return _from_keywords(header) or _from_aips_history(header) or _from_casa_table(hdul, plane, pol)


def parse_beam(text: str) -> Beam:
    """A beam given by a user as ``"bmaj bmin pa"``.

    Parameters
    ----------
    text : str
        Three numbers separated by spaces or commas: FWHM major and minor axes in arcsec and the
        position angle in degrees east of north, as a header's BPA (``"6 5 30"``, ``"6,5,30"``). Each may carry an
        astropy angle unit instead (``"6arcsec 5arcsec 30deg"``, ``"0.0016667deg 0.00139deg 30deg"``,
        ``'6" 5" 30deg'``).

    Returns
    -------
    Beam
        With origin "BEAM parameter".

    Raises
    ------
    UserInputError
        Not three values, not numbers, not angles, axes not positive, or bmin > bmaj.
    """
    shown = str(text).strip()
    example = "write 'bmaj bmin pa', e.g. '6 5 30' (arcsec, arcsec, degrees)"
    parts = [p for p in re.split(r"[\s,;]+", _glue_units(shown)) if p]
    if len(parts) != 3:
        raise UserInputError(f"BEAM {shown!r} has {len(parts)} values, not 3: {example}.")
    values = [_angle(part, default, shown, example) for part, default in zip(parts, ("arcsec", "arcsec", "deg"))]
    bmaj, bmin, bpa = values
    if not (bmaj > 0 and bmin > 0):
        raise UserInputError(f"BEAM {shown!r}: the axes must be positive: {example}.")
    if bmin > bmaj:
        raise UserInputError(
            f"BEAM {shown!r}: the minor axis is larger than the major axis; give the major axis "
            f"first ({example}).")
    return Beam(bmaj, bmin, _wrap(bpa), PARAMETER)


def estimate_beam(data: Any, pixel_scale_arcsec: float | None, *, wcs: WCS | None = None) -> Beam | None:
    """Estimate the restoring beam from the pixels of an image that records none.

    Two measurements, on a central window (at most 2048 x 2048 pixels, so that a huge
    memory-mapped image costs no more than a small one; NaN pixels are ignored):

    * the *sources*: elliptical Gaussians fitted to isolated, high signal-to-noise compact
      sources; in a restored image an unresolved source is the restoring beam, resolved ones are
      larger, so the beam is the median of the smallest well-measured sources;
    * the *noise*: the autocorrelation of the source-free pixels; an interferometric image's
      noise is correlated like its dirty beam, whose main lobe the restoring beam fits. White
      (uncorrelated) noise gives no answer.

    Resolved sources and sources below the detection threshold only widen either measurement,
    so when both answer, the smaller beam is kept.

    Parameters
    ----------
    data : array-like
        The 2-D image ``[y, x]`` (a memory map is fine: only the window is read).
    pixel_scale_arcsec : float or None
        Pixel side, arcsec; used to express the beam in degrees when no WCS is given (the image
        is then assumed north-up, east-left).
    wcs : astropy.wcs.WCS, optional
        The image's celestial WCS: gives the scale and orientation at the window centre, so the
        position angle is east of north (of the image's frame, like a header BPA) whatever the
        image's rotation or parity.

    Returns
    -------
    Beam or None
        Origin "estimated from the image"; None when neither measurement can tell (too few
        sources and white noise), or when there is no pixel scale.
    """
    from ._beam_estimate import pixel_beam_covariance

    if wcs is None and not (pixel_scale_arcsec and math.isfinite(pixel_scale_arcsec) and pixel_scale_arcsec > 0):
        return None
    found = pixel_beam_covariance(data)
    if found is None:
        return None
    covariance, (xc, yc) = found  # FWHM^2 in pixels^2, window centre
    if wcs is not None:
        to_sky = pixel_to_sky_matrix(wcs, xc, yc, frame="native")  # degrees (east, north) per pixel
    else:
        scale = float(pixel_scale_arcsec) / 3600.0
        to_sky = np.array([[-scale, 0.0], [0.0, scale]])  # north up, east left
    if not np.all(np.isfinite(to_sky)):
        return None
    major, minor, direction = _axes(to_sky @ covariance @ to_sky.T)
    return Beam(major, minor, _wrap(math.degrees(math.atan2(direction[0], direction[1]))), ESTIMATED)


# ---------------------------------------------------------------------------------------------
# header styles


def _from_keywords(header: fits.Header) -> Beam | None:
    """BMAJ/BMIN/BPA in degrees (BMIN defaults to BMAJ, BPA to 0)."""
    try:
        bmaj = float(header["BMAJ"])
        bmin = float(header.get("BMIN", bmaj))
        bpa = float(header.get("BPA", 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    return _checked(bmaj, bmin, bpa, KEYWORDS)


def _from_aips_history(header: fits.Header) -> Beam | None:
    """The last ``HISTORY AIPS <task> BMAJ= ... BMIN= ... BPA= ...`` card (degrees)."""
    try:
        cards = list(header["HISTORY"])
    except KeyError:
        return None
    for card in reversed(cards):
        match = _AIPS_BEAM.search(str(card))
        if match is None:
            continue
        try:
            bmaj, bmin = _fortran_float(match["bmaj"]), _fortran_float(match["bmin"])
            bpa = _fortran_float(match["bpa"]) if match["bpa"] else 0.0
        except ValueError:
            continue
        beam = _checked(bmaj, bmin, bpa, AIPS_HISTORY)
        if beam is not None:
            return beam
    return None


def _from_casa_table(hdul: fits.HDUList | None, plane: int, pol: int) -> Beam | None:
    """The row of CASA's ``BEAMS`` table for this channel and polarisation."""
    if hdul is None:
        return None
    table = next((h for h in hdul if isinstance(h, fits.BinTableHDU)
                  and str(h.header.get("EXTNAME", "")).strip().upper() == "BEAMS"), None)
    if table is None or table.data is None or len(table.data) == 0:
        return None
    names = {name.upper(): name for name in table.columns.names}
    if not {"BMAJ", "BMIN"} <= names.keys():
        return None
    rows = table.data
    match = np.ones(len(rows), dtype=bool)
    for key, wanted in (("CHAN", plane), ("POL", pol)):
        if key in names:
            match &= np.asarray(rows[names[key]]).astype(np.int64) == int(wanted)
    if match.any():
        row = int(np.argmax(match))
    elif len(rows) == 1:
        row = 0
    else:
        return None  # the table does not list this plane: better no beam than another plane's

    def value(key: str, default_unit: str) -> float:
        column = table.columns[names[key]]
        unit = u.Unit(str(column.unit).strip() if column.unit else default_unit, parse_strict="silent")
        return float((float(rows[names[key]][row]) * unit).to_value(u.deg))

    try:
        bmaj, bmin = value("BMAJ", "arcsec"), value("BMIN", "arcsec")
        bpa = value("BPA", "deg") if "BPA" in names else 0.0
    except (u.UnitsError, ValueError, TypeError):
        return None
    return _checked(bmaj, bmin, bpa, CASA_TABLE)


def _checked(bmaj: float, bmin: float, bpa: float, origin: str) -> Beam | None:
    """A `Beam` from header values, or None when they are not finite and positive."""
    if not (math.isfinite(bmaj) and math.isfinite(bmin) and bmaj > 0 and bmin > 0):
        return None
    bpa = bpa if math.isfinite(bpa) else 0.0
    if bmin > bmaj:  # the same ellipse, named the other way round
        bmaj, bmin, bpa = bmin, bmaj, bpa + 90.0
    return Beam(bmaj, bmin, _wrap(bpa), origin)


def _fortran_float(text: str) -> float:
    return float(text.upper().replace("D", "E"))


# ---------------------------------------------------------------------------------------------
# user text


def _glue_units(text: str) -> str:
    """Join a number and its unit written apart (``"6 arcsec"`` -> ``"6arcsec"``)."""
    return re.sub(r"(?<=[0-9.])\s+(?=[A-Za-z\"'])", "", text)


def _angle(part: str, default: str, shown: str, example: str) -> float:
    """One value of a BEAM text, in degrees (arcsec for the axes, degrees for PA by default)."""
    part = part.replace('"', "arcsec").replace("'", "arcmin")
    try:
        number = float(part)
    except ValueError:
        try:
            quantity = u.Quantity(part)
            if quantity.unit == u.dimensionless_unscaled:
                raise TypeError
            value = float(quantity.to_value(u.deg))
        except (TypeError, ValueError, u.UnitsError):
            raise UserInputError(f"BEAM {shown!r}: {part!r} is not a number or an angle: {example}.") from None
    else:
        value = float((number * u.Unit(default)).to_value(u.deg))
    if not math.isfinite(value):
        raise UserInputError(f"BEAM {shown!r}: {part!r} is not a finite number: {example}.")
    return value


# ---------------------------------------------------------------------------------------------
# ellipse geometry (FWHM ellipses as "covariance" matrices of FWHM^2)


def _sky_direction(pa_deg: float) -> np.ndarray:
    """Unit vector (east, north) of position angle ``pa`` (east of north)."""
    a = math.radians(pa_deg)
    return np.array([math.sin(a), math.cos(a)])


def _covariance(major: float, minor: float, direction: np.ndarray) -> np.ndarray:
    """Matrix with eigenvalue major**2 along `direction` and minor**2 across it."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.hypot(d[0], d[1])
    across = np.array([-d[1], d[0]])
    return major * major * np.outer(d, d) + minor * minor * np.outer(across, across)


def _axes(matrix: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(major, minor, unit major direction) of a symmetric positive 2x2 matrix of FWHM^2."""
    values, vectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    return float(math.sqrt(max(values[1], 0.0))), float(math.sqrt(max(values[0], 0.0))), vectors[:, 1]


def _pixel_angle_of(direction: np.ndarray) -> float:
    """Angle of a pixel-frame direction (dx, dy), degrees from +y towards -x, in [-90, 90)."""
    return _wrap(math.degrees(math.atan2(-direction[0], direction[1])))


def _wrap(angle: float) -> float:
    """An axis angle (180-degree periodic) in [-90, 90)."""
    return float((angle + 90.0) % 180.0 - 90.0)


def _default_position(wcs: WCS) -> tuple[float, float]:
    """The image centre when the WCS knows the image size, else the reference pixel (0-based)."""
    shape = getattr(wcs, "pixel_shape", None)
    if shape is not None and len(shape) >= 2 and shape[0] and shape[1]:
        return ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
    crpix = wcs.wcs.crpix
    return (float(crpix[0]) - 1.0, float(crpix[1]) - 1.0)

