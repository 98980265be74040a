"""The decode step (`decode_patch` for every patch of a batch) as tensor operations where the network ran.

A survey image yields thousands of patches and tens of boxes each: decoded one patch at a time
on the host, the thresholds, the box algebra and the greedy NMS cost a Python call per patch and
the whole output tensor's transfer (about 26 MB per 64 patches). Here the whole batch is decoded
at once on the network's device and only the kept boxes come back:

* thresholds per prior (down to the significance rescue's, `DecodeSettings.floor`), the edge-cell penalty, the minimum size and the widening of small boxes
  on the full output, in float64 (as the host path computes them, so that no box sits on the
  other side of a threshold through rounding);
* the greedy NMS of every patch at once, on candidates padded to the largest patch's count:
  box ``i`` survives when no surviving, more confident box of its patch suppresses it. Computed
  as a fixed point (start with every box alive; each round re-decides every box from the ones
  before it), which the greedy order makes unique: the result is exactly the greedy one, in a
  few rounds of ``[patches, K, K]`` products instead of a loop over boxes.

The boxes equal `decode_batch`'s (a test compares both on the real network's outputs). The SDC1
extended-source filter reads the patches' pixels between the threshold and the NMS; cards that
turn it on keep the host path (`device_decode_problem`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..models._card import YoloSpec
from ._boxes import Boxes, diou_broadcast
from ._decode import DecodeSettings

if TYPE_CHECKING:
    import torch

__all__ = ["decode_batch_tensor", "device_decode_problem", "tensor_outputs"]

#: Candidates per patch beyond which the padded ``[patches, K, K]`` matrices are not worth it
#: (a patch of extended emission under a low threshold): that batch is decoded on the host.
MAX_CANDIDATES = 2048


def device_decode_problem(settings: DecodeSettings) -> str | None:
    """Why a batch cannot be decoded where the network ran (None when it can)."""
    if settings.extended_filter is not None:
        return "the extended-source filter reads the patches' pixels before the NMS"
    return None


def decode_batch_tensor(outputs: "torch.Tensor", tile_indices: Sequence[int], yolo: YoloSpec,
                        settings: DecodeSettings) -> list[Boxes] | None:
    """`decode_batch` of a decoded YOLO output ``[N, C, grid_h, grid_w]`` tensor, on its device.

    Returns one `Boxes` per patch (most confident first, patch pixels), or None when a patch
    holds more than `MAX_CANDIDATES` candidates (the caller decodes that batch on the host).
    """
    import torch

    nb_box, nc, npar = yolo.nb_box, yolo.nb_class, yolo.nb_param
    stride = 8 + nc + npar
    out = outputs
    if out.dim() == 5 and out.shape[2] == 1:
        out = out[:, :, 0]
    n, channels, grid_h, grid_w = out.shape
    if channels != nb_box * stride:
        raise ValueError(f"YOLO output of shape {tuple(out.shape)} does not match nb_box={nb_box}, "
                         f"nb_class={nc}, nb_param={npar}")
    out = out.reshape(n, nb_box, stride, grid_h, grid_w)
    objectness = out[:, :, 7].double()
    probability = out[:, :, 6].double()
    if settings.edge_penalty > 0:
        border = torch.zeros((grid_h, grid_w), dtype=torch.bool, device=out.device)
        border[[0, -1], :] = True
        border[:, [0, -1]] = True
        pen = settings.edge_penalty
        objectness = torch.where(border, torch.maximum(objectness - pen, objectness.clamp_max(0.03)), objectness)
        probability = torch.where(border, torch.maximum(probability - pen, probability.clamp_max(0.03)),
                                  probability)
    thresholds = torch.tensor(settings.floor, dtype=torch.float64, device=out.device)[None, :, None, None]
    patch, prior, cy, cx = torch.nonzero(objectness >= thresholds, as_tuple=True)
    selected = out.permute(0, 1, 3, 4, 2)[patch, prior, cy, cx].double()  # [m, stride]
    obj, prob = objectness[patch, prior, cy, cx], probability[patch, prior, cy, cx]
    x_min, y_min, x_max, y_max = selected[:, 0], selected[:, 1], selected[:, 3], selected[:, 4]
    if settings.min_size > 0:
        keep = ((x_max - x_min) >= settings.min_size) & ((y_max - y_min) >= settings.min_size)
        patch, prior, cy, cx, selected, obj, prob = (v[keep] for v in (patch, prior, cy, cx, selected, obj, prob))
        x_min, y_min, x_max, y_max = selected[:, 0], selected[:, 1], selected[:, 3], selected[:, 4]
    if settings.min_box_size > 0:
        centre_x, centre_y = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
        half_w = 0.5 * (x_max - x_min).clamp_min(settings.min_box_size)
        half_h = 0.5 * (y_max - y_min).clamp_min(settings.min_box_size)
        x_min, x_max, y_min, y_max = centre_x - half_w, centre_x + half_w, centre_y - half_h, centre_y + half_h
    # most confident first within each patch, ties in the order found (the host's stable sort)
    order = torch.sort(-obj, stable=True).indices
    order = order[torch.sort(patch[order], stable=True).indices]
    patch, prior, cy, cx, selected, obj, prob = (v[order] for v in (patch, prior, cy, cx, selected, obj, prob))
    corners = torch.stack([x_min, y_min, x_max, y_max], dim=1)[order]
    counts = torch.bincount(patch, minlength=n)
    largest = int(counts.max()) if len(patch) else 0
    if largest > MAX_CANDIDATES:
        return None
    kept = _batched_greedy_nms(corners, obj, patch, counts, largest, settings.nms_tiers)
    rows = torch.cat([corners, obj[:, None], prob[:, None], selected[:, 8:8 + nc + npar]], dim=1)[kept]
    ints = torch.stack([prior, cy * grid_w + cx, patch], dim=1)[kept]
    rows_host, ints_host = rows.cpu().numpy(), ints.cpu().numpy()
    per_patch = np.bincount(ints_host[:, 2], minlength=n) if len(ints_host) else np.zeros(n, dtype=np.int64)
    splits = np.cumsum(per_patch)[:-1]
    result = []
    for k, (values, labels) in enumerate(zip(np.split(rows_host, splits), np.split(ints_host, splits))):
        if len(values) == 0:
            result.append(Boxes.empty(nc, npar))
            continue
        result.append(Boxes(
            x_min=values[:, 0].copy(), y_min=values[:, 1].copy(), x_max=values[:, 2].copy(),
            y_max=values[:, 3].copy(), objectness=values[:, 4].copy(), probability=values[:, 5].copy(),
            classes=values[:, 6:6 + nc].copy(), params=values[:, 6 + nc:6 + nc + npar].copy(),
            prior=labels[:, 0].astype(np.int64), cell=labels[:, 1].astype(np.int64),
            tile=np.full(len(values), int(tile_indices[k]), dtype=np.int64),
        ))
    return result


def _batched_greedy_nms(corners: "torch.Tensor", objectness: "torch.Tensor", patch: "torch.Tensor",
                        counts: "torch.Tensor", largest: int, tiers: Sequence[tuple[float, float]]) -> "torch.Tensor":
    """Boolean keep mask of candidates sorted by (patch, decreasing objectness): the greedy NMS of each patch."""
    import torch

    m = len(patch)
    if m == 0 or largest <= 1:
        return torch.ones(m, dtype=torch.bool, device=corners.device)
    n = len(counts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(m, device=corners.device) - starts[patch]  # position within its patch
    padded = torch.zeros((n, largest, 4), dtype=corners.dtype, device=corners.device)
    padded[patch, rank] = corners
    score = torch.full((n, largest), float("inf"), dtype=objectness.dtype, device=corners.device)
    score[patch, rank] = objectness
    valid = torch.zeros((n, largest), dtype=torch.bool, device=corners.device)
    valid[patch, rank] = True
    overlap = _diou(padded)  # [n, K, K]: box i (rows) against box j (columns)
    suppresses = torch.zeros_like(overlap, dtype=torch.bool)
    for limit, objectness_limit in tiers:
        suppresses |= (overlap > limit) & (score[:, None, :] < objectness_limit)
    before = torch.ones((largest, largest), dtype=torch.bool, device=corners.device).triu(1)
    suppresses &= before & valid[:, :, None] & valid[:, None, :]
    alive = valid.clone()
    for _ in range(largest):
        # a box is suppressed by any alive box before it in its patch
        hit = torch.einsum("nij,ni->nj", suppresses.to(torch.float32), alive.to(torch.float32)) > 0
        updated = valid & ~hit
        if torch.equal(updated, alive):
            break
        alive = updated
    return alive[patch, rank]


def _diou(boxes: "torch.Tensor") -> "torch.Tensor":
    """`diou_matrix` of every pair of boxes within each patch: ``[n, K, 4]`` to ``[n, K, K]``."""
    import torch

    return diou_broadcast(boxes[:, :, None, :], boxes[:, None, :, :], torch)


def tensor_outputs(network: Any, batch: "torch.Tensor") -> "torch.Tensor | None":
    """The decoded YOLO output of a device batch, left on the device; None for a network without the API."""
    import torch

    forward, decode = getattr(network, "forward_tensor", None), getattr(network, "decode", None)
    if forward is None or decode is None or getattr(network, "yolo", None) is None \
            or getattr(network, "spatial_dims", 2) != 2:
        return None
    with torch.inference_mode():
        return decode(forward(batch))
