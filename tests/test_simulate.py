"""The simulated sky: valid WCS and beam, the stated noise, truth on the flux, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse_single_table
from astropy.stats import mad_std
from astropy.table import Table
from astropy.wcs import WCS

from cianna_otf_server.errors import UserInputError
from cianna_otf_server.sky.simulate import simulate_sky, write_simulation

SIZE = 512


@pytest.fixture(scope="module")
def sky():
    return simulate_sky(SIZE, seed=3)


def test_header_has_a_valid_celestial_wcs_and_beam(sky):
    hdul, _ = sky
    header = hdul[0].header
    wcs = WCS(header)
    assert wcs.has_celestial and wcs.naxis == 2
    assert wcs.wcs.ctype[0] == "RA---SIN" and wcs.wcs.ctype[1] == "DEC--SIN"
    assert wcs.wcs.radesys == "ICRS"
    centre = wcs.pixel_to_world((SIZE - 1) / 2, (SIZE - 1) / 2)
    assert abs(centre.dec.deg + 30) < 0.01
    assert min(centre.ra.deg, 360 - centre.ra.deg) < 0.01
    scale = np.abs(wcs.proj_plane_pixel_scales()[0].to_value("arcsec"))
    assert 0.3 < scale < 1.2
    assert header["BMAJ"] >= header["BMIN"] > 0
    assert 1.0 < header["BMAJ"] * 3600 < 3.0
    assert "BPA" in header and header["BUNIT"].upper() == "JY/BEAM" and header["RESTFRQ"] > 0
    assert hdul[0].data.dtype == np.float32 and hdul[0].data.shape == (SIZE, SIZE)


def test_noise_level_matches_the_stated_noise():
    hdul, truth = simulate_sky(SIZE, seed=4, n_sources=0)
    measured = float(np.std(hdul[0].data))
    assert measured == pytest.approx(truth.meta["noise"], rel=0.05)
    assert 2e-7 <= truth.meta["noise"] <= 5e-7


def test_noise_is_correlated_on_the_beam_scale():
    hdul, _ = simulate_sky(256, seed=5, n_sources=0)
    d = hdul[0].data.astype(np.float64)
    neighbour = np.corrcoef(d[:, :-1].ravel(), d[:, 1:].ravel())[0, 1]
    far = np.corrcoef(d[:, :-8].ravel(), d[:, 8:].ravel())[0, 1]
    assert neighbour > 0.5 and abs(far) < 0.05


def test_noise_with_sources_is_still_the_stated_noise(sky):
    hdul, truth = sky
    assert mad_std(hdul[0].data) == pytest.approx(truth.meta["noise"], rel=0.1)


def test_truth_columns_units_and_meta(sky):
    _, truth = sky
    for name in ("id", "ra", "dec", "x", "y", "flux", "peak", "bmaj", "bmin", "pa", "snr", "extended",
                 "local_noise", "morphology", "lobe1_x", "lobe1_y", "lobe2_x", "lobe2_y"):
        assert name in truth.colnames
        assert truth[name].meta.get("ucd")
    assert set(truth["morphology"]) == {"point", "gaussian"}  # doubles are off by default
    assert np.isnan(truth["lobe1_x"]).all() and np.all(truth["local_noise"] == truth.meta["noise"])
    assert str(truth["flux"].unit) == "Jy" and str(truth["ra"].unit) == "deg"
    assert 100 <= len(truth) * (2048 / SIZE) ** 2 <= 2000  # few hundred to ~1000 per 2048^2
    assert truth["extended"].any() and (~truth["extended"]).any()
    point = ~truth["extended"]
    assert np.allclose(truth["peak"][point], truth["flux"][point])
    assert np.all(truth["peak"][~point] < truth["flux"][~point])
    assert np.allclose(truth["snr"], truth["peak"] / truth.meta["noise"])


def test_truth_positions_land_on_flux_peaks(sky):
    hdul, truth = sky
    data = hdul[0].data
    wcs = WCS(hdul[0].header)
    bright = truth[(truth["snr"] > 30) & ~truth["extended"]]
    assert len(bright) >= 5
    for row in bright:
        ix, iy = int(round(row["x"] - 1)), int(round(row["y"] - 1))
        cut = data[max(0, iy - 3):iy + 4, max(0, ix - 3):ix + 4]
        py, px = np.unravel_index(np.argmax(cut), cut.shape)
        assert abs(px + max(0, ix - 3) - (row["x"] - 1)) <= 1.0
        assert abs(py + max(0, iy - 3) - (row["y"] - 1)) <= 1.0
        assert data[iy, ix] > 0.5 * row["peak"]
        sky_pos = wcs.pixel_to_world(row["x"] - 1, row["y"] - 1)
        assert sky_pos.ra.deg == pytest.approx(row["ra"], abs=1e-9)
        assert sky_pos.dec.deg == pytest.approx(row["dec"], abs=1e-9)


def test_integrated_flux_is_conserved():
    hdul, truth = simulate_sky(128, seed=6, n_sources=1, noise=0.0, flux_min=1e-3, flux_max=1e-3,
                               extended_fraction=1.0, edge_margin=40)
    h = hdul[0].header
    beam_area = np.pi / (4 * np.log(2)) * (h["BMAJ"] * h["BMIN"]) / (h["CDELT2"] ** 2)
    assert hdul[0].data.sum() / beam_area == pytest.approx(truth["flux"][0], rel=0.01)
    assert hdul[0].data.max() == pytest.approx(truth["peak"][0], rel=0.1)


def test_same_seed_same_sky_different_seed_different_sky():
    a, ta = simulate_sky(256, seed=11)
    b, tb = simulate_sky(256, seed=11)
    c, tc = simulate_sky(256, seed=12)
    assert np.array_equal(a[0].data, b[0].data)
    assert np.array_equal(ta["flux"], tb["flux"])
    assert not np.array_equal(a[0].data, c[0].data)
    assert len(ta) != len(tc) or not np.allclose(ta["x"], tc["x"])


def test_written_file_matches_the_in_memory_image(tmp_path):
    path, truth_path = tmp_path / "sky.fits", tmp_path / "truth.xml"
    truth = write_simulation(path, 300, seed=8, truth_path=truth_path)
    hdul, mem_truth = simulate_sky(300, seed=8)
    with fits.open(path) as written:
        assert np.array_equal(written[0].data, hdul[0].data)
        assert WCS(written[0].header).has_celestial
    vot = parse_single_table(str(truth_path))
    assert vot.get_field_by_id_or_name("flux").unit == "Jy"
    assert vot.get_field_by_id_or_name("ra").ucd == "pos.eq.ra;meta.main"
    noise = [p for p in vot.params if p.name == "noise"][0]
    assert float(noise.value) == pytest.approx(truth.meta["noise"]) and noise.unit == "Jy/beam"
    assert len(vot.to_table()) == len(truth) == len(mem_truth)
    with pytest.raises(UserInputError):
        write_simulation(path, 300, seed=8)
    write_simulation(path, 300, seed=8, overwrite=True)


def test_strip_boundaries_do_not_show(monkeypatch):
    import cianna_otf_server.sky.simulate as simulate

    whole, _ = simulate_sky(200, seed=9)
    monkeypatch.setattr(simulate, "_STRIP_PIXELS", 200 * 64)
    strips, _ = simulate_sky(200, seed=9)
    assert np.allclose(whole[0].data, strips[0].data, atol=1e-12)


def test_truth_in_csv_and_fits(tmp_path):
    from cianna_otf_server.sky.simulate import write_truth

    _, truth = simulate_sky(128, seed=1)
    write_truth(truth, tmp_path / "t.csv")
    write_truth(truth, tmp_path / "t.fits")
    assert len(Table.read(tmp_path / "t.csv")) == len(truth)
    assert len(Table.read(tmp_path / "t.fits")) == len(truth)
    with pytest.raises(UserInputError):
        write_truth(truth, tmp_path / "t.txt")


def test_bad_options_raise_user_errors():
    with pytest.raises(UserInputError, match="unknown simulation option"):
        simulate_sky(64, seed=0, colour="blue")
    with pytest.raises(UserInputError):
        simulate_sky(64, seed=-1)
    with pytest.raises(UserInputError):
        simulate_sky(4, seed=0)
    with pytest.raises(UserInputError):
        simulate_sky(64, seed=0, noise=-1.0)


def test_rectangular_images():
    hdul, truth = simulate_sky((300, 200), seed=2)
    assert hdul[0].data.shape == (200, 300)
    assert np.all((truth["x"] >= 0.5) & (truth["x"] <= 300.5) & (truth["y"] <= 200.5))
