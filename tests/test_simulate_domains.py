"""The simulator's optional survey features and the domain-randomisation sampler.

Noise varying across the field, artefacts around bright sources, double-lobed sources, NaN
blanks, `random_domain`; and that none of it changes a default sky.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from cianna_otf_server.errors import UserInputError
from cianna_otf_server.sky.simulate import (SimulationOptions, _draw, random_domain, simulate_sky, write_simulation,
                                        write_truth)

NOISE = 3.0e-7


def _plain_loop(plan, y0, y1):
    """The classic renderer: noise, then one stamp at a time (the reference for the batched one)."""
    strip = plan._noise(y0, y1)
    ny, nx = plan.shape
    hit = np.nonzero((plan.y - plan.ry < y1) & (plan.y + plan.ry > y0 - 1))[0]
    for i in hit:
        xa = max(0, int(math.floor(plan.x[i] - plan.rx[i])))
        xb = min(nx, int(math.ceil(plan.x[i] + plan.rx[i])) + 1)
        ya = max(y0, int(math.floor(plan.y[i] - plan.ry[i])))
        yb = min(y1, int(math.ceil(plan.y[i] + plan.ry[i])) + 1)
        if xa >= xb or ya >= yb:
            continue
        dx = np.arange(xa, xb) - plan.x[i]
        dy = (np.arange(ya, yb) - plan.y[i])[:, None]
        ixx, ixy, iyy = plan.inv[i]
        q = ixx * dx * dx + 2.0 * ixy * dx * dy + iyy * dy * dy
        strip[ya - y0:yb - y0, xa:xb] += (plan.amp[i] * np.exp(-0.5 * q)).astype(np.float32)
    return strip


# ----------------------------------------------------------------------------------------------
# defaults unchanged

# sha256 of the float32 pixels and truth summaries of skies made before the optional features existed
RECORDED = [
    (256, 0, {}, "9e0fe985d223a971209fff6b655e0585d509ff3f0eaba5929bfa7176b8bc529c",
     (9, 7.490421524320099e-05, 1241.6624168926453, 1188.8678796563745, 184.00331113175577, 11.994073051441204)),
    (512, 4, {"correlated_noise": False}, "276b3fc3832453c06e1017c68cca4e11592a41b20757cdf902e4de8994dd447a",
     (53, 0.00027791050991665586, 12466.560293792067, 13137.665343062883, 731.606358648405, 43.33632963068903)),
    (400, 6, {"extended_fraction": 1.0, "beam_bmaj": 3.0, "beam_bmin": 1.2, "beam_pa": 37.0},
     "98a2617205ae8d10f11520b730f5806d945e7ae213edf0bad9f4fa1f05ca4e2f",
     (31, 0.00035295500785624, 5400.308300124331, 5623.281236800291, 530.4260791756105, 82.92497260440277)),
]


@pytest.mark.parametrize("size, seed, options, digest, summary", RECORDED)
def test_default_skies_are_unchanged(size, seed, options, digest, summary):
    hdul, truth = simulate_sky(size, seed=seed, **options)
    n, flux, x, y, snr, bmaj = summary
    assert len(truth) == n
    for name, value in (("flux", flux), ("x", x), ("y", y), ("snr", snr), ("bmaj", bmaj)):
        assert float(truth[name].sum()) == pytest.approx(value, rel=1e-12)
    assert set(truth["morphology"]) <= {"point", "gaussian"}
    assert np.all((truth["morphology"] == "gaussian") == truth["extended"])
    assert np.isnan(truth["lobe1_x"]).all() and np.all(truth["local_noise"] == truth.meta["noise"])
    header = hdul[0].header
    assert not any(key.startswith(("SIMNV", "SIMNR", "SIMART", "SIMDBL", "SIMBLK")) for key in header)
    # the batched renderer adds exactly what the classic one-stamp-at-a-time loop adds
    plan = _draw((size, size), seed, SimulationOptions.from_kwargs(options))
    reference = np.concatenate([_plain_loop(plan, y0, y1) for y0, y1 in plan.strips()])
    assert np.array_equal(hdul[0].data, reference)
    if hashlib.sha256(hdul[0].data.tobytes()).hexdigest() != digest:  # pragma: no cover
        pytest.skip("pixel digest recorded with other floating-point libraries (exp, FFT)")


def test_batch_and_chunk_sizes_do_not_change_a_pixel(monkeypatch):
    import cianna_otf_server.sky.simulate as simulate

    options = dict(density=40000.0, extended_fraction=0.6, size_median=6.0)
    whole, _ = simulate_sky(300, seed=12, **options)
    monkeypatch.setattr(simulate, "_CHUNK_ELEMENTS", 700)
    monkeypatch.setattr(simulate, "_BATCH_ELEMENTS", 300)
    small, _ = simulate_sky(300, seed=12, **options)
    assert np.array_equal(whole[0].data, small[0].data)


def test_switching_a_feature_on_leaves_the_other_sources_alone():
    _, base = simulate_sky(256, seed=2)
    _, with_artefacts = simulate_sky(256, seed=2, artefact_level=0.02)
    _, with_variation = simulate_sky(256, seed=2, noise_variation=0.4)
    for name in ("x", "y", "flux", "peak", "bmaj"):
        assert np.array_equal(base[name], with_artefacts[name])
        assert np.array_equal(base[name], with_variation[name])
    assert np.array_equal(base["snr"], with_artefacts["snr"])


# ----------------------------------------------------------------------------------------------
# noise


def _block_rms(data, block):
    ny, nx = data.shape
    d = data[: ny // block * block, : nx // block * block].astype(np.float64)
    return d.reshape(ny // block, block, nx // block, block).std(axis=(1, 3))


@pytest.mark.parametrize("correlated", [False, True])
def test_noise_variation_follows_its_map_and_reaches_the_requested_factor(correlated):
    v = 0.5
    size, block = 512, 32
    hdul, _ = simulate_sky(size, seed=21, n_sources=0, noise_variation=v, noise_variation_scale=150,
                           correlated_noise=correlated)
    plan = _draw((size, size), 21, SimulationOptions(n_sources=0, noise_variation=v, noise_variation_scale=150,
                                                     correlated_noise=correlated))
    measured = _block_rms(hdul[0].data, block)
    centres = np.arange(block / 2 - 0.5, size, block)
    expected = NOISE * plan.noise_map.at(*np.meshgrid(centres, centres))
    ratio = measured / expected
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05 if not correlated else 0.1)
    assert np.corrcoef(np.log(measured).ravel(), np.log(expected).ravel())[0, 1] > 0.9
    # the map's extremes: one side reaches (1 + v), and nothing goes far beyond it
    field = plan.noise_map.rows(0, size)
    assert max(field.max(), 1 / field.min()) == pytest.approx(1 + v, rel=0.05)
    assert 1 / (1 + v) ** 1.2 < field.min() and field.max() < (1 + v) ** 1.2
    assert measured.max() / measured.min() > 1.3


def test_noise_variation_sets_the_truth_snr_against_the_local_rms():
    _, truth = simulate_sky(512, seed=22, noise_variation=0.6, noise_variation_scale=100)
    assert truth["local_noise"].std() > 0.1 * NOISE
    assert np.allclose(truth["snr"], truth["peak"] / truth["local_noise"])
    assert truth.meta["noise_variation"] == 0.6


def test_radial_noise_rises_towards_the_primary_beam_edge():
    size, fwhm = 512, 600.0
    hdul, _ = simulate_sky(size, seed=23, n_sources=0, noise_radial=fwhm, correlated_noise=False)
    d = hdul[0].data
    centre = d[size // 2 - 32:size // 2 + 32, size // 2 - 32:size // 2 + 32].std()
    corner = d[:48, :48].std()
    r = math.hypot(size / 2 - 24, size / 2 - 24)
    assert centre == pytest.approx(NOISE, rel=0.1)
    assert corner / centre == pytest.approx(math.exp(4 * math.log(2) * r ** 2 / fwhm ** 2), rel=0.15)


def test_elliptical_beam_shapes_noise_and_sources_along_its_position_angle():
    pa = 30.0
    opts = dict(beam_bmaj=6.0, beam_bmin=2.4, beam_pa=pa, pixel_scale=0.6)
    hdul, _ = simulate_sky(384, seed=24, n_sources=0, **opts)
    d = hdul[0].data.astype(np.float64)
    major = np.array([-math.sin(math.radians(pa)), math.cos(math.radians(pa))])
    minor = np.array([major[1], -major[0]])

    def corr(step):
        sx, sy = (int(round(v)) for v in 4 * step)
        a = d[max(0, sy):d.shape[0] + min(0, sy), max(0, sx):d.shape[1] + min(0, sx)]
        b = d[max(0, -sy):d.shape[0] + min(0, -sy), max(0, -sx):d.shape[1] + min(0, -sx)]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    assert corr(major) > corr(minor) + 0.3
    hdul, truth = simulate_sky(128, seed=1, n_sources=1, noise=0.0, extended_fraction=0.0, edge_margin=50, **opts)
    img = hdul[0].data.astype(np.float64)
    yy, xx = np.indices(img.shape)
    w = img / img.sum()
    mx, my = (w * xx).sum(), (w * yy).sum()
    cov = np.array([[(w * (xx - mx) ** 2).sum(), (w * (xx - mx) * (yy - my)).sum()],
                    [(w * (xx - mx) * (yy - my)).sum(), (w * (yy - my) ** 2).sum()]])
    vals, vecs = np.linalg.eigh(cov)
    assert abs(np.dot(vecs[:, 1], major)) > 0.99
    assert math.sqrt(vals[1] / vals[0]) == pytest.approx(2.5, rel=0.05)


# ----------------------------------------------------------------------------------------------
# artefacts


def test_artefacts_surround_bright_sources_only_and_are_not_in_the_truth():
    base = dict(n_sources=40, flux_min=1e-6, flux_max=5e-3, flux_slope=1.2, extended_fraction=0.0)
    plain, truth = simulate_sky(512, seed=31, **base)
    arty, arty_truth = simulate_sky(512, seed=31, artefact_level=0.02, artefact_snr=200, **base)
    assert len(arty_truth) == len(truth)
    for name in ("x", "y", "flux", "peak", "snr"):
        assert np.array_equal(truth[name], arty_truth[name])
    diff = (arty[0].data - plain[0].data).astype(np.float64)
    bright = truth[truth["snr"] > 200]
    assert 1 <= len(bright) < len(truth)
    yy, xx = np.indices(diff.shape)
    beam_px = 1.5 / 0.6
    bx, by = np.asarray(bright["x"]), np.asarray(bright["y"])
    checked = 0
    for row in bright:
        if np.sum(np.hypot(bx - row["x"], by - row["y"]) < 40 * beam_px + 2) > 1:
            continue  # another bright source's artefacts overlap
        checked += 1
        r = np.hypot(xx - (row["x"] - 1), yy - (row["y"] - 1)) / beam_px
        ring = diff[(r > 2) & (r < 6)]
        level = 0.02 * row["peak"]
        assert ring.max() > 0.05 * level and ring.min() < -0.05 * level  # positive and negative sidelobes
        assert np.abs(ring).max() <= 1.01 * level
        core = np.abs(diff[r < 0.5])
        assert core.max() < 0.05 * level  # the source itself is (all but) untouched
    assert checked >= 1
    # far from every bright source nothing changed
    far = np.ones(diff.shape, bool)
    for row in bright:
        far &= np.hypot(xx - (row["x"] - 1), yy - (row["y"] - 1)) > 40 * beam_px + 2
    assert np.all(diff[far] == 0)


def test_artefacts_are_deterministic():
    a, _ = simulate_sky(256, seed=32, artefact_level=0.03, artefact_snr=30)
    b, _ = simulate_sky(256, seed=32, artefact_level=0.03, artefact_snr=30)
    assert np.array_equal(a[0].data, b[0].data)


# ----------------------------------------------------------------------------------------------
# doubles


@pytest.fixture(scope="module")
def doubles():
    return simulate_sky(512, seed=41, n_sources=6, noise=1e-6, flux_min=5e-3, flux_max=1e-2, edge_margin=120,
                        double_fraction=1.0, fr2_fraction=1.0, double_separation=(30.0, 50.0))


def test_double_truth_rows_point_at_two_flux_maxima(doubles):
    hdul, truth = doubles
    data = hdul[0].data
    assert len(truth) == 6 and np.all(truth["morphology"] == "double") and truth["extended"].all()
    for row in truth:
        lobes = [(row["lobe1_x"] - 1, row["lobe1_y"] - 1), (row["lobe2_x"] - 1, row["lobe2_y"] - 1)]
        separation = math.dist(*lobes)
        assert 30.0 / 0.6 * 0.4 < separation < 50.0 / 0.6
        assert row["bmaj"] / 0.6 > separation  # overall extent beyond the lobe centroids
        maxima = []
        for lx, ly in lobes:
            r = max(4, int(0.25 * separation))
            ix, iy = int(round(lx)), int(round(ly))
            cut = data[iy - r:iy + r + 1, ix - r:ix + r + 1]
            py, px = np.unravel_index(np.argmax(cut), cut.shape)
            maxima.append((ix - r + px, iy - r + py, cut.max()))
            assert cut.max() > 20 * 1e-6  # a bright lobe there
        # two distinct maxima, with a dip between them
        assert math.dist(maxima[0][:2], maxima[1][:2]) > 0.5 * separation
        mid = data[int(round((lobes[0][1] + lobes[1][1]) / 2)), int(round((lobes[0][0] + lobes[1][0]) / 2))]
        assert mid < 0.5 * min(maxima[0][2], maxima[1][2])
        # the centre is the flux-weighted mean of the parts, roughly between the lobes
        assert math.dist((row["x"] - 1, row["y"] - 1), np.mean(lobes, axis=0)) < 0.5 * separation
        assert row["peak"] == pytest.approx(max(m[2] for m in maxima), rel=0.15)
        assert row["snr"] == pytest.approx(row["peak"] / 1e-6)


def test_doubles_conserve_flux_and_mix_with_single_sources():
    hdul, truth = simulate_sky(256, seed=42, n_sources=3, noise=0.0, flux_min=1e-3, flux_max=1e-3,
                               edge_margin=100, double_fraction=1.0, double_separation=(10.0, 20.0))
    h = hdul[0].header
    beam_area = np.pi / (4 * np.log(2)) * (h["BMAJ"] * h["BMIN"]) / (h["CDELT2"] ** 2)
    assert hdul[0].data.sum() / beam_area == pytest.approx(truth["flux"].sum(), rel=0.01)
    _, mixed = simulate_sky(1024, seed=43, double_fraction=0.2)
    doubles = mixed["morphology"] == "double"
    assert 0.1 < doubles.mean() < 0.3
    assert np.isfinite(mixed["lobe1_x"][doubles]).all() and np.isnan(mixed["lobe2_y"][~doubles]).all()
    assert np.all(mixed["pa"][doubles] >= -90) and np.all(mixed["pa"][doubles] < 90)


def test_fr1_doubles_are_brightest_near_the_core():
    for seed in range(4):
        hdul, truth = simulate_sky(256, seed=44 + seed, n_sources=1, noise=1e-7, flux_min=5e-3, flux_max=1e-2,
                                   edge_margin=127, double_fraction=1.0, fr2_fraction=0.0,
                                   double_separation=(40.0, 60.0))
        row = truth[0]
        data = hdul[0].data
        py, px = np.unravel_index(np.argmax(data), data.shape)
        half = 0.5 * math.dist((row["lobe1_x"], row["lobe1_y"]), (row["lobe2_x"], row["lobe2_y"]))
        ends = 0.5 * 40.0 / 0.6
        # the brightest pixel is well inside the arms (the lobe centroids lie ~40 % out)
        assert math.hypot(px - (row["x"] - 1), py - (row["y"] - 1)) < min(1.2 * half, 0.6 * ends)
        assert half < 0.6 * ends


# ----------------------------------------------------------------------------------------------
# blanks


def test_blank_outside_radius_is_nan_and_drops_blanked_truth():
    plain, full = simulate_sky(256, seed=51)
    hdul, truth = simulate_sky(256, seed=51, blank_outside_radius=100.0)
    d = hdul[0].data
    yy, xx = np.indices(d.shape)
    r = np.hypot(xx - 127.5, yy - 127.5)
    assert np.isnan(d[r > 100.5]).all() and np.isfinite(d[r < 99.5]).all()
    assert np.array_equal(d[r < 99.5], plain[0].data[r < 99.5])
    kept = np.hypot(np.rint(full["x"] - 1) - 127.5, np.rint(full["y"] - 1) - 127.5) <= 100
    assert list(truth["id"]) == list(full["id"][kept])
    assert truth.meta["n_blanked"] == int((~kept).sum()) > 0


def test_random_blank_regions_cover_about_the_requested_fraction():
    fractions = []
    for seed in range(8):
        hdul, truth = simulate_sky(256, seed=60 + seed, blank_fraction=0.2)
        d = hdul[0].data
        fractions.append(np.isnan(d).mean())
        ix, iy = np.rint(truth["x"] - 1).astype(int), np.rint(truth["y"] - 1).astype(int)
        on = (ix >= 0) & (ix < 256) & (iy >= 0) & (iy < 256)
        assert np.isfinite(d[iy[on], ix[on]]).all()  # no listed source sits in a blank
        assert truth.meta["blank_fraction"] == 0.2
    assert 0.08 < np.mean(fractions) < 0.3
    assert max(fractions) > 0.02


def test_blanked_file_matches_memory(tmp_path):
    options = dict(blank_fraction=0.3, blank_outside_radius=140.0, double_fraction=0.2, artefact_level=0.01)
    truth = write_simulation(tmp_path / "sky.fits", 300, seed=52, truth_path=tmp_path / "t.xml", **options)
    hdul, mem = simulate_sky(300, seed=52, **options)
    with fits.open(tmp_path / "sky.fits") as written:
        assert np.array_equal(written[0].data, hdul[0].data, equal_nan=True)
        assert written[0].header["SIMBLKF"] == 0.3
    assert len(truth) == len(mem)
    for ext in ("csv", "fits", "ecsv"):
        write_truth(truth, tmp_path / f"t.{ext}")
        back = Table.read(tmp_path / f"t.{ext}")
        assert list(back["morphology"]) == list(truth["morphology"])
    back = Table.read(tmp_path / "t.xml")
    assert list(back["morphology"]) == list(truth["morphology"])


# ----------------------------------------------------------------------------------------------
# density, empty skies, large sources


def test_empty_and_dense_skies():
    hdul, truth = simulate_sky(128, seed=71, n_sources=0, double_fraction=0.5, artefact_level=0.1,
                               blank_fraction=0.1)
    assert len(truth) == 0 and "morphology" in truth.colnames and hdul[0].data.shape == (128, 128)
    _, dense = simulate_sky(512, seed=72, density=70000.0)
    area = (512 * 0.6 / 3600) ** 2
    assert len(dense) == pytest.approx(70000 * area, rel=0.1)


def test_sources_of_twenty_beams_are_drawn_whole():
    hdul, truth = simulate_sky(512, seed=73, n_sources=1, noise=0.0, flux_min=1e-3, flux_max=1e-3,
                               extended_fraction=1.0, size_median=30.0, size_scatter_dex=0.0, size_max=30.0,
                               axis_ratio_min=1.0, edge_margin=255)
    h = hdul[0].header
    beam_area = np.pi / (4 * np.log(2)) * (h["BMAJ"] * h["BMIN"]) / (h["CDELT2"] ** 2)
    assert truth["bmaj"][0] == pytest.approx(30.0)
    assert hdul[0].data.sum() / beam_area == pytest.approx(1e-3, rel=0.01)


# ----------------------------------------------------------------------------------------------
# strip independence and validation


def _everything_on(seed):
    opts = random_domain(np.random.default_rng(seed), size=320)
    return replace(opts, artefact_level=0.02, artefact_snr=20.0, double_fraction=0.3, blank_fraction=0.1,
                   blank_outside_radius=170.0, noise_variation=0.5, noise_variation_scale=80.0,
                   noise_radial=400.0, n_sources=None, density=min(opts.density, 3e5))


@pytest.mark.parametrize("seed", [0, 1])
def test_random_domain_sky_is_independent_of_the_strip_cut(seed):
    opts = _everything_on(seed)
    for noise in (0.0, opts.noise):
        plan = _draw((300, 320), 5, replace(opts, noise=noise))  # (ny, nx)
        whole = plan.render(0, 300)
        assert np.isnan(whole).any() and np.isfinite(whole).mean() > 0.3
        for rows in (64, 192):
            cut = np.concatenate([plan.render(y0, y1) for y0, y1 in plan.strips(rows)])
            if noise == 0:  # sources, doubles, artefacts and blanks: bit for bit
                assert np.array_equal(whole, cut, equal_nan=True)
            else:  # the FFT convolution of the noise rounds differently on other block sizes
                assert np.array_equal(np.isnan(whole), np.isnan(cut))
                assert np.allclose(whole, cut, rtol=0, atol=1e-4 * noise, equal_nan=True)
        assert np.array_equal(plan.noise_map.rows(0, 300),
                              np.concatenate([plan.noise_map.rows(y0, y1) for y0, y1 in plan.strips(64)]))


def test_new_options_are_validated():
    bad = [dict(noise_variation=-0.1), dict(noise_variation_scale=0.0), dict(noise_radial=-5.0),
           dict(artefact_level=2.0), dict(artefact_snr=0.0), dict(double_fraction=1.5),
           dict(double_separation=(10.0, 5.0)), dict(double_separation=(0.0, 5.0)),
           dict(double_separation="wide"), dict(fr2_fraction=-1.0), dict(blank_outside_radius=0.0),
           dict(blank_fraction=0.95), dict(size_min=30.0, size_max=20.0)]
    for options in bad:
        with pytest.raises(UserInputError, match="simulation option"):
            SimulationOptions.from_kwargs(options)
    assert SimulationOptions(double_separation=[3, 30]).double_separation == (3.0, 30.0)


# ----------------------------------------------------------------------------------------------
# random_domain


def test_random_domain_is_deterministic_per_rng_state():
    a = random_domain(np.random.default_rng(5))
    b = random_domain(np.random.default_rng(5))
    c = random_domain(np.random.default_rng(6))
    assert a == b and a != c
    rng = np.random.default_rng(7)
    first, second = random_domain(rng), random_domain(rng)
    rng = np.random.default_rng(7)
    assert random_domain(rng) == first and random_domain(rng) == second


def test_random_domain_stays_within_its_documented_ranges():
    draws = [random_domain(np.random.default_rng(k)) for k in range(400)]
    beam_px = np.array([d.beam_bmaj / d.pixel_scale for d in draws])
    assert 1.5 <= beam_px.min() and beam_px.max() <= 8.0
    for d in draws:
        assert 0.5 <= d.pixel_scale <= 10.0
        assert 0.5 <= d.beam_bmin / d.beam_bmaj <= 1.0 and -90 <= d.beam_pa <= 90
        assert 1e-6 <= d.noise <= 1e-2
        assert 0 <= d.noise_variation <= 0.6 and 100 <= d.noise_variation_scale <= 600
        assert 0 <= d.double_fraction <= 0.15
        assert 0 <= d.extended_fraction <= 0.6
        assert 0.3 <= d.size_median / d.beam_bmaj <= 3.0 and d.size_max == pytest.approx(20 * d.beam_bmaj)
        assert 0.5 <= d.flux_min / d.noise <= 2.0 and 2e3 <= d.flux_max / d.noise <= 2e4
        assert d.artefact_level == 0 or 0.003 <= d.artefact_level <= 0.03
        assert d.blank_fraction == 0 or 0.02 <= d.blank_fraction <= 0.25
        beam_area = np.pi / (4 * np.log(2)) * d.beam_bmaj * d.beam_bmin / 3600 ** 2
        if d.n_sources is None:
            per_beam = d.density * beam_area
            per_pixel = d.density * (d.pixel_scale / 3600) ** 2
            assert per_beam <= 0.05 * 1.0001 and per_pixel <= 0.005 * 1.0001
            assert per_beam >= 1e-3 * 0.9999 or per_pixel == pytest.approx(0.005)
    share = lambda flags: float(np.mean(flags))  # noqa: E731
    assert 0.01 < share([d.n_sources == 0 for d in draws]) < 0.1
    assert 0.4 < share([d.artefact_level > 0 for d in draws]) < 0.6
    assert 0.22 < share([d.blank_fraction > 0 or d.blank_outside_radius is not None for d in draws]) < 0.38
    assert 0.78 < share([d.correlated_noise for d in draws]) < 0.92
    assert 0.12 < share([d.noise_radial is not None for d in draws]) < 0.28


def test_random_domain_skies_render_with_snr_spanning_decades():
    snr = []
    for k in range(6):
        opts = random_domain(np.random.default_rng(100 + k), size=256)
        hdul, truth = simulate_sky(256, seed=k, **opts.as_kwargs())
        assert hdul[0].data.shape == (256, 256) and np.isfinite(hdul[0].data).any()
        assert hdul[0].header["BMAJ"] * 3600 == pytest.approx(opts.beam_bmaj)
        snr.extend(truth["snr"][~truth["extended"]])
    snr = np.array(snr)
    assert snr.min() < 3 and snr.max() > 300
