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

"Brightest near the box centre", for a box of about a beam, weighs each pixel by the beam's
response at its offset from the centre (`start_weight`): a source the network boxed beside a
brighter neighbour one or two beams away is measured, rather than the neighbour a second time.
Bigger boxes (extended sources) take the brightest pixel of their inner half.

The fit runs on the image as the model sees it (`DomainView`, signal-to-noise units, resampled
so that the beam spans enough pixels), which keeps undersampled images measurable; positions
and sizes are mapped back to image pixels by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._beam_metric import BeamMetric
from ._boxes import Boxes
from ._windows import blank_beyond, read_windows, window_groups

__all__ = ["Measurement", "measure_sources"]

_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
#: Pixels above this fraction of the peak are fitted (below it the log is dominated by noise).
FIT_FRACTION = 0.3
#: A box whose area exceeds this many times the fitted Gaussian's FWHM area holds more than one
#: Gaussian (a double, a knotty extended source): its flux is the sum of its significant pixels.
COMPLEX_AREA = 6.0
#: Pixels counted in the sum of a complex source: above this many local sigmas.
ISLAND_SNR = 2.0
_FOUR_LN2 = 4.0 * math.log(2.0)


def start_weight(dx: np.ndarray, dy: np.ndarray, metric: BeamMetric) -> np.ndarray:
    """The beam's response (1 at its centre, 1/2 at half its FWHM) at pixel offsets ``(dx, dy)``."""
    return np.exp(-_FOUR_LN2 * metric.squared(dx, dy))


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

    def concat(self, other: "Measurement") -> "Measurement":
        """These measurements followed by `other`'s."""
        return Measurement(*(np.concatenate([getattr(self, name), getattr(other, name)])
                             for name in self.__dataclass_fields__))


def measure_sources(pixels: object, boxes: Boxes, beam_major: float, beam_minor: float,
                    snr: bool = True, beam_angle: float | None = None) -> Measurement:
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
    beam_angle : float, optional
        The beam's major-axis angle, degrees from +y towards -x; without it the beam's shape
        is taken as round where it weighs the pixels a measurement starts from.

    Notes
    -----
    A survey image holds tens of thousands of sources, so the boxes are measured in stacks of
    equal-sized windows (`window_groups`): each step below (brightest pixel, the weighted
    normal equations of the fit, their solution, the checks, the 2 x 2 covariance's axes and
    the sum of a complex source) is one array operation per stack. The result is that of
    measuring each box on its own (`_measure_sources_reference`), to rounding.
    """
    n = len(boxes)
    result = _Results(n)
    if n == 0:
        return result.measurement()
    ny, nx = (int(v) for v in pixels.shape)  # type: ignore[attr-defined]
    beam_area = math.pi * beam_major * beam_minor / (4.0 * math.log(2.0))
    reach = max(2, int(math.ceil(1.2 * beam_major)))
    geometry = _BoxGeometry.of(boxes, reach)
    metric = BeamMetric.of(beam_major, beam_minor if beam_angle is not None else None, beam_angle)
    xa, ya = geometry.fx - geometry.half_w, geometry.fy - geometry.half_h  # window corners, unclipped
    xb, yb = geometry.fx + geometry.half_w + 1, geometry.fy + geometry.half_h + 1
    use = (np.maximum(xa, 0) < np.minimum(xb, nx)) & (np.maximum(ya, 0) < np.minimum(yb, ny))
    for height, width, index in window_groups(yb - ya, xb - xa, use):
        values = _read_stack(pixels, ya[index], xa[index], yb[index], xb[index], height, width)
        _measure_stack(values, ya[index], xa[index], geometry.take(index), index, result,
                       beam_major, beam_minor, beam_area, reach, snr, metric)
    return result.measurement()


class _Results:
    """The measurement's columns, filled stack by stack."""

    def __init__(self, n: int) -> None:
        for name in ("x", "y", "peak", "integral", "major", "minor", "angle"):
            setattr(self, name, np.full(n, np.nan))
        self.fitted = np.zeros(n, dtype=bool)
        self.complex = np.zeros(n, dtype=bool)

    def measurement(self) -> Measurement:
        return Measurement(self.x, self.y, self.peak, self.integral, self.major, self.minor, self.angle,
                           self.fitted, self.complex)


