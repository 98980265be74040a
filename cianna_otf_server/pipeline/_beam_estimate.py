"""Measure the restoring beam of an image from its pixels, in the pixel frame.

Used by `estimate_beam` (in ``_beam``) for images whose headers record no beam. Two independent
measurements are made on a bounded central window; both only ever err on the wide side
(resolved sources, faint sources leaking into the noise), so the narrower answer is kept:

* *sources*: elliptical Gaussians are fitted (least squares, with a free offset) to isolated,
  unblended sources of peak signal-to-noise 15 or more. Unresolved sources have exactly the
  beam's shape and form the smallest group; the beam is the median shape of the sources whose
  size lies within 15 % of the 20th percentile of all the well-fitted sizes.
* *noise*: the autocorrelation of the pixels away from sources (signal-to-noise clipped at 4 and
  grown), computed by FFT and corrected for the masked pixels, is fitted by a Gaussian outside
  zero lag. It measures the beam when the noise is correlated on the beam scale, as in a
  restored interferometric image; white noise (nearly no correlation at one pixel lag) gives
  no answer.

All sizes here are Gaussian "covariance" matrices in pixels^2 (sigma^2), x first.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sep
from scipy import fft, ndimage, optimize
from scipy.spatial import cKDTree

__all__ = ["pixel_beam_covariance"]

MAX_WINDOW = 2048  # pixels: sources are measured on at most this central window
NOISE_WINDOW = 1024  # pixels: the noise autocorrelation needs fewer (a million pixels is plenty)
BACKGROUND_BOX = 64  # pixels: mesh of the background and rms maps
MIN_PIXELS = 4096  # finite pixels needed in the window
MIN_SNR = 15.0  # peak signal-to-noise of a source worth fitting
MAX_FITS = 60  # brightest isolated sources fitted
MIN_SOURCES = 3  # well-fitted sources needed for an answer
LAGS = 24  # pixels: largest autocorrelation lag fitted
_FWHM2_PER_SIGMA2 = 8.0 * math.log(2.0)


def pixel_beam_covariance(data: Any) -> tuple[np.ndarray, tuple[float, float]] | None:
    """The beam's FWHM ellipse in pixels, measured on the central window of `data`.

    Parameters
    ----------
    data : array-like
        2-D image ``[y, x]``, any float dtype or byte order, NaN allowed; a memory map is read
        only over the window.

    Returns
    -------
    (matrix, (x, y)) or None
        ``matrix`` is the 2x2 FWHM^2 matrix in pixels^2 (its eigenvalues are the squared FWHM
        axes, x first), ``(x, y)`` the 0-based window centre in the image; None when neither
        measurement can tell.
    """
    window, (x0, y0) = _central_window(data, MAX_WINDOW)
    prepared = _subtract_background(window)
    if prepared is None:
        return None
    img, bad, rms = prepared
    found = [c for c in (_from_sources(img, bad, rms), _from_noise(*_centre(NOISE_WINDOW, img, bad, rms)))
             if c is not None]
    if not found:
        return None
    sigma2 = min(found, key=lambda c: float(np.linalg.det(c)))
    h, w = img.shape
    return sigma2 * _FWHM2_PER_SIGMA2, (x0 + (w - 1) / 2.0, y0 + (h - 1) / 2.0)


def _central_window(data: Any, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A private float32 copy of the central ``size x size`` pixels (or fewer) and its corner."""
    ny, nx = int(data.shape[-2]), int(data.shape[-1])
    h, w = min(ny, size), min(nx, size)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    return np.array(data[y0:y0 + h, x0:x0 + w], dtype=np.float32, order="C"), (x0, y0)


def _centre(size: int, *arrays: np.ndarray) -> list[np.ndarray]:
    h, w = arrays[0].shape
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return [a[y0:y0 + size, x0:x0 + size] for a in arrays]


