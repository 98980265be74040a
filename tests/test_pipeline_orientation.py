"""Image orientation from any celestial WCS: north, parity, position angles, pixel scales."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from cianna_otf_server.pipeline._orientation import (
    east_is_left,
    north_angle,
    pixel_angle,
    pixel_scales_arcsec,
    sky_position_angle,
)

ARCSEC = 1.0 / 3600.0
CENTRE = 99.5  # 0-based centre of a 200 x 200 image whose CRPIX is 100.5


def _wcs(ctype=("RA---SIN", "DEC--SIN"), crval=(150.0, -30.0), **keywords) -> WCS:
    header = fits.Header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 200, 200
    header["CTYPE1"], header["CTYPE2"] = ctype
    header["CRVAL1"], header["CRVAL2"] = crval
    header["CRPIX1"] = header["CRPIX2"] = 100.5
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    for key, value in keywords.items():
        header[key] = value
    if not any(k.startswith(("CD", "CDELT")) for k in keywords):
        header["CDELT1"], header["CDELT2"] = -ARCSEC, ARCSEC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _rotated_cd(angle_deg: float, scale: float = ARCSEC) -> dict[str, float]:
    """CD matrix of a north-up east-left image rotated by CROTA2 = angle (north towards -x)."""
    r = math.radians(angle_deg)
    cdelt1, cdelt2 = -scale, scale
    return {"CD1_1": cdelt1 * math.cos(r), "CD1_2": -cdelt2 * math.sin(r),
            "CD2_1": cdelt1 * math.sin(r), "CD2_2": cdelt2 * math.cos(r)}


def _direct_north_angle(wcs: WCS, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent route: step 0.05 arcsec in ICRS declination and project it with world_to_pixel."""
    here = wcs.pixel_to_world(x, y).icrs
    ahead = SkyCoord(here.ra, here.dec + 0.05 * u.arcsec, frame="icrs")
    xn, yn = wcs.world_to_pixel(ahead)
    return np.degrees(np.arctan2(-(xn - x), yn - y))


def _pa_of_plus_y(wcs: WCS, x: float, y: float) -> float:
    """Position angle east of ICRS north of the pixel +y direction, by SkyCoord.position_angle."""
    a, b = wcs.pixel_to_world(x, y).icrs, wcs.pixel_to_world(x, y + 0.01).icrs
    return float(a.position_angle(b).to_value(u.deg))


def _axis(angle):
    return (np.asarray(angle) + 90.0) % 180.0 - 90.0


def test_north_up_east_left():
    wcs = _wcs()
    assert east_is_left(wcs)
    assert float(north_angle(wcs, CENTRE, CENTRE)) == pytest.approx(0.0, abs=1e-6)
    assert float(sky_position_angle(30.0, wcs, CENTRE, CENTRE)) == pytest.approx(30.0, abs=1e-6)
    assert float(pixel_angle(-75.0, wcs, CENTRE, CENTRE)) == pytest.approx(-75.0, abs=1e-6)
    assert pixel_scales_arcsec(wcs) == pytest.approx((1.0, 1.0), rel=1e-9)


def test_flipped_cdelt1_positive_puts_east_right():
    wcs = _wcs(CDELT1=ARCSEC, CDELT2=ARCSEC)
    assert not east_is_left(wcs)
    assert float(north_angle(wcs, CENTRE, CENTRE)) == pytest.approx(0.0, abs=1e-6)
    # a mirrored image: a major axis drawn 30 deg towards -x lies towards the west
    assert float(sky_position_angle(30.0, wcs, CENTRE, CENTRE)) == pytest.approx(-30.0, abs=1e-6)
    assert float(pixel_angle(30.0, wcs, CENTRE, CENTRE)) == pytest.approx(-30.0, abs=1e-6)


def test_cd_matrix_rotated_by_30_degrees_matches_crota2():
    cd = _wcs(**_rotated_cd(30.0))
    crota = _wcs(CDELT1=-ARCSEC, CDELT2=ARCSEC, CROTA2=30.0)
    for wcs in (cd, crota):
        assert east_is_left(wcs)
        assert float(north_angle(wcs, CENTRE, CENTRE)) == pytest.approx(30.0, abs=1e-6)
        # pixel +y now points 30 deg west of north
        assert float(sky_position_angle(0.0, wcs, CENTRE, CENTRE)) == pytest.approx(-30.0, abs=1e-6)
        assert float(pixel_angle(0.0, wcs, CENTRE, CENTRE)) == pytest.approx(30.0, abs=1e-6)
    assert pixel_scales_arcsec(cd) == pytest.approx((1.0, 1.0), rel=1e-9)