@dataclass(frozen=True)
class _BoxGeometry:
    """Each box's centre, size, corners and measuring window (half sides around the centre's pixel)."""

    cx: np.ndarray
    cy: np.ndarray
    width: np.ndarray
    height: np.ndarray
    x_min: np.ndarray
    x_max: np.ndarray
    y_min: np.ndarray
    y_max: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    half_w: np.ndarray
    half_h: np.ndarray

    @classmethod
    def of(cls, boxes: Boxes, reach: int) -> "_BoxGeometry":
        cx, cy = np.asarray(boxes.x_center, dtype=np.float64), np.asarray(boxes.y_center, dtype=np.float64)
        width, height = np.asarray(boxes.width, dtype=np.float64), np.asarray(boxes.height, dtype=np.float64)
        half_w = np.maximum(reach, np.ceil(0.5 * width).astype(np.int64) + 1)
        half_h = np.maximum(reach, np.ceil(0.5 * height).astype(np.int64) + 1)
        return cls(cx, cy, width, height, np.asarray(boxes.x_min, dtype=np.float64),
                   np.asarray(boxes.x_max, dtype=np.float64), np.asarray(boxes.y_min, dtype=np.float64),
                   np.asarray(boxes.y_max, dtype=np.float64), np.floor(cx).astype(np.int64),
                   np.floor(cy).astype(np.int64), half_w, half_h)

    def take(self, index: np.ndarray) -> "_BoxGeometry":
        return _BoxGeometry(*(getattr(self, name)[index] for name in self.__dataclass_fields__))


def _read_stack(pixels: object, ya: np.ndarray, xa: np.ndarray, yb: np.ndarray, xb: np.ndarray,
                height: int, width: int) -> np.ndarray:
    """``[n, height, width]`` windows from corners ``(ya, xa)``, NaN beyond ``[ya:yb, xa:xb]`` and the image.

    A `DomainView`'s data and numpy arrays are read as one stack; a resampled view or any
    other array-like one clipped slice per window, exactly the slice a box measured on its own
    reads. Float32 pixels stay float32 (every comparison with a float64 level is exact, and
    the sums are taken in float64), anything else is float64.
    """
    sizes = (yb - ya, xb - xa)
    reader = getattr(pixels, "windows", None)
    stack = reader(ya, xa, height, width) if callable(reader) else None
    if stack is None:
        dtype = np.float32 if getattr(pixels, "dtype", None) == np.float32 else np.float64
        return read_windows(pixels, ya, xa, height, width, dtype, sizes)
    if np.asarray(stack).dtype not in (np.float32, np.float64):
        stack = np.asarray(stack, dtype=np.float64)
    return blank_beyond(stack, *sizes)


#: Exponents (of dx, of dy) of the fitted parabola's terms: ln I = a + b x + c y + d x^2 + e x y + f y^2.
_TERMS = ((0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2))
#: The sums over the fitted pixels that make the normal equations: I^2 dx^i dy^j for i + j <= 4...
_MOMENTS = tuple((i, n - i) for n in range(5) for i in range(n, -1, -1))
#: ...their places in the 6 x 6 matrix, and (after them) the right-hand side's I^2 ln I dx^i dy^j.
_NORMAL = np.array([[_MOMENTS.index((t[0] + u[0], t[1] + u[1])) for u in _TERMS] for t in _TERMS])
_RHS = len(_MOMENTS) + np.arange(len(_TERMS))


