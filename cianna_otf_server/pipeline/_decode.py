"""From one patch's decoded YOLO output to the boxes it detects (thresholds + first NMS).

This follows the SDC1 post-processing of CIANNA (`tile_filter` then `first_NMS`): every
prior of every grid cell proposes a box; proposals below the prior's objectness threshold
are dropped; the rest are sorted by objectness and a greedy non-maximum suppression drops
boxes that overlap an already kept, more confident box by more than the NMS threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..models._card import YoloSpec
from ._boxes import Boxes, diou, diou_matrix
from ._extended import ExtendedFilterSettings, drop_extended_false_positives

__all__ = ["DecodeSettings", "decode_settings", "decode_patch", "decode_batch", "first_nms"]


@dataclass(frozen=True)
class DecodeSettings:
    """Thresholds applied to one patch's proposals.

    Attributes
    ----------
    thresholds : tuple of float
        Objectness threshold per prior (a proposal is kept when objectness >= threshold).
    nms_tiers : tuple of (float, float)
        ``(overlap_limit, objectness_limit)`` pairs: a box is suppressed by a more confident
        kept box when, for any pair, their DIoU overlap exceeds ``overlap_limit`` and the box's
        objectness is below ``objectness_limit``. A plain NMS threshold ``t`` is ``((t, inf),)``.
        CIANNA's SDC1 recipe uses ``((0.05, 1.0), (-0.1, 0.7), (-0.3, 0.5), (-0.5, 0.3))``.
    min_size : float
        Boxes narrower or shorter than this (pixels) are dropped.
    min_box_size : float
        Boxes smaller than this (pixels) are widened to it around their centre (the SDC1 recipe
        uses 5, the smallest box size of its training set); 0 leaves them unchanged.
    edge_penalty : float
        Objectness (and probability) reduction on the outermost grid cells, where the network
        sees only part of a source (SDC1 recipe: 0.05); 0 disables it.
    extended_filter : ExtendedFilterSettings or None
        The SDC1 recipe's filter of false detections on bright extended emission, applied
        before the first NMS when the patch's normalised pixels are given (`decode_patch`).
    rescue_threshold : float
        The card's significance rescue (``[yolo] rescue_threshold``; 0: off): proposals are kept
        down to this objectness (`floor`) as candidates, which the measurement keeps only when
        significant (`YoloDetection.boxes`). Greedy NMS lets a box be suppressed only by more
        confident ones, so the boxes at or above `thresholds` are the same with or without them.
    """

    thresholds: tuple[float, ...]
    nms_tiers: tuple[tuple[float, float], ...]
    min_size: float = 0.0
    min_box_size: float = 0.0
    edge_penalty: float = 0.0
    extended_filter: ExtendedFilterSettings | None = None
    rescue_threshold: float = 0.0

    @property
    def floor(self) -> tuple[float, ...]:
        """The objectness each prior's proposals are decoded down to: its threshold, or the rescue's if lower."""
        if self.rescue_threshold <= 0:
            return self.thresholds
        return tuple(min(t, self.rescue_threshold) for t in self.thresholds)

    def standing(self, boxes: Boxes) -> np.ndarray:
        """Which decoded boxes reach their prior's threshold (the rest are rescue candidates)."""
        return boxes.objectness >= np.asarray(self.thresholds, dtype=np.float64)[boxes.prior]


