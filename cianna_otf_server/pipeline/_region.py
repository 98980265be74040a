"""Regions of interest: SODA sky shapes and FITS pixel ranges, turned into pixel boxes.

A job may search only part of an image. The region arrives as IVOA SODA text in ICRS degrees
(``CIRCLE ra dec radius``, ``POLYGON ra1 dec1 ...``, ``POS=RANGE ra1 ra2 dec1 dec2``) or as a
FITS pixel range (``PIXELS=x1 x2 y1 y2``, 1-based, inclusive). Everything downstream works in
pixels, so a region becomes a `PixelBox`: the bounding box to tile, plus, for sky shapes, an
exact membership test that keeps only detections whose centre lies inside the shape.

Sky membership is evaluated per pixel centre through the WCS (with distortions), in the image's
own celestial frame; circles use the true angular distance, polygons have straight edges in
the pixel plane (exact great circles for TAN images, a close approximation for small polygons
in other projections), RANGE compares ICRS right ascension and declination.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import RegionError

__all__ = ["PixelBox", "parse_region", "parse_pixels", "full_box"]

# Pixels above which the bounding box is not tightened by evaluating the shape on every pixel.
_TIGHTEN_LIMIT = 4_000_000
# Coarse grid points along the longer image axis used to find where a sky shape lies.
_COARSE_POINTS = 256
_MASK_CHUNK = 1_000_000

_NUMBER = r"[-+]?(?:inf(?:inity)?|nan|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"

Contains = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(eq=False)
class PixelBox:
    """The part of an image to search.

    Bounds are 0-based, inclusive-exclusive (``data[y0:y1, x0:x1]``) and clipped to the image.

    Attributes
    ----------
    x0, x1, y0, y1 : int
        Pixel bounds of the box.
    kind : str
        "image" (whole image), "pixels", "circle", "polygon" or "range".
    text : str
        The region as given, normalised (for catalogue metadata and provenance).
    """

    x0: int
    x1: int
    y0: int
    y1: int
    kind: str = "image"
    text: str = ""
    _shape: Contains | None = field(default=None, repr=False)
    _mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        """Box width (pixels)."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """Box height (pixels)."""
        return self.y1 - self.y0

    @property
    def has_shape(self) -> bool:
        """True for circles, polygons and RANGE regions, whose box is only a bound."""
        return self._shape is not None

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice(y0, y1), slice(x0, x1))`` for numpy indexing."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    @property
    def mask(self) -> np.ndarray | None:
        """Boolean ``[height, width]`` array, True for pixels whose centre is in the shape.

        None for plain boxes (every pixel is in). Computed on first use, in chunks of rows,
        because a large circle on a large image may cover many millions of pixels.
        """
        if self._shape is None:
            return None
        if self._mask is None:
            self._mask = _evaluate_mask(self._shape, self.x0, self.x1, self.y0, self.y1)
        return self._mask

    def contains(self, x: Any, y: Any) -> np.ndarray:
        """Whether points (0-based full-image pixel coordinates, any float) lie in the region.

        A point is in when it lies in the box (pixel ``i`` spans ``[i - 0.5, i + 0.5)``) and,
        for sky shapes, inside the shape itself.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        inside = (
            (x >= self.x0 - 0.5) & (x < self.x1 - 0.5) & (y >= self.y0 - 0.5) & (y < self.y1 - 0.5)
        )
        if self._shape is not None and inside.any():
            result = np.zeros(inside.shape, dtype=bool)
            result[inside] = self._shape(x[inside], y[inside])
            inside = result
        return inside


def full_box(image: Any) -> PixelBox:
    """The box covering the whole image."""
    ny, nx = int(image.data.shape[0]), int(image.data.shape[1])
    return PixelBox(0, nx, 0, ny, kind="image", text="")


