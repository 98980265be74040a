"""Merging patch detections: image coordinates, second NMS across neighbours, edges, region."""

from __future__ import annotations

import numpy as np
import pytest

from cianna_otf_server.models._card import TilingSpec
from cianna_otf_server.pipeline import Boxes, PixelBox, merge_tiles, plan_tiles, to_image_coordinates

PLAN = plan_tiles(PixelBox(0, 300, 0, 200), TilingSpec((128, 128), (96, 96), (16, 16)))


def _boxes(rows, tile):
    """rows: (x0, y0, x1, y1, objectness) in patch coordinates."""
    rows = np.asarray(rows, dtype=float).reshape(-1, 5)
    n = len(rows)
    return Boxes(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], np.full(n, 0.5),
                 np.zeros((n, 0)), np.zeros((n, 1)), np.zeros(n, int), np.zeros(n, int), np.full(n, tile))


def _per_tile(content):
    per_tile = [Boxes.empty(0, 1) for _ in range(len(PLAN))]
    for index, rows in content.items():
        per_tile[index] = _boxes(rows, index)
    return per_tile


def _local(tile_index, corners):
    tile = PLAN.tiles[tile_index]
    x0, y0, x1, y1 = corners
    return (x0 - tile.x0, y0 - tile.y0, x1 - tile.x0, y1 - tile.y0)


def test_plan_geometry():
    assert (PLAN.nx_tiles, PLAN.ny_tiles) == (4, 3)
    assert PLAN.tile(1, 0).x0 == 80 and PLAN.tile(0, 1).y0 == 80


def test_to_image_coordinates():
    per_tile = _per_tile({5: [(10, 20, 20, 30, 0.8)]})
    boxes = to_image_coordinates(per_tile, PLAN)
    tile = PLAN.tiles[5]
    assert boxes.tile.tolist() == [5]
    assert boxes.x_min[0] == 10 + tile.x0 and boxes.y_max[0] == 30 + tile.y0


def test_duplicate_in_two_patches_is_removed():
    source = (95.0, 45.0, 105.0, 55.0)  # image corners; in the overlap of patches 0 and 1
    a = _local(0, source) + (0.7,)
    b = tuple(np.add(_local(1, source), (0.5, -0.4, 0.6, 0.2))) + (0.8,)
    merged = merge_tiles(_per_tile({0: [a], 1: [b]}), PLAN, second_nms_threshold=-0.15)
    assert len(merged) == 1
    assert merged.objectness[0] == pytest.approx(0.8) and merged.tile[0] == 1
    assert merged.x_center[0] == pytest.approx(99.5 + 0.55, abs=1e-9)


def test_duplicate_across_a_diagonal_neighbour():
    source = (85.0, 85.0, 95.0, 95.0)  # overlap of patches (0,0) and (1,1)
    a = _local(0, source) + (0.9,)
    b = _local(PLAN.tile(1, 1).index, source) + (0.6,)
    merged = merge_tiles(_per_tile({0: [a], PLAN.tile(1, 1).index: [b]}), PLAN, second_nms_threshold=0.0)
    assert len(merged) == 1 and merged.tile[0] == 0


def test_distinct_sources_are_kept():
    a = _local(0, (90.0, 45.0, 98.0, 53.0)) + (0.7,)
    b = _local(1, (100.0, 100.0, 108.0, 108.0)) + (0.8,)
    c = _local(5, (150.0, 120.0, 160.0, 130.0)) + (0.6,)  # private centre of patch 5
    merged = merge_tiles(_per_tile({0: [a], 1: [b], 5: [c]}), PLAN, second_nms_threshold=-0.15)
    assert len(merged) == 3
    assert list(merged.objectness) == [0.8, 0.7, 0.6]


def test_region_filter_uses_box_centre():
    inside = _local(5, (150.0, 120.0, 160.0, 130.0)) + (0.6,)
    outside = _local(5, (180.0, 90.0, 190.0, 100.0)) + (0.9,)
    region = PixelBox(100, 170, 100, 200)
    merged = merge_tiles(_per_tile({5: [inside, outside]}), PLAN, region=region)
    assert len(merged) == 1 and merged.objectness[0] == pytest.approx(0.6)


def test_edge_margin_drops_only_shared_sides():
    near_shared = (120.0, 60.0, 126.0, 66.0, 0.9)  # right side of patch 0, shared with patch 1
    near_outer = (18.0, 60.0, 24.0, 66.0, 0.9)  # left side of patch 0: the grid's outer side
    merged = merge_tiles(_per_tile({0: [near_shared, near_outer]}), PLAN, edge_margin=24)
    assert len(merged) == 1 and merged.x_min[0] == pytest.approx(18.0 + PLAN.tiles[0].x0)
    assert len(merge_tiles(_per_tile({0: [near_shared, near_outer]}), PLAN, edge_margin=0)) == 2


def test_merge_of_nothing():
    merged = merge_tiles(_per_tile({}), PLAN)
    assert len(merged) == 0 and merged.params.shape == (0, 1)
