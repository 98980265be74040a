"""Measuring detections in the image: Gaussian fits for position, peak, flux and shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from cianna_otf_server.pipeline import Boxes, open_image
from cianna_otf_server.pipeline._measure import measure_sources

FWHM = math.sqrt(8 * math.log(2))


def _boxes(centres: list[tuple[float, float]], size: float) -> Boxes:
    """Boxes of `size` px around 0-based centres (CIANNA corners: pixel k spans [k, k+1])."""
    x = np.array([c[0] for c in centres]) + 0.5
    y = np.array([c[1] for c in centres]) + 0.5
    n = len(centres)
    return Boxes(x - size / 2, y - size / 2, x + size / 2, y + size / 2, np.ones(n), np.ones(n), np.zeros((n, 0)),
                 np.zeros((n, 0)), np.zeros(n, int), np.zeros(n, int), np.zeros(n, int))


def _gaussian(shape, x0, y0, peak, major, minor, angle_deg):
    """An elliptical Gaussian (FWHM axes in px, angle from +y towards -x)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = math.radians(angle_deg)
    u = (xx - x0) * -math.sin(t) + (yy - y0) * math.cos(t)
    v = (xx - x0) * math.cos(t) + (yy - y0) * math.sin(t)
    return peak * np.exp(-0.5 * ((u / (major / FWHM)) ** 2 + (v / (minor / FWHM)) ** 2))


def test_fits_recover_position_peak_flux_and_shape():
    rng = np.random.default_rng(4)
    beam = 3.0
    image = rng.standard_normal((200, 200))  # signal-to-noise units: noise 1
    truths = [(40.3, 50.7, 30.0, 3.0, 3.0, 0.0), (120.6, 60.2, 80.0, 6.0, 3.5, 30.0), (80.0, 150.4, 15.0, 4.0, 3.0, -60.0)]
    for x0, y0, peak, major, minor, angle in truths:
        image += _gaussian(image.shape, x0, y0, peak, major, minor, angle)
    boxes = _boxes([(x0 + 0.6, y0 - 0.4) for x0, y0, *_ in truths], 12.0)  # network centres are a bit off
    m = measure_sources(image, boxes, beam, beam)
    assert m.fitted.all()
    for k, (x0, y0, peak, major, minor, angle) in enumerate(truths):
        assert abs(m.x[k] - x0) < 0.15 and abs(m.y[k] - y0) < 0.15
        assert m.peak[k] == pytest.approx(peak, rel=0.1)
        integral = peak * major * minor / beam**2  # Gaussian flux over the beam, in S/sigma
        assert m.integral[k] == pytest.approx(integral, rel=0.1)
        assert m.major[k] == pytest.approx(major, rel=0.1) and m.minor[k] == pytest.approx(minor, rel=0.12)
        if major > 1.3 * minor:
            assert abs((m.angle[k] - angle + 90) % 180 - 90) < 5


def test_a_double_takes_the_sum_of_its_significant_pixels():
    beam = 3.0
    image = np.zeros((100, 100))
    image += _gaussian(image.shape, 40, 50, 20.0, 3.0, 3.0, 0) + _gaussian(image.shape, 60, 50, 20.0, 3.0, 3.0, 0)
    m = measure_sources(image, _boxes([(50.0, 50.0)], 34.0), beam, beam)
    assert m.complex[0] and m.integral[0] == pytest.approx(40.0, rel=0.05)  # both lobes, not one


def test_nothing_to_fit_leaves_nan_and_no_crash():
    image = np.full((50, 50), np.nan)
    image[10:20, 10:20] = -1.0
    m = measure_sources(image, _boxes([(15.0, 15.0), (40.0, 40.0), (-30.0, -30.0)], 8.0), 3.0, 3.0)
    assert not m.fitted.any() and np.isnan(m.integral).all()


def test_scaled_integer_images_open(tmp_path):
    """BSCALE/BZERO/BLANK integer images (single-dish exports) are read whole and scaled, blanks NaN."""
    raw = np.arange(64 * 64, dtype=np.int16).reshape(64, 64)
    raw[0, 0] = -32000
    hdu = fits.PrimaryHDU(raw)
    hdu.header.update({"BSCALE": -1.5, "BZERO": 100.0, "BLANK": -32000, "BUNIT": "K"})
    path = tmp_path / "scaled.fits"
    hdu.writeto(path)
    image = open_image(path)
    assert np.isnan(image.data[0, 0]) and image.data[0, 1] == pytest.approx(100.0 - 1.5)
    assert not image.brightness.known and any("K" in w for w in image.warnings)
