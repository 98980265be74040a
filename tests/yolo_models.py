"""Small YOLO-CIANNA networks with random weights, written as real CIANNA files with a card.

Random weights detect nothing meaningful, but they exercise every step a trained network goes
through (tiling, batching, decoding, NMS, merge, catalogue) at a cost tests can afford.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cianna_otf_server.cianna import Activation, ConvLayer, NetworkSpec, NormLayer, YoloHead, save_network

RELU = Activation("RELU", 800.0, 0.05)
NB_BOX, NB_PARAM = 2, 2


def tiny_yolo_spec(size: int = 64, seed: int = 0) -> NetworkSpec:
    """Four strided convolutions down to a 4x4 grid (cell 16 px for a 64 px input), a GN, a YOLO head."""
    rng = np.random.default_rng(seed)
    layers = []
    channels, width = 1, size
    for filters in (8, 12, 16, 16):
        rows = rng.normal(0, np.sqrt(2.0 / (channels * 9)), size=(filters, channels * 9 + 1)).astype(np.float32)
        layers.append(ConvLayer(filters, (3, 3, 1), (2, 2, 1), (1, 1, 0), (0, 0, 0), (width, width, 1), channels,
                                0.0, 0.1, RELU, rows))
        channels, width = filters, width // 2
    layers.append(NormLayer("GN", 4, 0, Activation("LIN"), np.ones(4, np.float32), np.zeros(4, np.float32)))
    head = YoloHead(NB_BOX, 0, NB_PARAM, 2, 0,
                    np.array([[6, 12], [6, 12], [0, 0]], dtype=np.float32),
                    np.array([[0.5, 6, -6], [0.5, 1.2, -1.2], [0.2, 6, -6], [0.5, 6, -6], [1, 6, -6], [0.5, 1.5, -0.2]],
                             dtype=np.float32))
    per_box = 8 + NB_PARAM
    rows = rng.normal(0, 0.3, size=(NB_BOX * per_box, channels + 1)).astype(np.float32)
    layers.append(ConvLayer(NB_BOX * per_box, (1, 1, 1), (1, 1, 1), (0, 0, 0), (0, 0, 0), (width, width, 1),
                            channels, 0.0, 0.5, Activation("YOLO"), rows, head))
    return NetworkSpec(in_dims=(size, size, 1, 1), layers=layers)


CARD = """
[model]
name = "{name}"
version = "{version}"
family = "yolo-cianna"
description = "tiny random network for tests"
default_precision = "fp32"

[weights]
file = "{file}"
sha256 = "{sha}"
input_bias = 0.1

[tiling]
patch_size = 64
shift = 48
offset = 8

[normalisation]
function = "tanh"
clip_min = 0.4e-6
clip_max = 0.4e-4

[yolo]
nb_box = 2
nb_class = 0
nb_param = 2
priors_w = [6, 12]
priors_h = [6, 12]
objectness_thresholds = [0.3, 0.3]
nms_threshold = 0.0
second_nms_threshold = -0.1

[[parameters]]
name = "flux"
channels = [0]
transform = "exp"
min = -14.0
max = -6.0
unit = "Jy"
ucd = "phot.flux.density;em.radio"
"""


def write_tiny_yolo(directory: Path, name: str = "tiny-yolo", version: str = "1", seed: int = 0) -> Path:
    """Write ``{name}.dat`` and ``{name}.toml`` into `directory`; returns the card path."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.dat"
    save_network(tiny_yolo_spec(seed=seed), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    card = directory / f"{name}.toml"
    card.write_text(CARD.format(name=name, version=version, file=weights.name, sha=sha))
    return card
