"""Many small windows of an image read at once, for per-source work over a whole catalogue.

Measuring a survey image means looking at a few hundred pixels around each of tens of
thousands of sources. Read one window at a time, the cost is Python's, not the pixels'; read as
stacks of equal-sized windows (``[n, height, width]``), every later step is a handful of numpy
operations over the stack. Windows of different sizes are stacked by size (`window_groups`);
the pixels a window gains by sharing a larger stack, like those beyond the image, read as NaN,
which every consumer already ignores as blank.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

__all__ = ["window_groups", "read_windows", "blank_beyond"]

#: Pixels per stack of windows: ~8 MB per float64 stack, so that the dozen arrays a measurement
#: keeps per stack stay near a hundred MB however many sources an image holds.
STACK_PIXELS = 1 << 20


def window_groups(heights: np.ndarray, widths: np.ndarray, use: np.ndarray | None = None,
                  budget: int = STACK_PIXELS, common: int = 32) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(height, width, indices)`` stacks covering every window (those with `use` true).

    Each stack's windows fit in ``height x width`` and a stack holds at most `budget` pixels
    (at least one window). Sizes shared by at least `common` windows (the beam-sized boxes
    that make most of a catalogue) get stacks of their own size; the others are stacked by
    their longer side, a factor sqrt(2) per step of the ladder, in stacks as large as their
    largest window, so a catalogue of boxes of every size still makes few stacks.
    """
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    index = np.arange(len(heights)) if use is None else np.flatnonzero(use)
    if len(index) == 0:
        return
    h, w = np.maximum(heights[index], 1), np.maximum(widths[index], 1)
    key = h * (int(w.max()) + 1) + w
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    shared = counts[inverse.reshape(-1)] >= common
    # exact sizes: one stack size per key; the rest: the side's step on the ladder (negative keys)
    rung = np.floor(2.0 * np.log2(np.maximum(h, w))).astype(np.int64)
    group = np.where(shared, key, -1 - rung)
    order = np.lexsort((h * w, group))
    group, index, h, w = group[order], index[order], h[order], w[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    stops = np.r_[starts[1:], len(group)]
    for start, stop in zip(starts.tolist(), stops.tolist()):
        first = start
        while first < stop:  # windows in increasing area: a stack is as large as its largest sides
            tall = np.maximum.accumulate(h[first:stop])
            wide = np.maximum.accumulate(w[first:stop])
            cost = np.arange(1, stop - first + 1) * tall * wide  # pixels of the stack up to each window
            count = max(1, int(np.searchsorted(cost, budget, side="right")))
            yield int(tall[count - 1]), int(wide[count - 1]), index[first:first + count]
            first += count


def read_windows(data: Any, y0: np.ndarray, x0: np.ndarray, height: int, width: int,
                 dtype: Any = np.float32, sizes: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``[n, height, width]`` pixels ``data[y0[k]:y0[k]+height, x0[k]:x0[k]+width]``, NaN beyond the array.

    A numpy array (a memory map included) is read in one gather; any other 2-D array-like
    (a compressed image's section, scaled integers, a resampled view) one clipped slice per
    window. With ``sizes = (heights, widths)``, window ``k`` is only ``heights[k] x widths[k]``
    (the rest NaN), and a window read by slicing reads only that, clipped to the array.
    """
    y0 = np.asarray(y0, dtype=np.int64).reshape(-1)
    x0 = np.asarray(x0, dtype=np.int64).reshape(-1)
    n = len(y0)
    ny, nx = int(data.shape[0]), int(data.shape[1])
    out_shape = (n, int(height), int(width))
    if n == 0 or height <= 0 or width <= 0:
        return np.full((n, max(0, int(height)), max(0, int(width))), np.nan, dtype=dtype)
    if isinstance(data, np.ndarray) and data.ndim == 2:
        out = np.empty(out_shape, dtype=dtype)
        whole = (y0 >= 0) & (y0 + height <= ny) & (x0 >= 0) & (x0 + width <= nx)
        if whole.any():  # windows inside the array: blocks of a strided view, copied row by row
            blocks = np.lib.stride_tricks.sliding_window_view(data, (int(height), int(width)))
            out[whole] = blocks[y0[whole], x0[whole]]
        if not whole.all():  # across the edge: pixel by pixel, clipped, then blanked
            edge = ~whole
            rows = y0[edge, None] + np.arange(height)  # [k, height]
            cols = x0[edge, None] + np.arange(width)  # [k, width]
            values = data[np.clip(rows, 0, ny - 1)[:, :, None], np.clip(cols, 0, nx - 1)[:, None, :]]
            values = np.asarray(values, dtype=dtype)
            values[~(((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :])] = np.nan
            out[edge] = values
        return out if sizes is None else blank_beyond(out, *sizes)
    out = np.full(out_shape, np.nan, dtype=dtype)
    heights, widths = sizes if sizes is not None else (height, width)
    ya, yb = np.maximum(y0, 0), np.minimum(y0 + np.minimum(heights, height), ny)
    xa, xb = np.maximum(x0, 0), np.minimum(x0 + np.minimum(widths, width), nx)
    for k, (top, a, b, left, c, d) in enumerate(zip(y0.tolist(), ya.tolist(), yb.tolist(), x0.tolist(),
                                                     xa.tolist(), xb.tolist())):
        if a < b and c < d:
            out[k, a - top:b - top, c - left:d - left] = np.asarray(data[a:b, c:d], dtype=dtype)
    return out


def blank_beyond(values: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Set to NaN, in place, the pixels of each window beyond its own ``heights[k] x widths[k]``."""
    _, height, width = values.shape
    heights = np.asarray(heights, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    if np.all(heights >= height) and np.all(widths >= width):
        return values
    outside = (np.arange(height)[None, :, None] >= heights[:, None, None]) | \
        (np.arange(width)[None, None, :] >= widths[:, None, None])
    values[outside] = np.nan
    return values
