"""What resampling does to a measurement, measured on the beam itself.

An image whose beam spans too few pixels for a model is resampled so that the beam spans the
trained number (`DomainView`), and its detections are measured there. Interpolating an
undersampled image does not give back the smooth beam: a cubic spline through a 1.2-pixel beam
sampled at pixel centres makes an unresolved source look broader and fainter than it is (on the
benchmark's undersampled domain, point sources measured 8.3" x 6.7" for a 6" beam, their
integrated fluxes 19% high and their peaks low, so faint ones fell under the peak cut).

The resampling is known, so its effect is measured, not modelled: the beam alone, as the image
samples it, is placed at a grid of sub-pixel positions on a small synthetic image, resampled with
the view's own interpolation and measured with the same `measure_sources`. The medians give the
factors by which the view scales an unresolved source's peak and integral, and the covariance it
adds to its apparent shape; the grid gives the shift of a measured position with where in its
pixel a source lies (the interpolation pulls an undersampled peak towards pixel centres: 0.12 px
at any SNR on the undersampled domain). `ResamplingBias.correct` takes them out of every
measurement on the view. On an image the model sees at its own sampling nothing changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ._boxes import Boxes
from ._measure import Measurement, measure_sources

__all__ = ["ResamplingBias", "resampling_bias", "resample_array"]

_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
#: Synthetic sources: a grid of this many per side, this many beams apart, of this peak (noise-free);
#: their positions within their pixels step through this many phases per axis.
_GRID, _SPACING_BEAMS, _PEAK = 8, 10.0, 1000.0
#: Sources fitted with a major axis up to this many beams get the position correction, in this many steps.
_COMPACT_BEAMS, _SHIFT_STEPS = 1.5, 12


def resample_array(values: np.ndarray, zoom: float) -> np.ndarray:
    """A whole array resampled as `DomainView` resamples images (pixel centres, cubic up, linear down)."""
    ny, nx = values.shape
    oy, ox = max(1, int(round(ny * zoom))), max(1, int(round(nx * zoom)))
    ys = (np.arange(oy, dtype=np.float64) + 0.5) / zoom - 0.5
    xs = (np.arange(ox, dtype=np.float64) + 0.5) / zoom - 0.5
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    order = 3 if zoom > 1.0 else 1
    return ndimage.map_coordinates(values.astype(np.float32), [grid_y, grid_x], order=order, mode="nearest",
                                   prefilter=True).astype(np.float32)


def _covariance(major: np.ndarray, minor: np.ndarray, angle_deg: np.ndarray) -> np.ndarray:
    """``[n, 2, 2]`` shape matrices (FWHM squared, pixels) of ellipses; angle from +y towards -x."""
    t = np.radians(angle_deg)
    u = np.stack([-np.sin(t), np.cos(t)], axis=-1)  # along the major axis, (x, y)
    v = np.stack([np.cos(t), np.sin(t)], axis=-1)
    return (np.square(major)[:, None, None] * u[:, :, None] * u[:, None, :]
            + np.square(minor)[:, None, None] * v[:, :, None] * v[:, None, :])


def _axes(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Major, minor FWHM and angle (from +y towards -x, in [-90, 90)) of ``[n, 2, 2]`` shape matrices."""
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    half_trace, spread = 0.5 * (a + c), np.hypot(0.5 * (a - c), b)
    high, low = half_trace + spread, half_trace - spread
    # the major axis (x, y) is the eigenvector of `high`; its angle from +y towards -x
    vx, vy = np.where(np.abs(b) > 0, b, np.where(a >= c, 1.0, 0.0)), np.where(np.abs(b) > 0, high - a,
                                                                                np.where(a >= c, 0.0, 1.0))
    angle = (np.degrees(np.arctan2(-vx, vy)) + 90.0) % 180.0 - 90.0
    return np.sqrt(np.maximum(high, 0.0)), np.sqrt(np.maximum(low, 0.0)), angle


