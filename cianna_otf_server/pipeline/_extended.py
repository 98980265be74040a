"""Remove false detections on bright extended emission: the SDC1 recipe's last box filter.

On a large, bright source (the lobes or wings of a radio galaxy) the network proposes many
small, moderately confident boxes that are not sources. The SKA SDC1 post-processing of
YOLO-CIANNA (CIANNA repository, ``examples/SKAO_SDC1/aux_fct.py``, function ``tile_filter``,
the lines commented "Remove false detections over very large and very bright sources", with its
settings ``val_med_lims`` and ``val_med_obj`` at the top of the same file) rejects a box when the
image under it is bright and the box is not confident enough:

* the window is the box enlarged by 5 pixels on every side, its corners truncated to whole
  pixels (``int(x_min - 5)`` to ``int(x_max + 5)``, as a numpy slice) and clipped to the patch;
* the median of the *normalised* image (the values the network reads: clipped, rescaled,
  ``tanh(3x)``) is taken over that window;
* the box is dropped when, for any tier ``(median_limit, objectness_limit)`` of
  ``((0.6, 0.9), (0.3, 0.7), (0.1, 0.5))``, the median is above the median limit and the box's
  objectness below the objectness limit (both strict).

A box with objectness of at least 0.9 is never dropped; a box in empty sky (median <= 0.1) is
never dropped. In the recipe this runs in ``tile_filter`` for each patch, on the boxes that
passed their prior's objectness threshold, after the edge-cell objectness penalty and after
small boxes were widened to 5 px, and *before* the first (in-patch) NMS: the objectness tested
is the penalised one and the box is the widened one, which is what `decode_patch` produces
before its NMS. The filter reads no predicted extra parameter (flux, sizes, angle): only the
box corners, its objectness and the image.

The medians are in normalised input units, so the limits belong with the card's
``[normalisation]``: for the SDC1 card (clip 0.4e-6 .. 0.4e-4 Jy/beam, tanh(3x)) the limits 0.1,
0.3 and 0.6 are 1.72e-6, 4.49e-6 and 9.55e-6 Jy/beam.

`drop_extended_false_positives` is a pure function on `Boxes` in any frame (patch or image
pixels, CIANNA's corner convention: pixel ``k`` spans ``[k, k+1]``) given the normalised
pixels as an array, or as a window source such as `NormalisedImage` that normalises
only the windows it is asked for (so a memory-mapped image is never read whole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from ._boxes import Boxes

__all__ = [
    "ExtendedFilterSettings",
    "SDC1_EXTENDED_FILTER",
    "NormalisedImage",
    "window_medians",
    "drop_extended_false_positives",
    "patch_bounds",
]

# Windows of candidate boxes are fetched by spatial blocks of this many pixels, so that filtering
# boxes spread over a whole large image never normalises more than about a block at once.
_BLOCK = 1024


@dataclass(frozen=True)
class ExtendedFilterSettings:
    """Settings of `drop_extended_false_positives`; the defaults are the SDC1 recipe's.

    Attributes
    ----------
    tiers : tuple of (float, float)
        ``(median_limit, objectness_limit)`` pairs: a box is dropped when, for any pair, the
        median of the normalised image in its window is above ``median_limit`` and its
        objectness below ``objectness_limit``. SDC1: ``((0.6, 0.9), (0.3, 0.7), (0.1, 0.5))``
        (``val_med_lims`` and ``val_med_obj`` in CIANNA's ``examples/SKAO_SDC1/aux_fct.py``).
    margin : float
        Pixels added to every side of the box to make its window (SDC1: 5).
    """

    tiers: tuple[tuple[float, float], ...] = ((0.6, 0.9), (0.3, 0.7), (0.1, 0.5))
    margin: float = 5.0

    def __post_init__(self) -> None:
        tiers = tuple((float(a), float(b)) for a, b in self.tiers)
        if not tiers:
            raise ValueError("the extended-source filter needs at least one (median, objectness) tier")
        if not all(math.isfinite(a) and math.isfinite(b) for a, b in tiers):
            raise ValueError("extended-source filter tiers must be finite numbers")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError("the extended-source filter margin must be a non-negative number of pixels")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "margin", float(self.margin))

    @property
    def max_objectness(self) -> float:
        """Boxes at or above this objectness are never dropped (their windows are not read)."""
        return max(b for _, b in self.tiers)

    @classmethod
    def from_yolo(cls, yolo: Any) -> "ExtendedFilterSettings | None":
        """The settings a card's ``[yolo]`` section asks for, or None when the filter is off.

        Reads the attributes ``extended_filter`` (bool), ``extended_filter_tiers`` (pairs; empty
        means the SDC1 tiers) and ``extended_filter_margin`` (pixels; None means 5) of a
        `YoloSpec`-like object; missing attributes mean the filter is off.
        """
        if not bool(getattr(yolo, "extended_filter", False)):
            return None
        default = cls()
        tiers = tuple(getattr(yolo, "extended_filter_tiers", ()) or ()) or default.tiers
        margin = getattr(yolo, "extended_filter_margin", None)
        return cls(tiers=tiers, margin=default.margin if margin is None else float(margin))


#: The SDC1 reference filter (CIANNA ``examples/SKAO_SDC1/aux_fct.py``, ``tile_filter``).
SDC1_EXTENDED_FILTER = ExtendedFilterSettings()


class WindowSource(Protocol):
    """Anything that returns the normalised pixels ``[y1-y0, x1-x0]`` of a window (blank beyond its edge)."""

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray: ...


class NormalisedImage:
    """The normalised pixels of an image, normalised window by window when asked.

    Parameters
    ----------
    data : 2-D array-like
        Image pixels in image units (a memory map is fine: only requested windows are read).
    normalisation : NormalisationSpec
        The card's ``[normalisation]``; pixels beyond the image and NaN pixels come out as
        `normalise` makes them (the normalised blank value), as in the patches the network reads.

    ``shape`` is the image's ``(ny, nx)``; window coordinates are 0-based image pixels.
    """

    def __init__(self, data: Any, normalisation: Any) -> None:
        self.data = data
        self.normalisation = normalisation
        self.shape = (int(data.shape[0]), int(data.shape[1]))

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        from ._normalise import normalise

        h, w = max(y1 - y0, 0), max(x1 - x0, 0)
        raw = np.full((h, w), np.nan, dtype=np.float32)
        ny, nx = self.shape
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, nx), min(y1, ny)
        if ix0 < ix1 and iy0 < iy1:
            raw[iy0 - y0: iy1 - y0, ix0 - x0: ix1 - x0] = np.asarray(self.data[iy0:iy1, ix0:ix1], dtype=np.float32)
        return normalise(raw, self.normalisation)


class _ArraySource:
    """A normalised array as a window source; pixels beyond it read as `fill`."""

    def __init__(self, pixels: np.ndarray, fill: float) -> None:
        pixels = np.asarray(pixels)
        if pixels.ndim != 2:
            raise ValueError(f"normalised pixels must be a 2-D array [H, W], not of shape {pixels.shape}")
        self.pixels, self.fill = pixels, float(fill)
        self.shape = (int(pixels.shape[0]), int(pixels.shape[1]))

    def window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        ny, nx = self.shape
        if x0 >= 0 and y0 >= 0 and x1 <= nx and y1 <= ny:
            return self.pixels[y0:y1, x0:x1]
        out = np.full((max(y1 - y0, 0), max(x1 - x0, 0)), self.fill, dtype=self.pixels.dtype)
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, nx), min(y1, ny)
        if ix0 < ix1 and iy0 < iy1:
            out[iy0 - y0: iy1 - y0, ix0 - x0: ix1 - x0] = self.pixels[iy0:iy1, ix0:ix1]
        return out


def _as_source(pixels: Any, fill: float) -> Any:
    if hasattr(pixels, "window"):
        return pixels
    return _ArraySource(pixels, fill)


def _bounds_array(bounds: Any, n: int, source: Any, origin: tuple[int, int]) -> np.ndarray:
    """Per-box clip bounds ``[n, 4]`` (x0, y0, x1, y1) in the boxes' frame."""
    if bounds is None:
        shape = getattr(source, "shape", None)
        if shape is None:
            big = np.iinfo(np.int64).max // 4
            return np.tile(np.array([-big, -big, big, big], dtype=np.int64), (n, 1))
        ny, nx = shape
        bounds = (origin[0], origin[1], origin[0] + nx, origin[1] + ny)
    arr = np.asarray(bounds, dtype=np.float64)
    if arr.shape == (4,):
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, 4):
        raise ValueError(f"bounds must be (x0, y0, x1, y1) or one such row per box, not of shape {arr.shape}")
    return np.floor(arr).astype(np.int64)