def parse_region(text: str | None, pixels: str | None, image: Any) -> PixelBox:
    """Turn a SODA sky region and/or a FITS pixel range into a `PixelBox` of ``image``.

    Parameters
    ----------
    text : str or None
        ``CIRCLE ra dec radius``, ``POLYGON ra1 dec1 ra2 dec2 ra3 dec3 ...``,
        ``POS=RANGE ra1 ra2 dec1 dec2`` (or ``RANGE ...``); ICRS degrees; keywords are
        case-insensitive and may be followed by ``=``; ``POS=CIRCLE ...`` and
        ``POS=POLYGON ...`` are accepted too, as is ``PIXELS=...``.
    pixels : str or None
        ``x1 x2 y1 y2``, FITS 1-based inclusive pixel numbers (``PIXELS=`` prefix optional).
    image : SkyImage
        The image (its ``data.shape`` and ``wcs`` are used).

    Returns
    -------
    PixelBox
        The whole image when both are None; their intersection when both are given.

    Raises
    ------
    RegionError
        Malformed text, bad numbers, a radius <= 0, a sky region on an image without WCS, or
        a region that does not overlap the image.
    """
    ny, nx = int(image.data.shape[0]), int(image.data.shape[1])
    text = text.strip() if isinstance(text, str) else text
    pixels = pixels.strip() if isinstance(pixels, str) else pixels
    if text and re.match(r"^\s*PIXELS\b", text, re.IGNORECASE):
        if pixels:
            raise RegionError("PIXELS was given twice; give one pixel range.")
        text, pixels = None, text
    bound = full_box(image)
    if pixels:
        bound = parse_pixels(pixels, (nx, ny))
    if not text:
        return bound
    box = _parse_sky(text, image, (nx, ny))
    x0, x1 = max(box.x0, bound.x0), min(box.x1, bound.x1)
    y0, y1 = max(box.y0, bound.y0), min(box.y1, bound.y1)
    if x0 >= x1 or y0 >= y1:
        raise RegionError("The sky region and the PIXELS range do not overlap.")
    if pixels:
        box.text = f"{box.text}; {bound.text}"
    box.x0, box.x1, box.y0, box.y1 = x0, x1, y0, y1
    box._mask = None
    return box


def parse_pixels(text: str, size: tuple[int, int]) -> PixelBox:
    """Parse ``x1 x2 y1 y2`` (FITS 1-based, inclusive; ``-Inf``/``+Inf`` allowed) for an image of ``size`` (W, H)."""
    body = re.sub(r"^\s*PIXELS\s*=?\s*", "", text, flags=re.IGNORECASE)
    values = _numbers(body, "PIXELS")
    if len(values) != 4:
        raise RegionError(f"PIXELS needs 4 numbers (x1 x2 y1 y2, FITS 1-based, inclusive), got {len(values)}.")
    if any(math.isnan(v) for v in values):
        raise RegionError("PIXELS values must be numbers, not NaN.")
    for v in values:
        if math.isfinite(v) and v != math.floor(v):
            raise RegionError(f"PIXELS values must be whole pixel numbers, not {v:g}.")
    nx, ny = size
    xa, xb = sorted(values[0:2])
    ya, yb = sorted(values[2:4])
    # FITS 1-based inclusive [a, b] -> 0-based half-open [a-1, b)
    x0, x1 = _clip_range(xa - 1, xb, nx)
    y0, y1 = _clip_range(ya - 1, yb, ny)
    if x0 >= x1 or y0 >= y1:
        raise RegionError(
            f"PIXELS {_fmt(values)} does not overlap the image (1..{nx} in x, 1..{ny} in y)."
        )
    return PixelBox(x0, x1, y0, y1, kind="pixels", text=f"PIXELS={_fmt(values)}")


def _clip_range(lo: float, hi: float, n: int) -> tuple[int, int]:
    lo = 0 if lo == -math.inf else lo
    hi = n if hi == math.inf else hi
    return int(max(0, min(n, lo))), int(max(0, min(n, hi)))


def _numbers(body: str, what: str) -> list[float]:
    tokens = [t for t in re.split(r"[\s,]+", body.strip()) if t]
    values = []
    for token in tokens:
        if not re.fullmatch(_NUMBER, token, re.IGNORECASE):
            raise RegionError(f"{what}: {token!r} is not a number.")
        values.append(float(token))
    return values


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.10g}" if math.isfinite(v) else ("+Inf" if v > 0 else "-Inf") for v in values)


