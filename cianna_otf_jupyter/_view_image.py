"""The image as the notebook view shows it: one 2-D HDU, its pixel scale and the field framing it.

Built on the pipeline's `open_image`, so the view shows exactly the pixels a job searches (the
same choice of HDU, the same degenerate axes dropped, the same celestial WCS) and a bad file is
refused with the same message as a job would give.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from cianna_otf_server.pipeline import open_image

#: Header keywords the view keeps beside the celestial WCS (units and beam, for the record).
KEPT_KEYWORDS = ("BUNIT", "BMAJ", "BMIN", "BPA")
#: Field of view over the image's larger side: a margin so the edges show.
FRAME_MARGIN = 1.15

# -- how the image is displayed (Aladin Lite's image options: cuts, stretch, colour map) ------
#: Stretches Aladin Lite applies between the cuts (label, Aladin Lite's name).
STRETCHES = (("asinh", "asinh"), ("linear", "linear"), ("sqrt", "sqrt"), ("log", "log"))
#: Display limits (label, value): an upper percentile over a lower limit just under the
#: background (median - 1 sigma, sigma from the MAD), as DS9's "99.5%" but kept off the negative
#: noise tail that makes a radio image salt and pepper; or the full range; or IRAF's zscale.
LIMITS = (("99.5%", "99.5"), ("99%", "99"), ("99.9%", "99.9"), ("min-max", "minmax"), ("zscale", "zscale"))
#: Colour maps of Aladin Lite 3 offered in the widget (label, Aladin Lite's name).
COLORMAPS = (("grayscale", "grayscale"), ("viridis", "viridis"), ("magma", "magma"), ("inferno", "inferno"),
             ("plasma", "plasma"), ("cubehelix", "cubehelix"), ("red temperature", "redtemperature"))
DEFAULT_STRETCH = "asinh"
DEFAULT_LIMITS = "99.5"
DEFAULT_COLORMAP = "grayscale"
#: Pixels the limits are computed on at most (a regular subsample: fast on any image, stable).
SAMPLE_PIXELS = 1_000_000
#: Lower limit: this many robust sigmas under the median (the background shows dark grey).
LOWER_SIGMAS = 1.0


def _sample(data: np.ndarray) -> np.ndarray:
    """The finite pixels of a regular subsample of at most SAMPLE_PIXELS."""
    flat = np.asarray(data).ravel()
    step = max(1, flat.size // SAMPLE_PIXELS)
    sample = flat[::step].astype(np.float64, copy=False)
    return sample[np.isfinite(sample)]


def display_limits(data: np.ndarray, limits: str = DEFAULT_LIMITS) -> tuple[float, float]:
    """The (low, high) cuts of `data` for the view; NaN and infinities ignored.

    `limits`: a percentile (``"99.5"``: high at the 99.5th percentile, low at the median minus
    `LOWER_SIGMAS` robust sigmas, or the complementary percentile where that is higher),
    ``"minmax"`` or ``"zscale"``. Always low < high (a flat or empty image gets a unit range).
    """
    sample = _sample(data)
    if sample.size == 0:
        return 0.0, 1.0
    if limits == "minmax":
        low, high = float(sample.min()), float(sample.max())
    elif limits == "zscale":
        from astropy.visualization import ZScaleInterval

        low, high = (float(v) for v in ZScaleInterval().get_limits(sample))
    else:
        try:
            percent = float(str(limits).rstrip("%"))
        except ValueError:
            raise ValueError(f"unknown display limits {limits!r}") from None
        if not 50 < percent <= 100:
            raise ValueError(f"display limits percentile {percent} not in (50, 100]")
        median = float(np.median(sample))
        sigma = 1.4826 * float(np.median(np.abs(sample - median)))
        high = float(np.percentile(sample, percent))
        low = max(median - LOWER_SIGMAS * sigma, float(np.percentile(sample, 100 - percent)))
    if not high > low:  # a flat image (or a percentile landing on a constant background)
        low, high = float(sample.min()), float(sample.max())
    if not high > low:
        low, high = low - 0.5, low + 0.5
    return low, high


def display_options(data: np.ndarray, *, stretch: str = DEFAULT_STRETCH, limits: str = DEFAULT_LIMITS,
                    colormap: str = DEFAULT_COLORMAP) -> dict[str, Any]:
    """Aladin Lite image options (``minCut``, ``maxCut``, ``stretch``, ``colormap``) for `data`."""
    if stretch not in dict(STRETCHES).values():
        raise ValueError(f"unknown stretch {stretch!r}")
    if colormap not in dict(COLORMAPS).values():
        raise ValueError(f"unknown colour map {colormap!r}")
    low, high = display_limits(data, limits)
    return {"minCut": low, "maxCut": high, "stretch": stretch, "colormap": colormap}


@dataclass(frozen=True)
class ViewImage:
    """What the view is given.

    Attributes
    ----------
    hdu : PrimaryHDU
        The image alone, float32, with its celestial WCS: ipyaladin sends a whole HDUList as
        one message, so a multi-HDU file is never sent.
    pixel_scale_deg : float or None
        Mean pixel side, None without a WCS.
    centre : SkyCoord or None
        ICRS centre of the image (a SkyCoord: ipyaladin would resolve a text target by name,
        through Sesame).
    fov_deg : float or None
        A field of view showing the whole image (Aladin Lite centres a FITS image but keeps its
        all-sky zoom).
    """

    hdu: fits.PrimaryHDU
    pixel_scale_deg: float | None
    centre: Any
    fov_deg: float | None


def view_image(source: str | os.PathLike | fits.HDUList) -> ViewImage:
    """Read `source` for the view; raises `ImageError` (with the file's name) on a bad file."""
    image = open_image(source if isinstance(source, fits.HDUList) else os.fspath(source))
    try:
        data = np.array(image.data, dtype=np.float32)  # every pixel goes to the browser
        header = image.wcs.to_header() if image.wcs is not None else fits.Header()
        for key in KEPT_KEYWORDS:
            if key in image.header:
                header[key] = image.header[key]
        scale = image.pixel_scale_arcsec / 3600.0 if image.pixel_scale_arcsec else None
        centre = fov = None
        if image.wcs is not None and scale:
            ny, nx = image.shape
            centre = image.wcs.pixel_to_world((nx - 1) / 2, (ny - 1) / 2).icrs
            fov = FRAME_MARGIN * max(nx, ny) * scale
        return ViewImage(fits.PrimaryHDU(data, header), scale, centre, fov)
    finally:
        image.close()
