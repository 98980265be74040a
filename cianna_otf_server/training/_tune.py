"""Choose the card's objectness threshold and NMS on held-out full-size images.

The network is run once per image through the pipeline's own steps (tiling, normalisation,
forward, `YoloDetection`); the stored outputs are then decoded and merged with every candidate
setting, and each catalogue is matched with the truth as the quality benchmark does. The chosen
setting has the best F1 among those whose precision reaches the target, so the card ships a
model that is reliable first and as complete as that allows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..models._card import ModelCard
from ..pipeline._detect import YoloDetection, run_network
from ..pipeline._image import open_image
from ..pipeline._region import full_box
from ..pipeline._tiling import iter_batches
from ..quality import quality_report
from ..simulate import simulate_sky
from ._evaluate import MATCH_RADIUS_PIX
from ._export import DecodeChoice

__all__ = ["TuningImage", "tuning_images", "tune_decoding", "DEFAULT_THRESHOLDS", "DEFAULT_NMS"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)
DEFAULT_NMS: tuple[float, ...] = (-0.3, -0.15, 0.0, 0.15)


@dataclass
class TuningImage:
    """A held-out simulated image, its truth, and the network's per-patch outputs once computed."""

    seed: int
    hdul: Any
    truth: Any
    outputs: list[tuple[list, np.ndarray]] = dataclasses.field(default_factory=list)


def tuning_images(seeds: Sequence[int], size: int, simulation: dict[str, Any]) -> list[TuningImage]:
    """Simulate the held-out images (seeds distinct from training, validation and benchmark ones)."""
    images = []
    for seed in seeds:
        hdul, truth = simulate_sky(size, seed=int(seed), **simulation)
        images.append(TuningImage(int(seed), hdul, truth))
    return images


def _run(net: Any, card: ModelCard, item: TuningImage, batch_size: int) -> None:
    image = open_image(item.hdul)
    plan = YoloDetection(image, card, full_box(image), precision="fp32").plan
    item.outputs = [(tiles, run_network(net, batch))
                    for tiles, batch in iter_batches(image, plan, card.normalisation, batch_size)]


def _score(card: ModelCard, item: TuningImage, choice: DecodeChoice) -> dict[str, Any]:
    image = open_image(item.hdul)
    chosen = dataclasses.replace(card, yolo=dataclasses.replace(
        card.yolo, objectness_thresholds=(choice.threshold,) * card.yolo.nb_box,
        nms_threshold=choice.nms, second_nms_threshold=choice.second_nms))
    detection = YoloDetection(image, chosen, full_box(image), precision="fp32")
    for tiles, outputs in item.outputs:
        detection.add_outputs(tiles, outputs)
    table = detection.catalogue()
    return quality_report(table, item.truth, radius_pix=MATCH_RADIUS_PIX)


def tune_decoding(net: Any, card: ModelCard, images: list[TuningImage], *, min_precision: float = 0.95,
                  thresholds: Sequence[float] = DEFAULT_THRESHOLDS, nms_values: Sequence[float] = DEFAULT_NMS,
                  batch_size: int = 16, log: Callable[[str], None] = print) -> tuple[DecodeChoice, list[dict]]:
    """The best setting and the table of every candidate's pooled precision, recall and F1.

    Parameters
    ----------
    net : CiannaNetwork
        The network at its inference patch size, in eval mode.
    card : ModelCard
        A card for it (thresholds and NMS are replaced by each candidate).
    images : list of TuningImage
        Held-out images with their truth.
    min_precision : float
        Candidates below this pooled precision are only chosen if none reaches it (then the most
        precise one is taken).
    """
    for item in images:
        if not item.outputs:
            _run(net, card, item, batch_size)
    rows = []
    for nms in nms_values:
        for threshold in thresholds:
            choice = DecodeChoice(float(threshold), float(nms), float(nms))
            reports = [_score(card, item, choice) for item in images]
            tp = sum(r["overall"]["n_true_positive"] for r in reports)
            det = sum(r["overall"]["n_detected"] for r in reports)
            found = sum(r["overall"]["n_recovered"] for r in reports)
            true = sum(r["overall"]["n_true"] for r in reports)
            found5 = sum(r["above"]["n_recovered"] for r in reports)
            true5 = sum(r["above"]["n_true"] for r in reports)
            precision = tp / det if det else 0.0
            recall = found / true if true else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"threshold": choice.threshold, "nms": choice.nms, "precision": precision,
                         "recall": recall, "f1": f1, "recall_snr5": found5 / true5 if true5 else 0.0,
                         "detections": det})
            log(f"tune: threshold {threshold:.2f} nms {nms:+.2f}: precision {precision:.3f} "
                f"recall {recall:.3f} (SNR>=5 {rows[-1]['recall_snr5']:.3f}) F1 {f1:.3f}")
    good = [r for r in rows if r["precision"] >= min_precision]
    best = max(good, key=lambda r: r["f1"]) if good else max(rows, key=lambda r: r["precision"])
    return DecodeChoice(best["threshold"], best["nms"], best["nms"]), rows
