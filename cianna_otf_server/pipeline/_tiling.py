"""Cut the searched box of an image into the overlapping patches a network reads.

Patch ``(i, j)`` (column i, row j) starts at ``(box.x0 - offset_x + i*shift_x,
box.y0 - offset_y + j*shift_y)`` in 0-based image pixels, as in the SDC1 reference inference.
The first patch starts ``offset`` pixels before the box, and there are enough patches that
the last one reaches ``offset`` pixels past it: sources at the box border then fall well inside
some patch rather than on its untrusted edge. Consecutive patches overlap by
``patch_size - shift`` pixels; the second NMS (`_merge`) removes the duplicates this creates.

Pixels outside the image are filled with the *normalised* blank value (`normalised_blank`: 0,
what a pixel at or below ``clip_min`` gives, for absolute models as in the reference inference;
the background level for signal-to-noise models), which is what the network saw beyond image
edges during training. Pixels inside the image but outside the box are real
data: they give the network context; detections there are dropped later by their centre.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..models._card import NormalisationSpec, TilingSpec
from ._normalise import normalise, normalised_blank
from ._region import PixelBox

__all__ = ["Tile", "TilePlan", "plan_tiles", "cut_patch", "cut_raw_patch", "iter_batches"]


@dataclass(frozen=True)
class Tile:
    """One network patch.

    Attributes
    ----------
    index : int
        Position in the plan (row-major: ``j * nx_tiles + i``).
    i, j : int
        Column and row of the patch in the tile grid.
    x0, y0 : int
        0-based image pixel of the patch's first column/row (may be negative or past the image).
    """

    index: int
    i: int
    j: int
    x0: int
    y0: int


@dataclass(frozen=True)
class TilePlan:
    """The patches that cover a box, with the geometry the merge step needs."""

    box: PixelBox
    patch_size: tuple[int, int]  # (W, H) pixels
    shift: tuple[int, int]  # (W, H) pixels
    offset: tuple[int, int]  # (W, H) pixels
    nx_tiles: int
    ny_tiles: int

    def __len__(self) -> int:
        return self.nx_tiles * self.ny_tiles

    @property
    def tiles(self) -> list[Tile]:
        """All patches, row-major (the order the reference post-processing walks them)."""
        return [self.tile(i, j) for j in range(self.ny_tiles) for i in range(self.nx_tiles)]

    def tile(self, i: int, j: int) -> Tile:
        """Patch in column ``i``, row ``j``."""
        return Tile(
            index=j * self.nx_tiles + i,
            i=i,
            j=j,
            x0=self.box.x0 - self.offset[0] + i * self.shift[0],
            y0=self.box.y0 - self.offset[1] + j * self.shift[1],
        )


def _count(length: int, size: int, shift: int, offset: int) -> int:
    """Patches needed so that ``[-offset, length + offset)`` is covered (at least one)."""
    return max(1, int(math.ceil((length + 2 * offset - size) / shift)) + 1)


def plan_tiles(box: PixelBox, tiling: TilingSpec) -> TilePlan:
    """Plan the patches covering ``box`` (0-based half-open pixel bounds) for a card's tiling."""
    (pw, ph), (sw, sh), (ow, oh) = tiling.patch_size, tiling.shift, tiling.offset
    return TilePlan(
        box=box,
        patch_size=(pw, ph),
        shift=(sw, sh),
        offset=(ow, oh),
        nx_tiles=_count(box.width, pw, sw, ow),
        ny_tiles=_count(box.height, ph, sh, oh),
    )


def cut_patch(
    image: Any, tile: Tile, size: tuple[int, int], spec: NormalisationSpec, out: np.ndarray | None = None
) -> np.ndarray:
    """Read and normalise one patch ``[H, W]`` float32; only the needed window of the image is read.

    Parts beyond the image are filled with the normalised blank-sky value (0).
    """
    w, h = size
    ny, nx = int(image.data.shape[0]), int(image.data.shape[1])
    if out is None:
        out = np.empty((h, w), dtype=np.float32)
    out.fill(normalised_blank(spec))
    x0, y0 = max(tile.x0, 0), max(tile.y0, 0)
    x1, y1 = min(tile.x0 + w, nx), min(tile.y0 + h, ny)
    if x0 < x1 and y0 < y1:
        window = np.asarray(image.data[y0:y1, x0:x1])
        normalise(window, spec, out=out[y0 - tile.y0: y1 - tile.y0, x0 - tile.x0: x1 - tile.x0])
    return out


