"""Regions of interest: SODA sky shapes and FITS pixel ranges to pixel boxes and masks."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from cianna_otf_server.errors import RegionError
from cianna_otf_server.pipeline import open_image, parse_region

NX, NY = 200, 160
RA0, DEC0 = 10.0, -30.0


def _image(with_wcs: bool = True):
    header = fits.Header()
    if with_wcs:
        header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        header["CRVAL1"], header["CRVAL2"] = RA0, DEC0
        header["CRPIX1"], header["CRPIX2"] = 100.0, 80.0  # 1-based: pixel (99, 79) 0-based
        header["CDELT1"], header["CDELT2"] = -1.0 / 3600, 1.0 / 3600
    return open_image(fits.HDUList([fits.PrimaryHDU(np.zeros((NY, NX), np.float32), header=header)]))


def _pixel_sky(image, box):
    yy, xx = np.mgrid[box.y0: box.y1, box.x0: box.x1]
    return WCS(image.header).celestial.pixel_to_world(xx, yy)


def test_no_region_is_whole_image():
    box = parse_region(None, None, _image())
    assert (box.x0, box.x1, box.y0, box.y1) == (0, NX, 0, NY)
    assert box.mask is None and box.kind == "image"


@pytest.mark.parametrize("text", ["11 20 31 50", "PIXELS=11 20 31 50", "pixels 20 11 50 31"])
def test_pixels_fits_one_based_inclusive(text):
    box = parse_region(None, text, _image())
    assert (box.x0, box.x1, box.y0, box.y1) == (10, 20, 30, 50)
    assert box.width == 10 and box.height == 20 and box.mask is None
    assert box.contains([10, 19, 20, 9], [30, 49, 30, 30]).tolist() == [True, True, False, False]


def test_pixels_infinite_and_clipped():
    box = parse_region("PIXELS=-Inf +Inf 150 1000", None, _image())
    assert (box.x0, box.x1, box.y0, box.y1) == (0, NX, 149, NY)


@pytest.mark.parametrize(
    "text, match",
    [("1 2 3", "4 numbers"), ("1.5 3 4 5", "whole pixel"), ("a 2 3 4", "not a number"), ("500 600 1 10", "does not overlap")],
)
def test_pixels_errors(text, match):
    with pytest.raises(RegionError, match=match):
        parse_region(None, text, _image())


@pytest.mark.parametrize("prefix", ["CIRCLE ", "circle=", "POS=CIRCLE "])
def test_circle_box_and_mask(prefix):
    image = _image()
    radius = 20.0 / 3600
    box = parse_region(f"{prefix}{RA0} {DEC0} {radius}", None, image)
    assert box.kind == "circle" and box.has_shape
    # centre at 0-based (99, 79); radius 20 px
    assert box.x0 == 99 - 20 and box.x1 == 99 + 21 and box.y0 == 79 - 20 and box.y1 == 79 + 21
    sep = _pixel_sky(image, box).separation(SkyCoord(RA0, DEC0, unit="deg")).deg
    np.testing.assert_array_equal(box.mask, sep <= radius)
    yy, xx = np.mgrid[box.y0: box.y1, box.x0: box.x1]
    np.testing.assert_array_equal(box.contains(xx, yy), box.mask)
    assert not box.contains(0, 0)


def test_circle_partly_outside_is_clipped():
    image = _image()
    corner = WCS(image.header).celestial.pixel_to_world(0, 0)
    box = parse_region(f"CIRCLE {corner.ra.deg} {corner.dec.deg} {10 / 3600}", None, image)
    assert box.x0 == 0 and box.y0 == 0 and box.x1 == 11 and box.y1 == 11


@pytest.mark.parametrize(
    "text, match",
    [
        ("CIRCLE 10 -30 0", "radius"),
        ("CIRCLE 10 -30 -1", "radius"),
        ("CIRCLE 10 -30", "3 numbers"),
        ("CIRCLE 10 -95 0.1", "declination"),
        ("CIRCLE 50 20 0.01", "does not overlap"),
        ("CIRCLE ten -30 0.1", "not a number"),
        ("SQUARE 1 2 3", "Cannot read the region"),
        ("POLYGON 10 -30 10.01 -30", "at least 3 vertices"),
        ("POLYGON 10 -30 10.01 -30 10", "even number"),
        ("RANGE 1 2 3", "4 numbers"),
        ("POS=RANGE 100 110 40 50", "does not overlap"),
    ],
)
def test_sky_errors(text, match):
    with pytest.raises(RegionError, match=match):
        parse_region(text, None, _image())


def test_sky_region_without_wcs():
    with pytest.raises(RegionError, match="WCS"):
        parse_region("CIRCLE 10 -30 0.01", None, _image(with_wcs=False))
    assert parse_region(None, "1 10 1 10", _image(with_wcs=False)).width == 10


def test_polygon_mask():
    image = _image()
    wcs = WCS(image.header).celestial
    vertices = wcs.pixel_to_world(np.array([20.0, 150.0, 60.0]), np.array([30.0, 40.0, 140.0]))
    text = "polygon " + " ".join(f"{c.ra.deg:.10f} {c.dec.deg:.10f}" for c in vertices)
    box = parse_region(text, None, image)
    assert box.kind == "polygon"
    # pixel centres exactly on a vertex may fall either side
    assert box.x0 in (20, 21) and box.y0 in (30, 31) and box.x1 in (150, 151) and box.y1 in (140, 141)
    # centroid inside, points outside each edge
    assert box.contains(76.0, 70.0)
    assert not box.contains(25.0, 130.0) and not box.contains(145.0, 120.0)
    assert box.mask.sum() == pytest.approx(0.5 * abs((150 - 20) * (140 - 30) - (60 - 20) * (40 - 30)), rel=0.03)


def test_range_mask_and_infinite():
    image = _image()
    text = f"POS=RANGE {RA0 - 0.005} {RA0 + 0.01} {DEC0 - 0.01} {DEC0 + 0.002}"
    box = parse_region(text, None, image)
    sky = _pixel_sky(image, box)
    expected = (sky.ra.deg >= RA0 - 0.005) & (sky.ra.deg <= RA0 + 0.01) & (sky.dec.deg >= DEC0 - 0.01) & (sky.dec.deg <= DEC0 + 0.002)
    np.testing.assert_array_equal(box.mask, expected)
    assert box.mask.any(axis=0).all() and box.mask.any(axis=1).all()  # box is tight
    whole = parse_region("range -Inf +Inf -Inf +Inf", None, image)
    assert (whole.x0, whole.x1, whole.y0, whole.y1) == (0, NX, 0, NY) and whole.mask.all()


def test_range_crossing_ra_zero():
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRVAL1"], header["CRVAL2"] = 0.0, 0.0
    header["CRPIX1"], header["CRPIX2"] = 100.0, 80.0
    header["CDELT1"], header["CDELT2"] = -1.0 / 3600, 1.0 / 3600
    image = open_image(fits.HDUList([fits.PrimaryHDU(np.zeros((NY, NX), np.float32), header=header)]))
    box = parse_region("RANGE 359.99 0.005 -1 1", None, image)
    # 0.015 deg = 54 px wide around x = 99, crossing RA 0
    assert 52 <= box.width <= 56 and box.height == NY


def test_sky_and_pixels_intersect():
    box = parse_region(f"CIRCLE {RA0} {DEC0} {20 / 3600}", "1 100 1 200", _image())
    assert box.x1 == 100 and box.x0 == 79 and box.mask.shape == (box.height, box.width)
    with pytest.raises(RegionError, match="do not overlap"):
        parse_region(f"CIRCLE {RA0} {DEC0} {5 / 3600}", "1 10 1 10", _image())
