"""End to end: FITS image + model card -> detect() -> valid catalogue (golden YOLO model and classic)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from astropy.io.votable import validate

from cianna_otf_server.catalogue import catalogue_to_votable_bytes
from cianna_otf_server.errors import ModelCardError, RegionError, UserInputError
from cianna_otf_server.models._card import card_from_dict
from cianna_otf_server.pipeline import detect, open_image

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "cianna_golden" / "B" / "B_yolo_sdc1_small.dat"
CORE = ["id", "ra", "dec", "x", "y", "width", "height", "score", "flux", "bmaj", "bmin", "pa"]


def _yolo_card(**tiling):
    if not GOLDEN.exists():
        pytest.skip(f"golden model not found at {GOLDEN}")
    raw = {
        "model": {"name": "golden-b", "version": "0", "family": "yolo-cianna", "default_precision": "fp32"},
        "weights": {"file": str(GOLDEN), "input_bias": 0.1},
        "tiling": {"patch_size": 128, "shift": 96, "offset": 16, **tiling},
        "yolo": {
            "nb_box": 9, "nb_class": 0, "nb_param": 5,
            "priors_w": [6, 6, 6, 6, 6, 6, 12, 9, 24], "priors_h": [6, 6, 6, 6, 6, 6, 9, 12, 24],
            "objectness_thresholds": [0.6] * 9, "nms_threshold": 0.0, "second_nms_threshold": -0.15,
        },
        "parameters": [
            {"name": "flux", "channels": [0], "transform": "exp", "min": -14.5, "max": -6.2, "unit": "Jy"},
            {"name": "bmaj", "channels": [1], "transform": "exp", "min": -0.1, "max": 4.1, "unit": "arcsec"},
            {"name": "bmin", "channels": [2], "transform": "exp", "min": -1.2, "max": 3.4, "unit": "arcsec"},
            {"name": "pa", "channels": [3, 4], "transform": "pa_cos_sin", "unit": "deg"},
        ],
    }
    return card_from_dict(raw)


@pytest.fixture(scope="module")
def sky_file(tmp_path_factory):
    from cianna_otf_server.sky.simulate import write_simulation

    path = tmp_path_factory.mktemp("sky") / "sky.fits"
    write_simulation(path, size=300, seed=3)
    return path


@pytest.fixture(scope="module")
def network():
    from cianna_otf_server.pipeline import prepare_network

    return prepare_network(_yolo_card(), device="cpu", precision="fp32")


def test_yolo_end_to_end(sky_file, network):
    calls = []
    table = detect(sky_file, _yolo_card(), network=network, progress=lambda d, n: calls.append((d, n)))
    assert table.colnames[: len(CORE)] == CORE and "prior" in table.colnames
    assert calls[0] == (0, 16) and calls[-1] == (16, 16)  # 300 px, shift 96, offset 16 -> 4 x 4 patches
    assert len(table) > 0
    assert np.all((table["x"] >= 0.5) & (table["x"] <= 300.5) & (table["y"] >= 0.5) & (table["y"] <= 300.5))
    assert np.all(table["score"] >= 0.6) and np.isfinite(table["ra"]).all()
    assert table.meta["model"] == "golden-b" and table.meta["parameters"]["patches"] == 16
    assert validate(io.BytesIO(catalogue_to_votable_bytes(table)), output=io.StringIO(), xmllint=False)


def test_yolo_loads_network_and_region(sky_file, caplog):
    image = open_image(sky_file)
    centre = image.wcs.pixel_to_world(150, 150)
    with caplog.at_level(logging.WARNING):
        table = detect(
            sky_file, _yolo_card(), region=f"CIRCLE {centre.ra.deg} {centre.dec.deg} {40 / 3600 * 1.0}",
            precision="fp16", threshold=0.5, nms=-0.2,
        )
    assert "fp32" in caplog.text and table.meta["precision"] == "fp32"
    assert table.meta["region"].startswith("CIRCLE")
    assert table.meta["parameters"]["threshold"] == [0.5] * 9 and table.meta["parameters"]["nms"] == -0.2
    if len(table):
        sep = image.wcs.pixel_to_world(table["x"] - 1, table["y"] - 1).separation(centre).arcsec
        assert np.all(sep <= 40.0 + 1e-6)


def test_pixels_region_and_min_size(sky_file, network):
    table = detect(sky_file, _yolo_card(), pixels="101 200 51 150", network=network, min_size=8)
    assert np.all((table["x"] >= 100.5) & (table["x"] < 200.5) & (table["y"] >= 50.5) & (table["y"] < 150.5))
    assert np.all((table["width"] >= 8) & (table["height"] >= 8))


def test_card_network_mismatch(sky_file, network):
    with pytest.raises(ModelCardError, match="patch_size"):
        detect(sky_file, _yolo_card(patch_size=136, shift=120), network=network)


def test_user_errors(sky_file, network):
    with pytest.raises(RegionError):
        detect(sky_file, _yolo_card(), region="CIRCLE 180 45 0.01", network=network)
    with pytest.raises(UserInputError, match="PRECISION"):
        detect(sky_file, _yolo_card(), precision="fp8")


def test_classic_end_to_end(sky_file):
    card = card_from_dict({"model": {"name": "classic", "version": "1.0", "family": "classic"}, "classic": {"threshold_sigma": 5.0}})
    table = detect(sky_file, card)
    assert table.colnames[: len(CORE)] == CORE and len(table) > 0
    assert table["score"].meta["ucd"] == "stat.snr"
    strict = detect(sky_file, card, threshold=20.0)
    assert len(strict) < len(table)
    image = open_image(sky_file)
    centre = image.wcs.pixel_to_world(150, 150)
    inside = detect(sky_file, card, region=f"CIRCLE {centre.ra.deg} {centre.dec.deg} {60 / 3600}")
    assert len(inside) <= len(table)
    if len(inside):
        sep = image.wcs.pixel_to_world(inside["x"] - 1, inside["y"] - 1).separation(centre).arcsec
        assert np.all(sep <= 60.0 + 1e-6)
    assert validate(io.BytesIO(catalogue_to_votable_bytes(table)), output=io.StringIO(), xmllint=False)
