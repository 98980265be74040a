"""Cross-matching and the quality report."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from cianna_otf_server.sky.quality import match_catalogues, quality_report


def _truth(n=200, seed=0):
    """Sources on a jittered grid 20 arcsec apart (so chance matches cannot happen)."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    iy, ix = np.divmod(np.arange(n), side)
    t = Table()
    t["dec"] = -30.0 + (iy * 20.0 + rng.uniform(-2, 2, n)) / 3600
    t["ra"] = ((ix * 20.0 + rng.uniform(-2, 2, n)) / 3600 / np.cos(np.radians(30.0)) - 0.05) % 360
    t["x"] = ix * 33.0 + rng.uniform(-3, 3, n)
    t["y"] = iy * 33.0 + rng.uniform(-3, 3, n)
    t["flux"] = 10 ** rng.uniform(-6, -3, n)
    t["snr"] = t["flux"] / 3e-7
    t.meta["beam_bmaj"] = 1.5
    return t


def test_perfect_catalogue_gives_precision_and_recall_one():
    truth = _truth()
    report = quality_report(truth.copy(), truth)
    assert report["overall"]["precision"] == 1.0
    assert report["overall"]["recall"] == 1.0
    assert report["overall"]["f1"] == 1.0
    assert report["above"]["recall"] == 1.0
    assert report["median_position_error_arcsec"] == pytest.approx(0.0, abs=1e-6)
    assert report["median_relative_flux_error"] == pytest.approx(0.0)
    for row in report["snr_bins"]:
        assert row["recall"] in (None, 1.0)


def test_catalogue_shifted_beyond_the_radius_matches_nothing():
    truth = _truth()
    shifted = truth.copy()
    shifted["dec"] = shifted["dec"] + 3.0 / 3600  # 3 arcsec north, two beams away
    report = quality_report(shifted, truth)
    assert report["n_matched"] == 0
    assert report["overall"]["precision"] == 0.0 and report["overall"]["recall"] == 0.0
    # within a wider radius everything matches again
    assert quality_report(shifted, truth, radius_arcsec=4.0)["overall"]["recall"] == 1.0


def test_matching_is_one_to_one_and_nearest_first():
    truth = Table({"x": [0.0, 10.0], "y": [0.0, 0.0]})
    det = Table({"x": [0.5, 0.2, 30.0], "y": [0.0, 0.0, 0.0]})
    m = match_catalogues(det, truth, radius_pix=2.0)
    assert list(m.detected) == [1] and list(m.truth) == [0]
    assert m.separation[0] == pytest.approx(0.2) and m.unit == "pix"


def test_two_detections_two_sources_pair_nearest_first():
    truth = Table({"x": [0.0, 1.0], "y": [0.0, 0.0]})
    det = Table({"x": [0.9, 0.4], "y": [0.0, 0.0]})
    m = match_catalogues(det, truth, radius_pix=1.5)
    pairs = sorted(zip(m.detected.tolist(), m.truth.tolist()))
    assert pairs == [(0, 1), (1, 0)]


def test_sky_matching_uses_great_circle_separations():
    truth = Table({"ra": [359.9999], "dec": [-30.0]})
    det = Table({"ra": [0.0001], "dec": [-30.0]})  # across RA = 0
    m = match_catalogues(det, truth, radius_arcsec=1.0)
    expected = 0.0002 * np.cos(np.radians(30.0)) * 3600
    assert len(m) == 1 and m.separation[0] == pytest.approx(expected, rel=1e-3)


def test_false_positives_and_missed_sources_per_bin():
    truth = _truth(100)
    det = truth[:60].copy()  # 40 missed
    fakes = Table({"ra": [10.0, 10.1], "dec": [10.0, 10.1], "x": [-50.0, -60.0], "y": [-50.0, -60.0],
                   "flux": [1e-5, 1e-5], "snr": [6.0, 40.0]})
    from astropy.table import vstack
    report = quality_report(vstack([det, fakes]), truth)
    assert report["overall"]["recall"] == pytest.approx(0.6)
    assert report["overall"]["precision"] == pytest.approx(60 / 62)
    assert sum(r["n_detected"] for r in report["snr_bins"]) == 62
    bin6 = [r for r in report["snr_bins"] if r["snr_min"] <= 6.0 < (r["snr_max"] or np.inf)][0]
    assert bin6["n_detected"] - bin6["n_true_positive"] == 1
    assert sum(r["n_true"] for r in report["flux_bins"]) <= 100


def test_empty_catalogues():
    truth = _truth(10)
    empty = truth[:0]
    report = quality_report(empty, truth)
    assert report["overall"]["recall"] == 0.0 and report["overall"]["precision"] is None
    assert len(match_catalogues(empty, empty)) == 0
