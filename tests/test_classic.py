"""The classic SEP finder: finds simulated sources, chunking is invisible, NaNs and masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cianna_otf_server.models import ClassicSpec
from cianna_otf_server.pipeline._classic import find_sources_classic
from cianna_otf_server.sky.simulate import simulate_sky

BEAM_AREA = math.pi / (4 * math.log(2)) * 2.5 * 2.5  # 1.5 arcsec FWHM on 0.6 arcsec pixels


@pytest.fixture(scope="module")
def sky():
    hdul, truth = simulate_sky(1024, seed=21)
    return hdul[0].data, truth


@pytest.fixture(scope="module")
def found(sky):
    data, _ = sky
    return find_sources_classic(data, ClassicSpec(), beam_area_pix=BEAM_AREA)


def _match(cat, truth, radius=2.5):
    """Nearest true source (0-based px) for each detection; inf distance when none in radius."""
    tree = cKDTree(np.column_stack([truth["x"] - 1, truth["y"] - 1]))
    return tree.query(np.column_stack([cat["x"], cat["y"]]), distance_upper_bound=radius)


def test_columns_and_units(found):
    for name in ("x", "y", "width", "height", "score", "flux", "peak", "bmaj", "bmin", "pa", "snr"):
        assert name in found.colnames
        assert found[name].meta.get("ucd")
    assert str(found["flux"].unit) == "Jy"
    assert np.all(found["snr"] >= 5.0)
    assert np.all(np.diff(found["snr"]) <= 0)
    assert np.all((found["pa"] >= -90) & (found["pa"] < 90))
    assert np.all(found["bmaj"] >= found["bmin"])


def test_finds_bright_sources_with_high_precision_and_recall(sky, found):
    _, truth = sky
    dist, idx = _match(found, truth)
    matched = np.isfinite(dist)
    precision = matched.mean()
    recovered = np.zeros(len(truth), bool)
    recovered[idx[matched]] = True
    assert precision > 0.95
    assert recovered[truth["snr"] >= 5].mean() > 0.9
    assert recovered[truth["snr"] >= 10].mean() > 0.98
    assert np.median(dist[matched]) < 0.5


def test_measurements_agree_with_truth(sky, found):
    _, truth = sky
    dist, idx = _match(found, truth)
    m = np.isfinite(dist)
    t = truth[idx[m]]
    c = found[m]
    bright = t["snr"] > 20
    assert np.median(c["peak"][bright] / t["peak"][bright]) == pytest.approx(1.0, abs=0.05)
    assert np.median(c["flux"][bright] / t["flux"][bright]) == pytest.approx(1.0, abs=0.1)
    point = bright & ~t["extended"]
    # beam FWHM 2.5 px; isophotal moments of a point source measure about that
    assert 2.0 < np.median(c["bmaj"][point]) < 3.5


def test_position_angle_is_east_of_north():
    # one elongated source, major axis at PA 30 deg (towards north-east: up and to the left)
    hdul, truth = simulate_sky(128, seed=1, n_sources=1, noise=1e-7, flux_min=1e-3, flux_max=1e-3,
                               extended_fraction=1.0, size_median=8.0, size_scatter_dex=0.0,
                               axis_ratio_min=0.3, edge_margin=50)
    cat = find_sources_classic(hdul[0].data, ClassicSpec())
    assert len(cat) == 1
    delta = (cat["pa"][0] - truth["pa"][0] + 90) % 180 - 90
    assert abs(delta) < 5


def test_chunked_processing_gives_the_same_sources(sky, found):
    data, _ = sky
    chunked = find_sources_classic(data, ClassicSpec(), beam_area_pix=BEAM_AREA, chunk_size=256)
    tree = cKDTree(np.column_stack([found["x"], found["y"]]))
    dist, idx = tree.query(np.column_stack([chunked["x"], chunked["y"]]))
    same = dist < 0.5
    assert abs(len(chunked) - len(found)) <= 0.02 * len(found)
    assert same.mean() > 0.98
    assert len(np.unique(idx[same])) == same.sum()  # no duplicates along chunk borders
    assert np.allclose(chunked["flux"][same], found["flux"][idx[same]], rtol=0.05)


def test_origin_offsets_coordinates(sky):
    data, _ = sky
    cut = data[100:400, 200:600]
    a = find_sources_classic(cut, ClassicSpec())
    b = find_sources_classic(cut, ClassicSpec(), origin=(200, 100))
    assert np.allclose(b["x"], a["x"] + 200) and np.allclose(b["y"], a["y"] + 100)


def test_nan_regions_are_handled(sky, found):
    data, _ = sky
    holed = data.copy()
    holed[:, :300] = np.nan
    holed[600:700, 600:700] = np.inf
    cat = find_sources_classic(holed, ClassicSpec(), beam_area_pix=BEAM_AREA)
    assert len(cat) > 0
    assert np.all(np.isfinite(cat["flux"])) and np.all(np.isfinite(cat["snr"]))
    assert np.all(cat["x"] > 300 - 2)
    assert not np.any((cat["x"] > 602) & (cat["x"] < 698) & (cat["y"] > 602) & (cat["y"] < 698))
    # sources away from the holes are unchanged
    tree = cKDTree(np.column_stack([cat["x"], cat["y"]]))
    far = (found["x"] > 400) & ((found["y"] < 550) | (found["y"] > 750)) & (found["snr"] > 10)
    dist, _ = tree.query(np.column_stack([found["x"][far], found["y"][far]]))
    assert (dist < 0.5).mean() > 0.97


def test_all_nan_image_gives_an_empty_table():
    cat = find_sources_classic(np.full((200, 200), np.nan, np.float32), ClassicSpec())
    assert len(cat) == 0 and "flux" in cat.colnames


def test_pixel_mask_is_respected(sky, found):
    data, _ = sky
    yy, xx = np.mgrid[:data.shape[0], :data.shape[1]]
    mask = (xx - 500) ** 2 + (yy - 500) ** 2 < 300 ** 2
    cat = find_sources_classic(data, ClassicSpec(), pixel_mask=mask, beam_area_pix=BEAM_AREA)
    assert 0 < len(cat) < len(found)
    assert np.all((cat["x"] - 500) ** 2 + (cat["y"] - 500) ** 2 < 301 ** 2)
    inside = (found["x"] - 500) ** 2 + (found["y"] - 500) ** 2 < 299 ** 2
    assert len(cat) >= inside.sum()


def test_big_endian_memmap_like_input(sky, found):
    data, _ = sky
    cat = find_sources_classic(data.astype(">f8"), ClassicSpec(), beam_area_pix=BEAM_AREA)
    assert len(cat) == len(found)
    assert np.allclose(cat["x"], found["x"], atol=1e-3)
