"""Validation during training: loss, and precision/recall through the real decode, on fixed patches.

The network's activated output goes through the runtime's `decode_yolo` and the pipeline's
`decode_patch` (thresholds + first NMS), exactly as in a detection run, so the figures printed
while training are those of the model as it will be served (on single patches, without the
second NMS between neighbours).
"""

from __future__ import annotations

import numpy as np
import torch
from astropy.table import Table

from ..cianna import CiannaNetwork, decode_yolo
from ..models._card import YoloSpec
from ..pipeline._decode import DecodeSettings, decode_patch
from ..sky.quality import match_catalogues
from ._data import Sample, batches
from ._loss import YoloLoss
from ._model import activate, forward_raw

__all__ = ["validate", "MATCH_RADIUS_PIX"]

#: One beam FWHM (1.5 arcsec) at the simulator's 0.6 arcsec pixels: the benchmark's matching radius.
MATCH_RADIUS_PIX = 2.5
_SPACING = 100_000.0  # patches are laid side by side this far apart so one matching call does all


@torch.no_grad()
def validate(net: CiannaNetwork, samples: list[Sample], loss: YoloLoss, yolo: YoloSpec, settings: DecodeSettings,
             batch_size: int = 32) -> dict[str, float]:
    """Mean loss, precision, and recall at SNR >= 5 and 3-5, over the validation patches.

    Precision counts a detection as true when it lies within `MATCH_RADIUS_PIX` of any true
    source (also one centred just outside the patch); recall counts the true sources centred
    inside the patch. Matching is one-to-one, nearest pairs first.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    total, weight = 0.0, 0
    det_x, det_y, true_x, true_y, true_snr, true_inside = [], [], [], [], [], []
    for k0, (part, (images, targets, corners)) in _indexed(batches(samples, batch_size)):
        images, targets, corners = images.to(device), targets.to(device), corners.to(device)
        raw = forward_raw(net, images)
        parts = loss(raw, targets, corners)
        total += float(parts.total) * len(part)
        weight += len(part)
        size = images.shape[-1]
        decoded = decode_yolo(activate(net, raw), net.yolo, (size, size, 1)).cpu().numpy()
        for offset, (sample, output) in enumerate(zip(part, decoded)):
            shift = (k0 + offset) * _SPACING
            boxes = decode_patch(output, yolo, settings)
            det_x.append(boxes.x_center + shift)
            det_y.append(boxes.y_center)
            truth = sample.truth
            true_x.append(truth.x + shift)
            true_y.append(truth.y)
            true_snr.append(truth.snr)
            true_inside.append((truth.x >= -0.5) & (truth.x < size - 0.5) & (truth.y >= -0.5) & (truth.y < size - 0.5))
    net.train(was_training)
    detected = Table({"x": np.concatenate(det_x), "y": np.concatenate(det_y)})
    truth = Table({"x": np.concatenate(true_x), "y": np.concatenate(true_y)})
    snr, inside = np.concatenate(true_snr), np.concatenate(true_inside)
    match = match_catalogues(detected, truth, radius_pix=MATCH_RADIUS_PIX)
    found = np.zeros(len(truth), dtype=bool)
    found[match.truth] = True

    def recall(selection: np.ndarray) -> float:
        selection = selection & inside
        return float(found[selection].mean()) if selection.any() else float("nan")

    return {
        "loss": total / max(weight, 1),
        "detections": float(len(detected)),
        "precision": float(len(match) / len(detected)) if len(detected) else float("nan"),
        "recall_snr5": recall(snr >= 5.0),
        "recall_snr3_5": recall((snr >= 3.0) & (snr < 5.0)),
    }


def _indexed(iterator):
    """(index of the first sample, item) for each batch."""
    index = 0
    for part, tensors in iterator:
        yield index, (part, tensors)
        index += len(part)
