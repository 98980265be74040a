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


# -- whole catalogues at once: the stacked measurement against the per-box definition -------------

from cianna_otf_server.models import card_from_dict  # noqa: E402
from cianna_otf_server.pipeline._domain import DomainView, plan_domain  # noqa: E402
from cianna_otf_server.pipeline._measure import _measure_sources_reference  # noqa: E402
from cianna_otf_server.pipeline._noise import NoiseMap, measure_noise  # noqa: E402
from cianna_otf_server.pipeline._windows import read_windows, window_groups  # noqa: E402
from cianna_otf_server.sky.simulate import simulate_sky  # noqa: E402

_SNR_CARD = card_from_dict({
    "model": {"name": "snr-net", "version": "1", "family": "yolo-cianna"}, "weights": {"file": "none.dat"},
    "tiling": {"patch_size": 512, "shift": 480, "offset": 16},
    "yolo": {"nb_box": 1, "priors_w": [6.0], "priors_h": [6.0], "objectness_thresholds": [0.5]},
    "domain": {"input": "snr", "beam_pixels": 3.5, "beam_pixels_range": [1.5, 8.0], "angles": "pixel"},
})


def _snr_peak_reference(view: DomainView, boxes: Boxes) -> np.ndarray:
    """`DomainView.snr_peak` one box at a time: the image window, its noise window, their peak."""
    out = np.full(len(boxes), np.nan)
    ny, nx = view.image.shape
    cx, cy = boxes.x_center, boxes.y_center
    hw, hh = np.maximum(1.0, 0.25 * boxes.width), np.maximum(1.0, 0.25 * boxes.height)
    for k in range(len(boxes)):
        xa, xb = max(0, int(math.floor(cx[k] - hw[k]))), min(nx, int(math.ceil(cx[k] + hw[k])) + 1)
        ya, yb = max(0, int(math.floor(cy[k] - hh[k]))), min(ny, int(math.ceil(cy[k] + hh[k])) + 1)
        if xa >= xb or ya >= yb:
            continue
        raw = np.asarray(view.image.data[ya:yb, xa:xb], dtype=np.float32)
        background, rms = view.noise.window(xa, xb, ya, yb)
        snr = (raw - background) / rms
        if np.isfinite(snr).any():
            out[k] = float(np.nanmax(snr))
    return out


def _catalogue_boxes(truth, shape: tuple[int, int], beam: float, rng: np.random.Generator) -> Boxes:
    """Boxes as a detector gives them: around the true sources, a bit off and of every size, plus
    boxes across the image edges, beyond them and on empty sky."""
    ny, nx = shape
    x = np.asarray(truth["x"], dtype=float) - 1 + rng.normal(0, 0.7, len(truth))
    y = np.asarray(truth["y"], dtype=float) - 1 + rng.normal(0, 0.7, len(truth))
    size = np.clip(np.asarray(truth["bmaj"], dtype=float) / 0.6 * 1.5 + 3 * beam, 4, 150)
    size = size * rng.uniform(0.8, 1.3, len(truth))
    k = 30
    edge_x = np.r_[rng.uniform(-8, 8, k), rng.uniform(nx - 8, nx + 8, k), rng.uniform(0, nx, 2 * k), [-40.0, nx + 40]]
    edge_y = np.r_[rng.uniform(0, ny, 2 * k), rng.uniform(-8, 8, k), rng.uniform(ny - 8, ny + 8, k), [ny / 2, -40.0]]
    sky_x, sky_y = rng.uniform(0, nx, 2 * k), rng.uniform(0, ny, 2 * k)
    x, y = np.r_[x, edge_x, sky_x], np.r_[y, edge_y, sky_y]
    height = np.r_[size, rng.uniform(3, 40, len(edge_x)), rng.uniform(4, 60, len(sky_x))]
    width = height * rng.uniform(0.6, 1.6, len(height))
    n = len(x)
    return Boxes(x + 0.5 - width / 2, y + 0.5 - height / 2, x + 0.5 + width / 2, y + 0.5 + height / 2,
                 np.ones(n), np.ones(n), np.zeros((n, 0)), np.zeros((n, 0)), np.zeros(n, int),
                 np.zeros(n, int), np.zeros(n, int))