def _measure_stack(values: np.ndarray, ya: np.ndarray, xa: np.ndarray, box: _BoxGeometry, index: np.ndarray,
                   result: _Results, beam_major: float, beam_minor: float, beam_area: float, reach: int,
                   snr: bool, metric: BeamMetric) -> None:
    """Measure a stack of windows ``values [m, h, w]`` (corners ``(ya, xa)``) into ``result[index]``.

    The steps of `_measure_sources_reference` for each window, as array operations over the
    stack; the pixels a step keeps (fitted, summed) are gathered into flat lists, so that the
    sums over them cost what those pixels cost, not the whole windows.
    """
    m, h, w = values.shape
    finite = np.isfinite(values)
    xs = xa[:, None] + np.arange(w)  # [m, w] image columns
    ys = ya[:, None] + np.arange(h)  # [m, h] image rows
    # the brightest pixel near the box centre: within a beam, or the inner half of a big box
    near_x = ((xs - box.cx[:, None]) / np.maximum(reach, 0.5 * box.width)[:, None]) ** 2
    near_y = ((ys - box.cy[:, None]) / np.maximum(reach, 0.5 * box.height)[:, None]) ** 2
    usable = finite & ((near_x[:, None, :] + near_y[:, :, None]) <= 1.0)
    candidates = np.where(usable, values, -np.inf)
    score = candidates
    small = np.maximum(box.width, box.height) <= 2 * reach  # a box of about a beam
    if small.any():
        weight = start_weight((xs - box.cx[:, None])[:, None, :], (ys - box.cy[:, None])[:, :, None], metric)
        score = np.where(small[:, None, None] & (candidates > 0), candidates * weight, candidates)
        # the weights chose the source; its brightest pixel (within half a beam) is the start
        chosen = np.argmax(score.reshape(m, h * w), axis=1)
        cy_, cx_ = np.divmod(chosen, w)
        around = metric.squared((xs - (xa + cx_)[:, None])[:, None, :], (ys - (ya + cy_)[:, None])[:, :, None]) <= 0.25
        candidates = np.where(small[:, None, None] & ~around, -np.inf, candidates)
    candidates = candidates.reshape(m, h * w)
    best = np.argmax(candidates, axis=1)
    peak = candidates[np.arange(m), best].astype(np.float64)  # levels from it are float64, as a window's own
    seen = usable.reshape(m, h * w)[np.arange(m), best]  # any usable pixel: the best one is usable
    iy, ix = np.divmod(best, w)
    px, py = xa + ix, ya + iy
    rows = index[seen]
    result.x[rows], result.y[rows], result.peak[rows] = px[seen], py[seen], peak[seen]
    positive = seen & (peak > 0)
    if not positive.any():
        return
    peak = np.where(positive, peak, 1.0)

    # the Gaussian fit: pixels above FIT_FRACTION of the peak within the radius of the brightest pixel
    radius = np.maximum(max(1.5, beam_major), 0.35 * np.maximum(box.width, box.height))
    reach_fit = np.ceil(radius).astype(np.int64)[:, None]
    region_x = (np.abs(xs - px[:, None]) <= reach_fit) & positive[:, None]
    region_y = np.abs(ys - py[:, None]) <= reach_fit
    good = region_x[:, None, :] & region_y[:, :, None] & finite
    good &= values > (FIT_FRACTION * peak)[:, None, None]
    trial = np.count_nonzero(good.reshape(m, h * w), axis=1) >= 6
    fitted = np.zeros(m, dtype=bool)
    if trial.any():
        good &= trial[:, None, None]
        flat = np.flatnonzero(good)  # in each window's row-major order, as a window's own fit
        window, place = np.divmod(flat, h * w)
        row, col = np.divmod(place, w)
        chosen = np.flatnonzero(trial)
        fit = _fit_pixels(np.searchsorted(chosen, window), values.reshape(-1)[flat].astype(np.float64),
                          (col - ix[window]).astype(np.float64), (row - iy[window]).astype(np.float64),
                          beam_major)
        ok = fit.pop("ok")
        fitted[chosen[ok]] = True
        rows = index[chosen[ok]]
        result.x[rows] = px[chosen[ok]] + fit["cx"][ok]
        result.y[rows] = py[chosen[ok]] + fit["cy"][ok]
        result.peak[rows] = fit["peak"][ok]
        result.major[rows] = _FWHM_PER_SIGMA * np.sqrt(fit["high"][ok])
        result.minor[rows] = _FWHM_PER_SIGMA * np.sqrt(fit["low"][ok])
        result.angle[rows] = fit["angle"][ok]
        result.integral[rows] = fit["integral"][ok] / beam_area
        result.fitted[rows] = True

    # sources the Gaussian does not describe: the sum of their significant pixels
    gaussian_area = np.where(fitted, result.major[index] * result.minor[index], 0.0)
    box_area = box.width * box.height
    summed = positive & (~fitted | (box_area > COMPLEX_AREA * np.maximum(gaussian_area, beam_major * beam_minor)))
    if not summed.any():
        return
    part = np.flatnonzero(summed)
    if len(part) < m:  # most fitted sources need no sum: only the others' windows are read again
        values, finite, xs, ys = values[part], finite[part], xs[part], ys[part]
    k = len(part)
    inside_x = (xs >= (box.x_min[part] - 0.5)[:, None]) & (xs <= (box.x_max[part] - 0.5)[:, None])
    inside_y = (ys >= (box.y_min[part] - 0.5)[:, None]) & (ys <= (box.y_max[part] - 0.5)[:, None])
    peak, fitted = peak[part], fitted[part]
    level = np.full(k, ISLAND_SNR) if snr else 0.05 * peak
    significant = inside_x[:, None, :] & inside_y[:, :, None] & finite
    significant &= values > level[:, None, None]
    flat = np.flatnonzero(significant)
    window = flat // (h * w)
    pixels = np.bincount(window, minlength=k)
    total = np.bincount(window, weights=values.reshape(-1)[flat], minlength=k)
    # a Gaussian's pixels above a fraction f of its peak hold 1 - f of its flux
    cut = np.where(peak > 2.0 * level, level / peak, 0.0)
    total = total / beam_area / (1.0 - cut)
    integral = result.integral[index[part]]
    with np.errstate(invalid="ignore"):
        replace = (pixels > 0) & (~fitted | (total > integral))
    rows = index[part[replace]]
    result.integral[rows] = total[replace]
    result.complex[rows] = fitted[replace] | (pixels[replace] > beam_area)


