"""Simulated radio continuum images with a truth catalogue, for tests, demos and benchmarks.

The sky resembles the SKA Science Data Challenge 1 (SDC1) 560 MHz image at the depth the
SDC1-trained networks expect: 0.6 arcsec pixels, a 1.5 arcsec restoring beam, thermal noise of
a few 1e-7 Jy/beam (so that the SDC1 normalisation window [0.4e-6, 0.4e-4] Jy/beam starts near
one sigma), unresolved sources and resolved elliptical Gaussians, integrated flux densities
drawn from a power law. The image is built in strips of rows, so a 16384 x 16384 image is
written to disk in bounded memory; every pixel depends only on the seed and its position,
never on how the image is cut into strips (sources, artefacts, blanks and the noise rms map bit
for bit; the correlated noise to the float32 rounding of its FFT convolution, ~1e-5 of the rms).

Optional features, all off by default, make the sky look like other surveys (see
`SimulationOptions` for their units): noise whose rms varies smoothly across the field or rises
towards the edge of a primary beam, sidelobe and calibration artefacts around bright sources,
double-lobed (FR I / FR II-like) radio galaxies, and NaN blanks (a primary-beam cut, random
polygons, straight mosaic edges). `random_domain` draws random but realistic combinations of
all of these, for training a detector that has to work on any survey. Each feature has its own
random stream, so switching one on leaves everything else in the sky unchanged, source for
source and pixel for pixel.

Conventions (see the project's working notes): pixel coordinates are 0-based internally with
pixel centres on integers; the truth table's ``x``, ``y`` are FITS 1-based. Position angles are
east of north: the image has north up (+y) and east left (-x) at the reference pixel, so a
major axis at position angle ``pa`` points along pixel direction ``(-sin pa, cos pa)``.

The truth table has one row per source (a double-lobed source is one row):

``id``, ``ra``, ``dec``, ``x``, ``y``
    Identifier and centre (for a double: its flux-weighted centre), ``x``/``y`` FITS 1-based.
``flux``, ``peak``
    Integrated flux density (Jy) and peak surface brightness of the beam-convolved source
    (Jy/beam; for a double: the brightest point of its summed components).
``bmaj``, ``bmin``, ``pa``
    Intrinsic FWHM axes (arcsec; 0 for unresolved sources) and position angle (deg). For a
    double, ``bmaj`` is its overall extent along the lobe axis (from the outer half-maximum
    edge of one end to that of the other), ``bmin`` its width across, ``pa`` the lobe axis.
``snr``, ``local_noise``
    Peak over the local noise rms, and that rms (Jy/beam) at the source's brightest point; it
    equals the nominal ``noise`` unless ``noise_variation`` or ``noise_radial`` is on.
``extended``, ``morphology``
    True for resolved sources (Gaussians and doubles); ``"point"``, ``"gaussian"`` or
    ``"double"``.
``lobe1_x``, ``lobe1_y``, ``lobe2_x``, ``lobe2_y``
    For doubles, the flux-weighted centre of each lobe (FITS 1-based pixels), so that a
    detection of either lobe can be matched; NaN for other sources.

Sources whose centre pixel is blanked (NaN) are removed from the truth table (their ``id`` is
skipped; ``meta['n_blanked']`` counts them; the header's ``SIMNSRC`` counts every drawn
source). A source partly in a blank stays listed with its full flux. Artefacts are never listed.
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

from ..errors import UserInputError

__all__ = [
    "SimulationOptions",
    "random_domain",
    "simulate_sky",
    "write_simulation",
    "write_truth",
]

_FWHM_TO_SIGMA = 1.0 / math.sqrt(8.0 * math.log(2.0))
_STAMP_SIGMAS = 5.0  # a source is drawn out to this many sigmas: exp(-12.5) ~ 4e-6 of its peak
_MAX_STAMP_RADIUS = 512  # pixels; caps the cost of the rare very large source
_NOISE_BLOCK_ROWS = 64  # white noise is generated in blocks of rows, each with its own seed
_STRIP_PIXELS = 8 * 1024 * 1024  # pixels per strip: ~32 MB of float32 plus FFT workspace
# stamps are rendered in batches of similar sizes: a batch pads its stamps to the next of these
_SIZE_CLASSES = np.array([4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1025])
_BATCH_ELEMENTS = 1 << 19  # padded stamp pixels per batch
_CHUNK_ELEMENTS = 1 << 22  # stamp pixels gathered before they are added to the strip
_RADIAL_NOISE_MAX = 10.0  # noise_radial: the rms rise is capped here (primary beam response 0.1)
_ARTEFACT_MAX_BEAMS = 40.0  # artefact stamps reach at most this many beams ...
_ARTEFACT_MAX_RADIUS = 512  # ... and this many pixels from their source
_ARTEFACT_FLOOR = 0.1  # an artefact stamp ends where its pattern stays below 0.1 sigma
_DOUBLE_SLOTS = 7  # components of a double: a core and up to three per lobe

# independent random streams, one per feature, so that switching a feature on changes nothing else
_STREAM_SOURCES = 0xC1A
_STREAM_NOISE = 0x5EED
_STREAM_NOISE_MAP = 0x401CE
_STREAM_DOUBLES = 0xD0B
_STREAM_ARTEFACTS = 0xA27
_STREAM_BLANKS = 0xB1A


@dataclass(frozen=True)
class SimulationOptions:
    """Everything that shapes a simulated image (all keyword options of `simulate_sky`).

    Every option added after the SDC1-like defaults is off by default, and the defaults give
    the same image and truth, bit for bit, as they always have.

    Attributes
    ----------
    pixel_scale : float
        Pixel size, arcsec (square pixels).
    beam_bmaj, beam_bmin : float
        Restoring beam FWHM, arcsec.
    beam_pa : float
        Restoring beam position angle, degrees east of north (major axis along pixel direction
        ``(-sin pa, cos pa)``); it shapes both the sources and the noise correlation.
    noise : float
        Thermal noise standard deviation, Jy/beam; the noise is correlated on the beam scale
        (its autocorrelation is the beam), as in a restored interferometric image.
    frequency : float
        Observing frequency, Hz (header ``RESTFRQ``).
    ra, dec : float
        ICRS coordinates of the image centre, degrees.
    n_sources : int or None
        Exact number of sources; when None it follows from ``density`` and the image area.
        0 gives an empty (noise-only) sky.
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
        Clip range of the intrinsic major axis, arcsec. A source is drawn out to 5 sigma of its
        beam-convolved size, at most 512 pixels from its centre, so sizes of 20 beams or more
        are rendered whole for beams up to ~10 pixels.
    axis_ratio_min : float
        Minor/major axis ratios are uniform in ``[axis_ratio_min, 1]``.
    edge_margin : int
        Pixels along the border where no source centre is placed.
    correlated_noise : bool
        If False the noise is white (pixel-independent), which is faster.
    noise_variation : float
        Smooth variation of the noise rms across the field (dimensionless, >= 0; 0 = uniform).
        The local rms is ``noise * (1 + noise_variation) ** f(x, y)`` where ``f`` is a smooth
        random field (a cubic B-spline through a random grid) scaled so that ``|f|`` reaches 1
        in the image: 0.5 makes the rms range over about ``noise / 1.5`` to ``1.5 * noise``.
        Only the noise is scaled, never the sources.
    noise_variation_scale : float
        Spacing of that random grid, pixels: the scale over which the rms changes.
    noise_radial : float or None
        FWHM, pixels, of a Gaussian primary beam centred on the image: the noise rms is
        multiplied by 1/PB(r) (capped at 10, i.e. PB = 0.1), as in a primary-beam corrected
        image. None = off.
    artefact_level : float
        Amplitude of the artefacts around bright sources, as a fraction of the source's peak
        (dimensionless; e.g. 0.02; 0 = off). Each source whose peak SNR exceeds
        ``artefact_snr`` carries a pattern of positive and negative sidelobes: a ring at 2-6
        beams and a few pairs of radial spokes (the same dirty-beam-like pattern for every
        source of an image, as a real point-spread function is), plus residual calibration
        stripes (a windowed plane wave of random direction and wavelength, one per source).
        The pattern vanishes within ~1.2 beams of the source (its peak and position stay
        true) and is drawn out to where it stays below 0.1 sigma, at most 40 beams and 512
        pixels; its amplitude never exceeds ``artefact_level`` times the peak. Artefacts are not
        listed in the truth table.
    artefact_snr : float
        Peak signal-to-noise ratio (against the local rms) above which a source (or a component
        of a double) carries artefacts.
    double_fraction : float
        Fraction of sources that are double-lobed radio galaxies (0 = none). A double keeps the
        drawn position (its core) and total flux; two lobes at a random PA (slightly bent and
        asymmetric), optional faint core (half the doubles, 0.3-10 % of the flux).
    double_separation : (float, float)
        Range of the separation between the ends of the two lobes, arcsec; log-uniform.
    fr2_fraction : float
        Fraction of doubles that are FR II-like (a resolved lobe with a compact bright hotspot
        at each end); the rest are FR I-like (brightest near the core, fading and widening
        outwards, three Gaussians per side).
    blank_outside_radius : float or None
        Pixels farther than this from the image centre are NaN (a primary-beam cut). None = off.
    blank_fraction : float
        About this fraction of the image area (0 = off, at most 0.9) is set to NaN in a few
        random regions: convex polygons and straight mosaic edges cutting off part of a side.
        Regions may overlap or leave the image, so the blanked area is approximate.
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
    noise_variation: float = 0.0
    noise_variation_scale: float = 300.0
    noise_radial: float | None = None
    artefact_level: float = 0.0
    artefact_snr: float = 100.0
    double_fraction: float = 0.0
    double_separation: tuple[float, float] = (5.0, 60.0)
    fr2_fraction: float = 0.5
    blank_outside_radius: float | None = None
    blank_fraction: float = 0.0

    def __post_init__(self) -> None:
        positive = ("pixel_scale", "beam_bmaj", "beam_bmin", "frequency", "flux_min", "flux_max",
                    "size_median", "size_min", "size_max", "noise_variation_scale", "artefact_snr")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserInputError(f"simulation option {name} must be positive, not {getattr(self, name)!r}")
        if self.noise < 0 or self.density < 0:
            raise UserInputError("simulation options noise and density must not be negative")
        if self.beam_bmin > self.beam_bmaj:
            raise UserInputError("simulation option beam_bmin must not exceed beam_bmaj")
        if self.flux_max < self.flux_min:
            raise UserInputError("simulation option flux_max must not be below flux_min")
        if self.size_max < self.size_min:
            raise UserInputError("simulation option size_max must not be below size_min")
        if not 0.0 <= self.extended_fraction <= 1.0:
            raise UserInputError("simulation option extended_fraction must lie in [0, 1]")
        if not 0.0 < self.axis_ratio_min <= 1.0:
            raise UserInputError("simulation option axis_ratio_min must lie in (0, 1]")
        if self.n_sources is not None and self.n_sources < 0:
            raise UserInputError("simulation option n_sources must not be negative")
        if not 0.0 <= self.noise_variation <= 10.0:
            raise UserInputError(f"simulation option noise_variation must lie in [0, 10] (0 = uniform noise), "
                                 f"not {self.noise_variation!r}")
        for name in ("noise_radial", "blank_outside_radius"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UserInputError(f"simulation option {name} must be a positive number of pixels or None "
                                     f"(off), not {value!r}")
        if not 0.0 <= self.artefact_level <= 1.0:
            raise UserInputError(f"simulation option artefact_level must lie in [0, 1] (a fraction of the "
                                 f"source peak; 0 = no artefacts), not {self.artefact_level!r}")
        for name in ("double_fraction", "fr2_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserInputError(f"simulation option {name} must lie in [0, 1], not {getattr(self, name)!r}")
        try:
            lo, hi = (float(v) for v in self.double_separation)
        except (TypeError, ValueError) as exc:
            raise UserInputError(f"simulation option double_separation must be (min, max) in arcsec, "
                                 f"not {self.double_separation!r}") from exc
        if not 0.0 < lo <= hi:
            raise UserInputError(f"simulation option double_separation must be (min, max) arcsec with "
                                 f"0 < min <= max, not {self.double_separation!r}")
        object.__setattr__(self, "double_separation", (lo, hi))
        if not 0.0 <= self.blank_fraction <= 0.9:
            raise UserInputError(f"simulation option blank_fraction must lie in [0, 0.9], not "
                                 f"{self.blank_fraction!r}")

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

    def as_kwargs(self) -> dict[str, Any]:
        """All options as keywords, e.g. ``simulate_sky(1024, seed, **random_domain(rng).as_kwargs())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
    header["ORIGIN"] = "cianna_otf_server.sky.simulate"
    header["SIMSEED"] = (seed, "random seed of the simulation")
    header["SIMNOISE"] = (opts.noise, "[Jy/beam] thermal noise standard deviation")
    header["SIMNSRC"] = (n_sources, "number of simulated sources")
    # the optional features, recorded only when on (a default sky's header never changes)
    extras = (
        ("SIMNVAR", opts.noise_variation, 0.0, "noise rms varies up to (1 + this) times"),
        ("SIMNVSCL", opts.noise_variation_scale, None, "[pix] scale of the noise rms variation"),
        ("SIMNRAD", opts.noise_radial, None, "[pix] primary beam FWHM, noise rise"),
        ("SIMARTL", opts.artefact_level, 0.0, "artefact amplitude / source peak"),
        ("SIMARTS", opts.artefact_snr, None, "peak SNR of sources with artefacts"),
        ("SIMDBL", opts.double_fraction, 0.0, "fraction of double-lobed sources"),
        ("SIMBLKR", opts.blank_outside_radius, None, "[pix] NaN beyond this radius"),
        ("SIMBLKF", opts.blank_fraction, 0.0, "area fraction of random NaN regions"),
    )
    for key, value, off, comment in extras:
        if key == "SIMNVSCL":
            if opts.noise_variation > 0:
                header[key] = (float(value), comment)
        elif key == "SIMARTS":
            if opts.artefact_level > 0:
                header[key] = (float(value), comment)
        elif value is not None and value != off:
            header[key] = (float(value), comment)
    return header


# ----------------------------------------------------------------------------------------------
# the noise rms map: smooth variation and primary-beam rise (multiplies the noise only)


def _bspline_weights(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline: for grid coordinates ``s`` (node spacing 1), the first of the four nodes
    with non-zero weight and the four weights ``[len(s), 4]``."""
    base = np.floor(s)
    t = s - base
    t2, t3 = t * t, t * t * t
    w = np.stack([(1.0 - t) ** 3, 3.0 * t3 - 6.0 * t2 + 4.0, -3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0, t3],
                 axis=-1) / 6.0
    return base.astype(np.int64) - 1, w


class _NoiseMap:
    """The multiplicative noise rms map ``(1 + v) ** f(x, y) * radial(x, y)``, per row or per point.

    ``f`` is a cubic B-spline through a random grid of spacing ``L`` (offset at random), scaled so
    that ``max |f|`` over the image is 1 (sampled every 8 pixels). Rows are evaluated from a
    per-plan table (the grid already interpolated along x, for every column) with element-wise
    arithmetic only, so a row's values never depend on which other rows are computed with it.
    """

    def __init__(self, shape: tuple[int, int], seed: int, opts: SimulationOptions) -> None:
        ny, nx = shape
        self.shape = shape
        self.log_amp = math.log1p(opts.noise_variation)
        self.radial = opts.noise_radial
        self.cx, self.cy = (nx - 1) / 2.0, (ny - 1) / 2.0
        self.table = None
        if self.log_amp > 0:
            rng = np.random.default_rng([seed, _STREAM_NOISE_MAP])
            L = float(opts.noise_variation_scale)
            ox, oy = rng.uniform(0.0, L, 2)
            gx, gy = int((nx - 1) // L) + 5, int((ny - 1) // L) + 5
            grid = rng.uniform(-1.0, 1.0, (gy, gx))
            self.L, self.t0x, self.t0y = L, ox - 2.0 * L, oy - 2.0 * L
            # scale so that |f| reaches 1 on a coarse sampling of the image
            xs = np.unique(np.append(np.arange(0, nx, 8), nx - 1)).astype(np.float64)
            ys = np.unique(np.append(np.arange(0, ny, 8), ny - 1)).astype(np.float64)
            coarse = self._dense(ys, self.t0y, gy) @ grid @ self._dense(xs, self.t0x, gx).T
            peak = float(np.abs(coarse).max())
            grid = grid / peak if peak > 0 else grid
            self.grid = grid
            self.table = (grid @ self._dense(np.arange(nx, dtype=np.float64), self.t0x, gx).T).astype(np.float32)

    def _dense(self, s: np.ndarray, t0: float, n_nodes: int) -> np.ndarray:
        base, w = _bspline_weights((s - t0) / self.L)
        dense = np.zeros((len(s), n_nodes))
        for j in range(4):
            np.add.at(dense, (np.arange(len(s)), np.clip(base + j, 0, n_nodes - 1)), w[:, j])
        return dense

    def _radial_x(self, x: np.ndarray) -> np.ndarray:
        a = 4.0 * math.log(2.0) / self.radial ** 2
        return np.exp(np.minimum(a * (x - self.cx) ** 2, math.log(_RADIAL_NOISE_MAX)))

    def _radial_y(self, y: np.ndarray) -> np.ndarray:
        a = 4.0 * math.log(2.0) / self.radial ** 2
        return np.exp(np.minimum(a * (y - self.cy) ** 2, math.log(_RADIAL_NOISE_MAX)))

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """The map over rows [y0, y1), float32 ``[y1 - y0, nx]``."""
        ny, nx = self.shape
        out = np.ones((y1 - y0, nx), dtype=np.float32)
        if self.table is not None:
            base, w = _bspline_weights((np.arange(y0, y1, dtype=np.float64) - self.t0y) / self.L)
            w = w.astype(np.float32)
            f = np.empty((y1 - y0, nx), dtype=np.float32)
            # rows between two grid nodes share their four nodes: one broadcast sum per band
            edges = np.flatnonzero(np.diff(base)) + 1
            for a, b in zip(np.r_[0, edges], np.r_[edges, len(base)]):
                k = base[a]
                band = f[a:b]
                np.multiply(w[a:b, 0:1], self.table[k], out=band)
                for j in range(1, 4):
                    band += w[a:b, j:j + 1] * self.table[k + j]
            f *= np.float32(self.log_amp)
            np.exp(f, out=out)
        if self.radial is not None:
            ry = self._radial_y(np.arange(y0, y1, dtype=np.float64)).astype(np.float32)
            rx = self._radial_x(np.arange(nx, dtype=np.float64)).astype(np.float32)
            out *= np.minimum(ry[:, None] * rx[None, :], np.float32(_RADIAL_NOISE_MAX))
        return out

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The map at 0-based pixel positions (clipped to the image), float64."""
        ny, nx = self.shape
        shape = np.broadcast(np.asarray(x), np.asarray(y)).shape
        x = np.clip(np.broadcast_to(np.asarray(x, np.float64), shape).ravel(), 0.0, nx - 1.0)
        y = np.clip(np.broadcast_to(np.asarray(y, np.float64), shape).ravel(), 0.0, ny - 1.0)
        out = np.ones(x.shape)
        if self.table is not None and x.size:
            wy = self._dense(y, self.t0y, self.grid.shape[0])
            wx = self._dense(x, self.t0x, self.grid.shape[1])
            out = np.exp(self.log_amp * np.einsum("na,ab,nb->n", wy, self.grid, wx))
        if self.radial is not None:
            out = out * np.minimum(self._radial_x(x) * self._radial_y(y), _RADIAL_NOISE_MAX)
        return out.reshape(shape)


# ----------------------------------------------------------------------------------------------
# NaN blanks: a primary-beam cut and random convex regions, each an intersection of half-planes


class _Blanks:
    """Which pixels are NaN. A region is a list of half-planes ``a x + b y + c <= 0`` (convex)."""

    def __init__(self, shape: tuple[int, int], seed: int, opts: SimulationOptions) -> None:
        ny, nx = shape
        self.shape = shape
        self.radius = opts.blank_outside_radius
        self.cx, self.cy = (nx - 1) / 2.0, (ny - 1) / 2.0
        self.regions: list[tuple[np.ndarray, tuple[int, int]]] = []  # (half-planes [k, 3], row range)
        if opts.blank_fraction > 0:
            rng = np.random.default_rng([seed, _STREAM_BLANKS])
            n_regions = min(5, 1 + int(rng.poisson(1.0)))
            shares = rng.dirichlet(np.ones(n_regions))
            area = opts.blank_fraction * nx * ny
            for share in shares:
                planes, corners = self._region(rng, share * area, nx, ny)
                ylo = max(0, int(math.floor(corners[:, 1].min())))
                yhi = min(ny, int(math.ceil(corners[:, 1].max())) + 1)
                if ylo < yhi:
                    self.regions.append((planes, (ylo, yhi)))

    @staticmethod
    def _region(rng: np.random.Generator, area: float, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
        """One random region of about ``area`` px^2: a convex polygon or a straight mosaic edge."""
        kind, u1, u2, u3, u4, u5 = rng.uniform(0.0, 1.0, 6)
        n_vertices = int(rng.integers(3, 9))
        gaps = rng.dirichlet(np.full(n_vertices, 2.0))
        if kind < 0.55:  # a convex polygon: points on an ellipse, in angle order
            theta = 2.0 * np.pi * (u5 + np.cumsum(gaps))
            ratio, rot = 0.4 + 0.6 * u3, np.pi * u4
            ux, uy = np.cos(theta), ratio * np.sin(theta)
            px = ux * math.cos(rot) - uy * math.sin(rot)
            py = ux * math.sin(rot) + uy * math.cos(rot)
            unit_area = 0.5 * abs(float(np.sum(px * np.roll(py, -1) - np.roll(px, -1) * py)))
            scale = math.sqrt(area / max(unit_area, 1e-3))
            px = px * scale + u1 * (nx - 1)
            py = py * scale + u2 * (ny - 1)
            # counter-clockwise order: the inside lies left of every edge
            qx, qy = np.roll(px, -1), np.roll(py, -1)
            # left of edge p->q: (q - p) x (r - p) >= 0  <=>  a x + b y + c <= 0 with
            a, b = qy - py, -(qx - px)
            c = -(a * px + b * py)
            return np.stack([a, b, c], axis=1), np.stack([px, py], axis=1)
        # a straight mosaic edge: the part of the image beyond a slightly tilted line near one side
        side = int(4 * u1) % 4
        length = ny if side < 2 else nx
        depth = area / length
        tilt = (u2 - 0.5) * 0.4
        normal = {0: (1.0, 0.0), 1: (-1.0, 0.0), 2: (0.0, 1.0), 3: (0.0, -1.0)}[side]  # inward
        nxv = normal[0] * math.cos(tilt) - normal[1] * math.sin(tilt)
        nyv = normal[0] * math.sin(tilt) + normal[1] * math.cos(tilt)
        edge = {0: (-0.5, (ny - 1) / 2.0), 1: (nx - 0.5, (ny - 1) / 2.0),
                2: ((nx - 1) / 2.0, -0.5), 3: ((nx - 1) / 2.0, ny - 0.5)}[side]
        p0 = (edge[0] + depth * normal[0], edge[1] + depth * normal[1])
        # blank where (p - p0) . n <= 0
        planes = np.array([[nxv, nyv, -(p0[0] * nxv + p0[1] * nyv)]])
        corners = np.array([[-0.5, -0.5], [nx - 0.5, ny - 0.5]])
        return planes, corners

    @staticmethod
    def _spans(planes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each row ``y``, the interval [lo, hi] of x inside the region."""
        lo = np.full(y.shape, -np.inf)
        hi = np.full(y.shape, np.inf)
        for a, b, c in planes:
            t = -(b * y + c)
            if a > 0:
                hi = np.minimum(hi, t / a)
            elif a < 0:
                lo = np.maximum(lo, t / a)
            else:
                lo = np.where(t < 0, np.inf, lo)
        return lo, hi

    def rows(self, y0: int, y1: int) -> np.ndarray | None:
        """Boolean mask of the NaN pixels of rows [y0, y1), or None when there are none."""
        ny, nx = self.shape
        mask = None
        if self.radius is not None:
            dy2 = (np.arange(y0, y1, dtype=np.float64) - self.cy) ** 2
            dx2 = (np.arange(nx, dtype=np.float64) - self.cx) ** 2
            mask = dy2[:, None] + dx2[None, :] > self.radius ** 2
        cols = np.arange(nx, dtype=np.float64)
        for planes, (ylo, yhi) in self.regions:
            a, b = max(y0, ylo), min(y1, yhi)
            if a >= b:
                continue
            lo, hi = self._spans(planes, np.arange(a, b, dtype=np.float64))
            good = lo <= hi
            if not good.any():
                continue
            xa = int(math.ceil(min(max(float(lo[good].min()), 0.0), nx)))
            xb = int(math.floor(min(max(float(hi[good].max()), -1.0), nx - 1.0))) + 1
            if xa >= xb:
                continue
            inside = (cols[None, xa:xb] >= lo[:, None]) & (cols[None, xa:xb] <= hi[:, None])
            if mask is None:
                mask = np.zeros((y1 - y0, nx), dtype=bool)
            mask[a - y0:b - y0, xa:xb] |= inside
        return mask

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether the pixel containing each 0-based position (x, y) is NaN (False off the image)."""
        ny, nx = self.shape
        ix = np.rint(np.asarray(x, np.float64))
        iy = np.rint(np.asarray(y, np.float64))
        on = (ix >= 0) & (ix <= nx - 1) & (iy >= 0) & (iy <= ny - 1)
        out = np.zeros(ix.shape, dtype=bool)
        if self.radius is not None:
            out |= (iy - self.cy) ** 2 + (ix - self.cx) ** 2 > self.radius ** 2
        for planes, (ylo, yhi) in self.regions:
            lo, hi = self._spans(planes, iy)
            out |= (iy >= ylo) & (iy < yhi) & (ix >= lo) & (ix <= hi)
        return out & on


# ----------------------------------------------------------------------------------------------
# artefacts around bright sources


class _Artefacts:
    """Sidelobe and calibration-stripe patterns around bright components (never in the truth).

    One sidelobe template per image (a ring at 2-6 beams and ``2 n`` radial spokes of alternating
    sign, elongated like the beam, point-symmetric like a real point-spread function) is scaled by
    each bright component's peak; each component adds its own calibration stripes, a plane wave
    of random direction, wavelength and phase under a Gaussian window. Both vanish within ~1.2
    beams of the component. Pattern amplitudes are relative to the component's peak and never
    exceed ``artefact_level``. Stamps are centred on the component's nearest pixel and reach
    out to where the pattern stays below `_ARTEFACT_FLOOR` times the local noise.
    """

    def __init__(self, seed: int, opts: SimulationOptions, x: np.ndarray, y: np.ndarray,
                 amp: np.ndarray, rms: np.ndarray) -> None:
        self.bmaj = opts.beam_bmaj / opts.pixel_scale
        self.bmin = opts.beam_bmin / opts.pixel_scale
        self.pa = math.radians(opts.beam_pa)
        rng = np.random.default_rng([seed, _STREAM_ARTEFACTS])
        # the image's sidelobe pattern
        (ring_r, ring_w, ring_l, ring_phase, ring_a, spoke_a, spoke_l, spoke_phase, spoke_w,
         spoke_rot) = rng.uniform(0.0, 1.0, 10)
        self.ring = (2.5 + 2.0 * ring_r, 0.8 + 0.7 * ring_w, 1.2 + 1.3 * ring_l, 2 * np.pi * ring_phase,
                     0.3 + 0.7 * ring_a)
        self.spoke = (int(rng.integers(2, 5)), 1.5 + 2.5 * spoke_l, 2 * np.pi * spoke_phase,
                      0.35 + 0.45 * spoke_w, np.pi * spoke_rot, 0.5 + 0.5 * spoke_a)
        self.outer = 12.0  # beams: Gaussian fall-off of the spokes
        rho = np.linspace(0.0, _ARTEFACT_MAX_BEAMS, 4001)
        envelope = self._envelope(rho)
        self.norm = float(envelope.max())  # |template| <= envelope / norm <= 1
        tail = np.maximum.accumulate(envelope[::-1])[::-1] / self.norm  # sup over rho' >= rho
        # per-component draws (every component, so that draws never depend on which are bright)
        n = len(x)
        draws = rng.uniform(0.0, 1.0, (n, 6))
        bright = amp > opts.artefact_snr * rms
        level = opts.artefact_level * amp
        floor = np.maximum(_ARTEFACT_FLOOR * rms, 1e-5 * level)
        sidelobe = 0.5 + 0.5 * draws[:, 0]
        stripe = 0.4 * draws[:, 1]
        over = np.maximum(sidelobe + stripe, 1.0)  # |pattern| <= sidelobe + stripe <= 1
        sidelobe, stripe = sidelobe / over, stripe / over
        wavelength = self.bmaj * (2.0 + 6.0 * draws[:, 2])
        angle = np.pi * draws[:, 3]
        phase = 2 * np.pi * draws[:, 4]
        window = self.bmaj * (4.0 + 6.0 * draws[:, 5])
        cap = int(min(_ARTEFACT_MAX_RADIUS, math.ceil(_ARTEFACT_MAX_BEAMS * self.bmaj)))
        with np.errstate(divide="ignore", invalid="ignore"):
            # sidelobes: first radius beyond which the pattern stays under the floor
            need = sidelobe * level / floor
            idx = np.searchsorted(-tail, -1.0 / np.where(need > 0, need, np.inf))
            r_side = rho[np.minimum(idx, len(rho) - 1)] * self.bmaj
            ratio = stripe * level / floor
            r_stripe = np.where(ratio > 1, window * np.sqrt(2 * np.log(np.maximum(ratio, 1.0))), 0.0)
        radius = np.minimum(np.ceil(np.maximum(r_side, r_stripe)) + 1, cap).astype(np.int64)
        keep = np.flatnonzero(bright & (level > 0) & (radius >= 2))
        self.ix = np.rint(x[keep]).astype(np.int64)
        self.iy = np.rint(y[keep]).astype(np.int64)
        self.radius = radius[keep]
        self.level = level[keep]
        self.sidelobe = sidelobe[keep]
        self.stripe = stripe[keep]
        k = 2 * np.pi / wavelength[keep]
        self.kx, self.ky = k * np.cos(angle[keep]), k * np.sin(angle[keep])
        self.phase = phase[keep]
        self.window = window[keep]
        self.size = int(self.radius.max()) if len(keep) else 0
        self._template: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ix)

    def _envelope(self, rho: np.ndarray) -> np.ndarray:
        r0, rw, _, _, ra = self.ring
        _, _, _, _, _, sa = self.spoke
        return (ra * np.exp(-0.5 * ((rho - r0) / rw) ** 2)
                + sa * np.exp(-0.5 * (rho / self.outer) ** 2) * (1.5 / np.maximum(rho, 1.5)) ** 0.7)

    def template(self) -> tuple[np.ndarray, np.ndarray]:
        """(sidelobe pattern, inner taper), float32 ``[2R + 1, 2R + 1]`` centred on pixel (R, R)."""
        if self._template is None:
            R = self.size
            d = np.arange(-R, R + 1, dtype=np.float64)
            dx, dy = d[None, :], np.arange(0, R + 1, dtype=np.float64)[:, None]  # one half: symmetric
            s, c = math.sin(self.pa), math.cos(self.pa)
            uu = (-s * dx + c * dy) / self.bmaj
            vv = (c * dx + s * dy) / self.bmin
            rho = np.hypot(uu, vv)
            theta = np.arctan2(vv, uu)
            taper = 1.0 - np.exp(-((rho / 1.2) ** 4))
            r0, rw, rl, rp, ra = self.ring
            ns, sl, sp, sw, srot, sa = self.spoke
            ring = ra * np.cos(2 * np.pi * (rho - r0) / rl + rp) * np.exp(-0.5 * ((rho - r0) / rw) ** 2)
            across = rho * np.sin(ns * (theta - srot)) / ns  # ~ distance to the nearest spoke, beams
            spokes = (sa * np.exp(-0.5 * (across / sw) ** 2) * np.cos(2 * np.pi * rho / sl + sp)
                      * np.exp(-0.5 * (rho / self.outer) ** 2) * (1.5 / np.maximum(rho, 1.5)) ** 0.7)
            half = (taper * (ring + spokes) / self.norm).astype(np.float32)
            taper = taper.astype(np.float32)
            full = np.concatenate([half[:0:-1, ::-1], half], axis=0)
            full_taper = np.concatenate([taper[:0:-1, ::-1], taper], axis=0)
            self._template = (full, full_taper)
        return self._template

    def add(self, strip: np.ndarray, y0: int, y1: int) -> None:
        """Add the artefacts that overlap rows [y0, y1) to ``strip``."""
        if not len(self):
            return
        nx = strip.shape[1]
        hit = np.flatnonzero((self.iy - self.radius < y1) & (self.iy + self.radius >= y0))
        if not len(hit):
            return
        pattern, taper = self.template()
        R = self.size
        for i in hit:
            r, cx, cy = int(self.radius[i]), int(self.ix[i]), int(self.iy[i])
            xa, xb = max(0, cx - r), min(nx, cx + r + 1)
            ya, yb = max(y0, cy - r), min(y1, cy + r + 1)
            if xa >= xb or ya >= yb:
                continue
            dx = np.arange(xa - cx, xb - cx, dtype=np.float64)
            dy = np.arange(ya - cy, yb - cy, dtype=np.float64)
            gx = np.exp(-0.5 * (dx / self.window[i]) ** 2)
            gy = np.exp(-0.5 * (dy / self.window[i]) ** 2)
            ax = self.kx[i] * dx + self.phase[i]
            ay = self.ky[i] * dy
            cxv, sxv = (gx * np.cos(ax)).astype(np.float32), (gx * np.sin(ax)).astype(np.float32)
            cyv, syv = (gy * np.cos(ay)).astype(np.float32), (gy * np.sin(ay)).astype(np.float32)
            stripes = np.multiply.outer(cyv, cxv)
            stripes -= np.multiply.outer(syv, sxv)
            rows = slice(R + ya - cy, R + yb - cy)
            cols = slice(R + xa - cx, R + xb - cx)
            stripes *= taper[rows, cols]
            stripes *= np.float32(self.stripe[i])
            stripes += np.float32(self.sidelobe[i]) * pattern[rows, cols]
            stripes *= np.float32(self.level[i])
            strip[ya - y0:yb - y0, xa:xb] += stripes


# ----------------------------------------------------------------------------------------------
# double-lobed sources


def _double_components(rng: np.random.Generator, flux: np.ndarray, opts: SimulationOptions) -> dict[str, np.ndarray]:
    """Components of ``len(flux)`` doubles, each ``[n, _DOUBLE_SLOTS]``: offsets from the core
    (``dx``, ``dy``, px), ``flux`` (Jy; unused slots 0), intrinsic FWHM ``bmaj``, ``bmin``
    (arcsec) and ``pa`` (deg), ``side`` (0 core, 1 or 2 the lobe), and per double the lobe
    axis ``axis_pa`` (deg).

    Slot 0 is the core. An FR II-like double has per side a resolved lobe (60-80 % of the arm
    length out) and a compact hotspot at the end (90-100 %, 15-50 % of the lobe's flux); an
    FR I-like one has per side three Gaussians at 15 %, 45 % and 80 % of the arm, fading (50:30:20)
    and widening outwards. Arms differ in length by up to +-15 %, lobes in flux by up to a factor
    2, and the second arm is bent by a few degrees.
    """
    n, K = len(flux), _DOUBLE_SLOTS
    lo, hi = opts.double_separation
    sep = np.exp(rng.uniform(math.log(lo), math.log(hi), n))  # arcsec
    axis_pa = rng.uniform(-90.0, 90.0, n)
    asym = rng.uniform(-0.15, 0.15, n)
    bend = np.clip(rng.normal(0.0, 6.0, n), -20.0, 20.0)
    ratio = 10.0 ** rng.uniform(-0.3, 0.3, n)
    core = np.where(rng.uniform(0.0, 1.0, n) < 0.5, 10.0 ** rng.uniform(-2.5, -1.0, n), 0.0)
    fr2 = rng.uniform(0.0, 1.0, n) < opts.fr2_fraction
    jitter = rng.uniform(0.0, 1.0, (n, K, 5))  # per slot: distance, flux, size, axis ratio, pa

    arm = np.stack([np.zeros(n), 0.5 * sep * (1 + asym), 0.5 * sep * (1 - asym)], axis=1)  # arcsec
    arm_pa = np.stack([axis_pa, axis_pa, axis_pa + 180.0 + bend], axis=1)
    lobe_flux = np.stack([flux * core, flux * (1 - core) * ratio / (1 + ratio), flux * (1 - core) / (1 + ratio)],
                         axis=1)
    side = np.zeros((n, K), dtype=np.int64)
    dist = np.zeros((n, K))  # fraction of the arm
    share = np.zeros((n, K))  # fraction of the side's flux
    size = np.zeros((n, K))  # FWHM, fraction of the arm
    ratio_ab = 0.4 + 0.5 * jitter[..., 3]
    pa_jit = (jitter[..., 4] - 0.5) * 30.0
    share[:, 0] = 1.0
    # FR II: slots 1, 2 = lobe 1 and its hotspot; 3, 4 = lobe 2 and its hotspot; 5, 6 unused
    hot = 0.15 + 0.35 * jitter[:, :, 1]
    f2 = {1: (1, 0.6 + 0.2 * jitter[:, 1, 0], 1 - hot[:, 1], 0.35 + 0.25 * jitter[:, 1, 2]),
          2: (1, 0.9 + 0.1 * jitter[:, 2, 0], hot[:, 1], 0.02 + 0.06 * jitter[:, 2, 2]),
          3: (2, 0.6 + 0.2 * jitter[:, 3, 0], 1 - hot[:, 3], 0.35 + 0.25 * jitter[:, 3, 2]),
          4: (2, 0.9 + 0.1 * jitter[:, 4, 0], hot[:, 3], 0.02 + 0.06 * jitter[:, 4, 2])}
    # FR I: slots 1-3 side 1, 4-6 side 2, at 15 %, 45 %, 80 % of the arm, fading and widening
    w1 = np.array([0.5, 0.3, 0.2])[None, :] * (0.7 + 0.6 * jitter[:, 1:4, 1])
    w2 = np.array([0.5, 0.3, 0.2])[None, :] * (0.7 + 0.6 * jitter[:, 4:7, 1])
    w1 /= w1.sum(axis=1, keepdims=True)
    w2 /= w2.sum(axis=1, keepdims=True)
    f1 = {}
    for j, (d, s) in enumerate(zip((0.15, 0.45, 0.8), (0.2, 0.35, 0.55))):
        f1[1 + j] = (1, d * (0.9 + 0.2 * jitter[:, 1 + j, 0]), w1[:, j], s * (0.8 + 0.4 * jitter[:, 1 + j, 2]))
        f1[4 + j] = (2, d * (0.9 + 0.2 * jitter[:, 4 + j, 0]), w2[:, j], s * (0.8 + 0.4 * jitter[:, 4 + j, 2]))
    for slot in range(1, K):
        s1, d1, sh1, sz1 = f1[slot]
        s2, d2, sh2, sz2 = f2.get(slot, (0, 0.0, 0.0, 0.0))
        side[:, slot] = np.where(fr2, s2, s1)
        dist[:, slot] = np.where(fr2, d2, d1)
        share[:, slot] = np.where(fr2, sh2, sh1)
        size[:, slot] = np.where(fr2, sz2, sz1)
    rows = np.arange(n)[:, None]
    arm_len = arm[rows, side]
    cpa = arm_pa[rows, side]
    r = dist * arm_len / opts.pixel_scale  # px
    theta = np.radians(cpa)
    bmaj = size * arm_len
    return {
        "dx": -np.sin(theta) * r, "dy": np.cos(theta) * r,
        "flux": lobe_flux[rows, side] * share,
        "bmaj": bmaj, "bmin": bmaj * ratio_ab, "pa": (cpa + pa_jit + 90.0) % 180.0 - 90.0,
        "side": side, "axis_pa": axis_pa,
    }


# ----------------------------------------------------------------------------------------------
# the plan: sources drawn once, pixels rendered strip by strip


@dataclass
class _Plan:
    """A drawn sky: its header, truth catalogue and per-component rendering parameters (0-based px).

    A component is one Gaussian: a whole source, or one part of a double.
    """

    shape: tuple[int, int]
    seed: int
    opts: SimulationOptions
    header: fits.Header
    truth: Table
    x: np.ndarray
    y: np.ndarray
    amp: np.ndarray  # Jy/beam, analytic peak of the beam-convolved component
    inv: np.ndarray  # [n, 3]: inverse covariance entries (xx, xy, yy), px^-2
    rx: np.ndarray  # stamp half-widths, px
    ry: np.ndarray
    kernel: np.ndarray | None  # noise kernel, sum of squares 1
    noise_map: _NoiseMap | None = None
    artefacts: _Artefacts | None = None
    blanks: _Blanks | None = None

    def strips(self, rows: int | None = None) -> Iterator[tuple[int, int]]:
        """(y0, y1) row ranges covering the image, about `_STRIP_PIXELS` pixels each."""
        ny, nx = self.shape
        rows = rows or max(_NOISE_BLOCK_ROWS, (_STRIP_PIXELS // nx) // _NOISE_BLOCK_ROWS * _NOISE_BLOCK_ROWS)
        for y0 in range(0, ny, rows):
            yield y0, min(ny, y0 + rows)

    def render(self, y0: int, y1: int) -> np.ndarray:
        """Pixels of rows [y0, y1) as float32 Jy/beam: noise plus every source overlapping them."""
        strip = self._noise(y0, y1)
        if self.noise_map is not None:
            strip *= self.noise_map.rows(y0, y1)
        self._add_components(strip, y0, y1)
        if self.artefacts is not None:
            self.artefacts.add(strip, y0, y1)
        if self.blanks is not None:
            mask = self.blanks.rows(y0, y1)
            if mask is not None:
                strip[mask] = np.nan
        return strip

    def _add_components(self, strip: np.ndarray, y0: int, y1: int) -> None:
        """Add every component overlapping rows [y0, y1), in component order.

        Stamps of similar size are evaluated together (padded to a common shape, the padding
        masked out before the exponential), their pixels laid out in component order and added
        by one ``np.add.at``, which adds in index order: each pixel receives the same float32
        additions in the same order as in a plain loop over the components, so the result is
        that loop's, bit for bit.
        """
        ny, nx = self.shape
        hit = np.nonzero((self.y - self.ry < y1) & (self.y + self.ry > y0 - 1))[0]
        if not len(hit):
            return
        x, y, rx, ry = self.x[hit], self.y[hit], self.rx[hit], self.ry[hit]
        xa = np.maximum(0, np.floor(x - rx)).astype(np.int64)
        xb = np.minimum(nx, np.ceil(x + rx) + 1).astype(np.int64)
        ya = np.maximum(y0, np.floor(y - ry)).astype(np.int64)
        yb = np.minimum(y1, np.ceil(y + ry) + 1).astype(np.int64)
        use = (xb > xa) & (yb > ya)
        w, h = (xb - xa)[use], (yb - ya)[use]
        hit, xa, ya = hit[use], xa[use], ya[use]
        if not len(hit):
            return
        size = w * h
        flat = strip.reshape(-1)
        # consecutive runs of components of bounded total stamp area (bounded memory), in order
        run = (np.cumsum(size) - size) // _CHUNK_ELEMENTS
        cuts = np.r_[0, np.flatnonzero(np.diff(run)) + 1, len(size)]
        for c0, c1 in zip(cuts[:-1], cuts[1:]):
            self._add_run(flat, nx, y0, hit[c0:c1], xa[c0:c1], ya[c0:c1], w[c0:c1], h[c0:c1])

    def _add_run(self, flat: np.ndarray, nx: int, y0: int, idx: np.ndarray, xa: np.ndarray, ya: np.ndarray,
                 w: np.ndarray, h: np.ndarray) -> None:
        """Add the stamps of consecutive components ``idx`` to the flattened strip, in order."""
        size = w * h
        offset = np.concatenate([[0], np.cumsum(size)[:-1]])
        total = int(size.sum())
        where = np.empty(total, dtype=np.int64)
        values = np.empty(total, dtype=np.float32)
        cw = _SIZE_CLASSES[np.searchsorted(_SIZE_CLASSES, w)]
        ch = _SIZE_CLASSES[np.searchsorted(_SIZE_CLASSES, h)]
        groups = ch * 4096 + cw
        for key in np.unique(groups):
            members = np.flatnonzero(groups == key)
            step = max(1, _BATCH_ELEMENTS // int((key // 4096) * (key % 4096)))
            for b0 in range(0, len(members), step):
                sel = members[b0:b0 + step]
                flat_idx, vals = self._stamps(nx, y0, idx[sel], xa[sel], ya[sel], w[sel], h[sel])
                n_sel = size[sel]
                first = np.concatenate([[0], np.cumsum(n_sel)[:-1]])
                pos = np.repeat(offset[sel] - first, n_sel) + np.arange(int(n_sel.sum()))
                where[pos] = flat_idx
                values[pos] = vals
        np.add.at(flat, where, values)

    def _stamps(self, nx: int, y0: int, idx: np.ndarray, xa: np.ndarray, ya: np.ndarray, w: np.ndarray,
                h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat strip indices and float32 values of the stamps of components ``idx``, each stamp's
        pixels in row-major order, with the arithmetic of evaluating one stamp at a time."""
        H, W = int(h.max()), int(w.max())
        cols, rows = np.arange(W), np.arange(H)
        dx = (xa[:, None] + cols[None, :]) - self.x[idx][:, None]  # [n, W]
        dy = (ya[:, None] + rows[None, :]) - self.y[idx][:, None]  # [n, H]
        ixx, ixy, iyy = self.inv[idx, 0][:, None], self.inv[idx, 1][:, None], self.inv[idx, 2][:, None]
        qa = ixx * dx * dx
        qb = (2.0 * ixy) * dx
        qc = iyy * dy * dy
        valid = (rows[None, :, None] < h[:, None, None]) & (cols[None, None, :] < w[:, None, None])
        q = (qa[:, None, :] + qb[:, None, :] * dy[:, :, None]) + qc[:, :, None]
        amp = np.broadcast_to(self.amp[idx][:, None, None], valid.shape)[valid]
        values = (amp * np.exp(-0.5 * q[valid])).astype(np.float32)
        flat = ((ya - y0)[:, None, None] + rows[None, :, None]) * nx + (xa[:, None, None] + cols[None, None, :])
        return flat[valid], values

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
            rng = np.random.default_rng([self.seed, _STREAM_NOISE, b])
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


def _convolved(bmaj: np.ndarray, bmin: np.ndarray, pa: np.ndarray, opts: SimulationOptions
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Beam-convolved components: (peak / flux, inverse covariance [n, 3], stamp half-widths rx, ry)."""
    to_sigma_px = _FWHM_TO_SIGMA / opts.pixel_scale
    beam_cov = _pa_covariance(opts.beam_bmaj * to_sigma_px, opts.beam_bmin * to_sigma_px, opts.beam_pa)
    cov = _pa_covariance(bmaj * to_sigma_px, bmin * to_sigma_px, pa) + beam_cov
    det = cov[:, 0, 0] * cov[:, 1, 1] - cov[:, 0, 1] ** 2
    beam_det = beam_cov[0, 0] * beam_cov[1, 1] - beam_cov[0, 1] ** 2
    # surface brightness in Jy/beam: integral over the image / beam area = flux
    gain = np.sqrt(beam_det / det)
    inv = np.stack([cov[:, 1, 1] / det, -cov[:, 0, 1] / det, cov[:, 0, 0] / det], axis=1)
    rx = np.minimum(_STAMP_SIGMAS * np.sqrt(cov[:, 0, 0]), _MAX_STAMP_RADIUS)
    ry = np.minimum(_STAMP_SIGMAS * np.sqrt(cov[:, 1, 1]), _MAX_STAMP_RADIUS)
    return gain, inv, rx, ry


def _draw(shape: tuple[int, int], seed: int, opts: SimulationOptions) -> _Plan:
    """Draw the source population and build the truth table and rendering parameters."""
    if int(seed) < 0:
        raise UserInputError(f"the simulation seed must be a non-negative integer, not {seed!r}")
    seed = int(seed)
    ny, nx = shape
    rng = np.random.default_rng([seed, _STREAM_SOURCES])
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
    morphology = np.where(extended, "gaussian", "point").astype("<U8")

    # the noise rms map, if any: 1 everywhere by default
    noise_map = _NoiseMap(shape, seed, opts) if (opts.noise_variation > 0 or opts.noise_radial) else None

    # components: one per source, or several per double (core, lobes, hotspots)
    doubles = np.zeros(n, dtype=bool)
    if opts.double_fraction > 0 and n:
        drng = np.random.default_rng([seed, _STREAM_DOUBLES])
        doubles = drng.uniform(0.0, 1.0, n) < opts.double_fraction
    di = np.flatnonzero(doubles)
    if len(di):
        parts = _double_components(drng, flux[di], opts)
        K = _DOUBLE_SLOTS
        counts = np.where(doubles, K, 1)
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        total = int(counts.sum())
        cx, cy, cf = np.empty(total), np.empty(total), np.empty(total)
        cmaj, cmin, cpa = np.empty(total), np.empty(total), np.empty(total)
        si = np.flatnonzero(~doubles)
        for arr, values in ((cx, x), (cy, y), (cf, flux), (cmaj, bmaj), (cmin, bmin), (cpa, pa)):
            arr[start[si]] = values[si]
        slots = (start[di][:, None] + np.arange(K)[None, :]).ravel()
        cx[slots] = (x[di][:, None] + parts["dx"]).ravel()
        cy[slots] = (y[di][:, None] + parts["dy"]).ravel()
        cf[slots] = parts["flux"].ravel()
        cmaj[slots], cmin[slots], cpa[slots] = parts["bmaj"].ravel(), parts["bmin"].ravel(), parts["pa"].ravel()
    else:
        cx, cy, cf, cmaj, cmin, cpa = x, y, flux, bmaj, bmin, pa

    # convolve with the beam: covariances add (pixels)
    gain, inv, rx, ry = _convolved(cmaj, cmin, cpa, opts)
    camp = cf * gain

    tx, ty, peak = x, y, camp
    bright_x, bright_y = x, y
    lobes = np.full((4, n), np.nan)
    if len(di):
        tx, ty, peak = x.copy(), y.copy(), np.empty(n)
        bright_x, bright_y = x.copy(), y.copy()
        bmaj, bmin, pa = bmaj.copy(), bmin.copy(), pa.copy()
        peak[si] = camp[start[si]]
        K = _DOUBLE_SLOTS
        sl = start[di][:, None] + np.arange(K)[None, :]
        px, py, pf, pamp, pinv = cx[sl], cy[sl], cf[sl], camp[sl], inv[sl]
        weight = pf / pf.sum(axis=1, keepdims=True)
        tx[di] = (weight * px).sum(axis=1)
        ty[di] = (weight * py).sum(axis=1)
        for s, (ix, iy) in ((1, (0, 1)), (2, (2, 3))):
            ws = np.where(parts["side"] == s, pf, 0.0)
            lobes[ix, di] = (ws * px).sum(axis=1) / ws.sum(axis=1) + 1.0
            lobes[iy, di] = (ws * py).sum(axis=1) / ws.sum(axis=1) + 1.0
        # brightest point: the summed profile evaluated at every component centre
        ddx = px[:, :, None] - px[:, None, :]  # [n, eval point, component]
        ddy = py[:, :, None] - py[:, None, :]
        q = (pinv[:, None, :, 0] * ddx * ddx + 2.0 * pinv[:, None, :, 1] * ddx * ddy
             + pinv[:, None, :, 2] * ddy * ddy)
        profile = (pamp[:, None, :] * np.exp(-0.5 * q)).sum(axis=2)
        profile = np.where(pf > 0, profile, -np.inf)
        best = np.argmax(profile, axis=1)
        peak[di] = profile[np.arange(len(di)), best]
        bright_x[di] = px[np.arange(len(di)), best]
        bright_y[di] = py[np.arange(len(di)), best]
        # overall extent along and across the lobe axis, from the half-maximum edges of the parts
        theta = np.radians(parts["axis_pa"])[:, None]
        ex, ey = -np.sin(theta), np.cos(theta)
        ccov = _pa_covariance(parts["bmaj"] * _FWHM_TO_SIGMA, parts["bmin"] * _FWHM_TO_SIGMA, parts["pa"])
        half_along = 0.5 * np.sqrt(np.maximum(ccov[..., 0, 0] * ex * ex + 2 * ccov[..., 0, 1] * ex * ey
                                              + ccov[..., 1, 1] * ey * ey, 0.0)) / _FWHM_TO_SIGMA
        half_across = 0.5 * np.sqrt(np.maximum(ccov[..., 0, 0] * ey * ey - 2 * ccov[..., 0, 1] * ex * ey
                                               + ccov[..., 1, 1] * ex * ex, 0.0)) / _FWHM_TO_SIGMA
        along = (parts["dx"] * ex + parts["dy"] * ey) * opts.pixel_scale  # arcsec
        across = (parts["dx"] * ey - parts["dy"] * ex) * opts.pixel_scale
        used = pf > 0
        extent = (np.where(used, along + half_along, -np.inf).max(axis=1)
                  - np.where(used, along - half_along, np.inf).min(axis=1))
        width = (np.where(used, across + half_across, -np.inf).max(axis=1)
                 - np.where(used, across - half_across, np.inf).min(axis=1))
        bmaj[di] = extent
        bmin[di] = np.minimum(width, extent)
        pa[di] = parts["axis_pa"]
        extended = extended | doubles
        morphology[di] = "double"
        # unused slots are not rendered
        keep = cf > 0
        cx, cy, camp, inv, rx, ry, cf = cx[keep], cy[keep], camp[keep], inv[keep], rx[keep], ry[keep], cf[keep]

    if noise_map is None:
        local = np.full(n, opts.noise)
    else:
        local = opts.noise * noise_map.at(bright_x, bright_y)
    if opts.noise > 0:
        snr = peak / local
    else:
        snr = np.full(n, np.inf)

    artefacts = None
    if opts.artefact_level > 0 and len(cx):
        crms = opts.noise * (noise_map.at(cx, cy) if noise_map is not None else np.ones(len(cx)))
        artefacts = _Artefacts(seed, opts, cx, cy, camp, crms)
        if not len(artefacts):
            artefacts = None

    ra, dec = wcs.wcs_pix2world(tx, ty, 0) if n else (np.zeros(0), np.zeros(0))
    truth = _truth_table(np.arange(1, n + 1), ra, dec, tx + 1.0, ty + 1.0, flux, peak, bmaj, bmin, pa,
                         snr, extended, local, morphology, *lobes)
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
    for name in ("noise_variation", "noise_radial", "artefact_level", "double_fraction",
                 "blank_outside_radius", "blank_fraction"):
        value = getattr(opts, name)
        if value:
            truth.meta[name] = float(value)

    blanks = None
    if opts.blank_outside_radius is not None or opts.blank_fraction > 0:
        blanks = _Blanks(shape, seed, opts)
        gone = blanks.at(tx, ty)
        truth.meta["n_blanked"] = int(gone.sum())
        truth = truth[~gone]
    return _Plan(shape, seed, opts, header, truth, cx, cy, camp, inv, rx, ry, _noise_kernel(opts),
                 noise_map, artefacts, blanks)


_TRUTH_COLUMNS: tuple[tuple[str, str | None, str, str], ...] = (
    ("id", None, "meta.id;meta.main", "Source identifier"),
    ("ra", "deg", "pos.eq.ra;meta.main", "Right ascension (ICRS)"),
    ("dec", "deg", "pos.eq.dec;meta.main", "Declination (ICRS)"),
    ("x", "pix", "pos.cartesian.x;instr.pixel", "Pixel column of the centre (FITS 1-based)"),
    ("y", "pix", "pos.cartesian.y;instr.pixel", "Pixel row of the centre (FITS 1-based)"),
    ("flux", "Jy", "phot.flux.density;em.radio", "Integrated flux density"),
    ("peak", "Jy/beam", "phot.flux.density;stat.max", "Peak surface brightness of the beam-convolved source"),
    ("bmaj", "arcsec", "phys.angSize.smajAxis",
     "Intrinsic FWHM major axis (0 for unresolved sources; a double's overall extent)"),
    ("bmin", "arcsec", "phys.angSize.sminAxis",
     "Intrinsic FWHM minor axis (0 for unresolved sources; a double's width)"),
    ("pa", "deg", "pos.posAng", "Intrinsic position angle, east of north (a double's lobe axis)"),
    ("snr", None, "stat.snr", "Peak surface brightness over the local noise rms"),
    ("extended", None, "meta.code", "True for a resolved (extended) source"),
    ("local_noise", "Jy/beam", "instr.det.noise", "Noise rms at the source's brightest point"),
    ("morphology", None, "src.morph.type", "point, gaussian or double"),
    ("lobe1_x", "pix", "pos.cartesian.x;instr.pixel", "Flux-weighted centre of a double's first lobe (FITS 1-based)"),
    ("lobe1_y", "pix", "pos.cartesian.y;instr.pixel", "Flux-weighted centre of a double's first lobe (FITS 1-based)"),
    ("lobe2_x", "pix", "pos.cartesian.x;instr.pixel", "Flux-weighted centre of a double's second lobe (FITS 1-based)"),
    ("lobe2_y", "pix", "pos.cartesian.y;instr.pixel", "Flux-weighted centre of a double's second lobe (FITS 1-based)"),
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
        elif name == "morphology":
            values = values.astype("<U8")
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
        vtable.description = "Simulated sources (cianna_otf_server.sky.simulate)"
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


# ----------------------------------------------------------------------------------------------
# domain randomisation




def random_domain(rng: np.random.Generator, *, size: int | tuple[int, int] = 1024,
                  beam_px: tuple[float, float] = (1.5, 8.0),
                  pixel_scale: tuple[float, float] = (0.5, 10.0),
                  noise: tuple[float, float] = (1.0e-6, 1.0e-2),
                  snr_max: tuple[float, float] = (2.0e3, 2.0e4),
                  sources_per_beam: tuple[float, float] = (1.0e-3, 0.05),
                  max_sources_per_pixel: float = 0.005,
                  p_empty: float = 0.05, p_white: float = 0.15, p_artefacts: float = 0.5,
                  p_blank: float = 0.3, p_radial: float = 0.2) -> SimulationOptions:
    """Draw random but realistic simulation options, for training on any survey (domain randomisation).

    Each call consumes a fixed number of draws from ``rng``, so the same generator state always
    gives the same options (``random_domain(np.random.default_rng(k))`` is a pure function of
    ``k``). The options are meant for a network that sees the image in signal-to-noise units:
    the absolute noise level is realistic but irrelevant, the flux range is set relative to it.

    Parameters
    ----------
    rng : numpy.random.Generator
        The source of randomness.
    size : int or (int, int)
        Image size the options are meant for, pixels (as in `simulate_sky`): sets the scale of
        the blanking radius and of the primary beam of ``noise_radial``.
    beam_px : (float, float)
        Range of the beam major axis FWHM, pixels (log-uniform).
    pixel_scale : (float, float)
        Range of the pixel size, arcsec (log-uniform).
    noise : (float, float)
        Range of the noise rms, Jy/beam (log-uniform).
    snr_max : (float, float)
        Range of ``flux_max / noise`` (log-uniform): the brightest point sources' SNR.
    sources_per_beam : (float, float)
        Range of the source density, sources per beam area (log-uniform), from sparse to about
        the confusion level (one source per 20 beams) ...
    max_sources_per_pixel : float
        ... but never more than this many sources per pixel (bounds the cost for small beams).
    p_empty, p_white, p_artefacts, p_blank, p_radial : float
        Probabilities of a sky with no source, of white (uncorrelated) noise, of artefacts
        around bright sources, of NaN blanks and of a primary-beam rise of the noise.

    Returns
    -------
    SimulationOptions
        Pass them on with ``simulate_sky(size, seed, **options.as_kwargs())``.

    Notes
    -----
    The distributions (U = uniform, logU = log-uniform, "beam" = the drawn beam major axis):

    * ``pixel_scale`` logU(pixel_scale) arcsec; beam major FWHM logU(beam_px) pixels, so
      ``beam_bmaj = beam_px * pixel_scale``; ``beam_bmin = beam_bmaj * U(0.5, 1)``;
      ``beam_pa`` U(-90, 90) deg.
    * ``noise`` logU(noise); correlated like the beam with probability ``1 - p_white``;
      ``noise_variation`` U(0, 0.6) with ``noise_variation_scale`` logU(100, 600) px; with
      probability ``p_radial`` a primary beam of FWHM U(0.8, 2.5) x the larger image side.
    * With probability ``p_artefacts``: ``artefact_level`` logU(0.003, 0.03) and
      ``artefact_snr`` logU(30, 300); otherwise no artefacts.
    * ``double_fraction`` U(0, 0.15), separations between 2.5 beams and logU(10, 40) beams,
      ``fr2_fraction`` U(0.3, 0.8).
    * With probability ``p_blank``: a primary-beam cut at U(0.45, 0.75) x the smaller side (40 %),
      random blank regions covering U(0.02, 0.25) of the area (40 %), or both (20 %).
    * With probability ``p_empty`` no source (``n_sources=0``); otherwise ``density`` =
      logU(sources_per_beam) per beam area, capped at ``max_sources_per_pixel``.
    * ``flux_min`` = logU(0.5, 2) x noise, ``flux_max`` = logU(snr_max) x noise, ``flux_slope``
      U(1.5, 2.1): peak SNRs from ~1 to ~1e4 with power-law counts.
    * ``extended_fraction`` U(0, 0.6); ``size_median`` logU(0.3, 3) beams with
      ``size_scatter_dex`` U(0.15, 0.35), clipped to [0.1, 20] beams; ``axis_ratio_min``
      U(0.2, 0.6).
    * ``frequency`` logU(0.1, 3) GHz, ``ra`` U(0, 360) deg, ``dec`` uniform on the sphere
      within |dec| < 76 deg (header only).
    """
    ny, nx = _image_shape(size)
    u = rng.uniform(0.0, 1.0, 40)  # every call consumes exactly these draws, whatever the outcome
    k = iter(range(40))

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(u[next(k)])

    def log_uniform(bounds: tuple[float, float]) -> float:
        lo, hi = (float(v) for v in bounds)
        return math.exp(uniform(math.log(lo), math.log(hi)))

    def chance(p: float) -> bool:
        return float(u[next(k)]) < p

    scale = log_uniform(pixel_scale)
    beam = log_uniform(beam_px) * scale  # arcsec
    bmin = beam * uniform(0.5, 1.0)
    bpa = uniform(-90.0, 90.0)
    sigma = log_uniform(noise)
    correlated = not chance(p_white)
    variation = uniform(0.0, 0.6)
    variation_scale = log_uniform((100.0, 600.0))
    radial_on, radial = chance(p_radial), uniform(0.8, 2.5) * max(nx, ny)
    artefacts_on = chance(p_artefacts)
    artefact_level, artefact_snr = log_uniform((0.003, 0.03)), log_uniform((30.0, 300.0))
    double_fraction = uniform(0.0, 0.15)
    separation = (2.5 * beam, log_uniform((10.0, 40.0)) * beam)
    fr2 = uniform(0.3, 0.8)
    blank_on, blank_kind = chance(p_blank), uniform(0.0, 1.0)
    blank_radius = uniform(0.45, 0.75) * min(nx, ny)
    blank_fraction = uniform(0.02, 0.25)
    empty = chance(p_empty)
    per_beam = log_uniform(sources_per_beam)
    flux_min = log_uniform((0.5, 2.0)) * sigma
    flux_max = log_uniform(snr_max) * sigma
    slope = uniform(1.5, 2.1)
    extended_fraction = uniform(0.0, 0.6)
    size_median = log_uniform((0.3, 3.0)) * beam
    scatter = uniform(0.15, 0.35)
    ratio_min = uniform(0.2, 0.6)
    frequency = log_uniform((1.0e8, 3.0e9))
    ra = uniform(0.0, 360.0)
    dec = math.degrees(math.asin(uniform(-0.97, 0.97)))

    beam_area_deg2 = math.pi / (4.0 * math.log(2.0)) * beam * bmin / 3600.0 ** 2
    pixel_deg2 = (scale / 3600.0) ** 2
    density = min(per_beam / beam_area_deg2, max_sources_per_pixel / pixel_deg2)
    return SimulationOptions(
        pixel_scale=scale, beam_bmaj=beam, beam_bmin=bmin, beam_pa=bpa, noise=sigma,
        frequency=frequency, ra=ra, dec=dec,
        n_sources=0 if empty else None, density=density,
        flux_min=flux_min, flux_max=max(flux_max, flux_min), flux_slope=slope,
        extended_fraction=extended_fraction, size_median=size_median, size_scatter_dex=scatter,
        size_min=0.1 * beam, size_max=20.0 * beam, axis_ratio_min=ratio_min,
        correlated_noise=correlated, noise_variation=variation, noise_variation_scale=variation_scale,
        noise_radial=radial if radial_on else None,
        artefact_level=artefact_level if artefacts_on else 0.0, artefact_snr=artefact_snr,
        double_fraction=double_fraction, double_separation=separation, fr2_fraction=fr2,
        blank_outside_radius=blank_radius if blank_on and blank_kind < 0.6 else None,
        blank_fraction=blank_fraction if blank_on and blank_kind >= 0.4 else 0.0,
    )
