"""Background and noise maps, so every model can see an image in signal-to-noise units.

A radio image's noise is rarely uniform: it rises towards the edge of the primary beam, near
bright sources and in mosaic overlaps. Signal-to-noise (image minus background, over the local
rms) is the one brightness scale that carries from one survey to another, so networks trained
on it (``[domain] input = "snr"``) work on images of any unit, depth and telescope.

The maps are SEP's (Source Extractor's) background and rms, the estimates the classic finder
uses: sigma-clipped mode and rms on a mesh of ``mesh`` pixels, median-filtered over
``filter_size`` mesh cells. They are measured strip by strip (bounded memory: a 32768 x 32768
memory-mapped image is fine) and kept at mesh resolution only; `NoiseMap.window` interpolates
them to full resolution for the few pixels a patch needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import sep
from scipy import ndimage
from scipy.interpolate import BSpline, make_interp_spline

__all__ = ["NoiseMap", "measure_noise"]

_STRIP_PIXELS = 16 * 1024 * 1024  # pixels per measured strip (~64 MB of float32)


@dataclass(frozen=True)
class NoiseMap:
    """Background and rms of an image on a coarse mesh, in the units of the measured pixels.

    Attributes
    ----------
    background, rms : ndarray
        ``[ny_mesh, nx_mesh]`` float64 mesh values; cell ``(j, i)`` covers pixels
        ``[j*mesh, (j+1)*mesh) x [i*mesh, (i+1)*mesh)`` (the last cells may be partial).
    mesh : int
        Mesh cell size in pixels.
    shape : (int, int)
        ``(ny, nx)`` of the measured window.
    valid_fraction : float
        Fraction of mesh cells measured from data (the others, blank, were filled from their
        neighbours).
    origin : (int, int)
        ``(x0, y0)`` of the measured window in the image: every method takes and returns
        image pixel coordinates.
    """

    background: np.ndarray
    rms: np.ndarray
    mesh: int
    shape: tuple[int, int]
    valid_fraction: float
    origin: tuple[int, int] = (0, 0)  # (x0, y0): image pixel of the measured window's first pixel

    @property
    def median_rms(self) -> float:
        """Median of the rms mesh: the image's typical noise (image units)."""
        return float(np.median(self.rms))

    def _coords(self, start: int, stop: int, n_mesh: int) -> np.ndarray:
        """Mesh coordinates (cell centres at integers) of pixels ``start..stop-1``."""
        centres = np.arange(start, stop, dtype=np.float64)
        return np.clip((centres + 0.5) / self.mesh - 0.5, 0.0, n_mesh - 1.0)

    def window(self, x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
        """Background and rms at full resolution for pixels ``[y0:y1, x0:x1]`` (float32 each).

        Interpolated with a bicubic spline through the mesh centres (lower degrees for meshes of
        fewer than four cells a side), constant beyond the outermost centres, the rms never
        below `floor`. The spline is a
        tensor product, so the window is ``Wy @ mesh @ Wx.T`` with per-axis weight matrices: a
        few small matrix products instead of a spline evaluation per pixel.
        """
        ny_m, nx_m = self.rms.shape
        ox, oy = self.origin
        wx = self._axis_weights(x0 - ox, x1 - ox, nx_m)
        rows = self._mesh_rows
        if rows is not None:  # the rows' products with the mesh, made once: a window costs h*n*w
            index = np.clip(np.arange(y0 - oy, y1 - oy), 0, len(rows[0]) - 1)
            background, rms = rows[0][index] @ wx.T, rows[1][index] @ wx.T
        else:
            wy = self._axis_weights(y0 - oy, y1 - oy, ny_m)
            background, rms = wy @ self.background @ wx.T, wy @ self.rms @ wx.T
        return background.astype(np.float32), np.maximum(rms, self.floor).astype(np.float32)

    def factors(self, x0: int, x1: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(background_rows [h, n], rms_rows [h, n], columns [w, n])`` of pixels ``[y0:y1, x0:x1]``.

        `window` is ``background_rows @ columns.T`` and ``max(rms_rows @ columns.T, floor)``:
        a device that scales a strip of a survey image to signal to noise (`_device_tiling`)
        keeps the columns of the whole width once and computes each strip's maps as two
        matrix products where its pixels are, instead of receiving them from the host.
        """
        ny_m, nx_m = self.rms.shape
        ox, oy = self.origin
        columns = self._axis_weights(x0 - ox, x1 - ox, nx_m)
        rows = self._mesh_rows
        if rows is not None:
            index = np.clip(np.arange(y0 - oy, y1 - oy), 0, len(rows[0]) - 1)
            return rows[0][index], rows[1][index], columns
        wy = self._axis_weights(y0 - oy, y1 - oy, ny_m)
        return wy @ self.background, wy @ self.rms, columns

    @cached_property
    def _mesh_rows(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(Wy @ background, Wy @ rms)`` for every row of the y axis, or None without an axis table.

        A window is ``Wy[rows] @ mesh @ Wx[cols].T``; with the first product kept per row the
        mesh-by-mesh step (n*n per row) is paid once per image instead of once per window,
        which for a catalogue of many thousand sources is most of the measuring time.
        """
        ny_m = self.rms.shape[0]
        table = _axis_table(ny_m, self.mesh)
        if table is None:
            return None
        return table @ self.background.astype(table.dtype), table @ self.rms.astype(table.dtype)

    def windows(self, x0: np.ndarray, y0: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Background and rms of many ``height x width`` windows at once, ``[n, height, width]`` float32 each.

        Window ``k`` holds pixels ``[y0[k]:y0[k]+height, x0[k]:x0[k]+width]`` (image
        coordinates; pixels beyond the measured window take the values of its edge, as in
        `window`, which these values equal to rounding). A catalogue of many thousand sources
        needs one window per source; the interpolating spline is evaluated in its B-spline form
        (`_mesh_coefficients`), where each pixel depends on the 4 x 4 coefficients around it,
        so a window costs a few products of small matrices rather than a row of the whole mesh
        per pixel.
        """
        x0 = np.asarray(x0, dtype=np.int64).reshape(-1) - int(self.origin[0])
        y0 = np.asarray(y0, dtype=np.int64).reshape(-1) - int(self.origin[1])
        n = len(x0)
        if n == 0 or height <= 0 or width <= 0:
            empty = np.zeros((n, max(0, height), max(0, width)), dtype=np.float32)
            return empty, empty.copy()
        ny_m, nx_m = self.rms.shape
        by, ly = _local_basis(y0, int(height), ny_m, self.mesh)  # [n, h, ky], [n, ky]
        bx, lx = _local_basis(x0, int(width), nx_m, self.mesh)  # [n, w, kx], [n, kx]
        ky, kx = by.shape[2], bx.shape[2]
        # the coefficients each window touches, background and rms one above the other: [n, 2 ky, kx]
        flat = (np.arange(2)[:, None] * ny_m + ly[:, None, :]) * nx_m  # [n, 2, ky]
        local = np.take(self._mesh_coefficients, flat[:, :, :, None] + lx[:, None, None, :]).reshape(n, 2 * ky, kx)
        columns = np.matmul(local, bx.transpose(0, 2, 1)).reshape(n, 2, ky, width)  # [n, map, ky, w]
        if height * width >= _LARGE_WINDOW_PIXELS:  # one BLAS product per window and map
            values = np.empty((n, 2, height, width), dtype=np.float32)
            for k in range(n):
                for which in range(2):
                    values[k, which] = by[k] @ columns[k, which]
        else:  # many small windows (a catalogue's cut-outs): one stacked product for all
            values = np.matmul(by[:, None], columns).astype(np.float32)  # [n, map, h, w]
        background, rms = values[:, 0], values[:, 1]
        np.maximum(rms, np.float32(self.floor), out=rms)  # rounding is monotonic: as flooring, then rounding
        return background, rms

    @cached_property
    def _mesh_coefficients(self) -> np.ndarray:
        """``[2, ny_mesh, nx_mesh]``: the background and rms as tensor-product B-spline coefficients.

        The interpolating spline of each axis is ``W = B @ C``, with ``B`` the local B-spline
        basis (k + 1 non-zero values per pixel) and ``C`` the spline's coefficients of the
        identity; a pixel's value ``Wy @ mesh @ Wx.T`` is then ``By @ (Cy @ mesh @ Cx.T) @ Bx.T``.
        """
        ny_m, nx_m = self.rms.shape
        cy, cx = _spline_coefficients(ny_m), _spline_coefficients(nx_m)
        stacked = np.stack([cy @ self.background @ cx.T, cy @ self.rms @ cx.T])
        stacked.setflags(write=False)
        return stacked

    def _axis_weights(self, start: int, stop: int, n_mesh: int) -> np.ndarray:
        """Weights of pixels ``start..stop-1`` (window coordinates), sliced from the axis table when it is small.

        A source's cut-out needs a few dozen rows of weights; evaluating the spline for them
        costs more than the cut-out itself, and the measurement of a catalogue asks for
        hundreds. The weights depend only on the pixel's index, so one table per axis serves
        every window; pixels before the first and beyond the last mesh centre share the edge
        rows, as the clipped coordinates do.
        """
        table = _axis_table(n_mesh, self.mesh)
        if table is None:
            return _weights(self._coords(start, stop, n_mesh), n_mesh)
        index = np.clip(np.arange(start, stop), 0, len(table) - 1)
        return table[index]

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The rms at 0-based pixel positions (arrays), image units."""
        x = np.asarray(x, dtype=np.float64) - self.origin[0]
        y = np.asarray(y, dtype=np.float64) - self.origin[1]
        if x.size == 0:
            return np.zeros(0)
        ny_m, nx_m = self.rms.shape
        u = np.clip((x.ravel() + 0.5) / self.mesh - 0.5, 0.0, nx_m - 1.0)
        v = np.clip((y.ravel() + 0.5) / self.mesh - 0.5, 0.0, ny_m - 1.0)
        # in B-spline form each position reads the (k+1) x (k+1) coefficients around it: a
        # catalogue of 150,000 sources on a 512 x 512 mesh costs milliseconds, where the
        # interpolation weights of every mesh node (p x n per axis, then p x n x n) cost minutes
        iy, wy = _point_basis(v, ny_m)
        ix, wx = _point_basis(u, nx_m)
        local = self._mesh_coefficients[1][iy[:, :, None], ix[:, None, :]]  # [p, ky, kx]
        values = np.einsum("pa,pab,pb->p", wy, local, wx)
        return np.maximum(values, self.floor).reshape(x.shape)

    @property
    def floor(self) -> float:
        """The smallest measured mesh rms: the interpolated map never goes below it.

        Between cells of very different rms (a bright source's cell beside blank sky) the cubic
        spline overshoots and could reach zero or below, which would turn any pixel there into
        a many-sigma source.
        """
        return float(self.rms.min())


#: From this many pixels a window, its products are made one window at a time: numpy's stacked
#: matmul of broadcast operands does not reach BLAS, and for network patches (512 x 512) the
#: loop of plain products is about 8x faster; below it the loop's overhead would dominate.
_LARGE_WINDOW_PIXELS = 64 * 64


@lru_cache(maxsize=64)
def _basis(n: int) -> Any:
    """The interpolating spline (not-a-knot, degree up to 3) of the identity on ``n`` nodes."""
    k = min(3, n - 1)
    if k % 2 == 0:  # make_interp_spline needs an odd degree without extra end conditions
        k -= 1
    return make_interp_spline(np.arange(n, dtype=np.float64), np.eye(n), k=max(k, 1))


#: Per-axis weight tables up to this many entries are kept in float64 (32 MB)...
_AXIS_TABLE_ENTRIES = 4 * 1024 * 1024
#: ...and larger ones, up to this many, in float32 (128 MB: a 32768-pixel axis on a 64-pixel mesh).
_AXIS_TABLE_ENTRIES_FLOAT32 = 32 * 1024 * 1024


@lru_cache(maxsize=8)
def _axis_table(n_mesh: int, mesh: int) -> np.ndarray | None:
    """``[n_mesh * mesh, n_mesh]`` weights of every pixel of an axis, or None when too large to keep."""
    pixels = n_mesh * mesh
    if pixels * n_mesh > _AXIS_TABLE_ENTRIES_FLOAT32:
        return None
    coords = np.clip((np.arange(pixels, dtype=np.float64) + 0.5) / mesh - 0.5, 0.0, n_mesh - 1.0)
    table = _weights(coords, n_mesh)
    if pixels * n_mesh > _AXIS_TABLE_ENTRIES:  # weights to 1e-7: far below any noise estimate's error
        table = table.astype(np.float32)
    table.setflags(write=False)
    return table


def _spline_coefficients(n: int) -> np.ndarray:
    """``[n, n]`` B-spline coefficients of the interpolating spline of the identity on ``n`` nodes."""
    if n == 1:
        return np.ones((1, 1))
    return np.asarray(_basis(n).c, dtype=np.float64)


@lru_cache(maxsize=8)
def _axis_basis(n_mesh: int, mesh: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first, values)`` of every pixel of an axis: its first non-zero B-spline and the k + 1 values.

    Pixels before the first and beyond the last mesh centre are clipped to them, as in
    `_axis_table`, so index ``min(max(p, 0), n_mesh * mesh - 1)`` serves any pixel ``p``.
    """
    pixels = n_mesh * mesh
    if n_mesh == 1:
        first, values = np.zeros(pixels, dtype=np.int64), np.ones((pixels, 1))
    else:
        coords = np.clip((np.arange(pixels, dtype=np.float64) + 0.5) / mesh - 0.5, 0.0, n_mesh - 1.0)
        spline = _basis(n_mesh)
        order = spline.k + 1  # the design matrix stores the k + 1 B-splines of each pixel's interval
        design = BSpline.design_matrix(coords, spline.t, spline.k).tocsr()
        columns = design.indices.reshape(pixels, order).astype(np.int64)
        sort = np.argsort(columns, axis=1, kind="stable")
        first = np.take_along_axis(columns, sort, axis=1)[:, 0]
        values = np.take_along_axis(np.asarray(design.data, dtype=np.float64).reshape(pixels, order), sort, axis=1)
    values = np.ascontiguousarray(values, dtype=np.float64)
    first.setflags(write=False)
    values.setflags(write=False)
    return first, values


def _local_basis(starts: np.ndarray, size: int, n_mesh: int, mesh: int) -> tuple[np.ndarray, np.ndarray]:
    """The B-spline weights of windows ``starts[k] .. starts[k] + size - 1`` of an axis, on their own coefficients.

    Returns ``weights [n, size, K]`` and ``coefficients [n, K]``: the indices (into the axis's
    spline coefficients) of the ``K`` consecutive coefficients any window touches, clipped to
    the axis (a clipped index only ever gets a zero weight).
    """
    first, values = _axis_basis(n_mesh, mesh)
    n, order = len(starts), values.shape[1]
    index = np.minimum(np.maximum(starts[:, None] + np.arange(size), 0), len(first) - 1)  # [n, size]
    lead = np.take(first, index)
    low = lead[:, 0]  # the pixels are in increasing order, so are their first B-splines
    span = int((lead[:, -1] - low).max()) + order
    weights = np.zeros((n, size, span))
    slots = weights.reshape(-1)
    flat = (np.arange(n * size, dtype=np.int64) * span).reshape(n, size) + (lead - low[:, None])
    local = np.take(values, index * order)  # [n, size]: the first value; the others follow it
    for j in range(order):
        if j:
            local = np.take(values, index * order + j)
        slots[flat + j] = local
    coefficients = np.minimum(low[:, None] + np.arange(span), n_mesh - 1)
    return weights, coefficients


def _point_basis(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices [p, k+1], values [p, k+1])``: the non-zero B-splines of the axis's interpolating spline at `coords`."""
    if n == 1:
        return np.zeros((len(coords), 1), dtype=np.int64), np.ones((len(coords), 1))
    spline = _basis(n)
    order = spline.k + 1
    design = BSpline.design_matrix(np.asarray(coords, dtype=np.float64), spline.t, spline.k).tocsr()
    indices = design.indices.reshape(len(coords), order).astype(np.int64)
    values = np.asarray(design.data, dtype=np.float64).reshape(len(coords), order)
    return indices, values


def _weights(coords: np.ndarray, n: int) -> np.ndarray:
    """``[len(coords), n]`` interpolation weights of the mesh nodes at mesh coordinates `coords`."""
    if n == 1:
        return np.ones((len(coords), 1))
    return np.asarray(_basis(n)(coords), dtype=np.float64)


def measure_noise(data: Any, mesh: int = 64, filter_size: int = 3, step: int | None = None,
                  window: tuple[int, int, int, int] | None = None) -> NoiseMap:
    """Measure the background and rms mesh of a 2-D image.

    Parameters
    ----------
    data : array-like
        ``[y, x]`` pixels (a numpy array, a memory map or any object sliced as
        ``data[y0:y1:step, x0:x1:step]``); NaN and infinite pixels are ignored.
    mesh : int
        Mesh cell, pixels (SEP's ``bw``/``bh``). Should span several beams; 64 pixels suits
        beams of 2-8 pixels.
    filter_size : int
        Median filter over the mesh, cells (SEP's ``fw``/``fh``): one bright source does not
        raise the noise of its cell.
    step : int, optional
        Measure every ``step``-th pixel along each axis. By default 1 up to 16 Mpx and up to 4
        beyond, so that a 32768 x 32768 image is measured in seconds; restored radio images
        are smooth on the beam scale, so the subsampled pixels still sample the noise well
        (a 64-pixel cell keeps at least 256 of its pixels).
    window : (x0, x1, y0, y1), optional
        Measure only these image pixels (0-based, half-open, clipped to the image), e.g. a
        region of interest and its surroundings on a large image; the map's methods still take
        image coordinates.

    Returns
    -------
    NoiseMap
        At mesh resolution, in the units of ``data``. Cells without enough valid pixels take
        the values of the nearest measured cell; an image without any valid pixel gets rms 1
        and background 0 (and ``valid_fraction`` 0).
    """
    full_ny, full_nx = int(data.shape[0]), int(data.shape[1])
    wx0, wx1, wy0, wy1 = window if window is not None else (0, full_nx, 0, full_ny)
    wx0, wy0 = max(0, int(wx0)), max(0, int(wy0))
    wx1, wy1 = min(full_nx, int(wx1)), min(full_ny, int(wy1))
    if wx0 >= wx1 or wy0 >= wy1:
        raise ValueError(f"the noise window {window} does not overlap the {full_nx} x {full_ny} image")
    ny, nx = wy1 - wy0, wx1 - wx0
    mesh = max(8, int(mesh))
    if step is None:
        step = int(min(4, max(1, math.ceil(math.sqrt(ny * nx / _STRIP_PIXELS)))))
    step = max(1, min(int(step), mesh // 8))
    cell = mesh // step  # mesh cell in measured (subsampled) pixels
    bw, bh = min(mesh, nx), min(mesh, ny)
    n_mx, n_my = int(math.ceil(nx / bw)), int(math.ceil(ny / bh))
    background = np.full((n_my, n_mx), np.nan)
    rms = np.full((n_my, n_mx), np.nan)
    rows = max(bh, (_STRIP_PIXELS * step * step // max(nx, 1)) // bh * bh)
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        strip = np.array(data[wy0 + y0:wy0 + y1:step, wx0:wx1:step], dtype=np.float32, order="C", copy=True)
        bad = ~np.isfinite(strip)
        if bad.all():
            continue
        strip[bad] = 0.0
        h, w = strip.shape
        cw, ch = min(cell, w) if bw == mesh else w, min(cell, h) if bh == mesh else h
        bkg = sep.Background(strip, mask=bad if bad.any() else None, bw=cw, bh=ch, fw=1, fh=1)
        back_cells = _cell_means(bkg.back(), cw, ch)
        rms_cells = _cell_means(bkg.rms(), cw, ch)
        good = _cell_means((~bad).astype(np.float32), cw, ch) > 0.25
        back_cells[~good] = np.nan
        rms_cells[~good] = np.nan
        first = y0 // bh
        count = min(back_cells.shape[0], n_my - first)
        background[first:first + count, :back_cells.shape[1]] = back_cells[:count, :n_mx]
        rms[first:first + count, :rms_cells.shape[1]] = rms_cells[:count, :n_mx]
    valid = np.isfinite(rms) & (rms > 0)
    fraction = float(valid.mean())
    if not valid.any():
        return NoiseMap(np.zeros((n_my, n_mx)), np.ones((n_my, n_mx)), bw, (ny, nx), 0.0, (wx0, wy0))
    if not valid.all():  # blank cells: the nearest measured cell's values
        index = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        background = background[tuple(index)]
        rms = rms[tuple(index)]
    if filter_size > 1:
        size = (min(filter_size, n_my), min(filter_size, n_mx))
        background = ndimage.median_filter(background, size=size, mode="nearest")
        rms = ndimage.median_filter(rms, size=size, mode="nearest")
    return NoiseMap(background, rms, bw, (ny, nx), fraction, (wx0, wy0))


def _cell_means(values: np.ndarray, bw: int, bh: int) -> np.ndarray:
    """Block means over ``bh x bw`` cells (partial cells at the far edges included)."""
    h, w = values.shape
    # along x first, where the cells are contiguous runs: as a reshape when the cells tile the
    # row (about 8x faster than a reduceat over rows of the full-resolution map), in float64
    if w % bw == 0:
        columns = values.reshape(h, w // bw, bw).sum(axis=2, dtype=np.float64)
    else:
        columns = np.add.reduceat(values, np.arange(0, w, bw), axis=1, dtype=np.float64)
    sums = np.add.reduceat(columns, np.arange(0, h, bh), axis=0)
    heights = np.minimum(bh, h - np.arange(0, h, bh))
    widths = np.minimum(bw, w - np.arange(0, w, bw))
    return sums / (heights[:, None] * widths[None, :])