@dataclass(frozen=True)
class ResamplingBias:
    """How a view scales an unresolved source's peak and integral, and what it adds to its shape."""

    peak: float
    integral: float
    excess: np.ndarray  # [2, 2] shape matrix (FWHM squared, model pixels) added to every source
    floor: float  # smallest corrected axis, model pixels (half the beam's minor axis)
    zoom: float = 1.0
    shift_x: np.ndarray | None = None  # [phase y, phase x] measured minus true position, model pixels
    shift_y: np.ndarray | None = None
    compact: float = math.inf  # fitted major axes (model pixels) up to which positions are corrected

    def position_shift(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The view's shift of positions (model pixels) measured at `x`, `y`, from the phase table."""
        if self.shift_x is None or self.shift_y is None:
            return np.zeros(len(x)), np.zeros(len(y))
        grid = self.shift_x.shape[0]
        # image-pixel phase in [-0.5, 0.5) -> table coordinate, periodic over the pixel
        ix, iy = (x + 0.5) / self.zoom - 0.5, (y + 0.5) / self.zoom - 0.5
        u = ((ix - np.floor(ix + 0.5)) + 0.5) * grid - 0.5
        v = ((iy - np.floor(iy + 0.5)) + 0.5) * grid - 0.5
        u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        fu, fv = u - u0, v - v0
        out = []
        for table in (self.shift_x, self.shift_y):
            def at(a: np.ndarray, b: np.ndarray) -> np.ndarray:
                return table[b % grid, a % grid]
            out.append((1 - fv) * ((1 - fu) * at(u0, v0) + fu * at(u0 + 1, v0))
                       + fv * ((1 - fu) * at(u0, v0 + 1) + fu * at(u0 + 1, v0 + 1)))
        return out[0], out[1]

    def correct(self, measurement: Measurement) -> Measurement:
        """The measurement without the view's effect: peak and integral rescaled, the excess shape removed.

        The corrected axes are kept at least half the beam's minor axis, so that noise on a faint
        source's fit cannot make its shape vanish.
        """
        shaped = np.isfinite(measurement.major) & np.isfinite(measurement.minor) & np.isfinite(measurement.angle)
        major, minor, angle = (np.array(measurement.major, dtype=np.float64),
                               np.array(measurement.minor, dtype=np.float64),
                               np.array(measurement.angle, dtype=np.float64))
        if shaped.any():
            cov = _covariance(major[shaped], minor[shaped], angle[shaped]) - self.excess[None]
            m, n, a = _axes(cov)
            major[shaped], minor[shaped], angle[shaped] = np.maximum(m, self.floor), np.maximum(n, self.floor), a
        x, y = np.array(measurement.x, dtype=np.float64), np.array(measurement.y, dtype=np.float64)
        compact = (np.asarray(measurement.fitted, dtype=bool) & ~np.asarray(measurement.complex, dtype=bool)
                   & np.isfinite(x) & np.isfinite(y) & (np.nan_to_num(np.asarray(measurement.major), nan=np.inf)
                                                        <= self.compact))
        if compact.any():
            # the table is by true position: solve true + shift(true) = measured by fixed-point steps
            # (the shift changes by less than the position does, so they converge)
            mx, my = x[compact], y[compact]
            tx, ty = mx.copy(), my.copy()
            for _ in range(_SHIFT_STEPS):
                sx, sy = self.position_shift(tx, ty)
                tx, ty = mx - sx, my - sy
            x[compact], y[compact] = tx, ty
        return replace(measurement, x=x, y=y, peak=np.asarray(measurement.peak, dtype=np.float64) / self.peak,
                       integral=np.asarray(measurement.integral, dtype=np.float64) / self.integral,
                       major=major, minor=minor, angle=angle)


def resampling_bias(zoom: float, major: float, minor: float, angle: float) -> ResamplingBias | None:
    """The bias of measuring on a view resampled by `zoom`, for a beam of `major` x `minor` view pixels.

    `angle` is the beam's major axis in the pixel frame (degrees from +y towards -x). None when
    the view is not resampled, or the synthetic sources cannot be measured (then nothing is
    corrected).
    """
    if zoom == 1.0 or not (major > 0 and minor > 0):
        return None
    image_major, image_minor = major / zoom, minor / zoom
    spacing = int(math.ceil(_SPACING_BEAMS * max(image_major, 1.0)))
    side = _GRID * spacing
    phases = (np.arange(_GRID) + 0.5) / _GRID - 0.5  # within a pixel, [-0.5, 0.5)
    centres = np.arange(_GRID) * spacing + spacing // 2  # pixel centres
    row, col = np.meshgrid(np.arange(_GRID), np.arange(_GRID), indexing="ij")
    x0 = (centres[col] + phases[col]).ravel().astype(np.float64)  # source (row, col): phases (row, col)
    y0 = (centres[row] + phases[row]).ravel().astype(np.float64)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    image = np.zeros((side, side))
    beam = _covariance(np.array([image_major]), np.array([image_minor]), np.array([angle]))[0] / _FWHM_PER_SIGMA ** 2
    precision = np.linalg.inv(beam)
    reach = int(math.ceil(3.0 * image_major)) + 1
    for x, y in zip(x0, y0):  # the beam as the image samples it: its value at each pixel centre
        ya, yb = max(0, int(y) - reach), min(side, int(y) + reach + 1)
        xa, xb = max(0, int(x) - reach), min(side, int(x) + reach + 1)
        dx, dy = xx[ya:yb, xa:xb] - x, yy[ya:yb, xa:xb] - y
        q = precision[0, 0] * dx * dx + 2 * precision[0, 1] * dx * dy + precision[1, 1] * dy * dy
        image[ya:yb, xa:xb] += _PEAK * np.exp(-0.5 * q)
    view = resample_array(image, zoom)
    # boxes of two beams around each source, in view pixels (corners: pixel k spans [k, k+1])
    vx, vy = (x0 + 0.5) * zoom - 0.5, (y0 + 0.5) * zoom - 0.5
    half = major
    n = len(vx)
    boxes = Boxes(vx + 0.5 - half, vy + 0.5 - half, vx + 0.5 + half, vy + 0.5 + half, np.ones(n), np.ones(n),
                  np.zeros((n, 0)), np.zeros((n, 0)), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64),
                  np.zeros(n, dtype=np.int64))
    measured = measure_sources(view, boxes, major, minor, snr=True, beam_angle=angle)
    good = measured.fitted & np.isfinite(measured.peak) & np.isfinite(measured.integral)
    if good.sum() < n // 2:
        return None
    peak = float(np.median(measured.peak[good])) / _PEAK
    integral = float(np.median(measured.integral[good])) / _PEAK
    apparent = _covariance(measured.major[good], measured.minor[good], measured.angle[good])
    nominal = _covariance(np.array([major]), np.array([minor]), np.array([angle]))[0]
    excess = np.median(apparent, axis=0) - nominal
    if not (peak > 0 and integral > 0):
        return None
    shift_x = np.where(good, measured.x - vx, np.nan).reshape(_GRID, _GRID)
    shift_y = np.where(good, measured.y - vy, np.nan).reshape(_GRID, _GRID)
    shift_x, shift_y = np.nan_to_num(shift_x, nan=0.0), np.nan_to_num(shift_y, nan=0.0)
    return ResamplingBias(peak, integral, excess, 0.5 * minor, zoom, shift_x, shift_y, _COMPACT_BEAMS * major)
