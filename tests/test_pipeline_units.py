"""Brightness units: the spellings real headers use, exact scale factors, and clear refusals."""

from __future__ import annotations

import pytest

from cianna_otf_server.pipeline._units import parse_brightness_unit


@pytest.mark.parametrize(
    ("text", "per", "to_jy"),
    [
        ("JY/BEAM", "beam", 1.0),
        ("Jy/beam", "beam", 1.0),
        ("JY/BEAM   ", "beam", 1.0),
        ("  Jy / beam ", "beam", 1.0),
        ("Jy beam-1", "beam", 1.0),
        ("Jy/Beam", "beam", 1.0),
        ("Jy per beam", "beam", 1.0),
        ("JANSKY/BEAM", "beam", 1.0),
        ("mJy/beam", "beam", 1e-3),
        ("MJY/BEAM", "beam", 1e-3),  # FITS upper case: milli, never mega
        ("mJy beam-1", "beam", 1e-3),
        ("uJy/beam", "beam", 1e-6),
        ("microJy/beam", "beam", 1e-6),
        ("\u00b5Jy/beam", "beam", 1e-6),
        ("UJY/BEAM", "beam", 1e-6),
        ("JY/PIXEL", "pixel", 1.0),
        ("Jy/pixel", "pixel", 1.0),
        ("Jy/pix", "pixel", 1.0),
        ("mJy/pixel", "pixel", 1e-3),
        ("MJY/PIXEL", "pixel", 1e-3),
    ],
)
def test_flux_density_units_are_known_with_exact_factors(text, per, to_jy):
    unit = parse_brightness_unit(text)
    assert unit.known and unit.problem is None
    assert unit.per == per
    assert unit.to_jy == to_jy  # exact, not approximately: 1e-3 is 1e-3
    assert unit.text == text.strip()


def test_millijansky_factor_is_exactly_one_thousandth():
    assert parse_brightness_unit("mJy/beam").to_jy == 0.001
    assert parse_brightness_unit("mJy/beam").to_jy * 1000.0 == 1.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("K", "brightness temperature"),
        ("Kelvin", "brightness temperature"),
        ("mK", "brightness temperature"),
        ("JY", "without 'per beam' or 'per pixel'"),
        ("Jy", "without 'per beam' or 'per pixel'"),
        ("MJy/sr", "per steradian"),
        ("MJy/beam", "megajansky|brighter than any radio image"),
        ("Jy/beam/pixel", "not a flux density per beam or per pixel"),
        ("m/s", "not a flux density per beam or per pixel"),
    ],
)
def test_units_that_are_not_a_flux_density_per_beam_or_pixel_are_unknown(text, reason):
    unit = parse_brightness_unit(text)
    assert not unit.known
    assert unit.per is None and unit.to_jy is None
    assert unit.problem is not None and repr(text) in unit.problem
    assert any(part in unit.problem for part in reason.split("|"))


@pytest.mark.parametrize("text", [None, "", "   "])
def test_missing_unit_is_unknown(text):
    unit = parse_brightness_unit(text)
    assert not unit.known and unit.text == ""
    assert unit.problem == "the image has no BUNIT keyword: its brightness unit is unknown"


@pytest.mark.parametrize("text", ["garbage", "flux!!", "JY/BEEM", "counts per bucket"])
def test_garbage_is_unknown_and_quoted(text):
    unit = parse_brightness_unit(text)
    assert not unit.known and unit.per is None
    assert f"BUNIT {text!r}" in unit.problem


def test_mixed_case_capital_m_is_mega_and_refused_while_upper_case_is_milli():
    assert parse_brightness_unit("MJY/BEAM").to_jy == 1e-3
    mega = parse_brightness_unit("MJy/beam")
    assert not mega.known and "mJy/beam" in mega.problem


def test_label_names_the_source_of_the_text():
    unit = parse_brightness_unit("K", label="UNIT")
    assert unit.problem.startswith("UNIT 'K' is a brightness temperature")
