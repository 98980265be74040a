"""True sources to YOLO targets: the exact inverse of what inference decodes.

Inference (`decode_yolo`, `decode_patch`, `parameter_values`) turns the head's activated output
into boxes and catalogue values:

* centre = (cell index + a_x) * cell, where a_x = logistic(slope * raw) is the position channel
  and cell = patch size / grid size (pixel k spans [k, k+1], so the numpy centre is that - 0.5);
* width = prior_w * exp(a_w), where a_w = clamp(slope * raw) is the size channel;
* a parameter p becomes ``exp(min + p (max - min))``, ``min + p (max - min)``, ... (card transforms),
  the position angle ``atan2(2 s - 1, c)`` from c = cos PA and s = (sin PA + 1) / 2.

So a source centred at x (numpy pixels of the patch) lives in cell ``floor((x + 0.5) / cell)`` with
a_x the remainder, a_w = log(width / prior_w), and p the inverse transform of its value. A source
goes to the free prior of its cell that best matches its box size (intersection over union of
two centred boxes), brighter sources first, as in CIANNA's YOLO layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..cianna._spec import YoloHead
from ..models._card import ParameterSpec
from ._config import TargetConfig

__all__ = ["PatchTruth", "STATE", "encode_parameters", "source_boxes", "apparent_shape", "encode_targets",
           "truth_corners", "target_channels"]

_FWHM_PER_SIGMA = math.sqrt(8.0 * math.log(2.0))
#: Channel 0 of a target: 1 a box that must report a source, 0 one that must not, -1 no loss.
STATE = 0
TARGET, NEGATIVE, IGNORE = 1.0, 0.0, -1.0


def target_channels(head: YoloHead) -> int:
    """Channels of a dense target per box: state, a_x, a_y, a_w, a_h, then the parameters."""
    return 5 + head.nb_param


@dataclass
class PatchTruth:
    """The true sources seen by one patch, in its own pixel frame.

    ``x``, ``y`` are 0-based numpy coordinates of the centres relative to the patch origin (they
    may lie outside the patch: such sources only matter to the ignore rule); ``width``,
    ``height`` the boxes in pixels; ``params`` the encoded extra outputs ``[n, nb_param]``;
    ``snr`` the peak SNR; ``flux`` in Jy (brighter sources choose their prior first).
    """

    x: np.ndarray
    y: np.ndarray
    width: np.ndarray
    height: np.ndarray
    params: np.ndarray
    snr: np.ndarray
    flux: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: np.ndarray) -> "PatchTruth":
        """The sources selected by `index`."""
        return PatchTruth(self.x[index], self.y[index], self.width[index], self.height[index],
                          self.params[index], self.snr[index], self.flux[index])

    def shifted(self, dx: float, dy: float) -> "PatchTruth":
        """The same sources in the frame of a patch whose origin is (dx, dy) in this frame."""
        return PatchTruth(self.x - dx, self.y - dy, self.width, self.height, self.params, self.snr, self.flux)


def encode_parameters(values: dict[str, np.ndarray], specs: tuple[ParameterSpec, ...], nb_param: int) -> np.ndarray:
    """Physical values to the head's normalised parameters: the inverse of `parameter_values`.

    Parameters
    ----------
    values : dict
        One array per card column name (flux in Jy, sizes in the card unit, pa in degrees).
    specs : tuple of ParameterSpec
        The card's ``[[parameters]]``.
    nb_param : int
        Extra outputs per box.

    Returns
    -------
    ndarray ``[n, nb_param]`` float32 (channels no spec names stay 0).
    """
    n = len(next(iter(values.values()))) if values else 0
    out = np.zeros((n, nb_param), dtype=np.float64)
    for spec in specs:
        v = np.asarray(values[spec.name], dtype=np.float64)
        if spec.transform == "pa_cos_sin":
            angle = np.radians(v)
            out[:, spec.channels[0]] = np.cos(angle)
            out[:, spec.channels[1]] = 0.5 * (np.sin(angle) + 1.0)
            continue
        if spec.transform == "exp":
            v = np.log(v)
        elif spec.transform == "log10":
            v = np.log10(v)
        out[:, spec.channels[0]] = (v - spec.min) / (spec.max - spec.min)
    return out.astype(np.float32)


def source_boxes(bmaj: np.ndarray, bmin: np.ndarray, pa: np.ndarray, beam: tuple[float, float, float],
                 pixel_scale: float, config: TargetConfig) -> tuple[np.ndarray, np.ndarray]:
    """Box width and height (pixels) of sources from their intrinsic shape and the beam.

    The beam-convolved covariance is the sum of the source's and the beam's (simulator
    convention: the major axis points along pixel direction (-sin PA, cos PA)); the FWHM extent
    along x is ``FWHM_factor * sqrt(C_xx)``. Unresolved sources have bmaj = bmin = 0.
    """
    def covariance(major: np.ndarray, minor: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, ...]:
        a = np.asarray(major, np.float64) / pixel_scale / _FWHM_PER_SIGMA
        b = np.asarray(minor, np.float64) / pixel_scale / _FWHM_PER_SIGMA
        t = np.radians(np.asarray(angle, np.float64))
        ux, uy, vx, vy = -np.sin(t), np.cos(t), np.cos(t), np.sin(t)
        return a * a * ux * ux + b * b * vx * vx, a * a * uy * uy + b * b * vy * vy

    sxx, syy = covariance(bmaj, bmin, pa)
    bxx, byy = covariance(np.asarray(beam[0]), np.asarray(beam[1]), np.asarray(beam[2]))
    width = config.box_scale * _FWHM_PER_SIGMA * np.sqrt(sxx + bxx)
    height = config.box_scale * _FWHM_PER_SIGMA * np.sqrt(syy + byy)
    return (np.clip(width, config.box_min, config.box_max).astype(np.float32),
            np.clip(height, config.box_min, config.box_max).astype(np.float32))


def apparent_shape(bmaj: np.ndarray, bmin: np.ndarray, pa: np.ndarray, beam: tuple[float, float, float],
                   pixel_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apparent (beam-convolved) FWHM axes in pixels and the major axis angle in the pixel frame.

    The convolved covariance is the source's plus the beam's (simulator convention: a major
    axis at position angle ``pa`` points along pixel direction ``(-sin pa, cos pa)``); its
    eigen-decomposition gives the axes, and the major axis direction ``(vx, vy)`` the angle
    ``atan2(-vx, vy)`` from +y towards -x, folded into [-90, 90) degrees. Unresolved sources
    have bmaj = bmin = 0 (they take the beam's shape).
    """
    def covariance(major: np.ndarray, minor: np.ndarray, angle: np.ndarray) -> np.ndarray:
        a = np.asarray(major, np.float64) / pixel_scale / _FWHM_PER_SIGMA
        b = np.asarray(minor, np.float64) / pixel_scale / _FWHM_PER_SIGMA
        t = np.radians(np.asarray(angle, np.float64))
        ux, uy, vx, vy = -np.sin(t), np.cos(t), np.cos(t), np.sin(t)
        return np.stack([a * a * ux * ux + b * b * vx * vx, a * a * ux * uy + b * b * vx * vy,
                         a * a * uy * uy + b * b * vy * vy], axis=-1)

    total = covariance(bmaj, bmin, pa) + covariance(np.asarray(beam[0]), np.asarray(beam[1]), np.asarray(beam[2]))
    sxx, sxy, syy = total[..., 0], total[..., 1], total[..., 2]
    mean, half = 0.5 * (sxx + syy), np.sqrt(0.25 * (sxx - syy) ** 2 + sxy * sxy)
    major = _FWHM_PER_SIGMA * np.sqrt(mean + half)
    minor = _FWHM_PER_SIGMA * np.sqrt(np.maximum(mean - half, 0.0))
    theta = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)  # major axis angle from +x (anticlockwise)
    vx, vy = np.cos(theta), np.sin(theta)
    angle = np.degrees(np.arctan2(-vx, vy))
    angle = (angle + 90.0) % 180.0 - 90.0
    return major, minor, angle


