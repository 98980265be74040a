"""Measuring on a resampled view (`pipeline._resampling`): the view's effect measured on the beam, then removed."""

from __future__ import annotations

import math

import numpy as np

from cianna_otf_server.models import default_registry
from cianna_otf_server.pipeline import detect
from cianna_otf_server.pipeline._boxes import Boxes
from cianna_otf_server.pipeline._measure import measure_sources
from cianna_otf_server.pipeline._resampling import resample_array, resampling_bias
from cianna_otf_server.sky.quality import match_catalogues
from cianna_otf_server.sky.simulate import simulate_sky

FWHM = math.sqrt(8.0 * math.log(2.0))


def _beam_image(size: int, positions: list[tuple[float, float]], major: float, minor: float, angle: float,
                peak: float = 50.0) -> np.ndarray:
    """Point sources as the image samples them: the beam's value at each pixel centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    t = math.radians(angle)
    image = np.zeros((size, size))
    for x, y in positions:
        u = (xx - x) * -math.sin(t) + (yy - y) * math.cos(t)
        v = (xx - x) * math.cos(t) + (yy - y) * math.sin(t)
        image += peak * np.exp(-0.5 * ((u / (major / FWHM)) ** 2 + (v / (minor / FWHM)) ** 2))
    return image


def test_no_correction_without_resampling() -> None:
    assert resampling_bias(1.0, 3.5, 3.5, 0.0) is None


def test_an_undersampled_beam_seen_resampled_is_measured_as_the_beam() -> None:
    """A 1.2 px beam resampled x2.9 measures 20% too bright, too broad and pixel-locked; corrected, as the beam."""
    zoom, major, minor, angle = 3.5 / 1.2, 1.2, 1.0, 25.0
    rng = np.random.default_rng(5)
    positions = [(10.3 + 14 * i + rng.uniform(-0.5, 0.5), 10.7 + 14 * j + rng.uniform(-0.5, 0.5))
                 for i in range(4) for j in range(4)]
    view = resample_array(_beam_image(64, positions, major, minor, angle), zoom)
    vmajor, vminor = major * zoom, minor * zoom
    n = len(positions)
    vx = np.array([(x + 0.5) * zoom - 0.5 for x, _ in positions])
    vy = np.array([(y + 0.5) * zoom - 0.5 for _, y in positions])
    boxes = Boxes(vx + 0.5 - vmajor, vy + 0.5 - vmajor, vx + 0.5 + vmajor, vy + 0.5 + vmajor, np.ones(n), np.ones(n),
                  np.zeros((n, 0)), np.zeros((n, 0)), np.zeros(n, int), np.zeros(n, int), np.zeros(n, int))
    raw = measure_sources(view, boxes, vmajor, vminor, beam_angle=angle)
    assert np.median(raw.integral) / 50.0 > 1.1 and np.median(raw.peak) / 50.0 < 0.9  # what the view does
    bias = resampling_bias(zoom, vmajor, vminor, angle)
    assert bias is not None
    fixed = bias.correct(raw)
    np.testing.assert_allclose(np.median(fixed.integral), 50.0, rtol=0.03)
    # the resampled peak of so small a beam depends on where in its pixel a source lies: looser
    np.testing.assert_allclose(np.median(fixed.peak), 50.0, rtol=0.06)
    np.testing.assert_allclose(np.median(fixed.major), vmajor, rtol=0.1)
    np.testing.assert_allclose(np.median(fixed.minor), vminor, rtol=0.1)
    # the interpolation pulls each peak towards its pixel's centre; corrected, positions are true
    raw_error = np.median(np.hypot(raw.x - vx, raw.y - vy)) / zoom  # image pixels
    fixed_error = np.median(np.hypot(fixed.x - vx, fixed.y - vy)) / zoom
    assert raw_error > 0.05 and fixed_error < 0.02, (raw_error, fixed_error)


def test_yolo_demo_fluxes_on_an_undersampled_image_are_right() -> None:
    """5" pixels, a 6" beam (1.2 px): the model sees it resampled, the fluxes come back in Jy within 10%."""
    hdul, truth = simulate_sky(512, seed=3_950_001, pixel_scale=5.0, beam_bmaj=6.0, beam_bmin=6.0, noise=1e-4,
                               flux_min=2e-3, flux_max=5e-2, extended_fraction=0.0, double_fraction=0.0)
    table = detect(hdul, default_registry().get("yolo-demo"))
    assert table.meta["domain"]["zoom"] > 2.5
    match = match_catalogues(table, truth, radius_pix=2.0)
    bright = np.asarray(truth["snr"])[match.truth] >= 10
    assert bright.sum() >= 20
    ratio = np.asarray(table["flux"])[match.detected][bright] / np.asarray(truth["flux"])[match.truth][bright]
    assert abs(np.median(ratio) - 1.0) < 0.10, np.median(ratio)
