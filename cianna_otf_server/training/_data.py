"""Training and validation patches cut from simulated skies, normalised as inference does.

Each training sky is a fresh `simulate_sky` image: for the signal-to-noise recipe (yolo-demo 2)
of a random domain (`random_domain`: beam, pixel scale, noise level and texture, artefacts,
doubles, blanks, density all drawn anew per sky), for the absolute recipe (yolo-demo 1) at the
default SDC1-like settings. The sky becomes network input exactly as a detection run makes it
(`network_input`: the pipeline's own noise map for signal-to-noise models), and patches are cut
at random places by the pipeline's own `cut_patch`, so normalisation and the padding of blanks
and of places beyond an image edge are byte for byte what inference feeds the network. The
truth table gives each patch's targets (`encode_targets`). Generation runs in DataLoader worker
processes; a random-domain sky of 1024 x 1024 pixels takes about 0.2 s and gives 24 patches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np
import torch
from astropy.table import Table
from torch.utils.data import IterableDataset, get_worker_info

from ..cianna._spec import YoloHead
from ..models._card import NormalisationSpec
from ..pipeline._noise import NoiseMap, measure_noise
from ..pipeline._tiling import Tile, cut_patch
from ..sky.simulate import SimulationOptions, random_domain, simulate_sky
from ._config import TRAINING_SEED_FLOOR, VALIDATION_SEED_BASE, TrainConfig, recipe_of
from ._targets import (PatchTruth, apparent_shape, encode_parameters, encode_targets, source_boxes,
                       truth_corners)

__all__ = ["Sample", "sky_truth", "make_sample", "training_sky_seed", "TrainingStream", "validation_samples",
           "collate", "batches", "sky_options", "simulate_training_sky", "network_input"]


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


def sky_options(config: TrainConfig, seed: int, size: int | None = None) -> SimulationOptions:
    """The simulation options of the sky with this seed: a random domain, or the recipe's fixed one.

    ``config.simulation`` overrides are applied on top in both cases (e.g. a fixed density).
    """
    size = int(size or config.sky_size)
    if recipe_of(config).randomised:
        rng = np.random.default_rng([int(seed) % (2**63), 0xD0A1])
        options = random_domain(rng, size=size)
        return replace(options, **config.simulation) if config.simulation else options
    return SimulationOptions.from_kwargs(dict(config.simulation))


def simulate_training_sky(config: TrainConfig, seed: int, size: int | None = None) -> tuple[Any, Table]:
    """``simulate_sky`` with `sky_options` (HDUList, truth)."""
    size = int(size or config.sky_size)
    return simulate_sky(size, seed=int(seed), **sky_options(config, seed, size).as_kwargs())


def network_input(data: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, NoiseMap | None]:
    """A sky as the network reads it before normalisation, and its noise map (signal-to-noise recipe).

    Signal-to-noise: ``(image - background) / rms`` with the pipeline's own `measure_noise`
    (what `DomainView` does at inference); absolute: the Jy/beam pixels as they are.
    """
    if recipe_of(config).domain.input != "snr":
        return data, None
    noise = measure_noise(data)
    ny, nx = data.shape
    background, rms = noise.window(0, nx, 0, ny)
    snr = np.asarray(data, dtype=np.float32) - background
    snr /= rms
    return snr, noise


def sky_truth(truth: Table, config: TrainConfig, nb_param: int, noise: NoiseMap | None = None) -> PatchTruth:
    """Every source of a simulated sky as a `PatchTruth` in the sky's 0-based pixel frame.

    Absolute recipe: flux in Jy, intrinsic axes in arcsec, as the SDC1 truth. Signal-to-noise
    recipe: flux over the noise map's rms at the source (``beam`` units, what the pipeline
    multiplies back), apparent (beam-convolved) axes in pixels and their angle in the pixel frame.
    """
    meta = truth.meta
    beam = (float(meta["beam_bmaj"]), float(meta["beam_bmin"]), float(meta["beam_pa"]))
    scale = float(meta["pixel_scale"])
    bmaj = np.asarray(truth["bmaj"], np.float64)
    bmin = np.asarray(truth["bmin"], np.float64)
    pa = np.asarray(truth["pa"], np.float64)
    width, height = source_boxes(bmaj, bmin, pa, beam, scale, config.targets)
    flux = np.asarray(truth["flux"], np.float64)
    x = np.asarray(truth["x"], np.float64) - 1.0
    y = np.asarray(truth["y"], np.float64) - 1.0
    recipe = recipe_of(config)
    if recipe.domain.input == "snr":
        if noise is None:
            raise ValueError("the signal-to-noise recipe needs the sky's noise map")
        major, minor, angle = apparent_shape(bmaj, bmin, pa, beam, scale)
        values = {"flux": flux / np.maximum(noise.at(x, y), 1e-30), "bmaj": major, "bmin": minor, "pa": angle}
    else:
        values = {"flux": flux, "bmaj": bmaj, "bmin": bmin, "pa": pa}
    params = np.clip(encode_parameters(values, recipe.parameters, nb_param), 0.0, 1.5)
    return PatchTruth(
        x=x, y=y, width=width, height=height, params=params,
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
            hdul, truth = simulate_training_sky(config, sky_seed)
            data, noise = network_input(hdul[0].data, config)
            sky = sky_truth(truth, config, self.head.nb_param, noise)
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
        hdul, truth = simulate_training_sky(config, VALIDATION_SEED_BASE + k)
        data, noise = network_input(hdul[0].data, config)
        sky = sky_truth(truth, config, head.nb_param, noise)
        for j in range(per_side):
            for i in range(per_side):
                samples.append(make_sample(data, sky, i * size, j * size, size, cell, normalisation, head, config))
    return samples


def batches(samples: list[Sample], batch_size: int) -> Iterator[tuple[list[Sample], tuple[torch.Tensor, ...]]]:
    """The samples in order, as (samples, collated tensors) batches."""
    for start in range(0, len(samples), batch_size):
        part = samples[start:start + batch_size]
        yield part, collate([(s.image, s.target, s.corners) for s in part])