def _subtract_background(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Background-subtracted image (bad pixels 0), bad-pixel mask and rms map; None if unusable."""
    bad = ~np.isfinite(img)
    if min(img.shape) < 32 or img.size - np.count_nonzero(bad) < MIN_PIXELS:
        return None
    img[bad] = 0.0
    box = min(BACKGROUND_BOX, *img.shape)
    try:
        bkg = sep.Background(img, mask=bad if bad.any() else None, bw=box, bh=box)
    except Exception:  # sep raises bare Exceptions on degenerate input
        return None
    img = img - bkg.back()
    rms = np.asarray(bkg.rms(), dtype=np.float32)
    bad |= ~(np.isfinite(rms) & (rms > 0))
    if img.size - np.count_nonzero(bad) < MIN_PIXELS:
        return None
    img[bad] = 0.0
    rms[bad] = np.inf
    return np.ascontiguousarray(img, dtype=np.float32), bad, rms


# ---------------------------------------------------------------------------------------------
# compact sources


def _from_sources(img: np.ndarray, bad: np.ndarray, rms: np.ndarray) -> np.ndarray | None:
    """Median sigma^2 matrix of the smallest well-fitted bright sources, or None."""
    try:
        objects = sep.extract(img, 5.0, err=rms, mask=bad if bad.any() else None, minarea=5)
    except Exception:  # a crowded window overflows SEP's buffers: let the noise answer
        return None
    if len(objects) < MIN_SOURCES:
        return None
    ny, nx = img.shape
    xp, yp = objects["xpeak"].astype(int), objects["ypeak"].astype(int)
    snr = objects["peak"] / rms[yp, xp]
    half = np.clip(np.ceil(5.0 * np.maximum(objects["a"], 1.0)) + 2, 6, 32).astype(int)
    centres = np.column_stack([objects["x"], objects["y"]])
    neighbour = cKDTree(centres).query(centres, k=2)[0][:, 1]
    usable = ((objects["flag"] == 0) & (snr >= MIN_SNR) & (neighbour > 2 * half)
              & (xp >= half) & (yp >= half) & (xp < nx - half) & (yp < ny - half))
    chosen = np.nonzero(usable)[0]
    chosen = chosen[np.argsort(-snr[chosen])][:MAX_FITS]
    shapes = []
    for i in chosen:
        r = int(half[i])
        box = (slice(yp[i] - r, yp[i] + r + 1), slice(xp[i] - r, xp[i] + r + 1))
        stamp = np.where(bad[box], np.nan, img[box]).astype(np.float64)
        fitted = _fit_gaussian(stamp, float(objects["x"][i] - (xp[i] - r)), float(objects["y"][i] - (yp[i] - r)),
                               float(max(objects["a"][i], 0.8)), float(rms[yp[i], xp[i]]))
        if fitted is not None:
            shapes.append(fitted)
    if len(shapes) < MIN_SOURCES:
        return None
    covs = np.array(shapes)
    sizes = np.linalg.det(covs) ** 0.25  # geometric-mean sigma
    reference = np.percentile(sizes, 20)
    beam_like = np.abs(sizes / reference - 1.0) < 0.15
    return np.median(covs[beam_like], axis=0)


def _fit_gaussian(stamp: np.ndarray, x0: float, y0: float, s0: float, noise: float) -> np.ndarray | None:
    """sigma^2 matrix of an elliptical Gaussian fitted to a stamp centred on a source, or None.

    The Gaussian is parametrised by its inverse covariance ``(a, b, c)``, which makes the model
    and its analytic Jacobian cheap (tens of fits take a fraction of a second).
    """
    h, w = stamp.shape
    yy, xx = np.mgrid[0:h, 0:w]
    ok = np.isfinite(stamp)
    if np.count_nonzero(ok) < 0.8 * stamp.size:
        return None
    xs, ys, values = xx[ok].astype(np.float64), yy[ok].astype(np.float64), stamp[ok] / noise

    def parts(p: np.ndarray) -> tuple[np.ndarray, ...]:
        amp, xc, yc, a, b, c, _ = p
        dx, dy = xs - xc, ys - yc
        shape = np.exp(np.clip(-0.5 * (a * dx * dx + 2.0 * b * dx * dy + c * dy * dy), -700.0, 0.0))
        return dx, dy, shape

    def residual(p: np.ndarray) -> np.ndarray:
        return p[0] * parts(p)[2] + p[6] - values

    def jacobian(p: np.ndarray) -> np.ndarray:
        amp, _, _, a, b, c, _ = p
        dx, dy, shape = parts(p)
        scaled = amp * shape
        return np.column_stack([shape, scaled * (a * dx + b * dy), scaled * (b * dx + c * dy),
                                -0.5 * scaled * dx * dx, -scaled * dx * dy, -0.5 * scaled * dy * dy,
                                np.ones_like(shape)])

    start = [float(np.max(values)), x0, y0, 1.0 / s0 ** 2, 0.0, 1.0 / s0 ** 2, 0.0]
    try:
        result = optimize.least_squares(residual, start, jac=jacobian, method="lm", max_nfev=200)
    except (ValueError, np.linalg.LinAlgError):
        return None
    amp, xc, yc, a, b, c, _ = result.x
    inverse = np.array([[a, b], [b, c]])
    if not (result.success and amp > 0 and a > 0 and a * c - b * b > 0):
        return None
    cov = np.linalg.inv(inverse)
    low, high = np.linalg.eigvalsh(cov)
    chi2 = float(np.sum(result.fun ** 2)) / max(1, values.size - 7)
    centred = abs(xc - (w - 1) / 2.0) < 2.0 and abs(yc - (h - 1) / 2.0) < 2.0
    gaussian = chi2 < 3.0 + (0.03 * amp) ** 2  # amp is in units of the noise: a 3 % model error is allowed
    if not (low > 0.09 and math.sqrt(high) < min(h, w) / 4.0 and centred and gaussian):
        return None
    return cov


# ---------------------------------------------------------------------------------------------
# noise autocorrelation


def _from_noise(img: np.ndarray, bad: np.ndarray, rms: np.ndarray) -> np.ndarray | None:
    """sigma^2 matrix of the noise autocorrelation's Gaussian core, or None for white noise."""
    snr = np.where(bad, 0.0, img / rms)
    sources = ndimage.maximum_filter(np.abs(snr) > 4.0, size=17)
    use = ~bad & ~sources
    if np.count_nonzero(use) < 16 * MIN_PIXELS:
        return None
    acf = _autocorrelation(np.where(use, snr, 0.0), use.astype(np.float64), LAGS)
    if not acf[LAGS, LAGS] > 0:
        return None
    acf = acf / acf[LAGS, LAGS]
    one_pixel = 0.25 * (acf[LAGS, LAGS + 1] + acf[LAGS, LAGS - 1] + acf[LAGS + 1, LAGS] + acf[LAGS - 1, LAGS])
    if not one_pixel > 0.25:  # white noise, or correlated over less than ~1.4 pixels FWHM
        return None
    dy, dx = np.mgrid[-LAGS:LAGS + 1, -LAGS:LAGS + 1]
    fwhm0 = 2.0 * math.sqrt(np.count_nonzero(acf > 0.5) / math.pi)
    reach = min(LAGS, 3.0 * fwhm0 + 2.0)
    sel = (dx * dx + dy * dy <= reach * reach) & ~((dx == 0) & (dy == 0))  # zero lag holds any white part
    xs, ys, values = dx[sel].astype(np.float64), dy[sel].astype(np.float64), acf[sel]

    def residual(p: np.ndarray) -> np.ndarray:
        amp, la, lb, theta, offset = p
        inv = np.linalg.inv(_sigma2(math.exp(la), math.exp(lb), theta))
        q = inv[0, 0] * xs * xs + 2.0 * inv[0, 1] * xs * ys + inv[1, 1] * ys * ys
        return amp * np.exp(-0.5 * q) + offset - values

    s0 = max(0.6, fwhm0 / math.sqrt(_FWHM2_PER_SIGMA2))
    try:
        result = optimize.least_squares(residual, [0.9, math.log(s0), math.log(s0), 0.0, 0.0], method="lm")
    except (ValueError, np.linalg.LinAlgError):
        return None
    amp, la, lb, theta, _ = result.x
    cov = _sigma2(math.exp(la), math.exp(lb), theta)
    high = float(np.linalg.eigvalsh(cov)[1])
    if not (result.success and 0.5 <= amp <= 1.2 and 2.5 * math.sqrt(high) < reach):
        return None
    return cov


def _autocorrelation(values: np.ndarray, weights: np.ndarray, lags: int) -> np.ndarray:
    """Mean product of pixel pairs at each lag ``[-lags..lags]^2`` over the weighted pixels."""
    ny, nx = values.shape
    shape = (fft.next_fast_len(ny + lags), fft.next_fast_len(nx + lags, real=True))

    def correlate(a: np.ndarray) -> np.ndarray:
        spectrum = fft.rfft2(a, s=shape, workers=-1)
        return fft.irfft2(spectrum * np.conj(spectrum), s=shape, workers=-1)

    index = np.r_[np.arange(-lags, 0), np.arange(0, lags + 1)]
    pairs = correlate(values)[np.ix_(index, index)]
    counts = correlate(weights)[np.ix_(index, index)]
    return pairs / np.maximum(counts, 1.0)


def _sigma2(sa: float, sb: float, theta: float) -> np.ndarray:
    """Covariance of a Gaussian with sigmas `sa`, `sb`, axis `sa` at angle `theta` from +x."""
    c, s = math.cos(theta), math.sin(theta)
    rotation = np.array([[c, -s], [s, c]])
    return rotation @ np.diag([sa * sa, sb * sb]) @ rotation.T
