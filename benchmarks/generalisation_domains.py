"""The simulated domains of the generalisation benchmark: fixed skies and header variations.

Each `Domain` is a fixed, named setting of the simulator (`SimulationOptions`: pixel scale,
beam, noise, density, doubles, artefacts, blanks) plus a list of transforms applied to the
written image afterwards, the way real images differ from a simulated one: the unit
(``mJy/beam``), degenerate FREQ/STOKES axes, a NaN frame, a flipped x axis (``CDELT1 > 0``),
a Galactic frame, another projection. The skies are of the kinds the domain-randomisation
sampler (`cianna_otf_server.sky.simulate.random_domain`) draws for training; they differ from its
draws only by being fixed, specific settings (plus a few outside its ranges on purpose: noise
down to 1e-7 Jy/beam, beams of 1.2 and 12 pixels) and by the header variations, which no
training sky has.

Seeds are fixed per domain, from 3,000,000 up: no training (seeds above 10**7), validation
(2,000,000 + k), threshold tuning (2,100,000 + k) or quality benchmark (1,000,001 + k) uses them.

A transform takes ``(hdul, truth)`` and returns new ones; every transform keeps the truth in
step with the pixels (``x``, ``y`` FITS 1-based, lobe positions, ``ra``/``dec`` from the new
header's WCS) and the truth fluxes in Jy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from cianna_otf_server.sky.simulate import SimulationOptions, simulate_sky

__all__ = [
    "DOMAINS",
    "QUICK_DOMAINS",
    "Domain",
    "FIRST_SEED",
    "simulate_domain",
    "survey",
    "to_mjy",
    "to_4d",
    "nan_frame",
    "flip_x",
    "to_galactic",
    "relabel_projection",
]

#: No domain seed lies below this: every other use of the simulator draws other seeds.
FIRST_SEED = 3_000_000

Transform = Callable[[fits.HDUList, Table, int], tuple[fits.HDUList, Table]]


def survey(pixel_scale: float, beam_px: float, noise: float, *, bmin_px: float | None = None,
           pa: float = 0.0, per_beam: float = 0.01, snr_max: float = 5000.0, frequency: float = 1.4e9,
           ra: float = 150.0, dec: float = -30.0, **extra: Any) -> dict[str, Any]:
    """Simulation options for a survey-like sky, as `random_domain` would shape it.

    Parameters
    ----------
    pixel_scale : float
        Pixel side, arcsec.
    beam_px, bmin_px : float
        Beam FWHM major (and minor; default round) axis, pixels.
    noise : float
        Noise rms, Jy/beam.
    pa : float
        Beam position angle, degrees east of north.
    per_beam : float
        Sources per beam area (0.05 is about the confusion level the sampler reaches).
    snr_max : float
        ``flux_max / noise``: the brightest point sources' SNR (``flux_min`` is the noise).

    Returns
    -------
    dict
        Keyword options of `simulate_sky` (intrinsic sizes scale with the beam, as in the sampler).
    """
    beam = beam_px * pixel_scale
    bmin = (bmin_px if bmin_px is not None else beam_px) * pixel_scale
    beam_area_deg2 = math.pi / (4.0 * math.log(2.0)) * beam * bmin / 3600.0 ** 2
    pixel_deg2 = (pixel_scale / 3600.0) ** 2
    density = min(per_beam / beam_area_deg2, 0.005 / pixel_deg2)
    options: dict[str, Any] = dict(
        pixel_scale=pixel_scale, beam_bmaj=beam, beam_bmin=bmin, beam_pa=pa, noise=noise,
        frequency=frequency, ra=ra, dec=dec, density=density,
        flux_min=noise, flux_max=snr_max * noise, flux_slope=1.6,
        extended_fraction=0.3, size_median=1.0 * beam, size_scatter_dex=0.25,
        size_min=0.1 * beam, size_max=20.0 * beam, axis_ratio_min=0.3,
    )
    options.update(extra)
    return options


# ----------------------------------------------------------------------------------------------
# transforms: (hdul, truth, size) -> (hdul, truth)


def _replace_data(hdul: fits.HDUList, data: np.ndarray, header: fits.Header | None = None) -> fits.HDUList:
    header = (header if header is not None else hdul[0].header).copy()
    return fits.HDUList([fits.PrimaryHDU(data=data, header=header)])


def _sky_from_header(truth: Table, header: fits.Header) -> Table:
    """Recompute the truth's ``ra``, ``dec`` (ICRS, deg) from `header`'s WCS and the pixel positions."""
    truth = truth.copy()
    if not len(truth):
        return truth
    wcs = WCS(header).celestial
    sky = wcs.pixel_to_world(np.asarray(truth["x"], float) - 1.0, np.asarray(truth["y"], float) - 1.0)
    icrs = sky.icrs
    truth["ra"][:] = icrs.ra.deg
    truth["dec"][:] = icrs.dec.deg
    return truth


def to_mjy(hdul: fits.HDUList, truth: Table, size: int = 0) -> tuple[fits.HDUList, Table]:
    """Pixels times 1000 and ``BUNIT = 'mJy/beam'``; the truth (fluxes in Jy) is unchanged."""
    header = hdul[0].header.copy()
    header["BUNIT"] = ("mJy/beam", "surface brightness unit")
    data = (np.asarray(hdul[0].data, dtype=np.float32) * np.float32(1000.0)).astype(np.float32)
    return _replace_data(hdul, data, header), truth


def to_4d(hdul: fits.HDUList, truth: Table, size: int = 0) -> tuple[fits.HDUList, Table]:
    """A (RA, DEC, FREQ, STOKES) float64 image with degenerate third and fourth axes, as WSClean writes."""
    header = hdul[0].header.copy()
    data = np.asarray(hdul[0].data, dtype=np.float64)[None, None, :, :]
    freq = float(header.get("RESTFRQ", 1.4e9))
    header["BITPIX"] = -64
    header["NAXIS"] = 4
    header.set("NAXIS3", 1, after="NAXIS2")
    header.set("NAXIS4", 1, after="NAXIS3")
    for key, value in (("CTYPE3", "FREQ"), ("CRVAL3", freq), ("CDELT3", 1.0e7), ("CRPIX3", 1.0),
                       ("CUNIT3", "Hz"), ("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0),
                       ("CRPIX4", 1.0), ("CUNIT4", "")):
        header[key] = value
    return _replace_data(hdul, data, header), truth


def nan_frame(hdul: fits.HDUList, truth: Table, size: int) -> tuple[fits.HDUList, Table]:
    """A NaN frame along every border (100 px on a 2048 px image, in proportion on others).

    Sources whose centre pixel falls in the frame leave the truth table, as the simulator's own
    blanks do.
    """
    width = frame_width(size)
    data = np.array(hdul[0].data, dtype=np.float32, copy=True)
    ny, nx = data.shape
    data[:width, :] = np.nan
    data[ny - width:, :] = np.nan
    data[:, :width] = np.nan
    data[:, nx - width:] = np.nan
    ix = np.rint(np.asarray(truth["x"], float) - 1.0)
    iy = np.rint(np.asarray(truth["y"], float) - 1.0)
    inside = (ix >= width) & (ix < nx - width) & (iy >= width) & (iy < ny - width)
    truth = truth[inside]
    truth.meta["n_blanked"] = int(truth.meta.get("n_blanked", 0)) + int((~inside).sum())
    return _replace_data(hdul, data), truth


def frame_width(size: int) -> int:
    """Width of the NaN frame of `nan_frame`, pixels: about 100 on a 2048 px image."""
    return max(8, int(round(100 * size / 2048)))


def flip_x(hdul: fits.HDUList, truth: Table, size: int = 0) -> tuple[fits.HDUList, Table]:
    """East to the right: the data flipped along x with ``CDELT1 > 0``; the sky is unchanged.

    Pixel ``i`` (0-based) becomes ``nx - 1 - i``, so a FITS 1-based ``x`` becomes ``nx + 1 - x``;
    ``CRPIX1`` moves the same way, so every pixel still sees the same sky.
    """
    header = hdul[0].header.copy()
    data = np.ascontiguousarray(np.asarray(hdul[0].data)[:, ::-1])
    nx = data.shape[1]
    header["CDELT1"] = abs(float(header["CDELT1"]))
    header["CRPIX1"] = nx + 1.0 - float(header["CRPIX1"])
    truth = truth.copy()
    for name in ("x", "lobe1_x", "lobe2_x"):
        if name in truth.colnames:
            truth[name][:] = nx + 1.0 - np.asarray(truth[name], float)
    return _replace_data(hdul, data, header), truth


def to_galactic(hdul: fits.HDUList, truth: Table, size: int = 0) -> tuple[fits.HDUList, Table]:
    """The header relabelled to a Galactic SIN frame: GLON-SIN / GLAT-SIN, CRVAL converted.

    The reference pixel sees the same sky as before; elsewhere the grid is now aligned with
    Galactic north (pixel matching makes that irrelevant). The truth's ``ra``/``dec`` follow
    the new header.
    """
    header = hdul[0].header.copy()
    centre = SkyCoord(float(header["CRVAL1"]), float(header["CRVAL2"]), unit="deg", frame="icrs").galactic
    header["CTYPE1"] = "GLON-SIN"
    header["CTYPE2"] = "GLAT-SIN"
    header["CRVAL1"] = (float(centre.l.deg), "[deg] Galactic longitude at the reference pixel")
    header["CRVAL2"] = (float(centre.b.deg), "[deg] Galactic latitude at the reference pixel")
    for key in ("RADESYS", "EQUINOX"):
        header.remove(key, ignore_missing=True)
    return _replace_data(hdul, hdul[0].data, header), _sky_from_header(truth, header)


def relabel_projection(code: str, pv: dict[str, float] | None = None) -> Transform:
    """A transform relabelling the projection (``CTYPE`` ``RA---{code}`` / ``DEC--{code}``).

    The pixels are unchanged (matching is in pixels); ``pv`` adds projection parameters, e.g.
    ``{"PV2_1": 2.0}`` for a zenithal perspective (AZP) seen from two sphere radii away.
    """
    def transform(hdul: fits.HDUList, truth: Table, size: int = 0) -> tuple[fits.HDUList, Table]:
        header = hdul[0].header.copy()
        header["CTYPE1"] = f"RA---{code}"
        header["CTYPE2"] = f"DEC--{code}"
        for key, value in (pv or {}).items():
            header[key] = value
        return _replace_data(hdul, hdul[0].data, header), _sky_from_header(truth, header)

    transform.__name__ = f"relabel_projection_{code.lower()}"
    return transform


# ----------------------------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class Domain:
    """One named simulated domain.

    Attributes
    ----------
    name : str
        Short unique name (used in tables and the JSON).
    description : str
        One line on what it tests.
    seed : int
        Seed of its first image; image ``k`` uses ``seed + k``.
    options : dict
        `simulate_sky` options (empty: the SDC1-like defaults).
    transforms : tuple
        Applied in order to each simulated image.
    images : int
        Number of images of the full benchmark (the quick run takes one).
    blank_radius_fraction, noise_radial_fraction : float or None
        A circular primary-beam cut (``blank_outside_radius``) and a noise rise
        (``noise_radial``), as fractions of the image size (resolved per size).
    """

    name: str
    description: str
    seed: int
    options: dict[str, Any] = field(default_factory=dict)
    transforms: tuple[Transform, ...] = ()
    images: int = 1
    blank_radius_fraction: float | None = None
    noise_radial_fraction: float | None = None

    def simulation_options(self, size: int) -> dict[str, Any]:
        """The options at a given image size (size-relative features resolved to pixels)."""
        options = dict(self.options)
        if self.blank_radius_fraction is not None:
            options["blank_outside_radius"] = self.blank_radius_fraction * size
        if self.noise_radial_fraction is not None:
            options["noise_radial"] = self.noise_radial_fraction * size
        return options

    def settings(self, size: int) -> dict[str, Any]:
        """What the JSON records: every option that differs from the defaults, and the transforms."""
        defaults = SimulationOptions().as_kwargs()
        resolved = SimulationOptions.from_kwargs(self.simulation_options(size)).as_kwargs()
        changed = {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items() if v != defaults[k]}
        return {"options": changed, "transforms": [t.__name__ for t in self.transforms]}

    def beam_pixels(self) -> tuple[float, float]:
        """Beam FWHM (major, minor) in pixels."""
        opts = SimulationOptions.from_kwargs(self.options)
        return opts.beam_bmaj / opts.pixel_scale, opts.beam_bmin / opts.pixel_scale


def simulate_domain(domain: Domain, size: int, index: int = 0) -> tuple[fits.HDUList, Table]:
    """Image `index` of a domain at `size` x `size` pixels, transforms applied."""
    hdul, truth = simulate_sky(size, seed=domain.seed + index, **domain.simulation_options(size))
    for transform in domain.transforms:
        hdul, truth = transform(hdul, truth, size)
    truth.meta["domain"] = domain.name
    return hdul, truth


_S = FIRST_SEED
_VLASS = dict(pixel_scale=1.0, beam_px=2.5, noise=1.2e-4, frequency=3.0e9, ra=210.0, dec=10.0)
_FIRST = dict(pixel_scale=1.8, beam_px=3.0, noise=1.5e-4, frequency=1.4e9, ra=160.0, dec=30.0)
_LOTSS = dict(pixel_scale=1.5, beam_px=4.0, noise=7.0e-5, frequency=1.44e8, ra=180.0, dec=50.0)
_NVSS = dict(pixel_scale=10.0, beam_px=4.5, noise=4.5e-4, frequency=1.4e9, ra=40.0, dec=-20.0)

DOMAINS: tuple[Domain, ...] = (
    Domain("sdc1-reference", "in-domain reference: the simulator's SDC1-like default sky "
           "(0.6\" pixels, 2.5 px beam, 3e-7 Jy/beam)", _S + 0, {}, images=2),
    Domain("deep-0.5as-4px", "deep MeerKAT-like field: 0.5\" pixels, 2\" beam (4 px), 2e-6 Jy/beam",
           _S + 100, survey(0.5, 4.0, 2.0e-6, frequency=1.28e9, ra=53.0, dec=-28.0)),
    Domain("vlass-like", "VLASS-like: 1\" pixels, 2.5\" beam (2.5 px), 1.2e-4 Jy/beam",
           _S + 200, survey(**_VLASS)),
    Domain("first-like", "FIRST-like: 1.8\" pixels, 5.4\" beam (3 px), 1.5e-4 Jy/beam",
           _S + 300, survey(**_FIRST)),
    Domain("lotss-like", "LoTSS-like: 1.5\" pixels, 6\" beam (4 px), 7e-5 Jy/beam, 144 MHz",
           _S + 400, survey(**_LOTSS)),
    Domain("nvss-like", "NVSS-like wide field: 10\" pixels, 45\" beam (4.5 px), 4.5e-4 Jy/beam, SIN",
           _S + 500, survey(**_NVSS)),
    Domain("beam-2px", "small beam: 2\" pixels, 4\" beam (2 px), 1e-5 Jy/beam",
           _S + 600, survey(2.0, 2.0, 1.0e-5, ra=10.0, dec=-45.0)),
    Domain("beam-8px", "large beam: 1\" pixels, 8\" beam (8 px), 5e-5 Jy/beam",
           _S + 700, survey(1.0, 8.0, 5.0e-5, ra=300.0, dec=-60.0)),
    Domain("elliptical-pa30", "elliptical beam 4 x 2 px at PA 30 deg: 2\" pixels, 1e-4 Jy/beam",
           _S + 800, survey(2.0, 4.0, 1.0e-4, bmin_px=2.0, pa=30.0, ra=75.0, dec=-70.0)),
    Domain("elliptical-pa-60", "SUMSS-like elongated beam 6 x 2.5 px at PA -60 deg: 1\" pixels, 2e-5 Jy/beam",
           _S + 900, survey(1.0, 6.0, 2.0e-5, bmin_px=2.5, pa=-60.0, frequency=8.43e8, ra=52.0, dec=-36.0)),
    Domain("noise-1e-7", "very deep: 0.6\" pixels, 1.8\" beam (3 px), 1e-7 Jy/beam",
           _S + 1000, survey(0.6, 3.0, 1.0e-7, ra=150.0, dec=2.0)),
    Domain("noise-1e-2", "shallow, single-dish-like depth: 6\" pixels, 20\" beam (3.3 px), 1e-2 Jy/beam",
           _S + 1100, survey(6.0, 20.0 / 6.0, 1.0e-2, frequency=1.5e8, ra=120.0, dec=-10.0)),
    Domain("mjy-per-beam", "VLASS-like sky written in mJy/beam (pixels x 1000, BUNIT mJy/beam)",
           _S + 1200, survey(**_VLASS), (to_mjy,)),
    Domain("4d-freq-stokes", "LoTSS-like sky as a 4-D float64 (RA, DEC, FREQ, STOKES) image",
           _S + 1300, survey(**_LOTSS), (to_4d,)),
    Domain("nan-frame", "FIRST-like sky with a 100 px NaN frame along every border",
           _S + 1400, survey(**_FIRST), (nan_frame,)),
    Domain("pb-cut", "LoTSS-like sky, NaN outside a circular primary-beam cut (radius 0.47 x size), "
           "noise rising towards it", _S + 1500, survey(**_LOTSS),
           blank_radius_fraction=0.47, noise_radial_fraction=1.2),
    Domain("flipped-x", "elliptical-beam sky (4 x 2.5 px, PA 45) with east to the right: data flipped in x, "
           "CDELT1 > 0", _S + 1600, survey(1.5, 4.0, 5.0e-5, bmin_px=2.5, pa=45.0, ra=30.0, dec=-40.0),
           (flip_x,)),
    Domain("galactic", "FIRST-like sky with a Galactic header (GLON-SIN / GLAT-SIN)",
           _S + 1700, survey(**{**_FIRST, "ra": 275.0, "dec": -12.0}), (to_galactic,)),
    Domain("proj-tan", "NVSS-like wide field relabelled to a TAN projection",
           _S + 1800, survey(**_NVSS), (relabel_projection("TAN"),)),
    Domain("proj-azp", "NVSS-like wide field relabelled to an AZP projection (PV2_1 = 2)",
           _S + 1900, survey(**_NVSS), (relabel_projection("AZP", {"PV2_1": 2.0}),)),
    Domain("undersampled-1.2px", "undersampled: 5\" pixels, 6\" beam (1.2 px), 1e-3 Jy/beam "
           "(outside the 1.5-8 px the networks train on: resampled)",
           _S + 2000, survey(5.0, 1.2, 1.0e-3, per_beam=0.005, frequency=1.5e8, ra=220.0, dec=55.0)),
    Domain("oversampled-12px", "very oversampled: 0.5\" pixels, 6\" beam (12 px), 3e-5 Jy/beam",
           _S + 2100, survey(0.5, 12.0, 3.0e-5, per_beam=0.02, ra=340.0, dec=-5.0), images=2),
    Domain("confusion", "confusion-level density: 0.05 sources per beam, LoTSS-like",
           _S + 2200, survey(**{**_LOTSS, "per_beam": 0.05})),
    Domain("doubles-extended", "15 % double-lobed radio galaxies (FR I / FR II), half the rest resolved",
           _S + 2300, survey(**{**_FIRST, "extended_fraction": 0.5}, double_fraction=0.15,
                             double_separation=(2.5 * 5.4, 25.0 * 5.4))),
    Domain("artefacts-noise-var", "sidelobe and calibration artefacts (2 % of the peak above SNR 50) and "
           "noise rms varying 1.6x across the field", _S + 2400,
           survey(**_LOTSS, artefact_level=0.02, artefact_snr=50.0, noise_variation=0.6,
                  noise_variation_scale=300.0)),
)

#: The smoke run's subset: the reference and one domain per kind of variation.
QUICK_DOMAINS: tuple[str, ...] = (
    "sdc1-reference", "vlass-like", "elliptical-pa-60", "noise-1e-2", "mjy-per-beam", "4d-freq-stokes",
    "nan-frame", "flipped-x", "galactic", "proj-azp", "undersampled-1.2px", "oversampled-12px",
    "doubles-extended",
)


def _check_grid() -> None:
    names = [d.name for d in DOMAINS]
    assert len(names) == len(set(names)), "domain names must be unique"
    assert all(d.seed >= FIRST_SEED for d in DOMAINS)
    assert set(QUICK_DOMAINS) <= set(names)


_check_grid()
