"""The YOLO loss, in the spirit of CIANNA's YOLO layer, on the head's pre-activation output.

For every box the head predicts position, size, probability, objectness and extra parameters
(see `YoloActivation`). The loss compares, for the boxes that hold a source (state 1 in the
targets of `encode_targets`):

* position: squared error of the activated position ``logistic(slope * raw)`` in cell units;
* size: squared error of ``slope * raw`` against ``log(size / prior)``;
* parameters: squared error of ``slope * raw`` against the encoded parameters (per-parameter weights);
* objectness and probability: binary cross-entropy towards 1;

and, for boxes that must stay empty (state 0, and not overlapping a true box by more than the
ignore IoU once decoded), objectness and probability towards 0. Boxes in state -1 get no
objectness loss. The size and parameter clamps of inference are left out here (targets lie
inside them), so gradients never vanish at a clamp. Terms are summed and divided by the number
of sources in the batch, so the loss does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cianna._spec import YoloHead
from ._config import LossConfig

__all__ = ["YoloLoss", "LossParts", "decode_raw_boxes"]


@dataclass
class LossParts:
    """The total loss and its terms (detached tensors: reading them waits for the device, so the
    training loop only does so when it logs)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # detached, already divided by the number of targets
    n_targets: torch.Tensor


def decode_raw_boxes(raw: torch.Tensor, head: YoloHead, cell: int) -> torch.Tensor:
    """Predicted box corners ``[N, nb_box, 4, gh, gw]`` (patch pixels, CIANNA frame) from the raw head."""
    n, _, gh, gw = raw.shape
    boxes = raw.float().reshape(n, head.nb_box, head.channels_per_box, gh, gw)
    slopes = torch.as_tensor(head.slopes, dtype=torch.float32, device=raw.device)
    position = torch.sigmoid(torch.clamp(slopes[0, 0] * boxes[:, :, 0:2], min=-slopes[0, 1], max=-slopes[0, 2]))
    size = torch.clamp(slopes[1, 0] * boxes[:, :, 3:5], min=slopes[1, 2], max=slopes[1, 1])
    priors = torch.as_tensor(head.priors[:2], dtype=torch.float32, device=raw.device).T.reshape(1, head.nb_box, 2, 1, 1)
    gx = torch.arange(gw, device=raw.device, dtype=torch.float32).reshape(1, 1, gw)
    gy = torch.arange(gh, device=raw.device, dtype=torch.float32).reshape(1, gh, 1)
    cx = (gx + position[:, :, 0]) * cell
    cy = (gy + position[:, :, 1]) * cell
    half = 0.5 * priors * torch.exp(size)
    return torch.stack([cx - half[:, :, 0], cy - half[:, :, 1], cx + half[:, :, 0], cy + half[:, :, 1]], dim=2)


def _best_iou(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Max IoU of each predicted box ``[N, B, 4, gh, gw]`` with the true boxes ``[N, T, 4]`` (NaN = none)."""
    n, b, _, gh, gw = pred.shape
    p = pred.permute(0, 1, 3, 4, 2).reshape(n, -1, 1, 4)
    t = truth.unsqueeze(1)  # [N, 1, T, 4]
    iw = (torch.minimum(p[..., 2], t[..., 2]) - torch.maximum(p[..., 0], t[..., 0])).clamp(min=0)
    ih = (torch.minimum(p[..., 3], t[..., 3]) - torch.maximum(p[..., 1], t[..., 1])).clamp(min=0)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0]) * (p[..., 3] - p[..., 1])
    area_t = (t[..., 2] - t[..., 0]) * (t[..., 3] - t[..., 1])
    iou = inter / (area_p + area_t - inter).clamp(min=1e-6)
    iou = torch.nan_to_num(iou, nan=0.0)
    best = iou.max(dim=2).values if iou.shape[2] else torch.zeros_like(iou[..., 0])
    return best.reshape(n, b, gh, gw)


class YoloLoss:
    """Loss of a batch: ``loss(raw, targets, corners)``.

    Parameters
    ----------
    head : YoloHead
        The head's layout, priors and slope table.
    cell : int
        Grid cell in pixels.
    weights : LossConfig
        Weights of the terms.
    ignore_iou : float
        A non-target box whose decoded prediction overlaps a true box by more than this gets no
        objectness loss.
    """

    def __init__(self, head: YoloHead, cell: int, weights: LossConfig, ignore_iou: float = 0.5) -> None:
        self.head, self.cell, self.weights, self.ignore_iou = head, cell, weights, ignore_iou
        self.slopes = torch.as_tensor(head.slopes, dtype=torch.float32)
        if len(weights.parameters) < head.nb_param:
            raise ValueError(f"need {head.nb_param} parameter weights, got {len(weights.parameters)}")

    def __call__(self, raw: torch.Tensor, targets: torch.Tensor, corners: torch.Tensor) -> LossParts:
        head, w = self.head, self.weights
        slopes = self.slopes.to(raw.device)
        n, _, gh, gw = raw.shape
        boxes = raw.float().reshape(n, head.nb_box, head.channels_per_box, gh, gw)
        state = targets[:, :, 0]
        positive = state > 0.5
        with torch.no_grad():
            overlap = _best_iou(decode_raw_boxes(raw.detach(), head, self.cell), corners)
            negative = (state.abs() < 0.5) & (overlap <= self.ignore_iou)
        n_targets = positive.sum()
        n_pos = n_targets.clamp(min=1).float()

        pos_t = targets[:, :, 1:3].permute(0, 1, 3, 4, 2)[positive]  # [P, 2]
        size_t = targets[:, :, 3:5].permute(0, 1, 3, 4, 2)[positive]
        param_t = targets[:, :, 5:].permute(0, 1, 3, 4, 2)[positive]
        pred = boxes.permute(0, 1, 3, 4, 2)[positive]  # [P, per_box]
        position = torch.sigmoid(slopes[0, 0] * pred[:, 0:2])
        size = slopes[1, 0] * pred[:, 3:5]
        params = slopes[5, 0] * pred[:, 8 + head.nb_class: 8 + head.nb_class + head.nb_param]
        pw = torch.as_tensor(w.parameters[: head.nb_param], dtype=torch.float32, device=raw.device)

        obj_logit = slopes[3, 0] * boxes[:, :, 7]
        prob_logit = slopes[2, 0] * boxes[:, :, 6]
        terms = {
            "position": w.position * ((position - pos_t) ** 2).sum(),
            "size": w.size * ((size - size_t) ** 2).sum(),
            "parameters": (((params - param_t) ** 2) * pw).sum(),
            "objectness": w.objectness * F.softplus(-obj_logit[positive]).sum(),
            "no_objectness": w.no_objectness * F.softplus(obj_logit[negative]).sum(),
            "probability": w.probability * (F.softplus(-prob_logit[positive]).sum()
                                            + F.softplus(prob_logit[negative]).sum()),
        }
        total = sum(terms.values()) / n_pos
        return LossParts(total, {k: v.detach() / n_pos for k, v in terms.items()}, n_targets)