def decode_settings(
    yolo: YoloSpec,
    threshold: float | Sequence[float] | None = None,
    nms: float | None = None,
    min_size: float | None = None,
    *,
    nms_tiers: Sequence[tuple[float, float]] | None = None,
    min_box_size: float = 0.0,
    edge_penalty: float = 0.0,
) -> DecodeSettings:
    """Settings from a card's `YoloSpec`, with the user's overrides.

    Parameters
    ----------
    yolo : YoloSpec
        The card's YOLO section (defaults).
    threshold : float or sequence, optional
        Objectness threshold for every prior (one number) or per prior (nb_box numbers).
    nms : float, optional
        NMS overlap threshold (DIoU-style, in (-1, 1]); replaces ``nms_tiers`` too.
    min_size : float, optional
        Minimum box width and height in pixels.
    """
    if threshold is None:
        thresholds = tuple(float(t) for t in yolo.objectness_thresholds)
    elif np.ndim(threshold) == 0:
        thresholds = (float(threshold),) * yolo.nb_box
    else:
        thresholds = tuple(float(t) for t in threshold)  # type: ignore[union-attr]
        if len(thresholds) != yolo.nb_box:
            raise ValueError(f"threshold needs one value per prior ({yolo.nb_box}), got {len(thresholds)}")
    if nms is not None:
        tiers: tuple[tuple[float, float], ...] = ((float(nms), math.inf),)
    elif nms_tiers:
        tiers = tuple((float(a), float(b)) for a, b in nms_tiers)
    else:
        tiers = ((float(yolo.nms_threshold), math.inf),)
    return DecodeSettings(
        thresholds=thresholds,
        nms_tiers=tiers,
        min_size=float(yolo.min_size if min_size is None else min_size),
        min_box_size=float(min_box_size),
        edge_penalty=float(edge_penalty),
        extended_filter=ExtendedFilterSettings.from_yolo(yolo),
        rescue_threshold=float(yolo.rescue_threshold) if yolo.rescues else 0.0,
    )


def decode_patch(output: np.ndarray, yolo: YoloSpec, settings: DecodeSettings, tile_index: int = -1,
                 patch: np.ndarray | None = None) -> Boxes:
    """Boxes detected in one patch, most confident first, in patch pixel coordinates.

    Parameters
    ----------
    output : ndarray
        The network's decoded output for one patch (``raw_output=False``):
        ``[nb_box*(8+nb_class+nb_param), grid_h, grid_w]`` (a depth axis of length 1 after the
        channel axis is accepted). Per box ``b`` and channel ``k`` of ``b*(8+nc+np)+k``: 0-2 the
        min corner (x, y, z), 3-5 the max corner, 6 probability, 7 objectness, then classes
        and parameters.
    yolo : YoloSpec
        Head layout (nb_box, nb_class, nb_param).
    settings : DecodeSettings
        Thresholds and NMS.
    tile_index : int
        Stored in ``Boxes.tile``.
    patch : ndarray, optional
        The normalised pixels ``[H, W]`` the network read; needed by ``settings.extended_filter``.
    """
    nb_box, nc, npar = yolo.nb_box, yolo.nb_class, yolo.nb_param
    stride = 8 + nc + npar
    out = np.asarray(output)
    if out.ndim == 4 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 3 or out.shape[0] != nb_box * stride:
        raise ValueError(
            f"YOLO output of shape {out.shape} does not match nb_box={nb_box}, nb_class={nc}, nb_param={npar}"
        )
    grid_h, grid_w = out.shape[1], out.shape[2]
    out = out.reshape(nb_box, stride, grid_h, grid_w)

    objectness = out[:, 7].astype(np.float64)
    probability = out[:, 6].astype(np.float64)
    if settings.edge_penalty > 0:
        border = np.zeros((grid_h, grid_w), dtype=bool)
        border[[0, -1], :] = True
        border[:, [0, -1]] = True
        for values in (objectness, probability):
            penalised = np.maximum(values - settings.edge_penalty, np.minimum(values, 0.03))
            values[:, border] = penalised[:, border]

    thresholds = np.asarray(settings.floor, dtype=np.float64)[:, None, None]
    b, cy, cx = np.nonzero(objectness >= thresholds)
    if b.size == 0:
        return Boxes.empty(nc, npar)
    sel = out[b, :, cy, cx].astype(np.float64)  # [n, stride]
    x_min, y_min, x_max, y_max = sel[:, 0], sel[:, 1], sel[:, 3], sel[:, 4]

    keep = np.ones(b.size, dtype=bool)
    if settings.min_size > 0:
        keep &= ((x_max - x_min) >= settings.min_size) & ((y_max - y_min) >= settings.min_size)
    if settings.min_box_size > 0:
        cxp, cyp = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
        half_w = 0.5 * np.maximum(settings.min_box_size, x_max - x_min)
        half_h = 0.5 * np.maximum(settings.min_box_size, y_max - y_min)
        x_min, x_max, y_min, y_max = cxp - half_w, cxp + half_w, cyp - half_h, cyp + half_h

    boxes = Boxes(
        x_min=x_min,
        y_min=y_min,
        x_max=x_max,
        y_max=y_max,
        objectness=objectness[b, cy, cx],
        probability=probability[b, cy, cx],
        classes=sel[:, 8: 8 + nc],
        params=sel[:, 8 + nc: 8 + nc + npar],
        prior=b.astype(np.int64),
        cell=(cy * grid_w + cx).astype(np.int64),
        tile=np.full(b.size, tile_index, dtype=np.int64),
    ).take(keep)
    if settings.extended_filter is not None and patch is not None:
        boxes = drop_extended_false_positives(boxes, patch, settings.extended_filter)
    return first_nms(boxes, settings.nms_tiers)