def _assert_same_measurement(new, old) -> None:
    """Identical decisions; values equal to rounding (sums taken in another order)."""
    np.testing.assert_array_equal(new.fitted, old.fitted)
    np.testing.assert_array_equal(new.complex, old.complex)
    for name in ("x", "y", "peak", "integral", "major", "minor"):
        np.testing.assert_allclose(getattr(new, name), getattr(old, name), rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(np.isnan(new.angle), np.isnan(old.angle))
    # a round Gaussian's angle is any angle: compared where the axes differ, modulo 180 degrees
    elongated = old.fitted & ((old.major - old.minor) > 1e-3 * old.major)
    turn = (new.angle[elongated] - old.angle[elongated] + 90.0) % 180.0 - 90.0
    assert np.abs(turn).max(initial=0.0) < 1e-4


def _snr_view(hdul) -> tuple[object, DomainView, float, float]:
    image = open_image(hdul)
    noise = measure_noise(image.data)
    view = DomainView(image, plan_domain(image, _SNR_CARD, noise), noise)
    major, minor, _ = image.beam.in_pixels(image.wcs)
    return image, view, major * view.zoom, minor * view.zoom


@pytest.mark.parametrize("seed, options", [
    (1, {}),
    (2, {"noise_variation": 0.5, "noise_variation_scale": 200}),
    (3, {"double_fraction": 0.3, "extended_fraction": 0.5, "size_median": 6.0}),
    (4, {"blank_fraction": 0.1, "double_fraction": 0.2}),
    (5, {"blank_outside_radius": 450.0, "extended_fraction": 0.6}),
])
def test_stacked_measurement_equals_the_per_box_measurement(seed, options):
    hdul, truth = simulate_sky(1024, seed=seed, **options)
    image, view, major, minor = _snr_view(hdul)
    boxes = _catalogue_boxes(truth, image.shape, major, np.random.default_rng(seed))
    new = measure_sources(view.data, boxes, major, minor)
    old = _measure_sources_reference(view.data, boxes, major, minor)
    assert new.fitted.sum() > 50 and new.complex.any()  # both branches are exercised
    _assert_same_measurement(new, old)
    # the image's own pixels (Jy/beam, float32 and float64): the peak-relative level of the sum
    for data in (np.asarray(image.data), np.asarray(image.data, dtype=np.float64)):
        _assert_same_measurement(measure_sources(data, boxes, major, minor, snr=False),
                                 _measure_sources_reference(data, boxes, major, minor, snr=False))
    np.testing.assert_allclose(view.snr_peak(boxes), _snr_peak_reference(view, boxes), rtol=1e-6, atol=1e-9)


def test_stacked_measurement_of_a_resampled_view_equals_the_per_box_measurement():
    hdul, truth = simulate_sky(384, seed=7, pixel_scale=4.0, beam_bmaj=4.8, beam_bmin=4.8, n_sources=60)
    image, view, major, minor = _snr_view(hdul)  # a 1.2-pixel beam: resampled about 2.9 times
    assert view.zoom > 2.0
    boxes = _catalogue_boxes(truth, image.shape, major / view.zoom, np.random.default_rng(7))
    model = view.to_model(boxes)
    new = measure_sources(view.data, model, major, minor)
    old = _measure_sources_reference(view.data, model, major, minor)
    assert new.fitted.sum() > 10
    _assert_same_measurement(new, old)
    np.testing.assert_allclose(view.snr_peak(boxes), _snr_peak_reference(view, boxes), rtol=1e-6, atol=1e-9)


def test_singular_fits_take_the_least_squares_solution_as_alone():
    """Fitted pixels on two rows make the normal equations singular, beside regular boxes."""
    rng = np.random.default_rng(9)
    image = rng.standard_normal((120, 200)) * 0.01
    xx = np.arange(200)
    for x0 in (30.0, 90.0, 150.0):  # a ridge two pixels high, bright along x
        image[40, :] += 20.0 * np.exp(-0.5 * ((xx - x0) / 2.0) ** 2)
        image[41, :] += 19.0 * np.exp(-0.5 * ((xx - x0) / 2.0) ** 2)
    image += _gaussian(image.shape, 60.0, 90.0, 30.0, 3.0, 3.0, 0.0) + _gaussian(image.shape, 140.0, 85.0, 25.0, 5.0,
                                                                                3.0, 20.0)
    boxes = _boxes([(30.0, 40.5), (90.0, 40.5), (150.0, 40.5), (60.0, 90.0), (140.0, 85.0)], 10.0)
    new = measure_sources(image, boxes, 3.0, 3.0)
    old = _measure_sources_reference(image, boxes, 3.0, 3.0)
    _assert_same_measurement(new, old)
    assert new.fitted[3:].all()


def test_noise_windows_equal_the_single_windows():
    rng = np.random.default_rng(2)
    for shape, mesh, origin in (((700, 500), 64, (0, 0)), ((300, 260), 64, (10, 20)), ((100, 70), 64, (0, 0)),
                                ((2048, 1500), 32, (5, 7))):
        ny_m, nx_m = -(-shape[0] // mesh), -(-shape[1] // mesh)
        noise = NoiseMap(rng.standard_normal((ny_m, nx_m)) * 0.1, 1.0 + 0.3 * rng.random((ny_m, nx_m)), mesh, shape,
                         1.0, origin)
        for height, width in ((13, 13), (1, 1), (5, 9), (70, 130)):
            x0 = rng.integers(-20, shape[1] + 20, 40)
            y0 = rng.integers(-20, shape[0] + 20, 40)
            background, rms = noise.windows(x0, y0, height, width)
            assert background.shape == rms.shape == (40, height, width) and rms.dtype == np.float32
            for k in range(40):
                one_background, one_rms = noise.window(x0[k], x0[k] + width, y0[k], y0[k] + height)
                np.testing.assert_allclose(background[k], one_background, rtol=1e-6, atol=1e-7)
                np.testing.assert_allclose(rms[k], one_rms, rtol=1e-6)


def test_window_stacks_cover_every_window_once_and_read_nan_beyond_the_image():
    rng = np.random.default_rng(3)
    heights = np.r_[np.full(300, 13), rng.integers(1, 200, 200)]
    widths = np.r_[np.full(300, 11), rng.integers(1, 200, 200)]
    use = rng.random(500) > 0.1
    seen = np.zeros(500, dtype=int)
    for height, width, index in window_groups(heights, widths, use, budget=20000):
        assert (heights[index] <= height).all() and (widths[index] <= width).all()
        assert len(index) == 1 or len(index) * height * width <= 20000
        seen[index] += 1
    np.testing.assert_array_equal(seen, use.astype(int))
    data = rng.standard_normal((50, 40)).astype(np.float32)
    data[10, 10] = np.nan
    y0, x0 = np.array([-3, 5, 45, 8]), np.array([-2, 30, 35, 8])
    stacks = read_windows(data, y0, x0, 7, 9, np.float64, (np.array([7, 7, 7, 4]), np.array([9, 9, 9, 5])))
    for k in range(4):
        expected = np.full((7, 9), np.nan)
        for i in range(7):
            for j in range(9):
                y, x = y0[k] + i, x0[k] + j
                if 0 <= y < 50 and 0 <= x < 40 and (k < 3 or (i < 4 and j < 5)):
                    expected[i, j] = data[y, x]
        np.testing.assert_array_equal(stacks[k], expected)


@pytest.mark.parametrize("angle", [0.0, -60.0, 35.0])
def test_a_source_boxed_beside_a_brighter_neighbour_is_measured_not_the_neighbour(angle):
    """An elongated beam (6 x 2.5 px): a 12-sigma source with a 300-sigma one 1.6 beams away.

    The brightest pixel within a beam of the box centre is the neighbour's wing: without the
    beam's weighting the measurement fits the neighbour a second time and the source is lost.
    """
    rng = np.random.default_rng(11)
    image = rng.standard_normal((120, 120))
    t = math.radians(angle)
    minor_dir = np.array([math.cos(t), math.sin(t)])  # across the major axis, in (x, y)
    source = np.array([60.0, 60.0])
    neighbour = source + 1.6 * 2.5 * 2.2 * minor_dir  # 8.8 px away across the beam
    image += _gaussian(image.shape, *source, 12.0, 6.0, 2.5, angle)
    image += _gaussian(image.shape, *neighbour, 300.0, 6.0, 2.5, angle)
    boxes = _boxes([(source[0] + 1.0, source[1] - 1.0)], 8.0)
    new = measure_sources(image, boxes, 6.0, 2.5, beam_angle=angle)
    assert math.hypot(new.x[0] - source[0], new.y[0] - source[1]) < 1.0
    assert 9.0 < new.peak[0] < 15.0
    old = _measure_sources_reference(image, boxes, 6.0, 2.5, beam_angle=angle)
    _assert_same_measurement(new, old)


def test_the_beam_weighted_start_equals_the_per_box_measurement_on_an_elongated_beam():
    hdul, truth = simulate_sky(768, seed=12, beam_bmaj=9.0, beam_bmin=3.6, beam_pa=-60.0, pixel_scale=1.5)
    image, view, major, minor = _snr_view(hdul)
    angle = image.beam.in_pixels(image.wcs)[2]
    boxes = _catalogue_boxes(truth, image.shape, major, np.random.default_rng(12))
    new = measure_sources(view.data, boxes, major, minor, beam_angle=angle)
    old = _measure_sources_reference(view.data, boxes, major, minor, beam_angle=angle)
    assert new.fitted.sum() > 50
    _assert_same_measurement(new, old)
