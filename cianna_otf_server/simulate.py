"""Simulated radio continuum images with a truth catalogue, for tests, demos and benchmarks.

The sky resembles the SKA Science Data Challenge 1 (SDC1) 560 MHz image at the depth the
SDC1-trained networks expect: 0.6 arcsec pixels, a 1.5 arcsec restoring beam, thermal noise of
a few 1e-7 Jy/beam (so that the SDC1 normalisation window [0.4e-6, 0.4e-4] Jy/beam starts near
one sigma), unresolved sources and resolved elliptical Gaussians, integrated flux densities
drawn from a power law. The image is built in strips of rows, so a 16384 x 16384 image is
written to disk in bounded memory; every pixel depends only on the seed and its position,
never on how the image is cut into strips.

Conventions (see the project's working notes): pixel coordinates are 0-based internally with
pixel centres on integers; the truth table's ``x``, ``y`` are FITS 1-based. Position angles are
east of north: the image has north up (+y) and east left (-x) at the reference pixel, so a
major axis at position angle ``pa`` points along pixel direction ``(-sin pa, cos pa)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io.votable.tree import Param, VOTableFile
from astropy.table import Table
from astropy.wcs import WCS
from scipy.signal import oaconvolve

from .errors import UserInputError

__all__ = [
    "SimulationOptions",
    "simulate_sky",
    "write_simulation",
    "write_truth",
]

_FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))
_STAMP_SIGMAS = 5.0  # a source is drawn out to this many sigmas: exp(-12.5) ~ 4e-6 of its peak
_MAX_STAMP_RADIUS = 512  # pixels; caps the cost of the rare very large source
_NOISE_BLOCK_ROWS = 64  # white noise is generated in blocks of rows, each with its own seed
_STRIP_PIXELS = 8 * 1024 * 1024  # pixels per strip: ~32 MB of float32 plus FFT workspace


@dataclass(frozen=True)
class SimulationOptions:
    """Everything that shapes a simulated image (all keyword options of `simulate_sky`).

    Attributes
    ----------
    pixel_scale : float
        Pixel size, arcsec (square pixels).
    beam_bmaj, beam_bmin : float
        Restoring beam FWHM, arcsec.
    beam_pa : float
        Restoring beam position angle, degrees east of north.
    noise : float
        Thermal noise standard deviation, Jy/beam; the noise is correlated on the beam scale
        (its autocorrelation is the beam), as in a restored interferometric image.
    frequency : float
        Observing frequency, Hz (header ``RESTFRQ``).
    ra, dec : float
        ICRS coordinates of the image centre, degrees.
    n_sources : int or None
        Exact number of sources; when None it follows from ``density`` and the image area.
    density : float
        Sources per square degree (used when ``n_sources`` is None). The default gives about
        800 sources on a 2048 x 2048 image.
    flux_min, flux_max : float
        Range of integrated flux densities, Jy.
    flux_slope : float
        Differential counts ``dN/dS ~ S**-flux_slope``.
    extended_fraction : float
        Fraction of sources that are resolved elliptical Gaussians (the rest are unresolved).
    size_median : float
        Median intrinsic FWHM major axis of resolved sources, arcsec (log-normal sizes).
    size_scatter_dex : float
        Log-normal scatter of the intrinsic major axis, dex.
    size_min, size_max : float
        Clip range of the intrinsic major axis, arcsec.
    axis_ratio_min : float
        Minor/major axis ratios are uniform in ``[axis_ratio_min, 1]``.
    edge_margin : int
        Pixels along the border where no source centre is placed.
    correlated_noise : bool
        If False the noise is white (pixel-independent), which is faster.
    """

    pixel_scale: float = 0.6
    beam_bmaj: float = 1.5
    beam_bmin: float = 1.5
    beam_pa: float = 0.0
    noise: float = 3.0e-7
    frequency: float = 560.0e6
    ra: float = 0.0
    dec: float = -30.0
    n_sources: int | None = None
    density: float = 7000.0
    flux_min: float = 1.0e-6
    flux_max: float = 1.0e-3
    flux_slope: float = 1.6
    extended_fraction: float = 0.3
    size_median: float = 2.5
    size_scatter_dex: float = 0.25
    size_min: float = 0.8
    size_max: float = 20.0
    axis_ratio_min: float = 0.3
    edge_margin: int = 0
    correlated_noise: bool = True

    def __post_init__(self) -> None:
        positive = ("pixel_scale", "beam_bmaj", "beam_bmin", "frequency", "flux_min", "flux_max",
                    "size_median", "size_min", "size_max")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserInputError(f"simulation option {name} must be positive, not {getattr(self, name)!r}")
        if self.noise < 0 or self.density < 0:
            raise UserInputError("simulation options noise and density must not be negative")
        if self.beam_bmin > self.beam_bmaj:
            raise UserInputError("simulation option beam_bmin must not exceed beam_bmaj")
        if self.flux_max < self.flux_min:
            raise UserInputError("simulation option flux_max must not be below flux_min")
        if not 0.0 <= self.extended_fraction <= 1.0:
            raise UserInputError("simulation option extended_fraction must lie in [0, 1]")
        if not 0.0 < self.axis_ratio_min <= 1.0:
            raise UserInputError("simulation option axis_ratio_min must lie in (0, 1]")
        if self.n_sources is not None and self.n_sources < 0:
            raise UserInputError("simulation option n_sources must not be negative")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> "SimulationOptions":
        """Build options from keywords, naming any unknown keyword in a `UserInputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserInputError(
                f"unknown simulation option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return replace(cls(), **options)


# ----------------------------------------------------------------------------------------------
# geometry helpers


def _pa_covariance(sigma_major: np.ndarray | float, sigma_minor: np.ndarray | float,
                   pa_deg: np.ndarray | float) -> np.ndarray:
    """Covariance matrices [..., 2, 2] in (x, y) pixels of Gaussians given sigmas (px) and PA.

    The major axis points along ``(-sin pa, cos pa)``: north is +y and east is -x.
    """
    pa = np.radians(pa_deg)
    ux, uy = -np.sin(pa), np.cos(pa)
    vx, vy = np.cos(pa), np.sin(pa)
    a2 = np.square(sigma_major)
    b2 = np.square(sigma_minor)
    cov = np.empty(np.broadcast(ux, a2).shape + (2, 2))
    cov[..., 0, 0] = a2 * ux * ux + b2 * vx * vx
    cov[..., 0, 1] = cov[..., 1, 0] = a2 * ux * uy + b2 * vx * vy
    cov[..., 1, 1] = a2 * uy * uy + b2 * vy * vy
    return cov


def _image_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(ny, nx) from a size given as one int (square) or as (W, H) pixels."""
    if isinstance(size, (int, np.integer)):
        nx = ny = int(size)
    else:
        try:
            nx, ny = (int(v) for v in size)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"image size must be an integer or (width, height), not {size!r}") from exc
    if nx < 8 or ny < 8:
        raise UserInputError(f"image size must be at least 8 x 8 pixels, not {nx} x {ny}")
    return ny, nx


def _make_header(ny: int, nx: int, opts: SimulationOptions, seed: int, n_sources: int) -> fits.Header:
    """A primary header with a SIN/ICRS WCS centred on (ra, dec) and the radio beam keywords."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = nx
    header["NAXIS2"] = ny
    header["EXTEND"] = True
    header["BUNIT"] = ("JY/BEAM", "surface brightness unit")
    header["BTYPE"] = "Intensity"
    header["CTYPE1"] = "RA---SIN"
    header["CTYPE2"] = "DEC--SIN"
    header["CRVAL1"] = (opts.ra % 360.0, "[deg] right ascension at the reference pixel")
    header["CRVAL2"] = (opts.dec, "[deg] declination at the reference pixel")
    header["CRPIX1"] = nx / 2.0 + 0.5
    header["CRPIX2"] = ny / 2.0 + 0.5
    header["CDELT1"] = -opts.pixel_scale / 3600.0
    header["CDELT2"] = opts.pixel_scale / 3600.0
    header["CUNIT1"] = "deg"
    header["CUNIT2"] = "deg"
    header["RADESYS"] = "ICRS"
    header["BMAJ"] = (opts.beam_bmaj / 3600.0, "[deg] restoring beam FWHM major axis")
    header["BMIN"] = (opts.beam_bmin / 3600.0, "[deg] restoring beam FWHM minor axis")
    header["BPA"] = (opts.beam_pa, "[deg] restoring beam position angle")
    header["RESTFRQ"] = (opts.frequency, "[Hz] observing frequency")
    header["SPECSYS"] = "TOPOCENT"
    header["TELESCOP"] = "SIMULATED"
    header["OBJECT"] = "cianna-otf simulated sky"
    header["ORIGIN"] = "cianna_otf_server.simulate"
    header["SIMSEED"] = (seed, "random seed of the simulation")
    header["SIMNOISE"] = (opts.noise, "[Jy/beam] thermal noise standard deviation")
    header["SIMNSRC"] = (n_sources, "number of simulated sources")
    return header


# ----------------------------------------------------------------------------------------------
# the plan: sources drawn once, pixels rendered strip by strip


@dataclass
class _Plan:
    """A drawn sky: its header, truth catalogue and per-source rendering parameters (0-based px)."""

    shape: tuple[int, int]
    seed: int
    opts: SimulationOptions
    header: fits.Header
    truth: Table
    x: np.ndarray
    y: np.ndarray
    amp: np.ndarray  # Jy/beam, analytic peak of the beam-convolved source
    inv: np.ndarray  # [n, 3]: inverse covariance entries (xx, xy, yy), px^-2
    rx: np.ndarray  # stamp half-widths, px
    ry: np.ndarray
    kernel: np.ndarray | None  # noise kernel, sum of squares 1

    def strips(self, rows: int | None = None) -> Iterator[tuple[int, int]]:
        """(y0, y1) row ranges covering the image, about `_STRIP_PIXELS` pixels each."""
        ny, nx = self.shape
        rows = rows or max(_NOISE_BLOCK_ROWS, (_STRIP_PIXELS // nx) // _NOISE_BLOCK_ROWS * _NOISE_BLOCK_ROWS)
        for y0 in range(0, ny, rows):
            yield y0, min(ny, y0 + rows)

    def render(self, y0: int, y1: int) -> np.ndarray:
        """Pixels of rows [y0, y1) as float32 Jy/beam: noise plus every source overlapping them."""
        strip = self._noise(y0, y1)
        ny, nx = self.shape
        hit = np.nonzero((self.y - self.ry < y1) & (self.y + self.ry > y0 - 1))[0]
        for i in hit:
            xa = max(0, int(math.floor(self.x[i] - self.rx[i])))
            xb = min(nx, int(math.ceil(self.x[i] + self.rx[i])) + 1)
            ya = max(y0, int(math.floor(self.y[i] - self.ry[i])))
            yb = min(y1, int(math.ceil(self.y[i] + self.ry[i])) + 1)
            if xa >= xb or ya >= yb:
                continue
            dx = np.arange(xa, xb) - self.x[i]
            dy = (np.arange(ya, yb) - self.y[i])[:, None]
            ixx, ixy, iyy = self.inv[i]
            q = ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy
            strip[ya - y0:yb - y0, xa:xb] += (self.amp[i] * np.exp(-0.5 * q)).astype(np.float32)
        return strip

    def _noise(self, y0: int, y1: int) -> np.ndarray:
        """Thermal noise of rows [y0, y1), identical whatever strips the image is cut into.

        White noise lives on a grid padded by the kernel radius ``r`` on every side and is drawn
        in blocks of `_NOISE_BLOCK_ROWS` rows, each from its own seed, so any row range can be
        regenerated alone; it is then convolved with a kernel whose square sums to one (unit
        variance kept), whose covariance is half the beam's (autocorrelation = the beam).
        """
        ny, nx = self.shape
        sigma = np.float32(self.opts.noise)
        if self.kernel is None:
            r = 0
        else:
            r = self.kernel.shape[0] // 2
        # white rows needed, in padded-grid indices (padded row j is image row j - r)
        ja, jb = y0, y1 + 2 * r
        blocks = []
        for b in range(ja // _NOISE_BLOCK_ROWS, (jb - 1) // _NOISE_BLOCK_ROWS + 1):
            rng = np.random.default_rng([self.seed, 0x5EED, b])
            blocks.append(rng.standard_normal((_NOISE_BLOCK_ROWS, nx + 2 * r), dtype=np.float32))
        white = np.concatenate(blocks, axis=0)
        start = ja - (ja // _NOISE_BLOCK_ROWS) * _NOISE_BLOCK_ROWS
        white = white[start:start + (jb - ja)]
        if self.kernel is None:
            noise = white
        else:
            noise = oaconvolve(white, self.kernel, mode="valid").astype(np.float32, copy=False)
        noise *= sigma
        return np.ascontiguousarray(noise)


def _noise_kernel(opts: SimulationOptions) -> np.ndarray | None:
    """Gaussian kernel (pixels) that turns unit white noise into unit noise correlated like the beam."""
    if not opts.correlated_noise:
        return None
    s_maj = opts.beam_bmaj / opts.pixel_scale * _FWHM_TO_SIGMA
    s_min = opts.beam_bmin / opts.pixel_scale * _FWHM_TO_SIGMA
    cov = _pa_covariance(s_maj, s_min, opts.beam_pa) / 2.0
    r = max(1, int(math.ceil(4.0 * math.sqrt(np.linalg.eigvalsh(cov).max()))))
    inv = np.linalg.inv(cov)
    d = np.arange(-r, r + 1, dtype=np.float64)
    dx, dy = d[None, :], d[:, None]
    q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
    kernel = np.exp(-0.5 * q)
    kernel /= math.sqrt(np.square(kernel).sum())
    # oaconvolve flips the kernel; the Gaussian is point-symmetric so that does not matter
    return kernel.astype(np.float32)


def _draw(shape: tuple[int, int], seed: int, opts: SimulationOptions) -> _Plan:
    """Draw the source population and build the truth table and rendering parameters."""
    if int(seed) < 0:
        raise UserInputError(f"the simulation seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    ny, nx = shape
    rng = np.random.default_rng([seed, 0xC1A])
    area_deg2 = nx * ny * (opts.pixel_scale / 3600.0) ** 2
    n = int(opts.n_sources) if opts.n_sources is not None else int(rng.poisson(opts.density * area_deg2))
    header = _make_header(ny, nx, opts, seed, n)
    wcs = WCS(header)

    m = opts.edge_margin
    if 2 * m >= min(nx, ny) - 1:
        raise UserInputError(f"edge_margin {m} leaves no room for sources on a {nx} x {ny} image")
    x = rng.uniform(m - 0.5, nx - m - 0.5, n)
    y = rng.uniform(m - 0.5, ny - m - 0.5, n)
    # power-law integrated fluxes by inverse transform sampling
    g = 1.0 - opts.flux_slope
    if abs(g) < 1e-9:
        flux = opts.flux_min * (opts.flux_max / opts.flux_min) ** rng.uniform(0.0, 1.0, n)
    else:
        lo, hi = opts.flux_min ** g, opts.flux_max ** g
        flux = (lo + rng.uniform(0.0, 1.0, n) * (hi - lo)) ** (1.0 / g)
    extended = rng.uniform(0.0, 1.0, n) < opts.extended_fraction
    bmaj = np.clip(opts.size_median * 10.0 ** (opts.size_scatter_dex * rng.standard_normal(n)),
                   opts.size_min, opts.size_max)
    bmin = bmaj * rng.uniform(opts.axis_ratio_min, 1.0, n)
    pa = rng.uniform(-90.0, 90.0, n)
    bmaj = np.where(extended, bmaj, 0.0)
    bmin = np.where(extended, bmin, 0.0)
    pa = np.where(extended, pa, 0.0)

    # convolve with the beam: covariances add (pixels)
    to_sigma_px = _FWHM_TO_SIGMA / opts.pixel_scale
    beam_cov = _pa_covariance(opts.beam_bmaj * to_sigma_px, opts.beam_bmin * to_sigma_px, opts.beam_pa)
    cov = _pa_covariance(bmaj * to_sigma_px, bmin * to_sigma_px, pa) + beam_cov
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    beam_det = beam_cov[0, 0] * beam_cov[1, 1] - beam_cov[0, 1] ** 2
    # surface brightness in Jy/beam: integral over the image / beam area = flux
    peak = flux * np.sqrt(beam_det / det)
    inv = np.stack([cov[:, 1, 1] / det, -cov[:, 0, 1] / det, cov[:, 0, 0] / det], axis=1)
    rx = np.minimum(_STAMP_SIGMAS * np.sqrt(cov[:, 0, 0]), _MAX_STAMP_RADIUS)
    ry = np.minimum(_STAMP_SIGMAS * np.sqrt(cov[:, 1, 1]), _MAX_STAMP_RADIUS)

    ra, dec = wcs.wcs_pix2world(x, y, 0) if n else (np.zeros(0), np.zeros(0))
    truth = _truth_table(np.arange(1, n + 1), ra, dec, x + 1.0, y + 1.0, flux, peak, bmaj, bmin, pa,
                         peak / opts.noise if opts.noise > 0 else np.full(n, np.inf), extended)
    truth.meta.update({
        "noise": opts.noise,
        "beam_bmaj": opts.beam_bmaj,
        "beam_bmin": opts.beam_bmin,
        "beam_pa": opts.beam_pa,
        "pixel_scale": opts.pixel_scale,
        "frequency": opts.frequency,
        "seed": seed,
        "size": [nx, ny],
    })
    return _Plan(shape, seed, opts, header, truth, x, y, peak, inv, rx, ry, _noise_kernel(opts))


_TRUTH_COLUMNS: tuple[tuple[str, str | None, str, str], ...] = (
    ("id", None, "meta.id;meta.main", "Source identifier"),
    ("ra", "deg", "pos.eq.ra;meta.main", "Right ascension (ICRS)"),
    ("dec", "deg", "pos.eq.dec;meta.main", "Declination (ICRS)"),
    ("x", "pix", "pos.cartesian.x;instr.pixel", "Pixel column of the centre (FITS 1-based)"),
    ("y", "pix", "pos.cartesian.y;instr.pixel", "Pixel row of the centre (FITS 1-based)"),
    ("flux", "Jy", "phot.flux.density;em.radio", "Integrated flux density"),
    ("peak", "Jy/beam", "phot.flux.density;stat.max", "Peak surface brightness of the beam-convolved source"),
    ("bmaj", "arcsec", "phys.angSize.smajAxis", "Intrinsic FWHM major axis (0 for unresolved sources)"),
    ("bmin", "arcsec", "phys.angSize.sminAxis", "Intrinsic FWHM minor axis (0 for unresolved sources)"),
    ("pa", "deg", "pos.posAng", "Intrinsic position angle, east of north"),
    ("snr", None, "stat.snr", "Peak surface brightness over the thermal noise"),
    ("extended", None, "meta.code", "True for a resolved (extended) source"),
)


def _truth_table(*columns: np.ndarray) -> Table:
    """The truth table with units, UCDs and descriptions on every column."""
    table = Table()
    for (name, unit, ucd, description), values in zip(_TRUTH_COLUMNS, columns):
        values = np.asarray(values)
        if name == "id":
            values = values.astype(np.int64)
        elif name == "extended":
            values = values.astype(bool)
        else:
            values = values.astype(np.float64)
        table[name] = values
        col = table[name]
        if unit:
            col.unit = u.Unit(unit)
        col.description = description
        col.meta["ucd"] = ucd
    return table


# ----------------------------------------------------------------------------------------------
# public API


def simulate_sky(size: int | tuple[int, int] = 2048, seed: int = 0,
                 **options: Any) -> tuple[fits.HDUList, Table]:
    """Simulate a radio continuum image in memory, with its truth catalogue.

    Parameters
    ----------
    size : int or (int, int)
        Image size in pixels: one number for a square image, or (W, H).
    seed : int
        Non-negative random seed; the same seed and options give the same image bit for bit.
    **options
        Any field of `SimulationOptions` (noise, beam, source counts, flux range, ...).

    Returns
    -------
    hdul : astropy.io.fits.HDUList
        One primary HDU: float32 Jy/beam ``[y, x]`` with a SIN/ICRS WCS and BMAJ/BMIN/BPA.
    truth : astropy.table.Table
        One row per source (columns in the module docs); ``meta['noise']`` is the noise, Jy/beam.

    Notes
    -----
    The whole image is held in memory (4 bytes a pixel); for very large images use
    `write_simulation`, which streams to disk.
    """
    opts = SimulationOptions.from_kwargs(options)
    plan = _draw(_image_shape(size), seed, opts)
    data = np.empty(plan.shape, dtype=np.float32)
    for y0, y1 in plan.strips():
        data[y0:y1] = plan.render(y0, y1)
    hdu = fits.PrimaryHDU(data=data, header=plan.header)
    return fits.HDUList([hdu]), plan.truth


def write_simulation(path: str | os.PathLike, size: int | tuple[int, int] = 2048, seed: int = 0,
                     truth_path: str | os.PathLike | None = None, *, overwrite: bool = False,
                     **options: Any) -> Table:
    """Simulate an image straight to a FITS file in bounded memory; optionally write the truth.

    The image is streamed to disk strip by strip (tens of MB whatever the size), so a
    16384 x 16384 image (1 GiB) needs no more memory than a small one. The pixels are the same
    as `simulate_sky` with the same arguments.

    Parameters
    ----------
    path : path-like
        Output FITS file.
    size, seed, **options
        As in `simulate_sky`.
    truth_path : path-like, optional
        Where to write the truth catalogue; the format follows the extension (``.xml``/``.vot``
        VOTable, ``.csv``, ``.fits``, ``.ecsv``), see `write_truth`.
    overwrite : bool
        Replace existing files instead of raising `UserInputError`.

    Returns
    -------
    astropy.table.Table
        The truth catalogue.
    """
    opts = SimulationOptions.from_kwargs(options)
    path = Path(path)
    for target in (path, truth_path):
        if target is not None and Path(target).exists() and not overwrite:
            raise UserInputError(f"{target} already exists; choose another name or allow overwriting")
    plan = _draw(_image_shape(size), seed, opts)
    with path.open("wb") as handle:
        handle.write(plan.header.tostring(endcard=True, padding=True).encode("ascii"))
        written = 0
        for y0, y1 in plan.strips():
            block = plan.render(y0, y1).astype(">f4")
            handle.write(block.tobytes())
            written += block.nbytes
        handle.write(b"\0" * (-written % 2880))
    if truth_path is not None:
        write_truth(plan.truth, truth_path, overwrite=overwrite)
    return plan.truth


_FITS_META = {"beam_bmaj": "BEAMMAJ", "beam_bmin": "BEAMMIN", "beam_pa": "BEAMPA",
              "pixel_scale": "PIXSCALE", "frequency": "FREQ"}


def write_truth(truth: Table, path: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write a truth catalogue; the extension picks the format.

    VOTable (``.xml``, ``.vot``, ``.votable``) keeps units, UCDs and descriptions, and records
    the simulation settings (noise, beam, seed) as PARAMs. ``.csv``, ``.ecsv`` and ``.fits``
    go through astropy's writers.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".xml", ".vot", ".votable"):
        if path.exists() and not overwrite:
            raise UserInputError(f"{path} already exists; choose another name or allow overwriting")
        votable = VOTableFile.from_table(truth)
        resource = votable.resources[0]
        vtable = resource.tables[0]
        vtable.name = "truth"
        vtable.description = "Simulated sources (cianna_otf_server.simulate)"
        units = {"noise": "Jy/beam", "beam_bmaj": "arcsec", "beam_bmin": "arcsec", "beam_pa": "deg",
                 "pixel_scale": "arcsec", "frequency": "Hz"}
        for key, unit in units.items():
            if key in truth.meta:
                vtable.params.append(Param(votable, name=key, datatype="double", value=float(truth.meta[key]),
                                           unit=unit))
        if "seed" in truth.meta:
            vtable.params.append(Param(votable, name="seed", datatype="long", value=int(truth.meta["seed"])))
        votable.to_xml(str(path))
    elif suffix in (".csv", ".ecsv", ".fits", ".fit"):
        fmt = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}.get(suffix, "fits")
        table = truth.copy()
        if fmt == "fits":  # FITS keywords: 8 characters at most
            table.meta = {_FITS_META.get(k, k.upper()[:8]): v for k, v in truth.meta.items()
                          if not isinstance(v, (list, tuple))}
        elif fmt != "ascii.ecsv":
            table.meta = {k: v for k, v in truth.meta.items() if not isinstance(v, (list, tuple))}
        table.write(path, format=fmt, overwrite=overwrite)
    else:
        raise UserInputError(f"{path}: unknown truth catalogue format; use .xml, .vot, .csv, .ecsv or .fits")
