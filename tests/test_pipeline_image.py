"""Opening FITS images: memory mapping, HDU choice, degenerate axes, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cianna_otf_server.errors import ImageError
from cianna_otf_server.pipeline import open_image


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
    assert image.beam == pytest.approx((3.0 / 3600, 2.0 / 3600, 30.0))
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
