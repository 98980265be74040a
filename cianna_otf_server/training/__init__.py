"""Training of YOLO-CIANNA networks on simulated skies (the optional ``[train]`` extra).

`train` fits a small member of the SDC1 network family (`demo_spec`) to patches of fresh
`simulate_sky` images and exports it as a CIANNA model file with its card; the built-in
``yolo-demo`` model was made this way (its card records the exact command). The network
trained is the runtime's own `CiannaNetwork`, so the exported file holds exactly the weights
that were trained and `load_network` reproduces their outputs.

    python -m cianna_otf_server.training --out runs/demo --seed 1 --minutes 8 --device cuda
"""

from ._config import (
    DEMO_NORMALISATION,
    DEMO_PARAMETERS,
    RECIPES,
    SNR_NORMALISATION,
    SNR_PARAMETERS,
    Recipe,
    recipe_of,
    ArchitectureConfig,
    LossConfig,
    TargetConfig,
    TrainConfig,
    demo_head,
)
from ._data import Sample, TrainingStream, make_sample, sky_truth, validation_samples
from ._evaluate import validate
from ._export import DecodeChoice, export_model, inference_spec, yolo_spec
from ._loss import YoloLoss
from ._model import activate, build_network, demo_spec, forward_raw
from ._targets import PatchTruth, encode_parameters, encode_targets, source_boxes
from ._train import RunOptions, TrainResult, learning_rate, load_checkpoint, train
from ._tune import tune_decoding, tuning_images

__all__ = [
    "ArchitectureConfig",
    "DEMO_NORMALISATION",
    "DEMO_PARAMETERS",
    "RECIPES",
    "Recipe",
    "SNR_NORMALISATION",
    "SNR_PARAMETERS",
    "recipe_of",
    "DecodeChoice",
    "LossConfig",
    "PatchTruth",
    "RunOptions",
    "Sample",
    "TargetConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingStream",
    "YoloLoss",
    "activate",
    "build_network",
    "demo_head",
    "demo_spec",
    "encode_parameters",
    "encode_targets",
    "export_model",
    "forward_raw",
    "inference_spec",
    "learning_rate",
    "load_checkpoint",
    "make_sample",
    "sky_truth",
    "source_boxes",
    "train",
    "tune_decoding",
    "tuning_images",
    "validate",
    "validation_samples",
    "yolo_spec",
]