def cut_raw_patch(image: Any, tile: Tile, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Read one patch ``[H, W]`` in image units, NaN beyond the image, without normalising it.

    The batching scheduler normalises whole batches on the GPU; NaN normalises to the blank-sky
    value 0, so the result equals `cut_patch` followed by normalisation.
    """
    w, h = size
    ny, nx = int(image.data.shape[0]), int(image.data.shape[1])
    if out is None:
        out = np.empty((h, w), dtype=np.float32)
    x0, y0 = max(tile.x0, 0), max(tile.y0, 0)
    x1, y1 = min(tile.x0 + w, nx), min(tile.y0 + h, ny)
    if x0 >= x1 or y0 >= y1:
        out.fill(np.nan)
        return out
    if x0 - tile.x0 or y0 - tile.y0 or x1 - tile.x0 < w or y1 - tile.y0 < h:
        out.fill(np.nan)
    out[y0 - tile.y0: y1 - tile.y0, x0 - tile.x0: x1 - tile.x0] = image.data[y0:y1, x0:x1]
    return out


def iter_batches(
    image: Any,
    plan: TilePlan,
    spec: NormalisationSpec,
    batch_size: int = 16,
    channels: int = 1,
    tiles: list[Tile] | None = None,
    workers: int = 1,
) -> Iterator[tuple[list[Tile], np.ndarray]]:
    """Yield ``(tiles, batch)`` with ``batch`` float32 ``[n, channels, H, W]``, ``n <= batch_size``.

    With ``channels > 1`` the single image plane is repeated in every channel. An image whose
    ``data`` reads many windows at once (a `DomainView`'s, converting a whole stack to the
    model's scale in a few array operations) gives each batch in one read; anything else is read
    patch by patch.

    ``workers > 1`` cuts the next batches in that many threads while the caller runs the
    current one (reading, byte-swapping and scaling release the interpreter lock, and on a GPU
    host they are what bounds a whole image); batches still come in order, and at most
    ``workers + 1`` are held at once, so memory stays bounded whatever the image size.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    tiles = plan.tiles if tiles is None else tiles
    chunks = [tiles[start: start + batch_size] for start in range(0, len(tiles), batch_size)]

    def cut(chunk: list[Tile]) -> tuple[list[Tile], np.ndarray]:
        return chunk, _cut_batch(image, chunk, plan.patch_size, spec, channels)

    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield cut(chunk)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cianna-otf-cut") as pool:
        pending: deque[Future] = deque()
        upcoming = iter(chunks)
        try:
            for chunk in upcoming:
                pending.append(pool.submit(cut, chunk))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the caller stopped early (an error, an abort): drop what is still queued
            for future in pending:
                future.cancel()


def _cut_batch(image: Any, chunk: list[Tile], size: tuple[int, int], spec: NormalisationSpec,
               channels: int) -> np.ndarray:
    """One batch ``[n, channels, H, W]`` of normalised patches."""
    w, h = size
    batch = np.empty((len(chunk), channels, h, w), dtype=np.float32)
    read_many = getattr(image.data, "windows", None)
    stack = None
    if read_many is not None:  # the whole batch in one read (NaN beyond the image)
        stack = read_many(np.array([t.y0 for t in chunk]), np.array([t.x0 for t in chunk]), h, w)
    if stack is not None:
        normalise(stack, spec, out=batch[:, 0])
    else:
        for k, tile in enumerate(chunk):
            cut_patch(image, tile, (w, h), spec, out=batch[k, 0])
    if channels > 1:
        batch[:, 1:] = batch[:, :1]
    return batch