def first_nms(boxes: Boxes, tiers: Sequence[tuple[float, float]] | float) -> Boxes:
    """Greedy non-maximum suppression inside one patch, most confident first.

    Parameters
    ----------
    boxes : Boxes
        Candidates (any order).
    tiers : float or sequence of (overlap_limit, objectness_limit)
        See `DecodeSettings.nms_tiers`; a float ``t`` means ``((t, inf),)``.

    Returns
    -------
    Boxes
        The kept boxes, by decreasing objectness.
    """
    if np.ndim(tiers) == 0:
        tiers = ((float(tiers), math.inf),)  # type: ignore[arg-type]
    n = len(boxes)
    if n == 0:
        return boxes
    order = np.argsort(-boxes.objectness, kind="stable")
    boxes = boxes.take(order)
    corners, objectness = boxes.corners, boxes.objectness
    if n <= _MATRIX_LIMIT:
        kept = _greedy_with_matrix(corners, objectness, tiers)  # type: ignore[arg-type]
    else:
        kept = _greedy_row_by_row(corners, objectness, tiers)  # type: ignore[arg-type]
    return boxes.take(np.asarray(kept, dtype=np.int64))


# Up to this many candidates, the pairwise suppression matrix (n^2 booleans) is built at once.
_MATRIX_LIMIT = 4096
_BLOCK_ROWS = 256


def _suppresses(overlap: np.ndarray, objectness: np.ndarray, tiers: Sequence[tuple[float, float]]) -> np.ndarray:
    out = np.zeros(overlap.shape, dtype=bool)
    for limit, obj_limit in tiers:
        out |= (overlap > limit) & (objectness < obj_limit)
    return out


def _greedy_with_matrix(corners: np.ndarray, objectness: np.ndarray, tiers: Sequence[tuple[float, float]]) -> list[int]:
    """Greedy NMS on boxes sorted by decreasing objectness, from a precomputed suppression matrix."""
    n = len(corners)
    matrix = np.empty((n, n), dtype=bool)
    for start in range(0, n, _BLOCK_ROWS):  # bounded temporaries
        stop = min(n, start + _BLOCK_ROWS)
        matrix[start:stop] = _suppresses(diou_matrix(corners[start:stop], corners), objectness[None, :], tiers)
    alive = np.ones(n, dtype=bool)
    kept = []
    for i in range(n):
        if alive[i]:
            kept.append(i)
            alive[i + 1:] &= ~matrix[i, i + 1:]
    return kept


def _greedy_row_by_row(corners: np.ndarray, objectness: np.ndarray, tiers: Sequence[tuple[float, float]]) -> list[int]:
    """Same result as `_greedy_with_matrix`, in O(n) memory, for very many candidates."""
    candidates = np.arange(len(corners))
    kept: list[int] = []
    while candidates.size:
        best, rest = candidates[0], candidates[1:]
        kept.append(int(best))
        if rest.size == 0:
            break
        overlap = diou(corners[best], corners[rest])
        candidates = rest[~_suppresses(overlap, objectness[rest], tiers)]
    return kept


def decode_batch(
    outputs: np.ndarray, tile_indices: Sequence[int], yolo: YoloSpec, settings: DecodeSettings,
    patches: Sequence[np.ndarray] | None = None,
) -> list[Boxes]:
    """`decode_patch` for each patch of a batch ``[N, C, grid_h, grid_w]`` (with its pixels, when given)."""
    return [decode_patch(outputs[k], yolo, settings, int(t), None if patches is None else patches[k])
            for k, t in enumerate(tile_indices)]
