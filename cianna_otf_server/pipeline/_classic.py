"""The classical source finder: background and noise maps, thresholding and deblending with SEP.

This is the baseline every network is compared with: SExtractor's algorithm (through the `sep`
library) run the way radio astronomers run it on continuum images. The image is processed in
square chunks with an overlap margin, so memory stays bounded whatever the image size (a
memory-mapped 32768 x 32768 image is fine); a source belongs to the chunk whose core holds its
centroid, so no source is reported twice.

Detection follows the usual radio practice (PyBDSF's island and peak thresholds): after the
background (a mesh of ``background_box`` pixels, median-filtered over ``background_filter``
meshes) is subtracted, islands are the connected pixels above ``ISLAND_FRACTION *
threshold_sigma`` local sigmas (2.5 sigma for the default 5) with at least ``min_area`` pixels,
split by SEP's multi-threshold deblending, and a source is kept when its peak reaches
``threshold_sigma`` local sigmas. No smoothing kernel is applied: a restored radio image is
already smoothed by the beam and its noise is correlated on that scale.

Measured properties, per source (0-based pixel coordinates, pixel centres on integers):

- ``x``, ``y``: isophotal barycentre, plus the caller's ``origin``.
- ``width``, ``height``: bounding box of the detected isophote, pixels.
- ``peak``: background-subtracted peak, Jy/beam, refined by a Gaussian (log-parabola)
  interpolation through the brightest pixel and its neighbours, since a beam sampled by
  2.5 pixels loses up to ~20% of its peak between pixel centres.
- ``snr`` (and ``score``): ``peak`` over the local noise (rms map at the peak pixel).
- ``flux``: Kron-aperture sum of the background-subtracted image (SExtractor's FLUX_AUTO,
  2.5 Kron radii, at least 3.5 semi-axis units), divided by ``beam_area_pix`` when given,
  which converts Jy/beam x pixels to Jy; otherwise the raw sum.
- ``bmaj``, ``bmin``: FWHM of the second moments along the major and minor axes,
  ``2 sqrt(2 ln 2)`` times SEP's ``a`` and ``b``, pixels (beam-convolved, isophotal).
- ``pa``: position angle of the major axis in degrees east of north, in [-90, 90), assuming
  north is +y and east is -x (the usual FITS orientation): ``pa = (theta mod 180) - 90`` with
  SEP's ``theta`` measured counter-clockwise from +x.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import sep
from astropy import units as u
from astropy.table import Table

from ..models._card import ClassicSpec

__all__ = ["find_sources_classic", "CHUNK_SIZE", "ISLAND_FRACTION"]

CHUNK_SIZE = 4096  # pixels of a chunk's core; a 4096^2 chunk with margins needs ~0.5 GB in SEP
_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
ISLAND_FRACTION = 0.5  # islands grow down to this fraction of the peak threshold (5 sigma -> 2.5)
_PIXSTACK = 5_000_000
_SUB_OBJECT_LIMIT = 8192

_COLUMNS: tuple[tuple[str, str | None, str, str], ...] = (
    ("x", "pix", "pos.cartesian.x;instr.pixel", "Barycentre column, 0-based pixel"),
    ("y", "pix", "pos.cartesian.y;instr.pixel", "Barycentre row, 0-based pixel"),
    ("width", "pix", "instr.pixel;pos.cartesian.x", "Bounding box width of the isophote"),
    ("height", "pix", "instr.pixel;pos.cartesian.y", "Bounding box height of the isophote"),
    ("score", None, "stat.snr", "Detection score: the peak signal-to-noise ratio"),
    ("flux", "Jy", "phot.flux.density;em.radio", "Integrated flux density in a Kron aperture"),
    ("peak", "Jy/beam", "phot.flux.density;stat.max", "Background-subtracted peak surface brightness"),
    ("bmaj", "pix", "phys.angSize.smajAxis", "FWHM major axis from second moments (beam-convolved)"),
    ("bmin", "pix", "phys.angSize.sminAxis", "FWHM minor axis from second moments (beam-convolved)"),
    ("pa", "deg", "pos.posAng", "Major axis position angle, east of north"),
    ("snr", None, "stat.snr", "Peak over the local noise"),
)


def find_sources_classic(data: np.ndarray, spec: ClassicSpec | None = None, *,
                         pixel_mask: np.ndarray | None = None, origin: tuple[int, int] = (0, 0),
                         beam_area_pix: float | None = None, chunk_size: int = CHUNK_SIZE,
                         margin: int | None = None) -> Table:
    """Detect and measure sources on a 2-D image with SEP, chunk by chunk.

    Parameters
    ----------
    data : numpy.ndarray
        Image ``[y, x]`` (any float dtype or byte order; a memory map is read chunk by chunk).
        Units are kept: Jy/beam for radio images. NaN and infinite pixels are masked.
    spec : ClassicSpec, optional
        Threshold (in local sigmas), minimum area (pixels), background mesh and filter sizes,
        deblending settings; the card defaults when None.
    pixel_mask : numpy.ndarray of bool, optional
        Same shape as `data`; True inside the region of interest. Sources whose centroid pixel
        is False are dropped (the whole image is still used to estimate the background).
    origin : (int, int)
        (x0, y0) added to the output coordinates, for a `data` that is a cutout of a larger image.
    beam_area_pix : float, optional
        Beam solid angle in pixels, ``pi / (4 ln 2) * bmaj * bmin`` (FWHM in pixels); divides
        the aperture sums so that ``flux`` is in Jy. Without it ``flux`` is the raw sum.
    chunk_size : int
        Core size of a chunk, pixels (rounded up to a multiple of the background box).
    margin : int, optional
        Overlap added around each chunk core, pixels; defaults to three background boxes, at
        least 128 px (rounded up to whole boxes so chunk meshes line up with the full image's).

    Returns
    -------
    astropy.table.Table
        Columns ``x, y, width, height, score, flux, peak, bmaj, bmin, pa, snr`` (see the module
        docs; ``x``, ``y`` are 0-based full-image pixel coordinates), sorted by decreasing SNR.
    """
    spec = spec or ClassicSpec()
    if data.ndim != 2:
        raise ValueError(f"the classic finder needs a 2-D image, not {data.ndim}-D")
    ny, nx = data.shape
    if pixel_mask is not None and pixel_mask.shape != data.shape:
        raise ValueError(f"pixel_mask shape {pixel_mask.shape} differs from the image shape {data.shape}")
    box = max(4, int(spec.background_box))
    chunk = max(box, int(math.ceil(chunk_size / box)) * box)
    margin = max(128, 3 * box) if margin is None else int(margin)
    margin = int(math.ceil(margin / box)) * box
    _raise_sep_limits(_PIXSTACK, _SUB_OBJECT_LIMIT)

    parts = []
    for core, outer in _chunks(ny, nx, chunk, margin):
        part = _find_in_chunk(data, spec, core, outer, box, beam_area_pix)
        if part is not None:
            parts.append(part)
    columns = {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0)
               for name, *_ in _COLUMNS}
    if pixel_mask is not None and len(columns["x"]):
        ix = np.clip(np.rint(columns["x"]).astype(np.int64), 0, nx - 1)
        iy = np.clip(np.rint(columns["y"]).astype(np.int64), 0, ny - 1)
        keep = np.asarray(pixel_mask[iy, ix], dtype=bool)
        columns = {k: v[keep] for k, v in columns.items()}
    order = np.argsort(-columns["snr"], kind="stable")
    columns = {k: v[order] for k, v in columns.items()}
    columns["x"] = columns["x"] + origin[0]
    columns["y"] = columns["y"] + origin[1]
    return _table(columns, beam_area_pix is not None)


def _raise_sep_limits(pixstack: int, sub_objects: int) -> None:
    """Raise SEP's global buffers (never lower them) so crowded fields and big sources fit."""
    if sep.get_extract_pixstack() < pixstack:
        sep.set_extract_pixstack(pixstack)
    if sep.get_sub_object_limit() < sub_objects:
        sep.set_sub_object_limit(sub_objects)


def _chunks(ny: int, nx: int, chunk: int, margin: int) -> Iterator[tuple[tuple[int, int, int, int],
                                                                        tuple[int, int, int, int]]]:
    """Core and outer boxes (y0, y1, x0, x1) tiling the image; outer = core + margin, clipped."""
    for cy0 in range(0, ny, chunk):
        cy1 = min(ny, cy0 + chunk)
        for cx0 in range(0, nx, chunk):
            cx1 = min(nx, cx0 + chunk)
            outer = (max(0, cy0 - margin), min(ny, cy1 + margin), max(0, cx0 - margin), min(nx, cx1 + margin))
            yield (cy0, cy1, cx0, cx1), outer


def _find_in_chunk(data: np.ndarray, spec: ClassicSpec, core: tuple[int, int, int, int],
                   outer: tuple[int, int, int, int], box: int,
                   beam_area_pix: float | None) -> dict[str, np.ndarray] | None:
    """Run SEP on one chunk; return the measured columns of sources centred in its core."""
    oy0, oy1, ox0, ox1 = outer
    cy0, cy1, cx0, cx1 = core
    # always a private native float32 copy: SEP needs C order and native bytes, and the
    # background is subtracted in place, which must never touch the caller's array
    img = np.array(data[oy0:oy1, ox0:ox1], dtype=np.float32, order="C", copy=True)
    bad = ~np.isfinite(img)
    if bad.all():
        return None
    if bad.any():
        img[bad] = 0.0
    h, w = img.shape
    bw, bh = min(box, w), min(box, h)
    bkg = sep.Background(img, mask=bad if bad.any() else None, bw=bw, bh=bh,
                         fw=spec.background_filter, fh=spec.background_filter)
    bkg.subfrom(img)
    if bad.any():
        img[bad] = 0.0
    rms = bkg.rms()
    rms[bad] = np.inf  # never detect on masked pixels
    valid = np.isfinite(rms) & (rms > 0)
    if not valid.any():
        return None
    rms[~valid] = np.inf
    objects = _extract(img, spec, rms, bad)
    if len(objects) == 0:
        return None

    x, y = objects["x"], objects["y"]
    core_sel = (x >= cx0 - ox0 - 0.5) & (x < cx1 - ox0 - 0.5) & (y >= cy0 - oy0 - 0.5) & (y < cy1 - oy0 - 0.5)
    # a centroid exactly on the image's outer edge still belongs to the edge chunk
    objects = objects[core_sel]
    if len(objects) == 0:
        return None
    xp = np.clip(objects["xpeak"], 0, w - 1)
    yp = np.clip(objects["ypeak"], 0, h - 1)
    peak = _refine_peak(img, xp, yp, objects["peak"])
    noise = rms[yp, xp]
    snr = np.where(np.isfinite(noise) & (noise > 0), peak / noise, 0.0)
    strong = snr >= spec.threshold_sigma
    if not strong.any():
        return None
    objects, peak, snr = objects[strong], peak[strong], snr[strong]
    x, y = objects["x"], objects["y"]
    a, b, theta = objects["a"], objects["b"], objects["theta"]

    flux = _kron_flux(img, bad, x, y, a, b, theta)
    if beam_area_pix:
        flux = flux / beam_area_pix
    pa = np.mod(np.degrees(theta), 180.0) - 90.0
    return {
        "x": x + ox0,
        "y": y + oy0,
        "width": (objects["xmax"] - objects["xmin"] + 1).astype(np.float64),
        "height": (objects["ymax"] - objects["ymin"] + 1).astype(np.float64),
        "score": snr,
        "flux": flux,
        "peak": peak,
        "bmaj": _FWHM_PER_SIGMA * a,
        "bmin": _FWHM_PER_SIGMA * b,
        "pa": pa,
        "snr": snr,
    }


def _extract(img: np.ndarray, spec: ClassicSpec, rms: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """`sep.extract`, growing SEP's pixel stack when a crowded chunk overflows it."""
    stack = sep.get_extract_pixstack()
    for _ in range(4):
        try:
            return sep.extract(img, ISLAND_FRACTION * spec.threshold_sigma, err=rms,
                               mask=bad if bad.any() else None, minarea=spec.min_area,
                               filter_kernel=None, deblend_nthresh=spec.deblend_nthresh,
                               deblend_cont=spec.deblend_cont, clean=spec.clean)
        except Exception as exc:  # sep raises a bare Exception for buffer overflows
            if "pixel buffer full" not in str(exc) and "limit" not in str(exc):
                raise
            stack *= 4
            _raise_sep_limits(stack, sep.get_sub_object_limit() * 4)
    raise RuntimeError("the classic finder ran out of SEP buffer space; the field is too crowded")


def _refine_peak(img: np.ndarray, xp: np.ndarray, yp: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Peak of a Gaussian through the brightest pixel and its 4 neighbours (log-parabola per axis).

    Falls back to the raw pixel value where a neighbour is missing or not positive.
    """
    h, w = img.shape
    peak = raw.astype(np.float64).copy()
    inside = (xp > 0) & (xp < w - 1) & (yp > 0) & (yp < h - 1)
    if not inside.any():
        return peak
    i = np.nonzero(inside)[0]
    c = img[yp[i], xp[i]].astype(np.float64)
    xl, xr = img[yp[i], xp[i] - 1].astype(np.float64), img[yp[i], xp[i] + 1].astype(np.float64)
    yl, yr = img[yp[i] - 1, xp[i]].astype(np.float64), img[yp[i] + 1, xp[i]].astype(np.float64)
    ok = (c > 0) & (xl > 0) & (xr > 0) & (yl > 0) & (yr > 0) & (c >= xl) & (c >= xr) & (c >= yl) & (c >= yr)
    with np.errstate(divide="ignore", invalid="ignore"):
        lc = np.log(np.where(ok, c, 1.0))
        gain = np.zeros_like(c)
        for lo, hi in ((xl, xr), (yl, yr)):
            la, lb = np.log(np.where(ok, lo, 1.0)), np.log(np.where(ok, hi, 1.0))
            curv = la + lb - 2.0 * lc
            good = ok & (curv < 0)
            # log-parabola vertex height above the centre value: (lb - la)^2 / (-8 curv)
            gain += np.where(good, (lb - la) ** 2 / np.where(good, -8.0 * curv, 1.0), 0.0)
    # never more than one pixel's worth of shift: caps the correction at a factor ~1.6
    refined = c * np.exp(np.minimum(gain, 0.5))
    peak[i] = np.where(ok, refined, peak[i])
    return peak


def _kron_flux(img: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray, a: np.ndarray,
               b: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """FLUX_AUTO: sum within 2.5 Kron radii (at least 3.5 in a/b units) of the moment ellipse."""
    a = np.maximum(a, 0.5)
    b = np.maximum(b, 0.5)
    theta = np.clip(theta, -math.pi / 2, math.pi / 2)
    mask = bad if bad.any() else None
    kron, _ = sep.kron_radius(img, x, y, a, b, theta, 6.0, mask=mask)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, 0.0)
    r = np.maximum(2.5 * kron, 3.5)
    flux, _, _ = sep.sum_ellipse(img, x, y, a, b, theta, r, mask=mask, subpix=1)
    return np.asarray(flux, dtype=np.float64)


def _table(columns: dict[str, np.ndarray], flux_in_jy: bool) -> Table:
    """Wrap the measured columns with units, UCDs and descriptions."""
    table = Table()
    for name, unit, ucd, description in _COLUMNS:
        table[name] = np.asarray(columns[name], dtype=np.float64)
        col = table[name]
        if name == "flux" and not flux_in_jy:
            unit, description = u.Jy / u.beam * u.pix, "Kron-aperture sum of pixel values (no beam area given)"
        if unit:
            col.unit = u.Unit(unit)
        col.description = description
        col.meta["ucd"] = ucd
    return table
