"""Catalogue tables: parameter transforms, columns, units, UCDs, sky positions, metadata."""

from __future__ import annotations

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from cianna_otf_server.models._card import ModelCard, ParameterSpec, YoloSpec
from cianna_otf_server.pipeline import Boxes, CORE_COLUMNS, classic_catalogue, open_image, parameter_values, yolo_catalogue

CORE = ["id", "ra", "dec", "x", "y", "width", "height", "score", "flux", "bmaj", "bmin", "pa"]

PARAMS = (
    ParameterSpec("flux", (0,), "exp", -14.5, -6.2, "Jy", "phot.flux.density;em.radio"),
    ParameterSpec("bmaj", (1,), "linear", 0.0, 10.0, "pix"),
    ParameterSpec("bmin", (2,), "log10", -1.0, 1.0, "arcsec"),
    ParameterSpec("pa", (3, 4), "pa_cos_sin", unit="deg"),
    ParameterSpec("spectral_index", (5,), "linear", -2.0, 1.0, "", "spect.index", "Spectral index"),
)


def _card(parameters=PARAMS) -> ModelCard:
    yolo = YoloSpec(nb_box=1, nb_class=0, nb_param=6, priors_w=(6,), priors_h=(6,), objectness_thresholds=(0.5,))
    return ModelCard(name="test-model", version="2.1", family="yolo-cianna", yolo=yolo, parameters=parameters)


def _image():
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CRVAL1"], header["CRVAL2"] = 0.0, -30.0
    header["CRPIX1"], header["CRPIX2"] = 50.0, 50.0
    header["CDELT1"], header["CDELT2"] = -2.0 / 3600, 2.0 / 3600
    return open_image(fits.HDUList([fits.PrimaryHDU(np.zeros((100, 100), np.float32), header=header)]))


def _boxes(n=3):
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0, 80, n)
    y0 = rng.uniform(0, 80, n)
    params = rng.uniform(0, 1, size=(n, 6))
    return Boxes(x0, y0, x0 + 8, y0 + 6, rng.uniform(0.5, 1, n), rng.uniform(0, 1, n), np.zeros((n, 0)),
                 params, np.zeros(n, int), np.zeros(n, int), np.zeros(n, int))


def test_parameter_transforms():
    p = np.array([[0.0, 0.5, 1.0, 1.0, 1.0, 0.5], [1.0, 0.0, 0.0, 0.0, 0.5, 0.0], [0.5, 1.0, 0.5, 1.0, 0.5, 1.0]])
    values = parameter_values(p, PARAMS)
    np.testing.assert_allclose(values["flux"], np.exp([-14.5, -6.2, -10.35]))
    np.testing.assert_allclose(values["bmaj"], [5.0, 0.0, 10.0])
    np.testing.assert_allclose(values["bmin"], [10.0, 0.1, 1.0])
    # (c, s) = (1, 1): atan2(1, 1) = 45; (0, 0.5): atan2(0, 0) = 0; (1, 0.5): 0
    np.testing.assert_allclose(values["pa"], [45.0, 0.0, 0.0])
    np.testing.assert_allclose(parameter_values(np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]), PARAMS)["pa"], [-90.0])
    np.testing.assert_allclose(values["spectral_index"], [-0.5, -2.0, 1.0])


def test_yolo_catalogue_columns_units_ucds():
    image, boxes = _image(), _boxes()
    table = yolo_catalogue(boxes, _card(), image, precision="fp32", parameters={"threshold": 0.5})
    assert table.colnames[: len(CORE)] == CORE
    assert {"probability", "prior", "spectral_index"} <= set(table.colnames)
    for name in CORE:
        unit, ucd, _ = CORE_COLUMNS[name]
        assert table[name].meta["ucd"] == ucd
        assert table[name].description
        assert (table[name].unit or u.dimensionless_unscaled) == (u.Unit(unit) if unit else u.dimensionless_unscaled)
    assert table["spectral_index"].meta["ucd"] == "spect.index"
    assert list(table["id"]) == [1, 2, 3]
    assert np.all(np.diff(table["score"]) <= 0)
    # x, y are FITS 1-based box centres
    order = np.argsort(-boxes.objectness)
    np.testing.assert_allclose(table["x"], boxes.x_center[order] + 1)
    np.testing.assert_allclose(table["width"], 8.0)
    # sky positions from the WCS (0-based pixel -> ICRS)
    sky = WCS(image.header).pixel_to_world(boxes.x_center[order], boxes.y_center[order])
    np.testing.assert_allclose(table["ra"], sky.ra.deg, atol=1e-9)
    np.testing.assert_allclose(table["dec"], sky.dec.deg, atol=1e-9)
    # bmaj card unit 'pix' -> arcsec through the 2"/px scale
    values = parameter_values(boxes.params[order], PARAMS)
    np.testing.assert_allclose(table["bmaj"], values["bmaj"] * 2.0, rtol=1e-9)
    meta = table.meta
    assert meta["model"] == "test-model" and meta["model_version"] == "2.1" and meta["model_family"] == "yolo-cianna"
    assert meta["precision"] == "fp32" and meta["parameters"] == {"threshold": 0.5}
    assert meta["software"] == "cianna-otf" and meta["date"].endswith("Z")
    assert meta["pixel_scale"] == pytest.approx(2.0)


def test_missing_parameters_are_nan_and_no_wcs():
    card = _card(parameters=())
    image = open_image(fits.HDUList([fits.PrimaryHDU(np.zeros((100, 100), np.float32))]))
    table = yolo_catalogue(_boxes(2), card, image)
    assert np.isnan(table["flux"]).all() and np.isnan(table["pa"]).all()
    assert np.isnan(table["ra"]).all() and len(table) == 2


def test_empty_catalogue():
    table = yolo_catalogue(Boxes.empty(0, 6), _card(), _image())
    assert len(table) == 0 and table.colnames[: len(CORE)] == CORE


def test_classic_catalogue():
    sources = Table({
        "x": [10.0, 20.0], "y": [30.0, 40.0], "width": [5.0, 7.0], "height": [4.0, 6.0], "score": [8.0, 30.0],
        "flux": [1e-4, 2e-4], "peak": [5e-5, 9e-5], "bmaj": [3.0, 4.0], "bmin": [2.0, 2.5], "pa": [10.0, -20.0],
        "snr": [8.0, 30.0],
    })
    card = ModelCard(name="classic", version="1", family="classic")
    table = classic_catalogue(sources, card, _image(), parameters={"threshold": 5.0})
    assert table.colnames[: len(CORE)] == CORE and {"peak", "snr"} <= set(table.colnames)
    assert table["score"].meta["ucd"] == "stat.snr"
    assert list(table["x"]) == [21.0, 11.0]  # sorted by score, 1-based
    np.testing.assert_allclose(table["bmaj"], [8.0, 6.0])  # px FWHM * 2"/px
    assert table["peak"].unit == u.Jy / u.beam
