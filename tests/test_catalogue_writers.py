"""Catalogue writers: VOTable validity and metadata, CSV, FITS and DS9 round trips."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse, validate
from regions import Regions

from cianna_otf_server.catalogue import FORMATS, catalogue_to_bytes, catalogue_to_votable_bytes, read_catalogue, write_catalogue
from cianna_otf_server.models._card import ModelCard
from cianna_otf_server.pipeline import classic_catalogue, open_image


def _catalogue(n=4, with_wcs=True):
    header = fits.Header()
    if with_wcs:
        header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
        header["CRVAL1"], header["CRVAL2"] = 0.0, -30.0
        header["CRPIX1"], header["CRPIX2"] = 50.0, 50.0
        header["CDELT1"], header["CDELT2"] = -1.0 / 3600, 1.0 / 3600
    image = open_image(fits.HDUList([fits.PrimaryHDU(np.zeros((100, 100), np.float32), header=header)]))
    rng = np.random.default_rng(5)
    from astropy.table import Table

    sources = Table({
        "x": rng.uniform(0, 99, n), "y": rng.uniform(0, 99, n), "width": rng.uniform(3, 9, n),
        "height": rng.uniform(3, 9, n), "score": rng.uniform(5, 50, n), "flux": rng.uniform(1e-5, 1e-3, n),
        "peak": rng.uniform(1e-5, 1e-3, n), "bmaj": rng.uniform(3, 5, n), "bmin": rng.uniform(2, 3, n),
        "pa": rng.uniform(-90, 90, n), "snr": rng.uniform(5, 50, n),
    })
    card = ModelCard(name="classic", version="1.0", family="classic")
    return classic_catalogue(sources, card, image, parameters={"threshold": 5.0, "min_area": 5})


def test_formats():
    assert set(FORMATS) == {"votable", "csv", "fits", "ds9"}
    with pytest.raises(ValueError):
        catalogue_to_bytes(_catalogue(), "xlsx")


def test_votable_is_valid_and_described():
    table = _catalogue()
    data = catalogue_to_votable_bytes(table)
    report = io.StringIO()
    assert validate(io.BytesIO(data), output=report, xmllint=False)
    assert "no violations" in report.getvalue()
    votable = parse(io.BytesIO(data))
    assert votable.version >= "1.4"
    resource = votable.resources[0]
    infos = {info.name: info.value for info in resource.infos}
    assert infos["QUERY_STATUS"] == "OK"
    assert infos["model"] == "classic" and infos["model_version"] == "1.0"
    assert infos["param_threshold"] == "5.0" and "date" in infos and "software_version" in infos
    assert resource.coordinate_systems[0].system == "ICRS"
    coosys = resource.coordinate_systems[0].ID
    vot_table = resource.tables[0]
    assert vot_table.ID == "result"
    for field in vot_table.fields:
        assert field.ucd and field.description, field.name
    fields = {f.name: f for f in vot_table.fields}
    assert fields["ra"].ref == coosys and fields["dec"].ref == coosys
    assert str(fields["ra"].unit) == "deg" and str(fields["flux"].unit) == "Jy"
    assert fields["bmaj"].ucd == "phys.angSize.smajAxis"


def test_votable_round_trip(tmp_path):
    table = _catalogue()
    path = tmp_path / "cat.xml"
    write_catalogue(table, path, "votable")
    back = read_catalogue(path)
    assert back.colnames == table.colnames
    np.testing.assert_allclose(back["ra"], table["ra"])
    assert back["flux"].unit == table["flux"].unit


def test_empty_votable_is_valid():
    table = _catalogue(n=0)
    assert validate(io.BytesIO(catalogue_to_votable_bytes(table)), output=io.StringIO(), xmllint=False)


def test_csv_round_trip(tmp_path):
    table = _catalogue()
    path = tmp_path / "cat.csv"
    write_catalogue(table, path, "csv")
    back = read_catalogue(path)
    assert back.colnames == table.colnames
    np.testing.assert_allclose(back["dec"], table["dec"])


def test_fits_round_trip(tmp_path):
    table = _catalogue()
    buffer = io.BytesIO()
    write_catalogue(table, buffer, "fits")
    path = tmp_path / "cat.fits"
    path.write_bytes(buffer.getvalue())
    back = read_catalogue(path)
    np.testing.assert_allclose(back["x"], table["x"])
    assert back["flux"].unit == table["flux"].unit
    header = fits.getheader(path, "CATALOGUE")
    assert header["MODEL"] == "classic" and header["TUCD2"] == "pos.eq.ra;meta.main" and header["TCOMM2"]


def test_ds9_parses_back(tmp_path):
    table = _catalogue()
    path = tmp_path / "cat.reg"
    write_catalogue(table, path, "ds9")
    regions = Regions.read(str(path), format="ds9")
    assert len(regions) == len(table)
    first = regions[0]
    assert first.center.ra.deg == pytest.approx(table["ra"][0], abs=1e-6)
    assert first.width.to_value("arcsec") == pytest.approx(table["bmaj"][0], rel=1e-4)
    boxes = Regions.parse(catalogue_to_bytes(table, "ds9", shape="box").decode(), format="ds9")
    assert type(boxes[0]).__name__ == "RectangleSkyRegion"
    assert boxes[0].width.to_value("arcsec") == pytest.approx(table["width"][0], rel=1e-3)  # 1"/px


def test_ds9_without_wcs_uses_pixels():
    table = _catalogue(with_wcs=False)
    regions = Regions.parse(catalogue_to_bytes(table, "ds9").decode(), format="ds9")
    assert len(regions) == len(table)
    assert regions[0].center.x == pytest.approx(table["x"][0] - 1, abs=1e-6)
    assert len(Regions.parse(catalogue_to_bytes(_catalogue(n=0), "ds9").decode(), format="ds9")) == 0
