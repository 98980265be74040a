"""The one description of the demo model shared by training, target encoding, export and tuning.

Everything that must agree between training and inference lives here once: the architecture,
the YOLO head (priors and slope table), the input normalisation, the physical meaning of the
extra outputs (card ``[[parameters]]``) and the simulated sky the model learns from. The card
written at export is built from these same records, so a model cannot be trained with one
normalisation or parameter range and run with another.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..cianna.architectures import SDC1_NB_PARAM, SDC1_PRIORS_H, SDC1_PRIORS_W, SDC1_SLOPES
from ..cianna._spec import YoloHead
from ..models._card import DomainSpec, NormalisationSpec, ParameterSpec

__all__ = ["ArchitectureConfig", "TargetConfig", "LossConfig", "TrainConfig", "demo_head", "DEMO_PARAMETERS",
           "DEMO_NORMALISATION", "VALIDATION_SEED_BASE", "TUNING_SEED_BASE", "Recipe", "RECIPES", "SNR_RECIPE",
           "ABSOLUTE_RECIPE", "SNR_NORMALISATION", "SNR_PARAMETERS", "recipe_of"]

#: Input normalisation of the demo model. The window starts at zero flux rather than at the SDC1
#: recipe's 0.4 uJy/beam (1.3 sigma of the simulated noise), so positive noise below that stays
#: visible to the network, and the log compression keeps faint peaks apart: 3 sigma maps to about
#: 0.26, 10 sigma to 0.46, 130 sigma to 1. Zero, the padding value beyond an image, is blank sky.
DEMO_NORMALISATION = NormalisationSpec(function="log", clip_min=0.0, clip_max=4.0e-5, scale=100.0)

#: How the five extra outputs become catalogue columns. Flux is regressed as a natural log over
#: the simulator's range (1 uJy - 1 mJy); the axes are intrinsic FWHM (as in the truth table and
#: the SDC1 catalogues), linear from 0 (unresolved) to 20 arcsec, the simulator's largest source;
#: the position angle as (cos PA, (sin PA + 1) / 2), the SDC1 convention.
DEMO_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("flux", (0,), "exp", math.log(1.0e-6), math.log(1.0e-3), "Jy", "phot.flux.density;em.radio",
                  "Integrated flux density, as the source appears in the image"),
    ParameterSpec("bmaj", (1,), "linear", 0.0, 20.0, "arcsec", "phys.angSize.smajAxis",
                  "Intrinsic (deconvolved) major axis FWHM; 0 for an unresolved source"),
    ParameterSpec("bmin", (2,), "linear", 0.0, 20.0, "arcsec", "phys.angSize.sminAxis",
                  "Intrinsic (deconvolved) minor axis FWHM; 0 for an unresolved source"),
    ParameterSpec("pa", (3, 4), "pa_cos_sin", 0.0, 1.0, "deg", "pos.posAng",
                  "Intrinsic position angle of the major axis, east of north, in [-90, 90] deg "
                  "(0 for an unresolved source)"),
)

#: Signal-to-noise input (yolo-demo 2): the network reads (image - background) / local rms, clipped
#: to [-5, 5000] and log-compressed, so noise (|SNR| < 3) spans 0.1-0.26, 10 sigma 0.33, 100 sigma
#: 0.55, 1000 sigma 0.81. Blank pixels (NaN, beyond an image edge) read as 0, the background level,
#: as the training skies' blanks and borders do.
SNR_NORMALISATION = NormalisationSpec(function="log", clip_min=-5.0, clip_max=5000.0, scale=5000.0, blank=0.0)

#: Outputs of the signal-to-noise model, all measurable in any image without knowing its unit,
#: depth or pixel scale: the integrated flux in units of the local rms times the beam (S / sigma;
#: the pipeline multiplies by the noise map and the image unit to give Jy), the apparent
#: (beam-convolved) FWHM axes in pixels of the network's input (the pipeline applies the pixel
#: scale and any resampling) and the apparent position angle in the pixel frame (from +y towards
#: -x; the pipeline turns it east of north through the image's WCS).
SNR_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("flux", (0,), "exp", math.log(0.5), math.log(1.0e5), "beam", "phot.flux.density;em.radio",
                  "Integrated flux density, as the source appears in the image (no primary-beam correction)"),
    ParameterSpec("bmaj", (1,), "linear", 0.0, 64.0, "pix", "phys.angSize.smajAxis",
                  "Apparent (beam-convolved) major axis FWHM"),
    ParameterSpec("bmin", (2,), "linear", 0.0, 64.0, "pix", "phys.angSize.sminAxis",
                  "Apparent (beam-convolved) minor axis FWHM"),
    ParameterSpec("pa", (3, 4), "pa_cos_sin", 0.0, 1.0, "deg", "pos.posAng",
                  "Position angle of the apparent major axis, east of north, in [-90, 90] deg"),
)


@dataclass(frozen=True)
class Recipe:
    """What a generation of the demo model reads and predicts, shared by training, export and the card.

    ``absolute``: yolo-demo 1, SDC1-like skies in Jy/beam at one beam and depth. ``snr``:
    yolo-demo 2, randomised skies (`simulate.random_domain`) read in signal-to-noise units, with
    beams of ``domain.beam_pixels_range`` pixels. ``objectness_max`` is the upper clamp of the
    objectness logit in the head's slope table (CIANNA's SDC1 value 6 gives a ceiling of 0.9975
    that most bright sources reach, so the score would no longer rank them).
    """

    name: str
    normalisation: NormalisationSpec
    parameters: tuple[ParameterSpec, ...]
    domain: DomainSpec
    objectness_max: float = 6.0
    randomised: bool = False
    version: str = "1.0"
    measure: bool = False  # the card measures position, flux and shape in the image (`[yolo] measure`)
    deblend: bool = False  # and adds the peaks its boxes merged (`[yolo] deblend`)
    #: `[yolo] rescue_threshold, rescue_snr` written into the card (None: no rescue); chosen for
    #: yolo-demo 2.1 by benchmarks/tune_rescue.py, to be re-chosen there for another network
    rescue: tuple[float, float] | None = None


ABSOLUTE_RECIPE = Recipe("absolute", DEMO_NORMALISATION, DEMO_PARAMETERS, DomainSpec())
SNR_RECIPE = Recipe("snr", SNR_NORMALISATION, SNR_PARAMETERS,
                    DomainSpec(input="snr", beam_pixels=3.5, beam_pixels_range=(1.5, 8.0), angles="pixel",
                               declared=True),
                    objectness_max=12.0, randomised=True, version="2.1", measure=True, deblend=True,
                    rescue=(0.3, 6.0))
RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (ABSOLUTE_RECIPE, SNR_RECIPE)}

#: Seeds of the held-out validation skies (training draws 64-bit seeds above `TRAINING_SEED_FLOOR`).
VALIDATION_SEED_BASE = 2_000_000
#: Seeds of the full-size images on which the detection thresholds are tuned.
TUNING_SEED_BASE = 2_100_000
#: Training sky seeds are never below this, so they cannot meet a validation or benchmark seed.
TRAINING_SEED_FLOOR = 10_000_000


def demo_head(nb_param: int = SDC1_NB_PARAM, objectness_max: float = 6.0) -> YoloHead:
    """The SDC1 YOLO head (9 priors, 2-D boxes, the SDC1 slope table) with a non-negative parameter range.

    The parameter row of the slope table is clamped to [0, 1.5] instead of SDC1's [-0.2, 1.5]:
    every demo parameter is encoded in [0, 1], and a lower clamp at 0 keeps the linear size
    columns from ever going negative. ``objectness_max`` is the objectness row's upper clamp
    (see `Recipe`).
    """
    priors = np.zeros((3, len(SDC1_PRIORS_W)), dtype=np.float32)
    priors[0], priors[1] = SDC1_PRIORS_W, SDC1_PRIORS_H
    slopes = np.asarray(SDC1_SLOPES, dtype=np.float32).copy()
    slopes[5] = (0.5, 1.5, 0.0)
    slopes[3] = (slopes[3][0], float(objectness_max), slopes[3][2])
    return YoloHead(len(SDC1_PRIORS_W), 0, nb_param, fit_dim=2, class_softmax=0, priors=priors, slopes=slopes)


@dataclass(frozen=True)
class ArchitectureConfig:
    """A member of the SDC1 family (see `small_yolo`): widths per stage, pairs per stage, stem, head.

    Four stages give the SDC1 16-pixel grid cell, so the SDC1 pixel priors keep their meaning.
    """

    widths: tuple[int, ...] = (16, 32, 96, 256)
    depth: int = 2
    stem: int = 16
    head_width: int = 256


@dataclass(frozen=True)
class TargetConfig:
    """Which true sources a patch must report, and the size of the box that stands for each.

    Sources with a peak SNR of at least ``min_snr`` are targets; fainter ones are neither
    rewarded nor penalised (their grid cell is ignored), since at that depth the image cannot
    say whether they are there. A source's box is ``box_scale`` times the FWHM extent of the
    beam-convolved source along x and y, clipped to [``box_min``, ``box_max``] pixels: 5 px for
    an unresolved source under the 1.5 arcsec beam, about the SDC1 recipe's smallest box.
    Predictions overlapping a true box by more than ``ignore_iou`` are not pushed to zero
    objectness either (CIANNA's "good IoU" rule).
    """

    min_snr: float = 2.0
    box_scale: float = 2.0
    box_min: float = 5.0
    box_max: float = 64.0
    ignore_iou: float = 0.5
    max_truths: int = 96  # per patch, for the IoU-ignore rule (padded tensor)


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (see `YoloLoss`); every term is summed then divided by the targets."""

    position: float = 5.0
    size: float = 1.0
    objectness: float = 1.0
    no_objectness: float = 1.0
    probability: float = 0.5
    parameters: tuple[float, ...] = (4.0, 2.0, 2.0, 1.0, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; stored in checkpoints and in the model card."""

    seed: int = 1
    recipe: str = "snr"
    patch_size: int = 256
    inference_patch: int = 512
    inference_shift: int = 480
    inference_offset: int = 16
    sky_size: int = 1024
    crops_per_sky: int = 24
    crop_margin: int = 32  # crops may start this far beyond the sky, zero-padded like image borders
    batch_size: int = 64
    lr: float = 1.5e-3
    lr_final: float = 5e-5
    weight_decay: float = 5e-4
    warmup_steps: int = 300
    schedule_minutes: float = 10.0
    ema_decay: float = 0.999
    simulation: dict[str, Any] = field(default_factory=dict)  # SimulationOptions overrides
    architecture: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown training recipe {self.recipe!r}; known: {', '.join(RECIPES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for checkpoints and the card."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict` (nested records rebuilt, lists back to tuples)."""
        data = dict(data)
        arch = dict(data.pop("architecture", {}))
        if "widths" in arch:
            arch["widths"] = tuple(arch["widths"])
        loss = dict(data.pop("loss", {}))
        if "parameters" in loss:
            loss["parameters"] = tuple(loss["parameters"])
        data.setdefault("recipe", "absolute")  # checkpoints written before recipes existed
        return cls(
            architecture=ArchitectureConfig(**arch),
            targets=TargetConfig(**data.pop("targets", {})),
            loss=LossConfig(**loss),
            **data,
        )


def recipe_of(config: TrainConfig) -> Recipe:
    """The recipe a training configuration follows."""
    return RECIPES[config.recipe]
