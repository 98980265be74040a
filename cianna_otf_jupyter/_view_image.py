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
