"""Bringing images into a model's domain: noise maps, resampling, warnings, ranking, units."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table

from cianna_otf_server.catalogue import catalogue_to_votable_bytes
from cianna_otf_server.errors import ModelCardError
from cianna_otf_server.models import card_from_dict, default_registry
from cianna_otf_server.pipeline import Boxes, detect, full_box, open_image
from cianna_otf_server.pipeline._domain import DomainView, drop_blank_boxes, plan_domain, rank_models
from cianna_otf_server.pipeline._noise import measure_noise
from cianna_otf_server.sky.simulate import simulate_sky


def _card(domain: dict | None = None, name: str = "net") -> object:
    """A yolo-cianna card (weights never loaded here) with an optional [domain] table."""
    raw = {
        "model": {"name": name, "version": "1", "family": "yolo-cianna"},
        "weights": {"file": "none.dat"},
        "tiling": {"patch_size": 512, "shift": 480, "offset": 16},
        "yolo": {"nb_box": 1, "priors_w": [6.0], "priors_h": [6.0], "objectness_thresholds": [0.5]},
    }
    if domain is not None:
        raw["domain"] = domain
    return card_from_dict(raw)


ABSOLUTE = {"input": "absolute", "beam_pixels": 2.5, "beam_pixels_range": [2.0, 3.2], "noise_range": [2e-7, 5e-7]}
SNR = {"input": "snr", "beam_pixels": 3.5, "beam_pixels_range": [1.5, 8.0], "angles": "pixel"}


def _sky(size: int = 512, seed: int = 11, **options) -> fits.HDUList:
    hdul, _ = simulate_sky(size, seed=seed, **options)
    return hdul


# -- noise maps ------------------------------------------------------------------------------


def test_noise_map_measures_the_simulated_noise_and_its_variation():
    flat = _sky(1024, noise=2e-5, correlated_noise=False, n_sources=0)
    noise = measure_noise(flat[0].data)
    assert noise.median_rms == pytest.approx(2e-5, rel=0.05)
    varying, _ = simulate_sky(1024, seed=3, noise=1e-5, noise_variation=0.5, noise_variation_scale=300,
                              n_sources=0, correlated_noise=False)
    noise = measure_noise(varying[0].data)
    _, rms = noise.window(0, 1024, 0, 1024)
    assert rms.max() / rms.min() > 1.5  # the map follows the variation instead of one global value
    assert noise.at(np.array([100.0]), np.array([900.0]))[0] == pytest.approx(float(rms[900, 100]), rel=1e-6)


def test_noise_window_keeps_image_coordinates():
    hdul = _sky(768, noise_variation=0.5, noise_variation_scale=200, n_sources=0)
    whole = measure_noise(hdul[0].data)
    part = measure_noise(hdul[0].data, window=(128, 768, 64, 768))
    assert part.origin == (128, 64)
    _, rms_whole = whole.window(400, 420, 400, 420)
    _, rms_part = part.window(400, 420, 400, 420)
    np.testing.assert_allclose(rms_part, rms_whole, rtol=0.1)
    with pytest.raises(ValueError, match="does not overlap"):
        measure_noise(hdul[0].data, window=(900, 1000, 0, 10))


def test_noise_map_ignores_nan_blanks():
    hdul = _sky(512, noise=1e-4, n_sources=0, correlated_noise=False)
    data = hdul[0].data.copy()
    data[:, :200] = np.nan
    noise = measure_noise(data)
    assert noise.valid_fraction < 0.8
    assert noise.median_rms == pytest.approx(1e-4, rel=0.08)


# -- cards ---------------------------------------------------------------------------------------


def test_domain_table_is_read_and_checked():
    card = _card(SNR)
    assert card.domain.declared and card.domain.input == "snr" and card.domain.beam_pixels_range == (1.5, 8.0)
    assert not _card().domain.declared  # cards without [domain] keep the earlier behaviour
    for bad, message in (({"input": "jansky"}, "input"), ({"beam_pixels": 9.0, "beam_pixels_range": [1, 8]}, "outside"),
                         ({"beam_pixels_range": [8, 1], "beam_pixels": 3}, "low <= high"),
                         ({"input": "snr", "noise_range": [1e-7, 1e-6]}, "absolute-input"),
                         ({"angles": "north"}, "angles")):
        with pytest.raises(ModelCardError, match=message):
            _card(bad)


def test_published_sdc1_card_still_loads():
    from pathlib import Path

    from cianna_otf_server.models import load_card

    card = load_card(Path(__file__).parents[1] / "docs" / "models" / "yolo-sdc1-ref.toml")
    assert card.tiling.patch_size == (512, 512) and not card.domain.declared
    assert card.yolo.extended_filter


# -- the domain plan -----------------------------------------------------------------------------


def test_in_domain_image_is_used_as_it_is():
    image = open_image(_sky(512))  # 0.6" pixels, 1.5" beam: 2.5 px, the absolute card's own domain
    plan = plan_domain(image, _card(ABSOLUTE), measure_noise(image.data))
    assert plan.zoom == 1.0 and plan.convention == "absolute" and plan.warnings == () and plan.fit > 0.8
    view = DomainView(image, plan)
    np.testing.assert_array_equal(view.data[10:300, 20:400], np.asarray(image.data[10:300, 20:400], np.float32))


def test_noise_far_from_an_absolute_model_is_flagged_and_ranked_down():
    image = open_image(_sky(512, noise=3e-4, pixel_scale=2.0, beam_bmaj=5.0, beam_bmin=5.0))
    noise = measure_noise(image.data)
    plan = plan_domain(image, _card(ABSOLUTE), noise)
    assert plan.fit < 0.2 and any("noise" in w and "unreliable" in w for w in plan.warnings)
    ranking = rank_models(image, [_card(ABSOLUTE, "absolute"), default_registry().get("classic"), _card(SNR, "snr")])
    assert [p.model for p in ranking] == ["snr", "classic", "absolute"]
    assert ranking[0].warnings == () and "signal-to-noise" in ranking[0].reason


def test_undersampled_image_is_resampled_to_the_trained_beam():
    image = open_image(_sky(256, pixel_scale=4.0, beam_bmaj=4.8, beam_bmin=4.8))  # 1.2 px beam
    plan = plan_domain(image, _card(SNR), measure_noise(image.data))
    assert plan.zoom == pytest.approx(3.5 / 1.2, rel=1e-3)
    assert any("resampled" in note for note in plan.notes) and plan.warnings == ()
    far = open_image(_sky(256, pixel_scale=10.0, beam_bmaj=3.0, beam_bmin=3.0))  # 0.3 px: beyond x4
    plan = plan_domain(far, _card(SNR), measure_noise(far.data))
    assert plan.zoom == 4.0 and any("too far outside" in w for w in plan.warnings)


def test_resampling_round_trip_keeps_positions_and_peaks():
    """A source seen through a x2.5 view sits where the zoom puts it, and boxes map back exactly."""
    ny, nx = 120, 100
    yy, xx = np.mgrid[0:ny, 0:nx]
    x0, y0, sigma = 41.3, 57.8, 1.2
    data = np.exp(-0.5 * ((xx - x0) ** 2 + (yy - y0) ** 2) / sigma**2).astype(np.float32)
    header = fits.Header({"BUNIT": "JY/BEAM", "CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRVAL1": 10.0,
                          "CRVAL2": -20.0, "CRPIX1": 50, "CRPIX2": 60, "CDELT1": -1 / 3600, "CDELT2": 1 / 3600,
                          "BMAJ": 2.8 / 3600, "BMIN": 2.8 / 3600, "BPA": 0.0})
    image = open_image(fits.HDUList([fits.PrimaryHDU(data, header)]))
    plan = plan_domain(image, _card({"input": "absolute", "beam_pixels": 7.0, "beam_pixels_range": [5.0, 8.0]}))
    assert plan.zoom == pytest.approx(2.5)
    view = DomainView(image, plan)
    assert view.shape == (300, 250)
    model = view.data[0:300, 0:250]
    peak_y, peak_x = np.unravel_index(np.argmax(model), model.shape)
    assert abs((peak_x + 0.5) / 2.5 - 0.5 - x0) < 0.25 and abs((peak_y + 0.5) / 2.5 - 0.5 - y0) < 0.25
    assert model.max() == pytest.approx(1.0, abs=0.03)  # cubic interpolation keeps the peak
    np.testing.assert_allclose(view.data[100:140, 60:90], model[100:140, 60:90], atol=1e-4)  # windows agree
    boxes = Boxes(np.array([100.0]), np.array([140.0]), np.array([110.0]), np.array([150.0]), np.ones(1),
                  np.ones(1), np.zeros((1, 0)), np.zeros((1, 0)), np.zeros(1, int), np.zeros(1, int),
                  np.zeros(1, int))
    back = view.to_image(boxes)
    assert (back.x_min[0], back.x_max[0], back.width[0]) == pytest.approx((40.0, 44.0, 4.0))
    box = view.model_box(full_box(image))
    assert (box.x0, box.x1, box.y0, box.y1) == (0, 250, 0, 300)


def test_blank_boxes_are_dropped():
    data = np.zeros((100, 100), np.float32)
    data[:, 60:] = np.nan
    image = open_image(fits.HDUList([fits.PrimaryHDU(data)]))
    boxes = Boxes(np.array([10.0, 55.0, 70.0, 90.0]), np.array([10.0, 10.0, 10.0, 95.0]),
                  np.array([20.0, 63.0, 80.0, 110.0]), np.array([20.0, 20.0, 20.0, 105.0]), np.ones(4),
                  np.ones(4), np.zeros((4, 0)), np.zeros((4, 0)), np.zeros(4, int), np.zeros(4, int),
                  np.zeros(4, int))
    kept = drop_blank_boxes(boxes, image)
    # inside data; straddling the edge but centred on data; on the blank; mostly beyond the image
    assert kept.x_min.tolist() == [10.0, 55.0]


# -- units, beams and honest catalogues ----------------------------------------------------------


def _write(tmp_path, name, hdul):
    path = tmp_path / name
    hdul.writeto(path, overwrite=True)
    return str(path)


def test_mjy_image_gives_the_same_fluxes_in_jy(tmp_path):
    classic = default_registry().get("classic")
    hdul = _sky(512, seed=5)
    jy = detect(_write(tmp_path, "jy.fits", hdul), classic)
    milli = hdul.copy()
    milli[0] = fits.PrimaryHDU(hdul[0].data * 1000.0, hdul[0].header.copy())
    milli[0].header["BUNIT"] = "mJy/beam"
    mjy = detect(_write(tmp_path, "mjy.fits", milli), classic)
    assert len(jy) == len(mjy) > 10
    np.testing.assert_allclose(np.asarray(mjy["flux"]), np.asarray(jy["flux"]), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mjy["peak"]), np.asarray(jy["peak"]), rtol=1e-5)
    assert "warnings" not in mjy.meta


def test_unknown_unit_leaves_fluxes_empty_and_says_why(tmp_path):
    classic = default_registry().get("classic")
    hdul = _sky(512, seed=5)
    del hdul[0].header["BUNIT"]
    table = detect(_write(tmp_path, "nounit.fits", hdul), classic)
    assert len(table) > 10
    assert table["flux"].mask.all() and table["peak"].mask.all()
    assert np.isfinite(np.asarray(table["snr"])).all()  # detection itself needs no unit
    assert any("BUNIT" in w for w in table.meta["warnings"])
    votable = parse_single_table(io.BytesIO(catalogue_to_votable_bytes(table))).to_table()
    assert votable["flux"].mask.all()
    infos = [line for line in catalogue_to_votable_bytes(table).decode().splitlines() if 'name="warning"' in line]
    assert infos and "BUNIT" in infos[0]
    overridden = detect(_write(tmp_path, "nounit2.fits", hdul), classic, unit="Jy/beam")
    assert not np.ma.is_masked(overridden["flux"][0]) and "warnings" not in overridden.meta


def test_missing_beam_masks_fluxes_and_sizes_and_an_override_restores_them(tmp_path):
    classic = default_registry().get("classic")
    hdul = _sky(512, seed=8)
    for key in ("BMAJ", "BMIN", "BPA"):
        del hdul[0].header[key]
    path = _write(tmp_path, "nobeam.fits", hdul)
    table = detect(path, classic)
    assert table["flux"].mask.all() and table["bmaj"].mask.all()
    assert any("beam" in w.lower() for w in table.meta["warnings"])
    fixed = detect(path, classic, beam="1.5 1.5 0")
    reference = detect(_write(tmp_path, "beam.fits", _sky(512, seed=8)), classic)
    np.testing.assert_allclose(np.asarray(fixed["flux"]), np.asarray(reference["flux"]), rtol=1e-6)


def test_classic_position_angles_are_east_of_north_for_a_flipped_image(tmp_path):
    classic = default_registry().get("classic")
    hdul, _ = simulate_sky(512, seed=21, n_sources=40, extended_fraction=1.0, size_median=6.0,
                           axis_ratio_min=0.3)
    normal = detect(_write(tmp_path, "n.fits", hdul), classic)
    flipped = fits.HDUList([fits.PrimaryHDU(hdul[0].data[:, ::-1].copy(), hdul[0].header.copy())])
    flipped[0].header["CDELT1"] = -hdul[0].header["CDELT1"]
    flipped[0].header["CRPIX1"] = hdul[0].header["NAXIS1"] + 1 - hdul[0].header["CRPIX1"]
    mirrored = detect(_write(tmp_path, "f.fits", flipped), classic)
    assert len(normal) == len(mirrored) > 10
    order_n = np.lexsort((np.round(np.asarray(normal["dec"]), 5), np.round(np.asarray(normal["ra"]), 5)))
    order_f = np.lexsort((np.round(np.asarray(mirrored["dec"]), 5), np.round(np.asarray(mirrored["ra"]), 5)))
    np.testing.assert_allclose(np.asarray(mirrored["ra"])[order_f], np.asarray(normal["ra"])[order_n], atol=1e-5)
    elongated = (np.asarray(normal["bmaj"]) > 1.3 * np.asarray(normal["bmin"]))[order_n]
    turn = (np.asarray(mirrored["pa"])[order_f] - np.asarray(normal["pa"])[order_n] + 90) % 180 - 90
    assert elongated.sum() >= 5 and np.all(np.abs(turn[elongated]) < 2.0)  # the same sky angle (mirrored: 2 PA off)
    assert math.isfinite(float(normal["pa"][0]))


# -- the built-in signal-to-noise model on images unlike its training skies ----------------------


def test_yolo_demo_reports_nothing_on_noise_with_nan_borders(tmp_path):
    """No detections from the steps at a NaN frame or a primary-beam cut on an image of pure noise."""
    card = default_registry().get("yolo-demo")
    hdul, truth = simulate_sky(768, seed=3_900_001, n_sources=0, pixel_scale=2.0, beam_bmaj=6.0, beam_bmin=6.0,
                               noise=5e-5, blank_outside_radius=330)
    data = hdul[0].data.copy()
    data[:60] = np.nan
    data[:, :60] = np.nan
    hdul[0].data = data
    table = detect(_write(tmp_path, "noise.fits", hdul), card)
    assert len(truth) == 0 and len(table) <= 1, table["x", "y", "snr", "score"]


def test_yolo_demo_gives_the_same_fluxes_for_jy_and_mjy_images(tmp_path):
    card = default_registry().get("yolo-demo")
    hdul = _sky(768, seed=3_900_002, pixel_scale=1.5, beam_bmaj=6.0, beam_bmin=5.0, beam_pa=30.0, noise=2e-5,
                flux_min=2e-5, flux_max=2e-2)
    jy = detect(_write(tmp_path, "jy.fits", hdul), card)
    milli = fits.HDUList([fits.PrimaryHDU(hdul[0].data * 1000.0, hdul[0].header.copy())])
    milli[0].header["BUNIT"] = "mJy/beam"
    mjy = detect(_write(tmp_path, "mjy.fits", milli), card)
    assert len(jy) == len(mjy) > 20
    np.testing.assert_allclose(np.asarray(mjy["flux"]), np.asarray(jy["flux"]), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(mjy["x"]), np.asarray(jy["x"]), atol=1e-3)


def test_out_of_domain_runs_say_so_everywhere(standalone, tmp_path, uws_schema):
    """yolo-demo-sdc1 (absolute, 3e-7 Jy/beam) on a 1e-3 Jy/beam image: the warning reaches the
    catalogue's INFO, the job's jobInfo and the client."""
    from cianna_otf_server.client import Client

    hdul = _sky(256, seed=3_900_003, pixel_scale=6.0, beam_bmaj=18.0, beam_bmin=18.0, noise=1e-3,
                flux_min=1e-3, flux_max=1.0)
    path = _write(tmp_path, "wide.fits", hdul)
    with Client(standalone.url, token="tok-alice") as client:
        job = client.submit(path, model="yolo-demo-sdc1").wait(timeout=120)
        assert job.phase == "COMPLETED"
        assert any("noise" in w and "yolo-demo-sdc1" in w for w in job.warnings), job.warnings
        votable = job.votable().decode()
        table = job.table()
        document = standalone.session("alice").get(job.url).content
    from lxml import etree

    root = etree.fromstring(document)
    uws_schema.assertValid(root)  # the warnings sit in jobInfo, which UWS leaves open
    notes = root.findall("{http://www.ivoa.net/xml/UWS/v1.0}jobInfo/{urn:cianna-otf:jobinfo}warning")
    assert notes and any("noise" in (n.text or "") for n in notes)
    infos = [line for line in votable.splitlines() if 'name="warning"' in line]
    assert any("noise" in line for line in infos), infos
    assert len(table) == 0 or np.isfinite(np.asarray(table["x"])).all()


@pytest.mark.parametrize("cells", [1, 2, 3, 5, 40])
def test_noise_at_equals_the_interpolation_through_every_mesh_node(cells):
    """`NoiseMap.at` reads the few B-spline coefficients around each point: the same rms as the
    interpolation weights of every node, clamped beyond the outermost centres and floored."""
    from cianna_otf_server.pipeline._noise import NoiseMap, _weights

    rng = np.random.default_rng(cells)
    side = 64 * cells
    noise = NoiseMap(rng.normal(size=(cells, cells)), 1 + rng.random((cells, cells)), 64, (side, side), 1.0,
                     (10, 20))
    x = rng.uniform(-30, side + 40, 5000)
    y = rng.uniform(-30, side + 40, 5000)
    u = np.clip((x - 10 + 0.5) / 64 - 0.5, 0, cells - 1.0)
    v = np.clip((y - 20 + 0.5) / 64 - 0.5, 0, cells - 1.0)
    dense = np.einsum("pj,ji,pi->p", _weights(v, cells), noise.rms, _weights(u, cells))
    np.testing.assert_allclose(noise.at(x, y), np.maximum(dense, noise.floor), rtol=1e-12, atol=1e-12)
    assert noise.at(x[:6].reshape(2, 3), y[:6].reshape(2, 3)).shape == (2, 3)


def _blank_walk(boxes, data, max_blank):
    """`drop_blank_boxes`' rule, box by box (the oracle of the vectorised version)."""
    import math

    ny, nx = data.shape
    keep = np.ones(len(boxes), dtype=bool)
    for k in range(len(boxes)):
        xa, xb = int(math.floor(boxes.x_min[k])), int(math.ceil(boxes.x_max[k]))
        ya, yb = int(math.floor(boxes.y_min[k])), int(math.ceil(boxes.y_max[k]))
        area = max(1, (xb - xa) * (yb - ya))
        cxa, cxb, cya, cyb = max(0, xa), min(nx, xb), max(0, ya), min(ny, yb)
        if cxa >= cxb or cya >= cyb:
            keep[k] = False
            continue
        finite = np.isfinite(data[cya:cyb, cxa:cxb])
        if 1.0 - np.count_nonzero(finite) / area > max_blank:
            keep[k] = False
            continue
        ix = min(max(int(math.floor(boxes.x_center[k] + 0.5)), cxa), cxb - 1) - cxa
        iy = min(max(int(math.floor(boxes.y_center[k] + 0.5)), cya), cyb - 1) - cya
        keep[k] = bool(finite[iy, ix])
    return keep


