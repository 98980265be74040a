"""The generalisation benchmark's domain transforms keep pixels, header and truth in step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from generalisation_domains import (DOMAINS, FIRST_SEED, QUICK_DOMAINS, flip_x, frame_width,  # noqa: E402
                                    nan_frame, relabel_projection, simulate_domain, to_4d, to_galactic, to_mjy)

from cianna_otf_server.pipeline import open_image  # noqa: E402
from cianna_otf_server.sky.simulate import SimulationOptions, simulate_sky  # noqa: E402

SIZE = 256


@pytest.fixture(scope="module")
def sky():
    """A small elliptical-beam sky with a few bright point sources (and its truth)."""
    return simulate_sky(SIZE, seed=FIRST_SEED + 99_999, n_sources=40, extended_fraction=0.0, beam_bmaj=3.0,
                        beam_bmin=1.8, beam_pa=35.0, flux_min=1e-5, flux_max=1e-3, edge_margin=20)


def _brightest(truth):
    return truth[int(np.argmax(np.asarray(truth["peak"])))]


def test_mjy_image_is_scaled_and_labelled(sky):
    hdul, truth = sky
    new, new_truth = to_mjy(hdul, truth)
    assert new[0].header["BUNIT"] == "mJy/beam"
    np.testing.assert_allclose(new[0].data, hdul[0].data * 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(new_truth["flux"], truth["flux"])  # truth stays in Jy
    image = open_image(new)
    assert image.to_jy_per_beam == pytest.approx(1e-3)


def test_flipped_truth_lands_on_the_flipped_peak(sky):
    hdul, truth = sky
    new, new_truth = flip_x(hdul, truth)
    header = new[0].header
    assert header["CDELT1"] > 0
    ny, nx = new[0].data.shape
    source = _brightest(new_truth)
    ix, iy = int(round(source["x"] - 1)), int(round(source["y"] - 1))
    cut = new[0].data[iy - 3:iy + 4, ix - 3:ix + 4]
    jy, jx = np.unravel_index(np.argmax(cut), cut.shape)
    assert abs(jx - 3) <= 1 and abs(jy - 3) <= 1  # the peak pixel is next to the truth position ...
    dy, dx = np.mgrid[-3:4, -3:4]
    weight = np.clip(cut, 0.0, None) ** 2
    centroid = ((weight * dx).sum() / weight.sum() + ix + 1, (weight * dy).sum() / weight.sum() + iy + 1)
    assert centroid == pytest.approx((source["x"], source["y"]), abs=0.1)  # ... and the light centred on it
    assert cut.max() == pytest.approx(source["peak"], rel=0.3)
    # the same sky at the flipped position, so ra/dec stay true
    world_new = WCS(header).pixel_to_world(source["x"] - 1, source["y"] - 1)
    world_old = WCS(hdul[0].header).pixel_to_world(nx - source["x"], source["y"] - 1)
    assert world_new.separation(world_old).arcsec < 1e-6
    original = truth[int(np.argmax(np.asarray(truth["peak"])))]
    assert source["x"] == pytest.approx(nx + 1 - original["x"])
    assert source["ra"] == original["ra"]


def test_galactic_header_keeps_the_reference_pixel_on_the_same_sky(sky):
    hdul, truth = sky
    new, new_truth = to_galactic(hdul, truth)
    header = new[0].header
    assert header["CTYPE1"] == "GLON-SIN" and header["CTYPE2"] == "GLAT-SIN"
    assert "RADESYS" not in header
    crpix = (header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    before = WCS(hdul[0].header).pixel_to_world(*crpix)
    after = WCS(header).pixel_to_world(*crpix)
    assert after.frame.name == "galactic"
    assert after.separation(before).arcsec < 1e-3
    np.testing.assert_array_equal(new[0].data, hdul[0].data)
    # the truth's ra/dec follow the new header
    row = new_truth[0]
    sky_pos = WCS(header).pixel_to_world(row["x"] - 1, row["y"] - 1).icrs
    assert sky_pos.ra.deg == pytest.approx(row["ra"]) and sky_pos.dec.deg == pytest.approx(row["dec"])
    image = open_image(new)
    assert image.pixel_scale_arcsec == pytest.approx(SimulationOptions().pixel_scale, rel=1e-6)


def test_4d_image_opens_to_the_same_pixels(sky, tmp_path):
    hdul, truth = sky
    new, _ = to_4d(hdul, truth)
    path = tmp_path / "four.fits"
    new.writeto(path)
    with fits.open(path) as raw:
        assert raw[0].data.shape == (1, 1, SIZE, SIZE)
        assert raw[0].header["CTYPE3"] == "FREQ" and raw[0].header["CTYPE4"] == "STOKES"
    image = open_image(str(path))
    try:
        assert image.shape == (SIZE, SIZE)
        assert image.plane == (0, 0)
        np.testing.assert_array_equal(np.asarray(image.data, dtype=np.float32), hdul[0].data)
        assert image.beam is not None and not image.beam.estimated
        centre = image.wcs.pixel_to_world(10.0, 20.0)
        assert centre.separation(WCS(hdul[0].header).pixel_to_world(10.0, 20.0)).arcsec < 1e-6
    finally:
        image.close()


def test_nan_frame_blanks_the_border_and_drops_its_sources(sky):
    hdul, truth = sky
    width = frame_width(SIZE)
    new, new_truth = nan_frame(hdul, truth, SIZE)
    data = new[0].data
    assert np.isnan(data[:width]).all() and np.isnan(data[:, -width:]).all()
    assert np.isfinite(data[width:-width, width:-width]).all()
    x, y = np.asarray(new_truth["x"]) - 1, np.asarray(new_truth["y"]) - 1
    assert ((np.rint(x) >= width) & (np.rint(x) < SIZE - width) & (np.rint(y) >= width)).all()
    assert len(new_truth) + new_truth.meta["n_blanked"] - truth.meta.get("n_blanked", 0) == len(truth)
    assert frame_width(2048) == 100


@pytest.mark.parametrize("code, pv", [("TAN", None), ("AZP", {"PV2_1": 2.0})])
def test_projection_relabel(sky, code, pv):
    hdul, truth = sky
    new, new_truth = relabel_projection(code, pv)(hdul, truth)
    header = new[0].header
    assert header["CTYPE1"] == f"RA---{code}" and header["CTYPE2"] == f"DEC--{code}"
    np.testing.assert_array_equal(new[0].data, hdul[0].data)
    crpix = (header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    assert WCS(header).pixel_to_world(*crpix).separation(WCS(hdul[0].header).pixel_to_world(*crpix)).arcsec < 1e-6
    image = open_image(new)
    assert image.pixel_scale_arcsec == pytest.approx(SimulationOptions().pixel_scale, rel=1e-3)


def test_grid_seeds_names_and_options():
    names = [d.name for d in DOMAINS]
    assert len(names) == len(set(names)) and "sdc1-reference" in names
    assert set(QUICK_DOMAINS) <= set(names)
    seeds = sorted((d.seed, d.seed + d.images) for d in DOMAINS)
    assert seeds[0][0] >= 3_000_000
    assert all(hi <= nxt for (_, hi), (nxt, _) in zip(seeds, seeds[1:]))  # no image shares a seed
    for domain in DOMAINS:
        SimulationOptions.from_kwargs(domain.simulation_options(2048))  # valid settings
        major, minor = domain.beam_pixels()
        assert 1.0 <= minor <= major <= 12.5
    by_name = {d.name: d for d in DOMAINS}
    assert by_name["undersampled-1.2px"].beam_pixels()[0] == pytest.approx(1.2)
    assert by_name["oversampled-12px"].beam_pixels()[0] == pytest.approx(12.0)
    assert by_name["sdc1-reference"].options == {}


def test_every_domain_simulates_with_consistent_truth():
    for domain in DOMAINS:
        hdul, truth = simulate_domain(domain, 128)
        data = np.asarray(hdul[0].data)
        assert data.shape[-2:] == (128, 128)
        assert truth.meta["domain"] == domain.name
        if len(truth):
            assert np.all((truth["x"] >= 0.5) & (truth["x"] <= 128.5))


def test_match_radius_rule():
    from generalisation import match_radius

    assert match_radius(1.2) == 2.0
    assert match_radius(4.5) == 4.5