def _origin(origin: Sequence[float]) -> tuple[int, int]:
    ox, oy = (float(v) for v in origin)
    if ox != int(ox) or oy != int(oy):
        raise ValueError(f"the pixels' origin must be whole pixels, not {list(origin)}")
    return int(ox), int(oy)


def _windows(
    boxes: Boxes,
    source: Any,
    margin: float,
    origin: Sequence[float],
    bounds: Sequence[float] | np.ndarray | None,
    select: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Non-empty windows ``(box index, x0, y0, x1, y1)`` in the source's pixel indices.

    ``floor`` equals the recipe's ``int()`` truncation here: the two differ only below 0, where
    the window is clipped to the patch side anyway. (A box lying more than `margin` px beyond
    the patch's top or left side gets an empty window, so it is kept; the recipe's slice would
    wrap around there, but decoded boxes always have their centre inside the patch.)
    """
    n = len(boxes)
    ox, oy = _origin(origin)
    clip = _bounds_array(bounds, n, source, (ox, oy))
    with np.errstate(invalid="ignore"):
        x0 = np.floor(np.asarray(boxes.x_min, dtype=np.float64) - margin)
        y0 = np.floor(np.asarray(boxes.y_min, dtype=np.float64) - margin)
        x1 = np.floor(np.asarray(boxes.x_max, dtype=np.float64) + margin)
        y1 = np.floor(np.asarray(boxes.y_max, dtype=np.float64) + margin)
    wanted = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(x1) & np.isfinite(y1)
    if select is not None:
        wanted &= np.asarray(select, dtype=bool)
    idx = np.nonzero(wanted)[0]
    wx0 = np.maximum(x0[idx].astype(np.int64), clip[idx, 0]) - ox
    wy0 = np.maximum(y0[idx].astype(np.int64), clip[idx, 1]) - oy
    wx1 = np.minimum(x1[idx].astype(np.int64), clip[idx, 2]) - ox
    wy1 = np.minimum(y1[idx].astype(np.int64), clip[idx, 3]) - oy
    full = (wx1 > wx0) & (wy1 > wy0)
    return idx[full], wx0[full], wy0[full], wx1[full], wy1[full]


def _regions(source: Any, wx0: np.ndarray, wy0: np.ndarray, wx1: np.ndarray, wy1: np.ndarray):
    """Yield ``(members, region, rx0, ry0)``: windows grouped by block, and the pixels covering them.

    One read covers many windows but stays bounded (about `_BLOCK` px plus a window on a side).
    """
    if wx0.size == 0:
        return
    block = np.stack([wx0 // _BLOCK, wy0 // _BLOCK], axis=1)
    _, group = np.unique(block, axis=0, return_inverse=True)
    group = np.asarray(group).reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.diff(group[order], prepend=-1))
    for members in np.split(order, starts[1:]):
        rx0, ry0 = int(wx0[members].min()), int(wy0[members].min())
        rx1, ry1 = int(wx1[members].max()), int(wy1[members].max())
        yield members, np.asarray(source.window(rx0, ry0, rx1, ry1)), rx0, ry0


def window_medians(
    boxes: Boxes,
    pixels: np.ndarray | WindowSource,
    *,
    margin: float = 5.0,
    origin: Sequence[float] = (0, 0),
    bounds: Sequence[float] | np.ndarray | None = None,
    fill: float = 0.0,
    select: np.ndarray | None = None,
) -> np.ndarray:
    """Median of the normalised pixels in each box's window (NaN where the window is empty).

    Parameters
    ----------
    boxes : Boxes
        Corners in some pixel frame (patch or image), CIANNA's convention.
    pixels : 2-D array or window source
        The normalised pixels (the values the network reads). An array's pixel ``[r, c]`` spans
        ``[origin_x + c, origin_x + c + 1] x [origin_y + r, origin_y + r + 1]`` in the boxes'
        frame; a window source (`NormalisedImage`) is asked for windows in the boxes' frame
        minus ``origin``.
    margin : float
        Pixels added on each side of the box before truncating the corners to whole pixels.
    origin : (int, int)
        Where the pixels' ``(0, 0)`` lies in the boxes' frame: ``(0, 0)`` for patch-frame boxes
        and their patch, ``(tile.x0, tile.y0)`` for image-frame boxes and a patch array,
        ``(-tile.x0, -tile.y0)`` for patch-frame boxes and a `NormalisedImage`.
    bounds : (x0, y0, x1, y1) or [n, 4], optional
        The window of each box is clipped to these bounds in the boxes' frame: the recipe clips
        to the patch. Default: the array's (or source's ``shape``) extent.
        Parts of a window beyond an array read as ``fill``.
    fill : float
        Value of pixels beyond an array's edge (inside ``bounds``).
    select : boolean array, optional
        Compute only these boxes (others are NaN).

    Returns
    -------
    ndarray of float64, shape (n,)
    """
    medians = np.full(len(boxes), np.nan)
    if len(boxes) == 0:
        return medians
    source = _as_source(pixels, fill)
    idx, wx0, wy0, wx1, wy1 = _windows(boxes, source, margin, origin, bounds, select)
    for members, region, rx0, ry0 in _regions(source, wx0, wy0, wx1, wy1):
        medians[idx[members]] = _medians_in_region(
            region, wx0[members] - rx0, wy0[members] - ry0, wx1[members] - rx0, wy1[members] - ry0
        )
    return medians


def _medians_in_region(region: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
                       y1: np.ndarray) -> np.ndarray:
    """Medians of the windows ``region[y0:y1, x0:x1]``; windows of one shape share one numpy call."""
    out = np.empty(x0.size)
    w, h = x1 - x0, y1 - y0
    key = h.astype(np.int64) * (int(w.max()) + 1) + w
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.diff(key[order], prepend=-1))
    for members in np.split(order, starts[1:]):
        sh, sw = int(h[members[0]]), int(w[members[0]])
        if members.size == 1:
            k = members[0]
            out[k] = np.median(region[y0[k]: y1[k], x0[k]: x1[k]])
            continue
        view = np.lib.stride_tricks.sliding_window_view(region, (sh, sw))
        stack = view[y0[members], x0[members]]  # [k, sh, sw] (a copy)
        out[members] = np.median(stack.reshape(members.size, -1), axis=1)
    return out


def _medians_above(region: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
                   limits: Sequence[float]) -> np.ndarray:
    """``median(window) > limit`` for each window and limit, ``[k, len(limits)]``, without sorting.

    With ``c`` of the window's ``n`` values above the limit (counted with a summed-area table),
    the median is above the limit when ``c > n/2`` (the middle value(s) are above) and not when
    ``c < n/2``; only when ``c == n/2`` exactly (n even) does it depend on the mean of the two
    middle values, and those windows fall back to `_medians_in_region`. The result is the same
    as comparing `window_medians` with the limits.
    """
    region = np.asarray(region)
    if not np.isfinite(region).all():  # a NaN median compares False: take the exact path
        medians = _medians_in_region(region, x0, y0, x1, y1)
        with np.errstate(invalid="ignore"):
            return medians[:, None] > np.asarray(limits, dtype=np.float64)[None, :]
    n = (x1 - x0) * (y1 - y0)
    out = np.zeros((x0.size, len(limits)), dtype=bool)
    tied = np.zeros(x0.size, dtype=bool)
    table = np.zeros((region.shape[0] + 1, region.shape[1] + 1), dtype=np.int64)
    for t, limit in enumerate(limits):
        table[1:, 1:] = region > np.float64(limit)  # compared in float64, like the medians
        np.add.accumulate(table, axis=0, out=table)
        np.add.accumulate(table, axis=1, out=table)
        above = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        out[:, t] = 2 * above > n
        tied |= 2 * above == n
    if tied.any():
        k = np.nonzero(tied)[0]
        medians = _medians_in_region(region, x0[k], y0[k], x1[k], y1[k])
        out[k] = medians[:, None] > np.asarray(limits, dtype=np.float64)[None, :]
    return out


def drop_extended_false_positives(
    boxes: Boxes,
    pixels: np.ndarray | WindowSource,
    settings: ExtendedFilterSettings = SDC1_EXTENDED_FILTER,
    *,
    origin: Sequence[float] = (0, 0),
    bounds: Sequence[float] | np.ndarray | None = None,
    fill: float = 0.0,
) -> Boxes:
    """The boxes without the false detections on bright extended emission (SDC1 recipe).

    A box is dropped when the median of the normalised pixels in its window (the box widened by
    ``settings.margin`` px on each side, truncated to whole pixels and clipped to ``bounds``) is
    above a tier's median limit while its objectness is below that tier's objectness limit.
    Boxes at or above ``settings.max_objectness``, and boxes whose window is empty, are kept.
    The order of the kept boxes is unchanged.

    Parameters
    ----------
    boxes : Boxes
        Candidates in a patch's or the image's pixel frame (see `window_medians`).
    pixels : 2-D array or window source
        The normalised pixels: for patch-frame boxes, the patch the network read (``batch[k, 0]``),
        whose extent is the default ``bounds`` as in the recipe; for image-frame boxes, a
        `NormalisedImage` with ``bounds=patch_bounds(boxes, plan)``.
    settings : ExtendedFilterSettings
        Tiers and margin (SDC1 defaults).
    origin, bounds, fill :
        See `window_medians`.
    """
    if len(boxes) == 0:
        return boxes
    objectness = np.asarray(boxes.objectness, dtype=np.float64)
    candidates = objectness < settings.max_objectness
    if not candidates.any():
        return boxes
    source = _as_source(pixels, fill)
    idx, wx0, wy0, wx1, wy1 = _windows(boxes, source, settings.margin, origin, bounds, candidates)
    limits = [median_limit for median_limit, _ in settings.tiers]
    drop = np.zeros(len(boxes), dtype=bool)
    for members, region, rx0, ry0 in _regions(source, wx0, wy0, wx1, wy1):
        where = idx[members]
        above = _medians_above(region, wx0[members] - rx0, wy0[members] - ry0,
                               wx1[members] - rx0, wy1[members] - ry0, limits)
        for t, (_, objectness_limit) in enumerate(settings.tiers):
            drop[where] |= above[:, t] & (objectness[where] < objectness_limit)
    return boxes.take(~drop) if drop.any() else boxes


def patch_bounds(boxes: Boxes, plan: Any) -> np.ndarray:
    """Each box's patch footprint ``[n, 4]`` (x0, y0, x1, y1) in image pixels, from ``boxes.tile``.

    The recipe clips a window to the patch the box came from; for boxes already moved to the
    image (`to_image_coordinates` sets ``tile``), these are the bounds to pass.
    """
    tile = np.asarray(boxes.tile, dtype=np.int64)
    if tile.size and (tile.min() < 0 or tile.max() >= len(plan)):
        raise ValueError("patch_bounds needs boxes whose `tile` indexes the plan (boxes in image coordinates)")
    i, j = tile % plan.nx_tiles, tile // plan.nx_tiles
    x0 = plan.box.x0 - plan.offset[0] + i * plan.shift[0]
    y0 = plan.box.y0 - plan.offset[1] + j * plan.shift[1]
    w, h = plan.patch_size
    return np.stack([x0, y0, x0 + w, y0 + h], axis=1).astype(np.int64)