def _logit_bounds(head: YoloHead) -> tuple[float, float]:
    """The range the activated position can reach (CIANNA clamps the logistic's input)."""
    fmax, fmin = float(head.slopes[0][1]), float(head.slopes[0][2])
    return 1.0 / (1.0 + math.exp(fmax)), 1.0 / (1.0 + math.exp(fmin))


def encode_targets(truth: PatchTruth, head: YoloHead, patch_size: int, cell: int, config: TargetConfig) -> np.ndarray:
    """Dense YOLO targets of one patch, ``[nb_box, 5 + nb_param, grid, grid]`` float32.

    Channel 0 (`STATE`) is 1 for a box that must report a source, 0 for one that must not and
    -1 for no objectness loss (the cell of a source too faint to be a target); channels 1-4 are
    the activated position (a_x, a_y in the cell) and size (a_w, a_h) the decode inverts;
    channels 5+ the encoded parameters. Only sources whose centre lies in the patch count.
    ``cell`` is the grid cell in pixels (the network's total stride).
    """
    if patch_size % cell:
        raise ValueError(f"patch size {patch_size} is not a multiple of the {cell} px grid cell")
    grid = patch_size // cell
    nb_box = head.nb_box
    out = np.zeros((nb_box, target_channels(head), grid, grid), dtype=np.float32)
    cx, cy = truth.x + 0.5, truth.y + 0.5  # CIANNA frame: pixel k spans [k, k + 1]
    inside = (cx >= 0) & (cx < patch_size) & (cy >= 0) & (cy < patch_size)
    faint = inside & (truth.snr < config.min_snr)
    for k in np.nonzero(faint)[0]:
        out[:, STATE, int(cy[k] // cell), int(cx[k] // cell)] = IGNORE
    chosen = np.nonzero(inside & ~faint)[0]
    chosen = chosen[np.argsort(-truth.flux[chosen], kind="stable")]
    pw, ph = np.asarray(head.priors[0], np.float64), np.asarray(head.priors[1], np.float64)
    low, high = _logit_bounds(head)
    size_limit = float(head.slopes[1][1])
    taken = np.zeros((nb_box, grid, grid), dtype=bool)
    # per source a handful of scalar operations: plain floats, not numpy scalars (dense skies hold
    # hundreds of sources per patch, and this runs for every training patch)
    columns = zip(cx[chosen].tolist(), cy[chosen].tolist(), truth.width[chosen].tolist(),
                  truth.height[chosen].tolist(), chosen.tolist())
    for x, y, w, h, k in columns:
        i, j = int(x // cell), int(y // cell)
        inter = np.minimum(w, pw) * np.minimum(h, ph)
        iou = inter / (w * h + pw * ph - inter)
        free = ~taken[:, j, i]
        if not free.any():  # every prior of the cell holds a brighter source: leave it unpenalised
            out[:, STATE, j, i] = np.where(taken[:, j, i], out[:, STATE, j, i], IGNORE)
            continue
        b = int(np.argmax(np.where(free, iou, -1.0)))
        taken[b, j, i] = True
        out[b, STATE, j, i] = TARGET
        out[b, 1, j, i] = min(max(x / cell - i, low), high)
        out[b, 2, j, i] = min(max(y / cell - j, low), high)
        out[b, 3, j, i] = min(max(math.log(w / pw[b]), -size_limit), size_limit)
        out[b, 4, j, i] = min(max(math.log(h / ph[b]), -size_limit), size_limit)
        out[b, 5:, j, i] = truth.params[k]
    return out


def truth_corners(truth: PatchTruth, max_truths: int) -> np.ndarray:
    """Box corners ``[max_truths, 4]`` (x_min, y_min, x_max, y_max, CIANNA frame), NaN-padded.

    Used by the ignore rule: a prediction overlapping any true box well, even that of a source
    outside the patch or too faint to be a target, is not pushed towards zero objectness.
    """
    out = np.full((max_truths, 4), np.nan, dtype=np.float32)
    n = min(len(truth), max_truths)
    order = np.argsort(-truth.flux, kind="stable")[:n]
    cx, cy = truth.x[order] + 0.5, truth.y[order] + 0.5
    hw, hh = 0.5 * truth.width[order], 0.5 * truth.height[order]
    out[:n] = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    return out
