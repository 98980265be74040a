"""Put the boxes of all patches on the image and remove what the patch overlaps duplicated.

A source in the overlap of two patches is detected by both. Following CIANNA's SDC1
post-processing (`second_NMS_local`), patches are visited row by row; the boxes of a patch
that lie entirely in its own, un-overlapped centre are kept; any other box is dropped when one
of the 8 neighbouring patches holds a box that overlaps it (DIoU above the second NMS
threshold) with a strictly higher objectness. Neighbours visited earlier have already been
pruned, exactly as in the reference.

Before that, boxes whose centre lies within ``edge_margin`` pixels of a patch side shared with
a neighbour are dropped (the neighbour sees that place in its better-trained interior; the
image's outer sides are kept since no other patch sees them). After it, boxes whose centre is
outside the region of interest are dropped.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._boxes import Boxes, diou_matrix
from ._region import PixelBox
from ._tiling import TilePlan

__all__ = ["to_image_coordinates", "drop_edge_boxes", "second_nms", "keep_in_region", "merge_tiles"]

_NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, 1), (1, 1), (-1, -1), (1, -1))


def to_image_coordinates(per_tile: Sequence[Boxes], plan: TilePlan) -> Boxes:
    """Concatenate per-patch boxes (``per_tile[k]`` for ``plan.tiles[k]``) in image pixel corners.

    Corners stay in CIANNA's convention (pixel ``k`` spans ``[k, k+1]``); ``Boxes.tile`` is set.
    """
    tiles = plan.tiles
    if len(per_tile) != len(tiles):
        raise ValueError(f"{len(per_tile)} box sets for {len(tiles)} patches")
    parts = []
    for tile, boxes in zip(tiles, per_tile):
        if len(boxes):
            moved = boxes.shifted(tile.x0, tile.y0)
            moved.tile = np.full(len(boxes), tile.index, dtype=np.int64)
            parts.append(moved)
    nb_class = per_tile[0].classes.shape[1] if per_tile else 0
    nb_param = per_tile[0].params.shape[1] if per_tile else 0
    return Boxes.concat(parts, nb_class, nb_param)


def _tile_origins(boxes: Boxes, plan: TilePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    i = boxes.tile % plan.nx_tiles
    j = boxes.tile // plan.nx_tiles
    ox = plan.box.x0 - plan.offset[0] + i * plan.shift[0]
    oy = plan.box.y0 - plan.offset[1] + j * plan.shift[1]
    return i, j, ox, oy


def drop_edge_boxes(boxes: Boxes, plan: TilePlan, margin: float) -> Boxes:
    """Drop boxes (image coordinates) centred within ``margin`` px of a patch side that has a neighbour."""
    if margin <= 0 or len(boxes) == 0:
        return boxes
    i, j, ox, oy = _tile_origins(boxes, plan)
    w, h = plan.patch_size
    # local centre in CIANNA units (pixel k spans [k, k+1])
    lx = 0.5 * (boxes.x_min + boxes.x_max) - ox
    ly = 0.5 * (boxes.y_min + boxes.y_max) - oy
    bad = (lx < margin) & (i > 0)
    bad |= (lx > w - margin) & (i < plan.nx_tiles - 1)
    bad |= (ly < margin) & (j > 0)
    bad |= (ly > h - margin) & (j < plan.ny_tiles - 1)
    return boxes.take(~bad)


def second_nms(boxes: Boxes, plan: TilePlan, threshold: float) -> Boxes:
    """Remove duplicates between neighbouring patches (boxes in image coordinates, with ``tile`` set)."""
    n = len(boxes)
    if n == 0:
        return boxes
    w, h = plan.patch_size
    sw, sh = plan.shift
    over_w, over_h = w - sw, h - sh
    i, j, ox, oy = _tile_origins(boxes, plan)
    corners = boxes.corners
    lx0, lx1 = boxes.x_min - ox, boxes.x_max - ox
    ly0, ly1 = boxes.y_min - oy, boxes.y_max - oy
    # Boxes entirely in the part of their patch that no neighbour covers need no comparison.
    private = (lx0 > over_w) & (lx1 < sw) & (ly0 > over_h) & (ly1 < sh)
    alive = np.ones(n, dtype=bool)
    order = np.argsort(boxes.tile, kind="stable")
    starts = np.searchsorted(boxes.tile[order], np.arange(len(plan) + 1))
    members = {t: order[starts[t]: starts[t + 1]] for t in range(len(plan)) if starts[t + 1] > starts[t]}

    for t in sorted(members):  # row-major, as the reference
        own = members[t]
        ref = own[alive[own] & ~private[own]]
        if ref.size == 0:
            continue
        ti, tj = t % plan.nx_tiles, t // plan.nx_tiles
        tx0 = plan.box.x0 - plan.offset[0] + ti * sw
        ty0 = plan.box.y0 - plan.offset[1] + tj * sh
        comp = []
        for di, dj in _NEIGHBOURS:
            ni, nj = ti + di, tj + dj
            if 0 <= ni < plan.nx_tiles and 0 <= nj < plan.ny_tiles:
                other = members.get(nj * plan.nx_tiles + ni)
                if other is not None:
                    comp.append(other[alive[other]])
        if not comp:
            continue
        cand = np.concatenate(comp)
        # only neighbour boxes that reach into this patch's footprint
        cand = cand[
            (corners[cand, 0] < tx0 + w) & (corners[cand, 2] > tx0) & (corners[cand, 1] < ty0 + h) & (corners[cand, 3] > ty0)
        ]
        if cand.size == 0:
            continue
        overlap = diou_matrix(corners[ref], corners[cand])
        stronger = boxes.objectness[cand][None, :] > boxes.objectness[ref][:, None]
        drop = np.any((overlap > threshold) & stronger, axis=1)
        alive[ref[drop]] = False
    return boxes.take(alive)


def keep_in_region(boxes: Boxes, region: PixelBox) -> Boxes:
    """Keep boxes (image coordinates) whose centre lies in the region's box and shape."""
    if len(boxes) == 0:
        return boxes
    return boxes.take(region.contains(boxes.x_center, boxes.y_center))


def merge_tiles(
    per_tile: Sequence[Boxes],
    plan: TilePlan,
    region: PixelBox | None = None,
    second_nms_threshold: float = 0.0,
    edge_margin: float = 0.0,
) -> Boxes:
    """All detections of a tiled image, duplicates removed, restricted to the region.

    Parameters
    ----------
    per_tile : sequence of Boxes
        Output of `decode_patch` for each tile of ``plan`` (patch coordinates).
    plan : TilePlan
        The tiling that produced them.
    region : PixelBox, optional
        Defaults to ``plan.box``.
    second_nms_threshold : float
        DIoU-style overlap above which the weaker of two boxes from neighbouring patches goes.
    edge_margin : float
        Pixels at shared patch sides where boxes are not trusted (0 keeps all).

    Returns
    -------
    Boxes
        Image coordinates, sorted by decreasing objectness.
    """
    boxes = to_image_coordinates(per_tile, plan)
    boxes = drop_edge_boxes(boxes, plan, edge_margin)
    boxes = second_nms(boxes, plan, second_nms_threshold)
    boxes = keep_in_region(boxes, region if region is not None else plan.box)
    return boxes.take(np.argsort(-boxes.objectness, kind="stable"))
