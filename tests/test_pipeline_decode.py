"""YOLO decoding and the first (in-patch) NMS, on hand-made and golden outputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cianna_otf_server.models._card import YoloSpec
from cianna_otf_server.pipeline import Boxes, decode_patch, decode_settings, diou, diou_matrix, first_nms

NB_BOX, NB_PARAM, GRID = 2, 2, 4
STRIDE = 8 + NB_PARAM
YOLO = YoloSpec(
    nb_box=NB_BOX, nb_class=0, nb_param=NB_PARAM, priors_w=(6, 12), priors_h=(6, 12),
    objectness_thresholds=(0.5, 0.5), nms_threshold=0.0,
)


def _output() -> np.ndarray:
    return np.zeros((NB_BOX * STRIDE, GRID, GRID), dtype=np.float32)


def _put(out, b, cy, cx, corners, obj, prob=0.5, params=(0.1, 0.2)):
    base = b * STRIDE
    x0, y0, x1, y1 = corners
    out[base + 0, cy, cx], out[base + 1, cy, cx], out[base + 2, cy, cx] = x0, y0, 0.5
    out[base + 3, cy, cx], out[base + 4, cy, cx], out[base + 5, cy, cx] = x1, y1, 0.5
    out[base + 6, cy, cx], out[base + 7, cy, cx] = prob, obj
    out[base + 8: base + 8 + NB_PARAM, cy, cx] = params


def test_diou_values():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert diou(a, a[None])[0] == pytest.approx(1.0)
    far = np.array([[100.0, 100.0, 110.0, 110.0]])
    assert diou(a, far)[0] < -0.5
    half = np.array([[5.0, 0.0, 15.0, 10.0]])
    # IoU 1/3, centre distance 5, enclosing diagonal sqrt(15^2 + 10^2)
    assert diou(a, half)[0] == pytest.approx(1 / 3 - 5 / math.hypot(15, 10))
    m = diou_matrix(np.stack([a, half[0]]), np.concatenate([far, half]))
    assert m.shape == (2, 2) and m[1, 1] == pytest.approx(1.0)


def test_overlapping_boxes_become_one():
    out = _output()
    _put(out, 0, 1, 1, (20, 20, 30, 30), obj=0.6, params=(0.3, 0.3))
    _put(out, 1, 1, 2, (21, 20, 31, 31), obj=0.9, params=(0.7, 0.7))
    boxes = decode_patch(out, YOLO, decode_settings(YOLO))
    assert len(boxes) == 1
    assert boxes.objectness[0] == pytest.approx(0.9) and boxes.prior[0] == 1
    np.testing.assert_allclose(boxes.params[0], [0.7, 0.7])
    assert boxes.cell[0] == 1 * GRID + 2
    assert boxes.x_center[0] == pytest.approx(25.5) and boxes.width[0] == pytest.approx(10)


def test_distant_boxes_stay_two_and_sorted():
    out = _output()
    _put(out, 0, 0, 0, (2, 2, 10, 10), obj=0.7)
    _put(out, 0, 3, 3, (50, 50, 60, 60), obj=0.95)
    boxes = decode_patch(out, YOLO, decode_settings(YOLO))
    assert len(boxes) == 2
    assert list(boxes.objectness) == sorted(boxes.objectness, reverse=True)


def test_threshold_per_prior_and_override():
    yolo = YoloSpec(**{**YOLO.__dict__, "objectness_thresholds": (0.5, 0.8)})
    out = _output()
    _put(out, 0, 0, 0, (2, 2, 10, 10), obj=0.7)
    _put(out, 1, 3, 3, (50, 50, 60, 60), obj=0.7)
    kept = decode_patch(out, yolo, decode_settings(yolo))
    assert list(kept.prior) == [0]
    assert len(decode_patch(out, yolo, decode_settings(yolo, threshold=0.65))) == 2
    assert len(decode_patch(out, yolo, decode_settings(yolo, threshold=[0.9, 0.6]))) == 1
    assert len(decode_patch(out, yolo, decode_settings(yolo, threshold=0.75))) == 0
    with pytest.raises(ValueError):
        decode_settings(yolo, threshold=[0.1, 0.2, 0.3])


def test_nms_override_and_min_size():
    out = _output()
    _put(out, 0, 1, 1, (20, 20, 30, 30), obj=0.6)
    _put(out, 1, 1, 2, (24, 20, 34, 30), obj=0.9)  # partial overlap: DIoU about 0.2
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms=0.0))) == 1
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms=0.5))) == 2
    _put(out, 0, 3, 0, (2, 50, 5, 60), obj=0.8)  # 3 px wide
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms=0.5))) == 3
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms=0.5, min_size=4))) == 2


def test_tiered_nms_keeps_confident_neighbours():
    out = _output()
    _put(out, 0, 1, 1, (20, 20, 30, 30), obj=0.9)
    _put(out, 1, 1, 2, (24, 20, 34, 30), obj=0.8)
    # overlap ~0.2: suppressed only if objectness < 0.7 at that overlap
    tiers = ((0.5, 1.0), (0.1, 0.7))
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms_tiers=tiers))) == 2
    tiers = ((0.5, 1.0), (0.1, 0.85))
    assert len(decode_patch(out, YOLO, decode_settings(YOLO, nms_tiers=tiers))) == 1


def test_edge_penalty_and_min_box_size():
    out = _output()
    _put(out, 0, 0, 0, (2, 2, 5, 5), obj=0.52)  # border cell
    _put(out, 0, 1, 1, (20, 20, 23, 23), obj=0.52)  # inner cell
    boxes = decode_patch(out, YOLO, decode_settings(YOLO, edge_penalty=0.05, min_box_size=5))
    assert len(boxes) == 1 and boxes.cell[0] == GRID + 1
    assert boxes.width[0] == pytest.approx(5) and boxes.x_center[0] == pytest.approx(21.0)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        decode_patch(np.zeros((7, 4, 4), np.float32), YOLO, decode_settings(YOLO))


def _reference_nms(corners, obj, threshold):
    """Plain-loop greedy NMS, as described by the SDC1 recipe (reference for the vectorised one)."""
    alive = list(np.argsort(-obj, kind="stable"))
    kept = []
    while alive:
        best = alive.pop(0)
        kept.append(best)
        alive = [i for i in alive if diou(corners[best], corners[i][None])[0] <= threshold]
    return kept


def test_first_nms_matches_plain_loop():
    rng = np.random.default_rng(7)
    n = 200
    xy = rng.uniform(0, 100, size=(n, 2))
    wh = rng.uniform(3, 20, size=(n, 2))
    corners = np.concatenate([xy, xy + wh], axis=1)
    obj = rng.uniform(0, 1, size=n)
    zeros = np.zeros(n)
    boxes = Boxes(corners[:, 0], corners[:, 1], corners[:, 2], corners[:, 3], obj, zeros,
                  np.zeros((n, 0)), np.zeros((n, 0)), np.zeros(n, int), np.arange(n), np.zeros(n, int))
    for threshold in (-0.3, 0.0, 0.3):
        kept = first_nms(boxes, threshold)
        assert sorted(kept.cell.tolist()) == sorted(_reference_nms(corners, obj, threshold))


def test_golden_decoded_output():
    golden = Path(__file__).resolve().parents[2] / "shared" / "cianna_golden" / "B"
    if not golden.is_dir():
        pytest.skip(f"golden vectors not found at {golden}")
    decoded = np.load(golden / "B_yolo_sdc1_small_output_decoded_blas.npy")
    yolo = YoloSpec(nb_box=9, nb_class=0, nb_param=5, priors_w=(6,) * 6 + (12, 9, 24), priors_h=(6,) * 6 + (9, 12, 24),
                    objectness_thresholds=(0.5,) * 9, nms_threshold=0.0)
    boxes = decode_patch(decoded[0], yolo, decode_settings(yolo))
    out = decoded[0].reshape(9, 13, 8, 8)
    candidates = int((out[:, 7] >= 0.5).sum())
    assert 0 < len(boxes) <= candidates
    overlaps = diou_matrix(boxes.corners, boxes.corners)
    np.fill_diagonal(overlaps, -1)
    assert (overlaps <= 0.0).all()  # no two kept boxes overlap beyond the threshold
    # worked example of the golden README: example 0, box 0, cell x = 3, y = 2
    assert out[0, 0, 2, 3] == pytest.approx(44.574, abs=1e-3) and out[0, 1, 2, 3] == pytest.approx(44.375, abs=1e-3)
