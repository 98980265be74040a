"""Training and validation patches cut from simulated skies, normalised as inference does.

Each training sky is a fresh `simulate_sky` image (the product's own simulator, at its default
SDC1-like settings unless the configuration overrides some); patches are cut from it at random
places by the pipeline's own `cut_patch`, so normalisation and the zero padding beyond an image
edge are byte for byte what a detection run feeds the network. The truth table gives each
patch's targets (`encode_targets`). Generation runs in DataLoader worker processes; a sky of
1024 x 1024 pixels takes about 30 ms and gives 16 patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from astropy.table import Table
from torch.utils.data import IterableDataset, get_worker_info

from ..cianna._spec import YoloHead
from ..models._card import NormalisationSpec
from ..pipeline._tiling import Tile, cut_patch
from ..simulate import simulate_sky
from ._config import DEMO_PARAMETERS, TRAINING_SEED_FLOOR, VALIDATION_SEED_BASE, TrainConfig
from ._targets import PatchTruth, encode_parameters, encode_targets, source_boxes, truth_corners

__all__ = ["Sample", "sky_truth", "make_sample", "training_sky_seed", "TrainingStream", "validation_samples",
           "collate", "batches"]


@dataclass
class Sample:
    """One patch: network input ``[1, H, W]``, dense targets, true boxes, and the truth itself."""

    image: np.ndarray
    target: np.ndarray
    corners: np.ndarray
    truth: PatchTruth
    origin: tuple[int, int]  # (x0, y0) of the patch in its sky, 0-based pixels


class _Array:
    """The minimal image object `cut_patch` reads (a ``data`` array)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data


def sky_truth(truth: Table, config: TrainConfig, nb_param: int) -> PatchTruth:
    """Every source of a simulated sky as a `PatchTruth` in the sky's 0-based pixel frame."""
    meta = truth.meta
    beam = (float(meta["beam_bmaj"]), float(meta["beam_bmin"]), float(meta["beam_pa"]))
    bmaj = np.asarray(truth["bmaj"], np.float64)
    bmin = np.asarray(truth["bmin"], np.float64)
    pa = np.asarray(truth["pa"], np.float64)
    width, height = source_boxes(bmaj, bmin, pa, beam, float(meta["pixel_scale"]), config.targets)
    flux = np.asarray(truth["flux"], np.float64)
    params = encode_parameters({"flux": flux, "bmaj": bmaj, "bmin": bmin, "pa": pa}, DEMO_PARAMETERS, nb_param)
    return PatchTruth(
        x=np.asarray(truth["x"], np.float64) - 1.0,
        y=np.asarray(truth["y"], np.float64) - 1.0,
        width=width, height=height, params=params,
        snr=np.asarray(truth["snr"], np.float64), flux=flux,
    )


def make_sample(data: np.ndarray, sky: PatchTruth, x0: int, y0: int, size: int, cell: int,
                normalisation: NormalisationSpec, head: YoloHead, config: TrainConfig) -> Sample:
    """Cut, normalise and label the patch whose first pixel is (x0, y0) of the sky."""
    image = cut_patch(_Array(data), Tile(0, 0, 0, x0, y0), (size, size), normalisation)
    reach = config.targets.box_max
    near = ((sky.x > x0 - reach) & (sky.x < x0 + size + reach)
            & (sky.y > y0 - reach) & (sky.y < y0 + size + reach))
    local = sky.take(np.nonzero(near)[0]).shifted(x0, y0)
    target = encode_targets(local, head, size, cell, config.targets)
    corners = truth_corners(local, config.targets.max_truths)
    return Sample(image[None], target, corners, local, (x0, y0))


def training_sky_seed(seed: int, segment: int, chunk: int) -> int:
    """The simulation seed of one training sky: a 63-bit draw, never a validation or benchmark seed."""
    state = np.random.SeedSequence([int(seed), int(segment), int(chunk)]).generate_state(2, np.uint32)
    value = (int(state[0]) << 31) ^ int(state[1])
    return TRAINING_SEED_FLOOR + value % (2**62)


class TrainingStream(IterableDataset):
    """An endless stream of training samples from fresh skies, split between DataLoader workers.

    Sky ``c`` of run segment ``segment`` has seed ``training_sky_seed(seed, segment, c)``; worker
    ``w`` of ``n`` simulates skies ``w, w + n, ...``. A resumed run uses the next segment, so it
    never sees the skies of an earlier one again.
    """

    def __init__(self, config: TrainConfig, head: YoloHead, cell: int, normalisation: NormalisationSpec,
                 segment: int = 0) -> None:
        super().__init__()
        self.config, self.head, self.cell = config, head, cell
        self.normalisation, self.segment = normalisation, segment

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        config = self.config
        size, margin = config.patch_size, config.crop_margin
        chunk = worker
        while True:
            sky_seed = training_sky_seed(config.seed, self.segment, chunk)
            hdul, truth = simulate_sky(config.sky_size, seed=sky_seed, **config.simulation)
            data = hdul[0].data
            sky = sky_truth(truth, config, self.head.nb_param)
            rng = np.random.default_rng([sky_seed % (2**32), 7])
            high = config.sky_size - size + margin
            for _ in range(config.crops_per_sky):
                x0, y0 = (int(v) for v in rng.integers(-margin, high + 1, size=2))
                sample = make_sample(data, sky, x0, y0, size, self.cell, self.normalisation, self.head, config)
                yield sample.image, sample.target, sample.corners
            chunk += workers


def collate(batch: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, ...]:
    """Stack samples into (images, targets, corners) tensors."""
    images, targets, corners = zip(*batch)
    return (torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(corners)))


def validation_samples(config: TrainConfig, head: YoloHead, cell: int, normalisation: NormalisationSpec,
                       n_skies: int = 8) -> list[Sample]:
    """A fixed held-out set: the non-overlapping patches of skies with seeds `VALIDATION_SEED_BASE` + k."""
    size = config.patch_size
    per_side = max(1, config.sky_size // size)
    samples = []
    for k in range(n_skies):
        hdul, truth = simulate_sky(config.sky_size, seed=VALIDATION_SEED_BASE + k, **config.simulation)
        data = hdul[0].data
        sky = sky_truth(truth, config, head.nb_param)
        for j in range(per_side):
            for i in range(per_side):
                samples.append(make_sample(data, sky, i * size, j * size, size, cell, normalisation, head, config))
    return samples


def batches(samples: list[Sample], batch_size: int) -> Iterator[tuple[list[Sample], tuple[torch.Tensor, ...]]]:
    """The samples in order, as (samples, collated tensors) batches."""
    for start in range(0, len(samples), batch_size):
        part = samples[start:start + batch_size]
        yield part, collate([(s.image, s.target, s.corners) for s in part])
