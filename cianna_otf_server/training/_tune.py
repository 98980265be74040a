"""Choose the card's objectness threshold, NMS and peak-SNR floor on held-out full-size images.

The network is run once per image through the pipeline's own steps (tiling, normalisation,
forward, `YoloDetection`); the stored outputs are then decoded and merged with every candidate
setting, and each catalogue is matched with the truth as the quality benchmark does. The chosen
setting has the best recall of sources of SNR >= 5 (then the best F1) among those whose
precision reaches the target on every image, so the card ships a model that is reliable first,
in sparse fields as in crowded ones, and as complete as that allows.
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
from ..sky.quality import quality_report
from ._config import TrainConfig
from ._data import simulate_training_sky
from ._evaluate import MATCH_RADIUS_PIX
from ._export import DecodeChoice

__all__ = ["TuningImage", "tuning_images", "tune_decoding", "match_radius", "DEFAULT_THRESHOLDS", "DEFAULT_NMS"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95)
DEFAULT_NMS: tuple[float, ...] = (-0.3, -0.15, 0.0, 0.15)
#: Peak-SNR floors tried for models with a noise map (0: none).
DEFAULT_MIN_SNR: tuple[float, ...] = (0.0, 3.0, 3.5, 4.0, 4.5, 5.0)


@dataclass
class TuningImage:
    """A held-out simulated image, its truth, and the network's per-patch outputs once computed."""

    seed: int
    hdul: Any
    truth: Any
    outputs: list[tuple[list, np.ndarray]] = dataclasses.field(default_factory=list)


def tuning_images(seeds: Sequence[int], size: int, config: TrainConfig) -> list[TuningImage]:
    """Simulate the held-out images (seeds distinct from training, validation and benchmark ones).

    Each follows the training recipe's skies (a random domain per seed for yolo-demo 2).
    """
    images = []
    for seed in seeds:
        hdul, truth = simulate_training_sky(config, int(seed), size)
        images.append(TuningImage(int(seed), hdul, truth))
    return images


def match_radius(truth: Any) -> float:
    """Matching radius in pixels: one beam FWHM, at least `MATCH_RADIUS_PIX`."""
    meta = truth.meta
    try:
        beam = float(meta["beam_bmaj"]) / float(meta["pixel_scale"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return MATCH_RADIUS_PIX
    return max(MATCH_RADIUS_PIX, beam)


def _run(net: Any, card: ModelCard, item: TuningImage, batch_size: int) -> None:
    image = open_image(item.hdul)
    detection = YoloDetection(image, card, full_box(image), precision="fp32")
    item.outputs = [(tiles, run_network(net, batch))
                    for tiles, batch in iter_batches(detection.view, detection.plan, card.normalisation, batch_size)]


def _catalogue(card: ModelCard, item: TuningImage, threshold: float, nms: float) -> Any:
    """One image's catalogue at a threshold and NMS, without a peak-SNR floor."""
    image = open_image(item.hdul)
    chosen = dataclasses.replace(card, yolo=dataclasses.replace(
        card.yolo, objectness_thresholds=(threshold,) * card.yolo.nb_box,
        nms_threshold=nms, second_nms_threshold=nms, min_peak_snr=0.0))
    detection = YoloDetection(image, chosen, full_box(image), precision="fp32")
    for tiles, outputs in item.outputs:
        detection.add_outputs(tiles, outputs)
    return detection.catalogue()


def _subset(table: Any, threshold: float, floor: float) -> Any:
    """The detections a higher threshold and a peak-SNR floor keep.

    Every suppression (both NMS passes) is by a more confident box, so the catalogue at a higher
    threshold is exactly the lower threshold's rows with a score at or above it: one catalogue
    per NMS value serves every threshold.
    """
    keep = np.asarray(table["score"], dtype=np.float64) >= threshold
    if floor > 0 and "snr" in table.colnames:
        keep &= np.nan_to_num(np.asarray(table["snr"], dtype=np.float64), nan=-np.inf) >= floor
    return table[keep]


def tune_decoding(net: Any, card: ModelCard, images: list[TuningImage], *, min_precision: float = 0.95,
                  thresholds: Sequence[float] = DEFAULT_THRESHOLDS, nms_values: Sequence[float] = DEFAULT_NMS,
                  min_snrs: Sequence[float] = DEFAULT_MIN_SNR,
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
        Candidates whose precision falls below this on any image are only chosen if none reaches
        it (then the one with the best worst-image precision is taken).
    min_snrs : sequence of float
        Peak-SNR floors (`YoloSpec.min_peak_snr`) tried for models with a noise map.
    """
    for item in images:
        if not item.outputs:
            _run(net, card, item, batch_size)
    floors = tuple(min_snrs) if card.domain.declared and (card.domain.input == "snr" or card.domain.noise_range) \
        else (0.0,)
    rows = []
    lowest = float(min(thresholds))
    for nms in nms_values:
        tables = [_catalogue(card, item, lowest, float(nms)) for item in images]
        radii = [match_radius(item.truth) for item in images]
        for threshold in thresholds:
            for floor in floors:
                reports = [quality_report(_subset(table, float(threshold), floor), item.truth, radius_pix=radius)
                           for table, item, radius in zip(tables, images, radii)]
                tp = sum(r["overall"]["n_true_positive"] for r in reports)
                det = sum(r["overall"]["n_detected"] for r in reports)
                found = sum(r["overall"]["n_recovered"] for r in reports)
                true = sum(r["overall"]["n_true"] for r in reports)
                found5 = sum(r["above"]["n_recovered"] for r in reports)
                true5 = sum(r["above"]["n_true"] for r in reports)
                precision = tp / det if det else 0.0
                recall = found / true if true else 0.0
                f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
                worst = min((r["overall"]["precision"] for r in reports if r["overall"]["precision"] is not None),
                            default=0.0)
                rows.append({"threshold": float(threshold), "nms": float(nms), "min_peak_snr": float(floor),
                             "precision": precision, "worst_image_precision": worst, "recall": recall, "f1": f1,
                             "recall_snr5": found5 / true5 if true5 else 0.0, "detections": det})
                log(f"tune: threshold {threshold:.2f} nms {nms:+.2f} min snr {floor:.1f}: precision {precision:.3f} "
                    f"(worst image {worst:.3f}) recall {recall:.3f} (SNR>=5 {rows[-1]['recall_snr5']:.3f}) F1 {f1:.3f}")
    # the precision must hold on every image, not only pooled: a dense image's many true sources
    # would otherwise hide the noise peaks a sparse field is left with
    good = [r for r in rows if r["worst_image_precision"] >= min_precision]
    best = max(good, key=lambda r: (r["recall_snr5"], r["f1"])) if good else \
        max(rows, key=lambda r: (r["worst_image_precision"], r["precision"]))
    return DecodeChoice(best["threshold"], best["nms"], best["nms"], best["min_peak_snr"]), rows
