"""The restoring beam: every header style, a user's text, geometry on the pixel grid, estimation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from cianna_otf_server.errors import UserInputError
from cianna_otf_server.pipeline._beam import Beam, estimate_beam, parse_beam, read_beam
from cianna_otf_server.sky.simulate import simulate_sky

ARCSEC = 1.0 / 3600.0
AIPS_LINE = "AIPS   CLEAN BMAJ=  1.5000E-03 BMIN=  1.2000E-03 BPA=  25.00"


def _header(**keywords) -> fits.Header:
    header = fits.Header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 64, 64
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CRVAL1"], header["CRVAL2"] = 10.0, -30.0
    header["CRPIX1"] = header["CRPIX2"] = 32.5
    header["CDELT1"], header["CDELT2"] = -ARCSEC, ARCSEC
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    for key, value in keywords.items():
        header[key] = value
    return header


def _wcs(header: fits.Header) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def _beams_table(rows, axis_unit="arcsec") -> fits.BinTableHDU:
    """A CASA per-plane beam table; rows are (chan, pol, bmaj, bmin, bpa)."""
    chan, pol, bmaj, bmin, bpa = (np.array(c) for c in zip(*rows))
    table = fits.BinTableHDU.from_columns([
        fits.Column("BMAJ", "1E", unit=axis_unit, array=bmaj),
        fits.Column("BMIN", "1E", unit=axis_unit, array=bmin),
        fits.Column("BPA", "1E", unit="deg", array=bpa),
        fits.Column("CHAN", "1J", array=chan),
        fits.Column("POL", "1J", array=pol),
    ], name="BEAMS")
    table.header["NCHAN"], table.header["NPOL"] = int(chan.max()) + 1, int(pol.max()) + 1
    return table


# --- header styles ------------------------------------------------------------------------------


def test_bmaj_keywords_in_degrees():
    beam = read_beam(_header(BMAJ=6 * ARCSEC, BMIN=5 * ARCSEC, BPA=30.0))
    assert (beam.bmaj, beam.bmin, beam.bpa) == pytest.approx((6 * ARCSEC, 5 * ARCSEC, 30.0))
    assert beam.origin == "BMAJ/BMIN/BPA keywords" and not beam.estimated


def test_keywords_missing_bpa_swapped_axes_and_bad_values():
    assert read_beam(_header(BMAJ=6 * ARCSEC, BMIN=5 * ARCSEC)).bpa == 0.0
    swapped = read_beam(_header(BMAJ=5 * ARCSEC, BMIN=6 * ARCSEC, BPA=30.0))
    # the same ellipse: 6" along PA 120 = -60
    assert (swapped.bmaj, swapped.bmin, swapped.bpa) == pytest.approx((6 * ARCSEC, 5 * ARCSEC, -60.0))
    assert read_beam(_header(BMAJ=0.0, BMIN=0.0, BPA=0.0)) is None
    assert read_beam(_header(BMAJ=-1.0, BMIN=1e-3)) is None
    assert read_beam(_header()) is None


def test_bad_keywords_fall_through_to_aips_history():
    header = _header(BMAJ=0.0, BMIN=0.0)
    header.add_history(AIPS_LINE)
    assert read_beam(header).origin == "AIPS CLEAN history"


def test_aips_clean_history_only():
    header = _header()
    header.add_history("AIPS   IMAGR NITER=  10000 GAIN=  0.1000")
    header.add_history(AIPS_LINE)
    beam = read_beam(header)
    assert beam.origin == "AIPS CLEAN history"
    assert (beam.bmaj, beam.bmin, beam.bpa) == pytest.approx((1.5e-3, 1.2e-3, 25.0))
    assert beam.bmaj * 3600 == pytest.approx(5.4)


def test_aips_history_last_line_wins_and_variants():
    header = _header()
    header.add_history("AIPS   CLEAN BMAJ=  9.0000E-03 BMIN=  9.0000E-03 BPA=   0.00")
    header.add_history("AIPS IMAGR BMAJ=2.0000D-03 BMIN=1.0000D-03 BPA=-45.5")  # IMAGR, tight, Fortran D
    assert (read_beam(header).bmaj, read_beam(header).bmin, read_beam(header).bpa) == pytest.approx((2e-3, 1e-3, -45.5))
    no_pa = _header()
    no_pa.add_history("AIPS   CLEAN   BMAJ =  1.0000E-03   BMIN =  8.0000E-04")
    assert (read_beam(no_pa).bmaj, read_beam(no_pa).bpa) == pytest.approx((1e-3, 0.0))


def test_aips_history_read_from_a_file(tmp_path):
    from cianna_otf_server.pipeline import open_image

    header = _header(BUNIT="JY/BEAM")
    header.add_history(AIPS_LINE)
    path = tmp_path / "aips.fits"
    fits.PrimaryHDU(np.zeros((64, 64), np.float32), header=header).writeto(path)
    image = open_image(path)
    assert image.beam.origin == "AIPS CLEAN history" and image.beam.bmaj == pytest.approx(1.5e-3)
    assert image.warnings == []
    assert image.flux_beam_area_pix == pytest.approx(math.pi * 5.4 * 4.32 / (4 * math.log(2)))


def test_casa_beams_table_picks_the_row_of_the_plane():
    # rows deliberately out of order: picking the first row would be wrong
    rows = [(2, 0, 7.0, 6.0, 20.0), (1, 1, 9.0, 9.0, 0.0), (0, 0, 5.0, 4.0, 10.0), (1, 0, 6.0, 5.0, -15.0)]
    hdul = fits.HDUList([fits.PrimaryHDU(header=_header(CASAMBM=True)), _beams_table(rows)])
    header = hdul[0].header
    first = read_beam(header, hdul, plane=0)
    assert first.origin == "CASA beam table (BEAMS)"
    assert (first.bmaj, first.bmin, first.bpa) == pytest.approx((5 * ARCSEC, 4 * ARCSEC, 10.0), rel=1e-6)
    second = read_beam(header, hdul, plane=1)
    assert (second.bmaj * 3600, second.bmin * 3600, second.bpa) == pytest.approx((6.0, 5.0, -15.0), rel=1e-6)
    other_pol = read_beam(header, hdul, plane=1, pol=1)
    assert other_pol.bmaj * 3600 == pytest.approx(9.0)
    assert read_beam(header, hdul, plane=5) is None  # no row for that plane: no guess
    assert read_beam(header) is None  # the table is only seen with the HDUList


def test_casa_beams_table_units_are_converted():
    hdul = fits.HDUList([fits.PrimaryHDU(header=_header(CASAMBM=True)),
                         _beams_table([(0, 0, 0.1, 0.05, 5.0)], axis_unit="arcmin")])
    beam = read_beam(hdul[0].header, hdul)
    assert (beam.bmaj * 3600, beam.bmin * 3600) == pytest.approx((6.0, 3.0), rel=1e-6)


def test_keywords_come_before_the_casa_table():
    hdul = fits.HDUList([fits.PrimaryHDU(header=_header(BMAJ=3 * ARCSEC, BMIN=3 * ARCSEC)),
                         _beams_table([(0, 0, 7.0, 6.0, 20.0)])])
    assert read_beam(hdul[0].header, hdul).origin == "BMAJ/BMIN/BPA keywords"


# --- user text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["6 5 30", "6,5,30", " 6, 5, 30 ", "6arcsec 5arcsec 30deg",
                                  "0.0016667deg 0.0013889deg 30deg", '6" 5" 30deg',
                                  "6 arcsec, 5 arcsec, 30 deg", "0.1arcmin 5 0.5235988rad"])
def test_parse_beam_accepts_numbers_and_quantities(text):
    beam = parse_beam(text)
    assert beam.origin == "BEAM parameter" and not beam.estimated
    assert (beam.bmaj * 3600, beam.bmin * 3600, beam.bpa) == pytest.approx((6.0, 5.0, 30.0), rel=1e-4)


def test_parse_beam_wraps_the_position_angle():
    assert parse_beam("6 5 150").bpa == pytest.approx(-30.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("6 5", "2 values, not 3"),
        ("6 5 30 1", "4 values, not 3"),
        ("", "0 values, not 3"),
        ("six five thirty", "not a number or an angle"),
        ("6 5 30kg", "not a number or an angle"),
        ("-6 5 30", "must be positive"),
        ("6 0 30", "must be positive"),
        ("5 6 30", "major axis first"),
        ("nan 5 30", "not a finite number"),
    ],
)
def test_parse_beam_refuses_bad_text(text, message):
    with pytest.raises(UserInputError, match=message):
        parse_beam(text)


# --- geometry ----------------------------------------------------------------------------------


def test_area_in_pixels():
    beam = Beam(6 * ARCSEC, 5 * ARCSEC, 30.0, "BEAM parameter")
    assert beam.area_pixels(1.0) == pytest.approx(math.pi * 30 / (4 * math.log(2)))
    assert beam.area_pixels(2.0) == pytest.approx(math.pi * 7.5 / (4 * math.log(2)))


def test_in_pixels_north_up_flipped_rotated_and_rectangular():
    beam = Beam(6 * ARCSEC, 4 * ARCSEC, 30.0, "BEAM parameter")
    assert beam.in_pixels(_wcs(_header())) == pytest.approx((6.0, 4.0, 30.0), abs=1e-6)
    flipped = _wcs(_header(CDELT1=ARCSEC))
    assert beam.in_pixels(flipped) == pytest.approx((6.0, 4.0, -30.0), abs=1e-6)
    r = math.radians(30.0)
    rotated = _header(CD1_1=-ARCSEC * math.cos(r), CD1_2=-ARCSEC * math.sin(r),
                      CD2_1=-ARCSEC * math.sin(r), CD2_2=ARCSEC * math.cos(r))
    del rotated["CDELT1"], rotated["CDELT2"]
    assert beam.in_pixels(_wcs(rotated)) == pytest.approx((6.0, 4.0, 60.0), abs=1e-6)
    # 2" x 0.5" pixels: a north-south 6" x 4" beam spans 12 pixels along y and 2 along x
    tall = Beam(6 * ARCSEC, 4 * ARCSEC, 0.0, "BEAM parameter")
    rectangular = _wcs(_header(CDELT1=-2 * ARCSEC, CDELT2=0.5 * ARCSEC))
    assert tall.in_pixels(rectangular) == pytest.approx((12.0, 2.0, 0.0), abs=1e-6)


def test_galactic_image_beam_is_measured_from_galactic_north():
    header = _header(CTYPE1="GLON-SIN", CTYPE2="GLAT-SIN", CRVAL1=30.0, CRVAL2=5.0)
    wcs = _wcs(header)
    beam = Beam(6 * ARCSEC, 4 * ARCSEC, 0.0, "BMAJ/BMIN/BPA keywords")
    assert beam.in_pixels(wcs) == pytest.approx((6.0, 4.0, 0.0), abs=1e-6)  # BPA is Galactic: along +y
    icrs = beam.icrs_position_angle(wcs)
    # an independent route: the ICRS position angle of the pixel +y direction at the centre
    a, b = wcs.pixel_to_world(31.5, 31.5).icrs, wcs.pixel_to_world(31.5, 31.51).icrs
    expected = (a.position_angle(b).deg + 90.0) % 180.0 - 90.0
    assert icrs == pytest.approx(expected, abs=1e-3)
    assert abs(icrs) > 50.0
    equatorial = Beam(6 * ARCSEC, 4 * ARCSEC, 25.0, "BMAJ/BMIN/BPA keywords")
    assert equatorial.icrs_position_angle(_wcs(_header())) == pytest.approx(25.0, abs=1e-3)


# --- estimation ----------------------------------------------------------------------------------


def _simulated(bmaj_px, bmin_px, pa, correlated, size=512, seed=7, **options):
    scale = 1.5
    hdul, truth = simulate_sky(size, seed=seed, pixel_scale=scale, beam_bmaj=bmaj_px * scale,
                               beam_bmin=bmin_px * scale, beam_pa=pa, noise=2e-6,
                               correlated_noise=correlated, **options)
    return hdul[0], scale


@pytest.mark.parametrize("correlated", [True, False], ids=["correlated", "white"])
@pytest.mark.parametrize(("bmaj_px", "bmin_px", "pa"), [(2.0, 2.0, 0.0), (3.0, 2.2, 30.0), (5.0, 5.0, 0.0),
                                                        (6.0, 4.0, -50.0), (8.0, 8.0, 0.0)])
def test_estimate_beam_within_15_percent(bmaj_px, bmin_px, pa, correlated):
    hdu, scale = _simulated(bmaj_px, bmin_px, pa, correlated)
    beam = estimate_beam(hdu.data, scale, wcs=_wcs(hdu.header))  # reads pixels only, never BMAJ
    assert beam is not None and beam.estimated and beam.origin == "estimated from the image"
    assert beam.bmaj * 3600 / scale == pytest.approx(bmaj_px, rel=0.15)
    assert beam.bmin * 3600 / scale == pytest.approx(bmin_px, rel=0.15)
    if bmaj_px / bmin_px > 1.3:
        assert abs((beam.bpa - pa + 90) % 180 - 90) < 10.0


@pytest.mark.parametrize("correlated", [True, False], ids=["correlated", "white"])
def test_estimate_beam_in_a_crowded_field_of_mostly_resolved_sources(correlated):
    hdu, scale = _simulated(4.0, 3.0, 40.0, correlated, size=768, density=20000.0,
                            extended_fraction=0.7, size_median=9.0)
    beam = estimate_beam(hdu.data, scale)
    assert beam.bmaj * 3600 / scale == pytest.approx(4.0, rel=0.15)
    assert beam.bmin * 3600 / scale == pytest.approx(3.0, rel=0.15)


def test_estimate_beam_from_correlated_noise_alone():
    hdu, scale = _simulated(4.0, 3.0, 20.0, True, n_sources=0)
    beam = estimate_beam(hdu.data, scale)
    assert beam.bmaj * 3600 / scale == pytest.approx(4.0, rel=0.1)
    assert beam.bmin * 3600 / scale == pytest.approx(3.0, rel=0.1)


def test_estimate_beam_position_angle_follows_the_wcs():
    # the same sky mirrored left-right: pixel angles change sign, the sky PA must not
    hdu, scale = _simulated(6.0, 3.0, 30.0, False)
    mirrored = hdu.header.copy()
    mirrored["CDELT1"] = -mirrored["CDELT1"]
    data = np.ascontiguousarray(hdu.data[:, ::-1])
    assert abs(estimate_beam(data, scale, wcs=_wcs(mirrored)).bpa - 30.0) < 5.0
    assert abs(estimate_beam(data, scale).bpa + 30.0) < 5.0  # without a WCS: assumed north-up east-left


def test_estimate_beam_position_angle_is_that_of_the_image_frame():
    hdu, scale = _simulated(6.0, 3.0, 30.0, False)
    galactic = hdu.header.copy()
    galactic["CTYPE1"], galactic["CTYPE2"] = "GLON-SIN", "GLAT-SIN"
    del galactic["RADESYS"]
    beam = estimate_beam(hdu.data, scale, wcs=_wcs(galactic))
    assert abs(beam.bpa - 30.0) < 5.0  # like a header BPA: from the image's (Galactic) north
    assert abs(beam.icrs_position_angle(_wcs(galactic)) - 30.0) > 30.0


def test_estimate_beam_returns_none_when_it_cannot_tell():
    white, scale = _simulated(3.0, 3.0, 0.0, False, n_sources=0)
    assert estimate_beam(white.data, scale) is None  # white noise and no sources
    assert estimate_beam(np.full((300, 300), np.nan, np.float32), 1.0) is None
    assert estimate_beam(np.zeros((300, 300), np.float32), 1.0) is None
    sky, _ = _simulated(3.0, 3.0, 0.0, True)
    assert estimate_beam(sky.data, None) is None  # no pixel scale, no WCS


def test_estimate_beam_is_nan_safe_and_byte_order_blind():
    hdu, scale = _simulated(3.0, 3.0, 0.0, False, size=768)
    data = hdu.data.astype(">f8")
    yy, xx = np.mgrid[:768, :768]
    data[(xx - 384) ** 2 + (yy - 384) ** 2 > 330 ** 2] = np.nan  # outside a primary beam
    beam = estimate_beam(data, scale)
    assert beam.bmaj * 3600 / scale == pytest.approx(3.0, rel=0.15)


class _CountingImage:
    """An image that records every window read from it (stands in for a huge memory map)."""

    def __init__(self, data):
        self._data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        self.reads.append(key)
        return self._data[key]


def test_estimate_beam_reads_only_a_bounded_central_window():
    hdu, scale = _simulated(3.0, 3.0, 0.0, False, size=2600)
    image = _CountingImage(hdu.data)
    beam = estimate_beam(image, scale)
    assert beam.bmaj * 3600 / scale == pytest.approx(3.0, rel=0.15)
    assert len(image.reads) == 1
    rows, cols = image.reads[0]
    assert rows.stop - rows.start <= 2048 and cols.stop - cols.start <= 2048
    assert rows.start == (2600 - 2048) // 2 and cols.start == (2600 - 2048) // 2
