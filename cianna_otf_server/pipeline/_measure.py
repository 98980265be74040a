"""Measure each detection in the image: position, peak, integrated flux and apparent shape.

A detection network is good at saying *where* a source is and poor at saying *how bright* it
is on an image unlike its training skies: its regression heads learnt the flux scale, the pixel
grid and the source sizes of the simulator. The image itself knows better. So, for cards that
ask for it (``[yolo] measure = true``), the network only detects, and this module measures each
detection the way Gaussian-fitting source finders do (PyBDSF, Aegean): around the brightest
pixel near the box centre, the pixels above a fraction of the peak are fitted with an elliptical
Gaussian, as a weighted least-squares parabola in the logarithm of the signal

    ln I(x, y) = a + b x + c y + d x^2 + e x y + f y^2,

weighted by I^2 (the log of a pixel of signal I and noise sigma has an error sigma / I). The
fit gives the centre, the peak and the covariance; the integrated flux of a Gaussian is its
peak times its area over the beam's. Sources the Gaussian does not describe (a box much larger
than the fitted Gaussian: doubles, extended emission) take the sum of their pixels above two
sigma in the box instead, divided by the beam area and by the share of a Gaussian's flux above
that level (``1 - level / peak``).

The fit runs on the image as the model sees it (`DomainView`, signal-to-noise units, resampled
so that the beam spans enough pixels), which keeps undersampled images measurable; positions
and sizes are mapped back to image pixels by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._boxes import Boxes

__all__ = ["Measurement", "measure_sources"]

_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
#: Pixels above this fraction of the peak are fitted (below it the log is dominated by noise).
FIT_FRACTION = 0.3
#: A box whose area exceeds this many times the fitted Gaussian's FWHM area holds more than one
#: Gaussian (a double, a knotty extended source): its flux is the sum of its significant pixels.
COMPLEX_AREA = 6.0
#: Pixels counted in the sum of a complex source: above this many local sigmas.
ISLAND_SNR = 2.0


@dataclass(frozen=True)
class Measurement:
    """What was measured for each box, in the frame of the pixels measured (model pixels).

    Attributes
    ----------
    x, y : ndarray
        0-based pixel centre (the fitted Gaussian's, else the brightest pixel's).
    peak : ndarray
        Peak value (the measured pixels' unit: signal-to-noise for a signal-to-noise view).
    integral : ndarray
        Integrated value over the beam, ``peak * source area / beam area`` for a Gaussian, the
        sum of significant pixels over the beam area for a complex source: divided by the beam
        it is a flux in the pixels' unit times the beam (S / sigma for signal-to-noise pixels).
    major, minor : ndarray
        Apparent FWHM axes of the fitted Gaussian, pixels (NaN without a fit).
    angle : ndarray
        Major-axis angle in the pixel frame, degrees from +y towards -x, in [-90, 90).
    fitted : ndarray of bool
        The Gaussian fit succeeded (else position and peak are the brightest pixel's).
    complex : ndarray of bool
        The integral is the sum of significant pixels (a source the Gaussian does not describe).
    """

    x: np.ndarray
    y: np.ndarray
    peak: np.ndarray
    integral: np.ndarray
    major: np.ndarray
    minor: np.ndarray
    angle: np.ndarray
    fitted: np.ndarray
    complex: np.ndarray

    def take(self, index: np.ndarray) -> "Measurement":
        """The measurements of the selected boxes."""
        return Measurement(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


def measure_sources(pixels: object, boxes: Boxes, beam_major: float, beam_minor: float,
                    snr: bool = True) -> Measurement:
    """Fit each box's source in `pixels` (boxes and beam in the same pixel frame).

    Parameters
    ----------
    pixels : array-like
        2-D ``[y, x]`` values read by slicing (``pixels[y0:y1, x0:x1]``): a `DomainView`'s data
        or an array; NaN pixels are ignored.
    boxes : Boxes
        Detections, corners in the same frame (pixel ``k`` spans ``[k, k+1]``).
    beam_major, beam_minor : float
        Restoring beam FWHM axes in pixels of that frame (fit window and beam area).
    snr : bool
        The pixels are in units of the local noise (then the complex-source sum keeps pixels
        above `ISLAND_SNR`; otherwise pixels above 5% of the peak).
    """
    n = len(boxes)
    out = {name: np.full(n, np.nan) for name in ("x", "y", "peak", "integral", "major", "minor", "angle")}
    fitted = np.zeros(n, dtype=bool)
    complex_ = np.zeros(n, dtype=bool)
    ny, nx = (int(v) for v in pixels.shape)  # type: ignore[attr-defined]
    beam_area = math.pi * beam_major * beam_minor / (4.0 * math.log(2.0))
    reach = max(2, int(math.ceil(1.2 * beam_major)))
    # the box columns as plain floats once: Boxes' derived columns are computed on each access
    centres_x, centres_y = boxes.x_center.tolist(), boxes.y_center.tolist()
    widths, heights = boxes.width.tolist(), boxes.height.tolist()
    x_mins, x_maxs = boxes.x_min.tolist(), boxes.x_max.tolist()
    y_mins, y_maxs = boxes.y_min.tolist(), boxes.y_max.tolist()
    for k in range(n):
        cx, cy, width, height = centres_x[k], centres_y[k], widths[k], heights[k]
        half_w = max(reach, int(math.ceil(0.5 * width)) + 1)
        half_h = max(reach, int(math.ceil(0.5 * height)) + 1)
        xa, xb = max(0, int(math.floor(cx)) - half_w), min(nx, int(math.floor(cx)) + half_w + 1)
        ya, yb = max(0, int(math.floor(cy)) - half_h), min(ny, int(math.floor(cy)) + half_h + 1)
        if xa >= xb or ya >= yb:
            continue
        window = np.asarray(pixels[ya:yb, xa:xb], dtype=np.float64)  # type: ignore[index]
        finite = np.isfinite(window)
        if not finite.any():
            continue
        # the brightest pixel near the box centre: within a beam, or the inner half of a big box
        yy, xx = np.mgrid[ya:yb, xa:xb]
        near = ((xx - cx) / max(reach, 0.5 * width)) ** 2 + \
               ((yy - cy) / max(reach, 0.5 * height)) ** 2 <= 1.0
        candidates = np.where(finite & near, window, -np.inf)
        if not np.isfinite(candidates).any():
            continue
        iy, ix = np.unravel_index(int(np.argmax(candidates)), window.shape)
        peak = window[iy, ix]
        out["x"][k], out["y"][k], out["peak"][k] = xx[iy, ix], yy[iy, ix], peak
        if not peak > 0:
            continue
        radius = max(1.5, beam_major, 0.35 * max(width, height))
        fit = _fit_gaussian(window, xx, yy, ix, iy, peak, beam_major, radius)
        if fit is not None:
            fx, fy, fpeak, cov = fit
            out["x"][k], out["y"][k], out["peak"][k] = fx, fy, fpeak
            evals, evecs = np.linalg.eigh(cov)
            out["major"][k] = _FWHM_PER_SIGMA * math.sqrt(evals[1])
            out["minor"][k] = _FWHM_PER_SIGMA * math.sqrt(evals[0])
            vx, vy = evecs[0, 1], evecs[1, 1]
            out["angle"][k] = (math.degrees(math.atan2(-vx, vy)) + 90.0) % 180.0 - 90.0
            out["integral"][k] = fpeak * 2.0 * math.pi * math.sqrt(max(np.linalg.det(cov), 0.0)) / beam_area
            fitted[k] = True
        box_area = width * height
        gaussian_area = (out["major"][k] * out["minor"][k]) if fitted[k] else 0.0
        if not fitted[k] or box_area > COMPLEX_AREA * max(gaussian_area, beam_major * beam_minor):
            inside = finite & (xx >= x_mins[k] - 0.5) & (xx <= x_maxs[k] - 0.5) & \
                (yy >= y_mins[k] - 0.5) & (yy <= y_maxs[k] - 0.5)
            level = ISLAND_SNR if snr else 0.05 * peak
            significant = inside & (window > level)
            if significant.any():
                # a Gaussian's pixels above a fraction f of its peak hold 1 - f of its flux
                cut = level / peak if peak > 2.0 * level else 0.0
                total = float(window[significant].sum()) / beam_area / (1.0 - cut)
                if not fitted[k] or total > out["integral"][k]:
                    out["integral"][k] = total
                    complex_[k] = fitted[k] or bool(significant.sum() > beam_area)
    return Measurement(out["x"], out["y"], out["peak"], out["integral"], out["major"], out["minor"],
                       out["angle"], fitted, complex_)


def _fit_gaussian(window: np.ndarray, xx: np.ndarray, yy: np.ndarray, ix: int, iy: int, peak: float,
                  beam_major: float, radius: float) -> tuple[float, float, float, np.ndarray] | None:
    """An elliptical Gaussian through the pixels above `FIT_FRACTION` of the peak within `radius` of (ix, iy).

    Returns ``(x, y, peak, covariance)`` or None when the fit is not trustworthy (too few
    pixels, not a maximum, centre wandering off the brightest pixel).
    """
    h, w = window.shape
    y0, y1 = max(0, iy - int(math.ceil(radius))), min(h, iy + int(math.ceil(radius)) + 1)
    x0, x1 = max(0, ix - int(math.ceil(radius))), min(w, ix + int(math.ceil(radius)) + 1)
    values = window[y0:y1, x0:x1]
    good = np.isfinite(values) & (values > FIT_FRACTION * peak)
    if good.sum() < 6:
        return None
    v = values[good]
    dx = (xx[y0:y1, x0:x1][good] - xx[iy, ix]).astype(np.float64)
    dy = (yy[y0:y1, x0:x1][good] - yy[iy, ix]).astype(np.float64)
    design = np.column_stack([np.ones_like(dx), dx, dy, dx * dx, dx * dy, dy * dy])
    weight = v  # sqrt of the I^2 weights
    lhs, rhs = design * weight[:, None], np.log(v) * weight
    try:  # the 6 x 6 normal equations: one small solve instead of an SVD per source
        coef = np.linalg.solve(lhs.T @ lhs, lhs.T @ rhs)
    except np.linalg.LinAlgError:
        try:
            coef, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
        except np.linalg.LinAlgError:
            return None
    a, b, c, d, e, f = (float(value) for value in coef)
    # precision matrix [[p, q], [q, r]] = -2 [[d, e/2], [e/2, f]]; 2 x 2 algebra in closed form
    p, q, r = -2.0 * d, -e, -2.0 * f
    det = p * r - q * q
    if not (p > 0 and r > 0 and det > 0):  # both eigenvalues positive: a maximum
        return None
    cov = np.array([[r, -q], [-q, p]]) / det
    cx, cy = cov[0, 0] * b + cov[0, 1] * c, cov[1, 0] * b + cov[1, 1] * c
    if math.hypot(cx, cy) > 1.5:
        return None
    log_peak = a + 0.5 * (b * cx + c * cy)
    half_trace, spread = 0.5 * (cov[0, 0] + cov[1, 1]), math.hypot(0.5 * (cov[0, 0] - cov[1, 1]), cov[0, 1])
    low, high = half_trace - spread, half_trace + spread  # the covariance's eigenvalues
    if not (low > 0.04 and high < (50.0 * beam_major) ** 2 and math.isfinite(high)):
        return None
    return float(xx[iy, ix] + cx), float(yy[iy, ix] + cy), float(math.exp(log_peak)), cov