def _fit_pixels(window: np.ndarray, v: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                beam_major: float) -> dict[str, np.ndarray]:
    """`_fit_gaussian` for many windows at once, from their fitted pixels (flat, grouped by window).

    ``window`` (sorted, every window ``0..k-1`` present), the pixel values ``v`` and their offsets from
    the window's brightest pixel. The 6 x 6 normal equations are sums over each window's pixels
    of ``I^2 dx^i dy^j`` (i + j up to 4) and of ``I^2 ln I dx^i dy^j`` (i + j up to 2): one
    segmented sum, then one batched solve. Returns the centre offsets, peak, covariance
    eigenvalues and major-axis angle, the Gaussian's integral (times the beam area) and
    ``ok``, the windows whose fit is trustworthy.
    """
    starts = np.flatnonzero(np.r_[True, window[1:] != window[:-1]])
    weight = v * v  # the I^2 weights
    powers_x, powers_y = [np.ones_like(dx), dx], [np.ones_like(dy), dy]
    for _ in range(3):
        powers_x.append(powers_x[-1] * dx)
        powers_y.append(powers_y[-1] * dy)
    terms = np.empty((len(_MOMENTS) + len(_TERMS), len(v)))
    for j, (i_x, i_y) in enumerate(_MOMENTS):
        np.multiply(powers_x[i_x], powers_y[i_y], out=terms[j])
    terms[_RHS] = terms[:len(_TERMS)]  # the first moments are the terms' own monomials
    terms[:len(_MOMENTS)] *= weight
    terms[_RHS] *= weight * np.log(v)
    sums = np.add.reduceat(terms, starts, axis=1).T  # [k, 21]
    coef = _solve_stack(sums[:, _NORMAL], sums[:, _RHS], starts, v, dx, dy)
    a, b, c, d, e, f = coef.T
    with np.errstate(all="ignore"):
        # precision matrix [[p, q], [q, r]] = -2 [[d, e/2], [e/2, f]]; 2 x 2 algebra in closed form
        p, q, r = -2.0 * d, -e, -2.0 * f
        det = p * r - q * q
        ok = (p > 0) & (r > 0) & (det > 0)  # both eigenvalues positive: a maximum
        c00, c01, c11 = r / det, -q / det, p / det
        cx, cy = c00 * b + c01 * c, c01 * b + c11 * c
        ok &= ~(np.hypot(cx, cy) > 1.5)
        log_peak = a + 0.5 * (b * cx + c * cy)
        half_trace, spread = 0.5 * (c00 + c11), np.hypot(0.5 * (c00 - c11), c01)
        low, high = half_trace - spread, half_trace + spread  # the covariance's eigenvalues
        ok &= (low > 0.04) & (high < (50.0 * beam_major) ** 2) & np.isfinite(high)
        # the major axis: the eigenvector of the larger eigenvalue, (cos phi, sin phi)
        phi = 0.5 * np.arctan2(2.0 * c01, c00 - c11)
        vx, vy = np.cos(phi), np.sin(phi)
        round_ = (c01 == 0) & (c00 == c11)  # any direction: the axis along +y, as an eigen-solver gives
        vx, vy = np.where(round_, 0.0, vx), np.where(round_, 1.0, vy)
        angle = (np.degrees(np.arctan2(-vx, vy)) + 90.0) % 180.0 - 90.0
        peak = np.exp(log_peak)
        integral = peak * 2.0 * math.pi * np.sqrt(np.maximum(c00 * c11 - c01 * c01, 0.0))
    return {"cx": cx, "cy": cy, "peak": peak, "low": low, "high": high, "angle": angle, "integral": integral,
            "ok": ok}


