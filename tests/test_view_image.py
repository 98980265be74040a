"""How the notebook view displays an image: display limits, stretch and colour map (no server)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from cianna_otf_jupyter._view_image import (
    COLORMAPS,
    LIMITS,
    STRETCHES,
    display_limits,
    display_options,
    view_image,
)


@pytest.fixture(scope="module")
def noise_image(tmp_path_factory):
    from cianna_otf_server.sky.simulate import write_simulation

    path = tmp_path_factory.mktemp("view") / "noise.fits"
    write_simulation(path, 256, seed=1)
    return path


def _background(data: np.ndarray) -> tuple[float, float]:
    finite = data[np.isfinite(data)].astype(np.float64)
    median = float(np.median(finite))
    return median, 1.4826 * float(np.median(np.abs(finite - median)))


def test_default_limits_sit_on_the_noise(noise_image):
    data = view_image(noise_image).hdu.data
    median, sigma = _background(data)
    low, high = display_limits(data)
    # the lower cut just under the background (not at the noise's negative tail), the upper at 99.5%
    assert median - 1.5 * sigma < low < median
    assert high == pytest.approx(float(np.percentile(data[np.isfinite(data)], 99.5)), rel=1e-6)
    assert high > median + 2 * sigma, "the noise spans a good part of the grey levels"
    # much tighter than the full range, where the noise is one grey and only bright sources show
    full_low, full_high = display_limits(data, "minmax")
    assert (full_low, full_high) == (float(np.nanmin(data)), float(np.nanmax(data)))
    assert high - low < 0.5 * (full_high - full_low)


def test_limits_ignore_nan_and_each_choice_works(noise_image):
    data = view_image(noise_image).hdu.data.copy()
    reference = display_limits(data)
    data[:40] = np.nan  # a blanked band (radio mosaics' edges)
    low, high = display_limits(data)
    assert np.isfinite([low, high]).all() and low < high
    assert low == pytest.approx(reference[0], abs=0.5 * abs(reference[1] - reference[0]))
    for _label, value in LIMITS:
        low, high = display_limits(data, value)
        assert np.isfinite([low, high]).all() and low < high, value
    assert display_limits(data, "99.9")[1] > display_limits(data, "99")[1]
    assert display_limits(np.full((8, 8), np.nan)) == (0.0, 1.0)
    flat = display_limits(np.ones((8, 8)))
    assert flat[0] < 1 < flat[1]
    with pytest.raises(ValueError):
        display_limits(data, "bogus")


def test_display_options_are_aladin_lite_image_options(noise_image):
    data = view_image(noise_image).hdu.data
    options = display_options(data)
    assert options["stretch"] == "asinh" and options["colormap"] == "grayscale"
    assert (options["minCut"], options["maxCut"]) == display_limits(data)
    assert {value for _l, value in STRETCHES} == {"linear", "asinh", "sqrt", "log"}
    assert "viridis" in {value for _l, value in COLORMAPS}
    with pytest.raises(ValueError):
        display_options(data, stretch="gamma")
    with pytest.raises(ValueError):
        display_options(data, colormap="nope")


def test_the_view_frames_the_whole_image(noise_image):
    shown = view_image(noise_image)
    with fits.open(noise_image) as hdul:
        header = hdul[0].header
    side = max(shown.hdu.data.shape) * shown.pixel_scale_deg
    assert shown.fov_deg >= side and shown.centre is not None
    assert shown.pixel_scale_deg == pytest.approx(abs(header.get("CDELT2", shown.pixel_scale_deg)))