def test_galactic_sin_image_gives_icrs_position_angles():
    wcs = _wcs(ctype=("GLON-SIN", "GLAT-SIN"), crval=(30.0, 5.0))
    x = np.array([0.0, CENTRE, 199.0, 20.0])
    y = np.array([0.0, CENTRE, 199.0, 180.0])
    angles = north_angle(wcs, x, y)
    np.testing.assert_allclose(angles, _direct_north_angle(wcs, x, y), atol=2e-3)
    # Galactic north is ~60 deg from ICRS north here: the answer is the ICRS one, not 0
    assert 55.0 < float(angles[1]) < 70.0
    expected_pa_y = _pa_of_plus_y(wcs, CENTRE, CENTRE)
    assert float(sky_position_angle(0.0, wcs, CENTRE, CENTRE)) == pytest.approx(_axis(expected_pa_y), abs=2e-3)
    assert float(north_angle(wcs, CENTRE, CENTRE)) == pytest.approx((180.0 - expected_pa_y) % 360.0 - 180.0, abs=2e-3)
    assert east_is_left(wcs)


@pytest.mark.parametrize(
    ("ctype", "extra"),
    [
        (("RA---NCP", "DEC--NCP"), {}),
        (("RA---AZP", "DEC--AZP"), {"PV2_1": 2.0, "PV2_2": 30.0}),
        (("RA---ZEA", "DEC--ZEA"), {}),
        (("RA---TAN", "DEC--TAN"), {"RADESYS": "FK4", "EQUINOX": 1950.0}),
        (("RA---CAR", "DEC--CAR"), {"RADESYS": "FK5", "EQUINOX": 2000.0}),
    ],
)
def test_projections_and_frames_agree_with_a_direct_skycoord_computation(ctype, extra):
    # 36 arcsec pixels near declination 60: north turns by several degrees across the image
    wcs = _wcs(ctype=ctype, crval=(150.0, 60.0), CDELT1=-100 * ARCSEC, CDELT2=100 * ARCSEC, **extra)
    x, y = np.meshgrid([0.0, 50.0, CENTRE, 199.0], [0.0, CENTRE, 199.0])
    angles = north_angle(wcs, x, y)
    assert angles.shape == x.shape
    np.testing.assert_allclose(angles, _direct_north_angle(wcs, x, y), atol=5e-3)
    assert np.ptp(angles) > 3.0  # the direction of north really varies across the field
    assert east_is_left(wcs)


def test_ncp_and_azp_north_turns_the_expected_way():
    # east of the centre (towards -x) north leans towards -x as meridians converge to the pole
    for ctype, extra in ((("RA---NCP", "DEC--NCP"), {}), (("RA---AZP", "DEC--AZP"), {"PV2_1": 2.0})):
        wcs = _wcs(ctype=ctype, crval=(150.0, 60.0), CDELT1=-100 * ARCSEC, CDELT2=100 * ARCSEC, **extra)
        left, right = north_angle(wcs, np.array([0.0, 199.0]), np.array([CENTRE, CENTRE]))
        assert left < -1.0 and right > 1.0


def test_angles_round_trip_and_broadcast():
    wcs = _wcs(**_rotated_cd(-40.0))
    x = np.array([[0.0, 50.0], [150.0, 199.0]])
    y = np.array([[10.0, 190.0], [60.0, 120.0]])
    pixel = np.array([[-80.0, 10.0], [45.0, 89.0]])
    sky = sky_position_angle(pixel, wcs, x, y)
    assert sky.shape == (2, 2)
    assert np.all((sky >= -90.0) & (sky < 90.0))
    np.testing.assert_allclose(_axis(pixel_angle(sky, wcs, x, y) - pixel), 0.0, atol=1e-6)
    # a rotation by -40 deg adds -40 deg to pixel angles (north is 40 deg towards +x)
    np.testing.assert_allclose(_axis(sky - pixel), _axis(np.full((2, 2), 40.0)), atol=0.05)


def test_rectangular_pixels():
    wcs = _wcs(CDELT1=-2.0 * ARCSEC, CDELT2=0.5 * ARCSEC)
    assert pixel_scales_arcsec(wcs) == pytest.approx((2.0, 0.5), rel=1e-9)
    # a direction at 45 deg in pixels is mostly east-west on the sky (x pixels are 4x longer)
    pa = float(sky_position_angle(45.0, wcs, CENTRE, CENTRE))
    assert pa == pytest.approx(math.degrees(math.atan2(2.0, 0.5)), abs=1e-5)
