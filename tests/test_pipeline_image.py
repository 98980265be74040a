"""Opening FITS images: memory mapping, HDU choice, degenerate axes, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cianna_otf_server.errors import ImageError, UserInputError
from cianna_otf_server.pipeline import open_image
from cianna_otf_server.pipeline._beam import Beam


def _header(naxis: int = 2) -> fits.Header:
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CRVAL1"], header["CRVAL2"] = 10.0, -30.0
    header["CRPIX1"], header["CRPIX2"] = 32.0, 32.0
    header["CDELT1"], header["CDELT2"] = -1.0 / 3600, 1.0 / 3600
    header["CUNIT1"] = header["CUNIT2"] = "deg"
    if naxis == 4:
        header["CTYPE3"], header["CRVAL3"], header["CRPIX3"], header["CDELT3"] = "FREQ", 1.4e9, 1.0, 1e6
        header["CTYPE4"], header["CRVAL4"], header["CRPIX4"], header["CDELT4"] = "STOKES", 1.0, 1.0, 1.0
    header["BMAJ"], header["BMIN"], header["BPA"] = 3.0 / 3600, 2.0 / 3600, 30.0
    header["BUNIT"] = "JY/BEAM"
    return header


def test_memmap_and_metadata(tmp_path):
    data = np.arange(64 * 48, dtype=np.float32).reshape(48, 64)
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(data, header=_header()).writeto(path)
    image = open_image(path)
    assert image.is_memory_mapped
    assert image.shape == (48, 64) and image.size == (64, 48)
    assert image.wcs is not None and image.wcs.naxis == 2
    beam = image.beam
    assert (beam.bmaj, beam.bmin, beam.bpa) == pytest.approx((3.0 / 3600, 2.0 / 3600, 30.0))
    assert beam.origin == "BMAJ/BMIN/BPA keywords" and not beam.estimated
    assert image.pixel_scale_arcsec == pytest.approx(1.0)
    assert image.beam_area_pix == pytest.approx(np.pi * 3 * 2 / (4 * np.log(2)))
    assert image.path == str(path) and image.hdu == 0
    np.testing.assert_array_equal(image.window(3, 10, 5, 9), data[5:9, 3:10])
    image.close()


def test_degenerate_axes_dropped(tmp_path):
    data = np.random.default_rng(1).normal(size=(1, 1, 40, 50)).astype(np.float32)
    path = tmp_path / "four_d.fits"
    fits.PrimaryHDU(data, header=_header(4)).writeto(path)
    image = open_image(path)
    assert image.shape == (40, 50) and image.is_memory_mapped
    assert image.wcs is not None and image.wcs.naxis == 2
    np.testing.assert_array_equal(np.asarray(image.data), data[0, 0])


def test_cube_refused(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 20, 20), dtype=np.float32)).writeto(path)
    with pytest.raises(ImageError, match="cube"):
        open_image(path)


def test_first_image_hdu_and_extname(tmp_path):
    path = tmp_path / "ext.fits"
    sci = fits.ImageHDU(np.ones((10, 12), dtype=np.float32), name="SCI")
    other = fits.ImageHDU(np.zeros((8, 8), dtype=np.float32), name="RMS")
    fits.HDUList([fits.PrimaryHDU(), sci, other]).writeto(path)
    assert open_image(path).hdu == 1
    chosen = open_image(path, hdu="rms")
    assert chosen.hdu == 2 and chosen.hdu_name == "RMS" and chosen.wcs is None and chosen.beam is None
    assert open_image(path, hdu=1).shape == (10, 12)
    with pytest.raises(ImageError, match="no HDU named"):
        open_image(path, hdu="NOPE")
    with pytest.raises(ImageError, match="does not exist"):
        open_image(path, hdu=7)
    with pytest.raises(ImageError, match="not an image"):
        open_image(path, hdu=0)


def test_in_memory_hdulist():
    hdul = fits.HDUList([fits.PrimaryHDU(np.ones((16, 16), dtype=np.float32), header=_header())])
    image = open_image(hdul)
    assert image.path is None and image.shape == (16, 16) and image.wcs is not None


@pytest.mark.parametrize("content", [b"", b"this is not a FITS file at all" * 10])
def test_bad_files(tmp_path, content):
    path = tmp_path / "bad.fits"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="bad.fits"):
        open_image(path)


def test_missing_file_and_no_image(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.fits")
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]).writeto(path)
    with pytest.raises(ImageError, match="no HDU holds a 2-D image"):
        open_image(path)


# --- units, beams and what the reader could not know -------------------------------------------


def _write(tmp_path, data, header, name="image.fits", extra=()):
    path = tmp_path / name
    fits.HDUList([fits.PrimaryHDU(data, header=header), *extra]).writeto(path)
    return path


def _without_beam(header: fits.Header) -> fits.Header:
    for key in ("BMAJ", "BMIN", "BPA"):
        del header[key]
    return header


def _simulated_without_beam(bunit="JY/BEAM"):
    from cianna_otf_server.sky.simulate import simulate_sky

    hdul, _ = simulate_sky(384, seed=3, pixel_scale=1.0, beam_bmaj=3.0, beam_bmin=3.0, noise=2e-6)
    header = _without_beam(hdul[0].header)
    header["BUNIT"] = bunit
    return hdul[0].data, header


def test_header_beam_unit_and_plane(tmp_path):
    path = _write(tmp_path, np.zeros((1, 1, 40, 50), np.float32), _header(4))
    image = open_image(path)
    assert image.brightness.known and image.brightness.per == "beam" and image.unit == "JY/BEAM"
    assert image.to_jy_per_beam == 1.0
    assert image.beam.origin == "BMAJ/BMIN/BPA keywords"
    assert image.flux_beam_area_pix == pytest.approx(image.beam_area_pix)
    # measured at the image centre, 8 pixels from the reference pixel: north turns by ~0.001 deg
    assert image.beam_pixels == pytest.approx((3.0, 2.0, 30.0), abs=1e-2)
    assert image.plane == (0, 0) and image.warnings == []


def test_unit_override(tmp_path):
    path = _write(tmp_path, np.zeros((32, 32), np.float32), _header())
    image = open_image(path, unit="mJy/beam")
    assert image.unit == "mJy/beam" and image.brightness.to_jy == 1e-3 and image.to_jy_per_beam == 1e-3
    per_pixel = open_image(path, unit="Jy/pixel")
    area = np.pi * 3 * 2 / (4 * np.log(2))
    assert per_pixel.brightness.per == "pixel"
    assert per_pixel.to_jy_per_beam == pytest.approx(area)  # Jy/pixel times pixels per beam


@pytest.mark.parametrize(("unit", "message"), [("K", "brightness temperature"), ("furlongs", "not a unit"),
                                               ("Jy", "per beam")])
def test_unusable_unit_override_is_an_error(tmp_path, unit, message):
    path = _write(tmp_path, np.zeros((32, 32), np.float32), _header())
    with pytest.raises(UserInputError, match=message):
        open_image(path, unit=unit)


def test_unknown_header_unit_gives_a_warning(tmp_path):
    header = _header()
    header["BUNIT"] = "K"
    image = open_image(_write(tmp_path, np.zeros((32, 32), np.float32), header))
    assert not image.brightness.known and image.to_jy_per_beam is None
    assert len(image.warnings) == 1 and "brightness temperature" in image.warnings[0]
    del header["BUNIT"]
    missing = open_image(_write(tmp_path, np.zeros((32, 32), np.float32), header, "nobunit.fits"))
    assert missing.unit == "" and "no BUNIT keyword" in missing.warnings[0]


def test_beam_override_text_and_object(tmp_path):
    path = _write(tmp_path, np.zeros((32, 32), np.float32), _header())
    image = open_image(path, beam="6 5 30")
    assert image.beam.origin == "BEAM parameter" and image.beam.bmaj * 3600 == pytest.approx(6.0)
    assert image.flux_beam_area_pix == pytest.approx(np.pi * 30 / (4 * np.log(2)))
    given = Beam(4 / 3600, 4 / 3600, 0.0, "BEAM parameter")
    assert open_image(path, beam=given).beam is given
    with pytest.raises(UserInputError, match="BEAM"):
        open_image(path, beam="6 5")


def test_no_beam_anywhere_estimates_one_and_says_so(tmp_path):
    data, header = _simulated_without_beam()
    image = open_image(_write(tmp_path, data, header))
    assert image.beam is not None and image.beam.estimated
    assert image.beam.bmaj * 3600 == pytest.approx(3.0, rel=0.15)
    assert image.beam_area_pix == pytest.approx(np.pi * 9 / (4 * np.log(2)), rel=0.3)
    assert image.flux_beam_area_pix is None  # never scale fluxes by a guess
    assert image.to_jy_per_beam == 1.0  # the unit is still known
    assert len(image.warnings) == 1
    text = image.warnings[0]
    assert "integrated fluxes and sizes are not given because the restoring beam is unknown" in text
    assert "estimated from the image" in text and "detection uses" in text
    assert image.is_memory_mapped


def test_per_pixel_unit_with_an_estimated_beam_cannot_give_jy_per_beam(tmp_path):
    data, header = _simulated_without_beam("JY/PIXEL")
    image = open_image(_write(tmp_path, data, header))
    assert image.brightness.per == "pixel" and image.beam.estimated and image.to_jy_per_beam is None


def test_no_beam_without_estimate_or_wcs(tmp_path):
    data, header = _simulated_without_beam()
    skipped = open_image(_write(tmp_path, data, header), estimate=False)
    assert skipped.beam is None and "restoring beam is unknown" in skipped.warnings[0]
    bare = open_image(_write(tmp_path, data, fits.Header({"BUNIT": "JY/BEAM"}), "bare.fits"))
    assert bare.wcs is None and bare.beam is None
    assert "without a celestial WCS" in bare.warnings[0]


def test_casa_beam_table_in_a_four_d_image(tmp_path):
    header = _without_beam(_header(4))
    header["CASAMBM"] = True
    table = fits.BinTableHDU.from_columns([
        fits.Column("BMAJ", "1E", unit="arcsec", array=[7.0, 4.0]),
        fits.Column("BMIN", "1E", unit="arcsec", array=[6.0, 3.0]),
        fits.Column("BPA", "1E", unit="deg", array=[0.0, 45.0]),
        fits.Column("CHAN", "1J", array=[1, 0]),
        fits.Column("POL", "1J", array=[0, 0]),
    ], name="BEAMS")
    path = _write(tmp_path, np.zeros((1, 1, 40, 50), np.float32), header, extra=[table])
    image = open_image(path)
    assert image.plane == (0, 0)
    assert image.beam.origin == "CASA beam table (BEAMS)"
    assert (image.beam.bmaj * 3600, image.beam.bmin * 3600, image.beam.bpa) == pytest.approx((4.0, 3.0, 45.0), rel=1e-6)
    assert image.warnings == [] and image.is_memory_mapped


def test_classic_fluxes_follow_the_unit_and_refuse_an_estimated_beam(tmp_path):
    from cianna_otf_server.models._card import card_from_dict
    from cianna_otf_server.pipeline import detect

    card = card_from_dict({"model": {"name": "classic", "version": "1.0", "family": "classic"},
                           "classic": {"threshold_sigma": 8.0}})
    data, header = _simulated_without_beam()
    header["BMAJ"], header["BMIN"], header["BPA"] = 3 / 3600, 3 / 3600, 0.0
    in_jy = detect(open_image(_write(tmp_path, data, header, "jy.fits")), card)
    in_mjy = detect(open_image(_write(tmp_path, data * 1000, header, "mjy.fits"), unit="mJy/beam"), card)
    assert len(in_jy) > 5 and len(in_mjy) == len(in_jy)
    np.testing.assert_allclose(in_mjy["flux"], in_jy["flux"], rtol=1e-4)
    np.testing.assert_allclose(in_mjy["peak"], in_jy["peak"], rtol=1e-4)
    unscaled = detect(open_image(_write(tmp_path, data, _without_beam(header), "nobeam.fits")), card)
    assert len(unscaled) == len(in_jy)
    # the estimated beam is not used for fluxes: they stay pixel sums, one beam area (in pixels) larger
    np.testing.assert_allclose(np.asarray(unscaled["flux"]) / np.asarray(in_jy["flux"]),
                               np.pi * 9 / (4 * np.log(2)), rtol=1e-4)