def test_blank_boxes_of_a_large_catalogue_are_dropped_as_box_by_box():
    """Stacks of windows give the box-by-box rule: edges, NaN blanks, boxes of every size."""
    from cianna_otf_server.pipeline._boxes import Boxes
    from cianna_otf_server.pipeline._domain import MAX_BLANK_FRACTION, drop_blank_boxes

    rng = np.random.default_rng(4)
    data = rng.normal(size=(300, 400)).astype(">f4")
    data[:80, :120] = np.nan
    data[200:, 300:] = np.nan
    data[rng.uniform(size=data.shape) < 0.05] = np.nan
    n = 4000
    cx, cy = rng.uniform(-20, 420, n), rng.uniform(-20, 320, n)
    w = np.where(rng.uniform(size=n) < 0.7, 6.0, rng.uniform(1, 60, n))
    h = np.where(rng.uniform(size=n) < 0.7, 6.0, rng.uniform(1, 60, n))
    f, i = np.zeros(n), np.zeros(n, dtype=np.int64)
    boxes = Boxes(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, f, f, np.zeros((n, 0)), np.zeros((n, 0)), i, i, i)

    class _Image:
        shape = data.shape

    image = _Image()
    image.data = data
    expected = _blank_walk(boxes, data, MAX_BLANK_FRACTION)
    assert 0.2 * n < expected.sum() < 0.95 * n
    kept = drop_blank_boxes(boxes, image)
    np.testing.assert_array_equal(kept.x_min, boxes.x_min[expected])