def _parse_sky(text: str, image: Any, size: tuple[int, int]) -> PixelBox:
    match = re.match(r"^\s*(?:POS\s*=\s*)?(CIRCLE|POLYGON|RANGE)\b\s*=?\s*(.*)$", text, re.IGNORECASE | re.DOTALL)
    if match is None:
        raise RegionError(
            f"Cannot read the region {text!r}: expected CIRCLE ra dec radius, POLYGON ra1 dec1 ..., "
            "POS=RANGE ra1 ra2 dec1 dec2 (ICRS degrees) or PIXELS=x1 x2 y1 y2."
        )
    shape = match.group(1).upper()
    values = _numbers(match.group(2), shape)
    if any(math.isnan(v) for v in values):
        raise RegionError(f"{shape}: values must be numbers, not NaN.")
    if image.wcs is None:
        raise RegionError(f"A {shape} region needs an image with a celestial WCS; this one has none (use PIXELS).")
    if shape == "CIRCLE":
        return _circle(values, image.wcs, size)
    if shape == "POLYGON":
        return _polygon(values, image.wcs, size)
    return _range(values, image.wcs, size)


# ---------------------------------------------------------------- coordinates


class _Sky:
    """Pixel <-> world helpers for one celestial WCS, in its native frame and in ICRS."""

    def __init__(self, wcs: Any) -> None:
        from astropy.wcs.utils import wcs_to_celestial_frame

        self.wcs = wcs
        self.lng, self.lat = wcs.wcs.lng, wcs.wcs.lat
        try:
            self.frame = wcs_to_celestial_frame(wcs)
        except ValueError:
            self.frame = None
        self.is_icrs = self.frame is None or self.frame.name == "icrs"

    def icrs_to_native(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.is_icrs:
            return np.asarray(ra, float), np.asarray(dec, float)
        from astropy.coordinates import SkyCoord

        coords = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(self.frame)
        return coords.spherical.lon.deg, coords.spherical.lat.deg

    def native_to_icrs(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.is_icrs:
            return lon, lat
        from astropy.coordinates import SkyCoord

        coords = SkyCoord(lon, lat, unit="deg", frame=self.frame).icrs
        return coords.ra.deg, coords.dec.deg

    def pix_to_native(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            world = self.wcs.all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
        return np.asarray(world[self.lng]), np.asarray(world[self.lat])

    def native_to_pix(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        world = [None, None]
        world[self.lng], world[self.lat] = np.asarray(lon, float), np.asarray(lat, float)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                x, y = self.wcs.all_world2pix(world[0], world[1], 0, quiet=True)
            except Exception:
                x, y = self.wcs.wcs_world2pix(world[0], world[1], 0)
        return np.asarray(x, float), np.asarray(y, float)


def _angular_distance(lon1: float, lat1: float, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """Great-circle distance in degrees (Vincenty formula: stable at all separations)."""
    l1, b1 = math.radians(lon1), math.radians(lat1)
    l2, b2 = np.radians(lon2), np.radians(lat2)
    dl = l2 - l1
    num = np.hypot(np.cos(b2) * np.sin(dl), math.cos(b1) * np.sin(b2) - math.sin(b1) * np.cos(b2) * np.cos(dl))
    den = math.sin(b1) * np.sin(b2) + math.cos(b1) * np.cos(b2) * np.cos(dl)
    return np.degrees(np.arctan2(num, den))


def _offset(lon: float, lat: float, pa: np.ndarray, dist: float) -> tuple[np.ndarray, np.ndarray]:
    """Points at angular distance ``dist`` (deg) from (lon, lat) towards position angles ``pa`` (rad)."""
    b, r = math.radians(lat), math.radians(dist)
    lat2 = np.arcsin(math.sin(b) * math.cos(r) + math.cos(b) * math.sin(r) * np.cos(pa))
    lon2 = math.radians(lon) + np.arctan2(
        np.sin(pa) * math.sin(r) * math.cos(b), math.cos(r) - math.sin(b) * np.sin(lat2)
    )
    return np.degrees(lon2) % 360.0, np.degrees(lat2)


def _points_in_polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the points, looping over the (few) polygon edges."""
    inside = np.zeros(np.shape(x), dtype=bool)
    n = len(px)
    for i in range(n):
        xa, ya, xb, yb = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        crosses = (ya > y) != (yb > y)
        if not crosses.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = xa + (y - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (x < x_cross)
    return inside


# ---------------------------------------------------------------- shapes


def _check_lonlat(ra: float, dec: float, what: str) -> None:
    if not math.isfinite(ra) or not math.isfinite(dec):
        raise RegionError(f"{what}: right ascension and declination must be finite numbers.")
    if not -90.0 <= dec <= 90.0:
        raise RegionError(f"{what}: declination {dec:g} is outside [-90, 90] degrees.")


def _circle(values: list[float], wcs: Any, size: tuple[int, int]) -> PixelBox:
    if len(values) != 3:
        raise RegionError(f"CIRCLE needs 3 numbers (ra dec radius, ICRS degrees), got {len(values)}.")
    ra, dec, radius = values
    _check_lonlat(ra, dec, "CIRCLE")
    if not math.isfinite(radius) or radius <= 0:
        raise RegionError(f"CIRCLE: the radius must be a positive number of degrees, not {radius:g}.")
    if radius >= 180:
        radius = 180.0
    sky = _Sky(wcs)
    lon_c, lat_c = (float(v) for v in np.ravel(sky.icrs_to_native(np.array([ra]), np.array([dec]))))

    def contains(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        lon, lat = sky.pix_to_native(x, y)
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(_angular_distance(lon_c, lat_c, lon, lat), nan=np.inf) <= radius

    pa = np.linspace(0.0, 2.0 * np.pi, 181)
    lon_b, lat_b = _offset(lon_c, lat_c, pa, radius)
    boundary = sky.native_to_pix(np.append(lon_b, lon_c), np.append(lat_b, lat_c))
    text = f"CIRCLE {_fmt(values)}"
    return _sky_box("circle", text, contains, boundary, size)


def _polygon(values: list[float], wcs: Any, size: tuple[int, int]) -> PixelBox:
    if len(values) < 6 or len(values) % 2:
        raise RegionError(
            f"POLYGON needs an even number of values, at least 3 vertices (ra1 dec1 ra2 dec2 ra3 dec3 ...), got {len(values)}."
        )
    ra, dec = np.array(values[0::2]), np.array(values[1::2])
    for r, d in zip(ra, dec):
        _check_lonlat(float(r), float(d), "POLYGON")
    sky = _Sky(wcs)
    px, py = sky.native_to_pix(*sky.icrs_to_native(ra, dec))
    if not (np.all(np.isfinite(px)) and np.all(np.isfinite(py))):
        raise RegionError("POLYGON: a vertex cannot be placed on this image's projection (too far from it).")

    def contains(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _points_in_polygon(x, y, px, py)

    # Edges sampled densely so that the bounding box follows them.
    t = np.linspace(0.0, 1.0, 33)[:-1]
    bx = np.concatenate([px[i] + t * (px[(i + 1) % len(px)] - px[i]) for i in range(len(px))])
    by = np.concatenate([py[i] + t * (py[(i + 1) % len(py)] - py[i]) for i in range(len(py))])
    return _sky_box("polygon", f"POLYGON {_fmt(values)}", contains, (bx, by), size)


def _range(values: list[float], wcs: Any, size: tuple[int, int]) -> PixelBox:
    if len(values) != 4:
        raise RegionError(f"RANGE needs 4 numbers (ra1 ra2 dec1 dec2, ICRS degrees), got {len(values)}.")
    ra1, ra2, dec1, dec2 = values
    if dec1 > dec2:
        dec1, dec2 = dec2, dec1
    if dec1 > 90 or dec2 < -90:
        raise RegionError("RANGE: the declination interval lies outside [-90, 90] degrees.")
    if ra1 == math.inf or ra2 == -math.inf:
        raise RegionError("RANGE: the right ascension interval is empty.")
    lo_raw = 0.0 if ra1 == -math.inf else ra1
    hi_raw = 360.0 if ra2 == math.inf else ra2
    full_ra = hi_raw - lo_raw >= 360.0
    lo, hi = (0.0, 360.0) if full_ra else (lo_raw % 360.0, hi_raw % 360.0)
    wraps = not full_ra and lo > hi  # e.g. 359.5 .. 0.5 crosses RA = 0
    sky = _Sky(wcs)

    def contains(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ra, dec = sky.native_to_icrs(*sky.pix_to_native(x, y))
        ra = np.asarray(ra) % 360.0
        with np.errstate(invalid="ignore"):
            in_dec = (dec >= dec1) & (dec <= dec2)
            if full_ra:
                in_ra = np.isfinite(ra)
            elif wraps:
                in_ra = (ra >= lo) | (ra <= hi)
            else:
                in_ra = (ra >= lo) & (ra <= hi)
        return in_dec & in_ra

    # Boundary: the four edges where they are finite.
    d_lo, d_hi = max(dec1, -90.0), min(dec2, 90.0)
    r_hi = hi + 360.0 if wraps else hi
    t = np.linspace(0.0, 1.0, 65)
    ras = [np.full_like(t, lo), np.full_like(t, r_hi), lo + t * (r_hi - lo), lo + t * (r_hi - lo)]
    decs = [d_lo + t * (d_hi - d_lo), d_lo + t * (d_hi - d_lo), np.full_like(t, d_lo), np.full_like(t, d_hi)]
    ra_b, dec_b = np.concatenate(ras) % 360.0, np.concatenate(decs)
    boundary = sky.native_to_pix(*sky.icrs_to_native(ra_b, dec_b))
    return _sky_box("range", f"POS=RANGE {_fmt(values)}", contains, boundary, size)


def _sky_box(
    kind: str, text: str, contains: Contains, boundary: tuple[np.ndarray, np.ndarray], size: tuple[int, int]
) -> PixelBox:
    """Bounding box of a sky shape on the image: projected boundary points plus a coarse grid test."""
    nx, ny = size
    step = max(1, int(math.ceil(max(nx, ny) / _COARSE_POINTS)))
    gx = np.unique(np.append(np.arange(0, nx, step), nx - 1)).astype(float)
    gy = np.unique(np.append(np.arange(0, ny, step), ny - 1)).astype(float)
    xx, yy = np.meshgrid(gx, gy)
    hit = contains(xx.ravel(), yy.ravel())
    xs = [xx.ravel()[hit] - step, xx.ravel()[hit] + step]
    ys = [yy.ravel()[hit] - step, yy.ravel()[hit] + step]
    bx, by = (np.asarray(b, float) for b in boundary)
    ok = np.isfinite(bx) & np.isfinite(by)
    ok &= (bx > -1) & (bx < nx) & (by > -1) & (by < ny)
    xs += [bx[ok] - 1, bx[ok] + 1]
    ys += [by[ok] - 1, by[ok] + 1]
    allx, ally = np.concatenate(xs), np.concatenate(ys)
    if allx.size == 0:
        raise RegionError(f"The region {text} does not overlap the image.")
    x0 = int(max(0, math.floor(allx.min())))
    x1 = int(min(nx, math.floor(allx.max()) + 2))
    y0 = int(max(0, math.floor(ally.min())))
    y1 = int(min(ny, math.floor(ally.max()) + 2))
    if x0 >= x1 or y0 >= y1:
        raise RegionError(f"The region {text} does not overlap the image.")
    box = PixelBox(x0, x1, y0, y1, kind=kind, text=text, _shape=contains)
    if box.width * box.height <= _TIGHTEN_LIMIT:
        mask = box.mask
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise RegionError(f"The region {text} contains no pixel centre of the image.")
        box = PixelBox(
            x0 + int(cols[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[0]), y0 + int(rows[-1]) + 1,
            kind=kind, text=text, _shape=contains,
        )
        box._mask = mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    return box


def _evaluate_mask(contains: Contains, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    width, height = x1 - x0, y1 - y0
    mask = np.zeros((height, width), dtype=bool)
    rows = max(1, _MASK_CHUNK // max(width, 1))
    xs = np.arange(x0, x1, dtype=float)
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        yy, xx = np.meshgrid(np.arange(y0 + start, y0 + stop, dtype=float), xs, indexing="ij")
        mask[start:stop] = contains(xx.ravel(), yy.ravel()).reshape(stop - start, width)
    return mask