def _solve_stack(normal: np.ndarray, rhs: np.ndarray, starts: np.ndarray, v: np.ndarray, dx: np.ndarray,
                 dy: np.ndarray) -> np.ndarray:
    """The fit's coefficients ``[k, 6]``: one batched solve, and window by window where it is singular.

    A singular system (the fitted pixels on two rows, say) has no unique solution, and which
    coefficients come out depends on the rounding of its normal equations: such a window is
    solved exactly as `_fit_gaussian` solves it (its normal equations from the design matrix,
    else the least-squares solution, else NaN: no fit). A solve fails on an exactly zero pivot
    of the LU factorisation, which is what a zero sign of `slogdet` (the same factorisation)
    says.
    """
    coef = np.full(rhs.shape, np.nan)
    sign, _ = np.linalg.slogdet(normal)
    regular = sign != 0
    if regular.any():
        coef[regular] = np.linalg.solve(normal[regular], rhs[regular][:, :, None])[:, :, 0]
    stops = np.r_[starts[1:], len(v)]
    for k in np.flatnonzero(~regular).tolist():  # as `_fit_gaussian` solves its own window
        pixels = slice(starts[k], stops[k])
        ddx, ddy, weight = dx[pixels], dy[pixels], v[pixels]
        design = np.column_stack([np.ones_like(ddx), ddx, ddy, ddx * ddx, ddx * ddy, ddy * ddy])
        lhs, target = design * weight[:, None], np.log(weight) * weight
        try:
            coef[k] = np.linalg.solve(lhs.T @ lhs, lhs.T @ target)
        except np.linalg.LinAlgError:
            try:
                coef[k], *_ = np.linalg.lstsq(lhs, target, rcond=None)
            except np.linalg.LinAlgError:
                pass
    return coef


def _measure_sources_reference(pixels: object, boxes: Boxes, beam_major: float, beam_minor: float,
                               snr: bool = True, beam_angle: float | None = None) -> Measurement:
    """`measure_sources`, one box at a time: the measurement as plainly stated.

    Each box's window is read and measured on its own, with `_fit_gaussian`; `measure_sources`
    computes the same for stacks of boxes and must agree with it to rounding.
    """
    n = len(boxes)
    out = {name: np.full(n, np.nan) for name in ("x", "y", "peak", "integral", "major", "minor", "angle")}
    fitted = np.zeros(n, dtype=bool)
    complex_ = np.zeros(n, dtype=bool)
    ny, nx = (int(v) for v in pixels.shape)  # type: ignore[attr-defined]
    beam_area = math.pi * beam_major * beam_minor / (4.0 * math.log(2.0))
    reach = max(2, int(math.ceil(1.2 * beam_major)))
    metric = BeamMetric.of(beam_major, beam_minor if beam_angle is not None else None, beam_angle)
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
        score = candidates
        if max(width, height) <= 2 * reach:  # a box of about a beam: weighed by the beam's response
            score = np.where(candidates > 0, candidates * start_weight(xx - cx, yy - cy, metric), candidates)
            sy, sx = np.unravel_index(int(np.argmax(score)), window.shape)
            # the weights chose the source; its brightest pixel (within half a beam) is the start
            around = metric.squared(xx - xx[sy, sx], yy - yy[sy, sx]) <= 0.25
            candidates = np.where(around, candidates, -np.inf)
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
