"""YOLO-CIANNA architectures as `NetworkSpec` records with seeded random weights.

Benchmarks, tests and training need real CIANNA model files of the published shape without the
published weights. The builders here describe each layer as CIANNA's Python API would create it
(same activation strings, the same default ``bias_value`` per activation, the same Xavier-normal
scale, gamma 1 and beta 0 in group norms), so `save_network` writes a file that CIANNA itself can
load and `load_network` runs it.

The reference network is the SKA SDC1 model of YOLO-CIANNA (Cornu et al. 2024, A&A 690, A211),
as laid out in CIANNA's ``examples/SKAO_SDC1/train_network.py``: 12,621,373 parameters and
about 23.0 GMAC per 512 x 512 patch, on a 16 px grid (32 x 32 cells at 512 px).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._spec import (
    Activation,
    ConvLayer,
    DenseLayer,
    Layer,
    NetworkSpec,
    NormLayer,
    PoolLayer,
    YoloHead,
    compute_shapes,
)

#: CIANNA's default ``bias_value`` per activation kind, used when a layer names none.
DEFAULT_BIAS: dict[str, float] = {"LIN": 0.5, "RELU": 0.1, "LOGI": -1.0, "SMAX": 0.1, "YOLO": 0.5}
#: The value CIANNA appends to the network input (``init(bias=...)``); every SDC1 model uses 0.1.
INPUT_BIAS = 0.1
#: CIANNA's default leaky ReLU: slope 0.05 below zero, saturation (then slope 0.05) above 800.
RELU = Activation("RELU", 800.0, 0.05)
LIN = Activation("LIN")

# SDC1 YOLO settings (train_network.py): box priors in input pixels, W row then H row.
SDC1_PRIORS_W = (6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 12.0, 9.0, 24.0)
SDC1_PRIORS_H = (6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 9.0, 12.0, 24.0)
# slope, fmax, fmin per row of SLOPE_ROWS (position, size, probability, objectness, classes,
# parameters); the classes row keeps CIANNA's default since the SDC1 model has no class.
SDC1_SLOPES = (
    (0.5, 6.0, -6.0),
    (0.5, 1.2, -1.2),
    (0.2, 6.0, -6.0),
    (0.5, 6.0, -6.0),
    (1.0, 6.0, -6.0),
    (0.5, 1.5, -0.2),
)
SDC1_NB_PARAM = 5  # flux, bmaj, bmin, cos(PA), sin(PA) regressed per box
SDC1_GRID_CELL = 16  # input pixels per YOLO cell: four 2 x 2 stride-2 convs


@dataclass(frozen=True)
class Conv:
    """One conv step of an architecture plan (square kernel, 2-D).

    ``kernel``, ``stride`` and ``padding`` are in pixels; ``dropout`` is CIANNA's drop rate
    (the AVG_MODEL inference scaling is ``1 - dropout``).
    """

    filters: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dropout: float = 0.0
    activation: Activation = RELU


@dataclass(frozen=True)
class GroupNorm:
    """A group-normalisation step; ``group_size`` is CIANNA's channels per group."""

    group_size: int
    activation: Activation = LIN


Step = Conv | GroupNorm


def sdc1_yolo_head(nb_box: int = 9, nb_class: int = 0, nb_param: int = SDC1_NB_PARAM) -> YoloHead:
    """The YOLO head settings of the SDC1 model (priors in pixels, slope table, 2-D boxes).

    Only the first ``nb_box`` priors are kept when fewer boxes are asked for, so that small test
    networks can share the SDC1 conventions.
    """
    if not 1 <= nb_box <= len(SDC1_PRIORS_W):
        raise ValueError(f"nb_box must be within 1..{len(SDC1_PRIORS_W)}")
    priors = np.zeros((3, nb_box), dtype=np.float32)
    priors[0] = SDC1_PRIORS_W[:nb_box]
    priors[1] = SDC1_PRIORS_H[:nb_box]
    slopes = np.asarray(SDC1_SLOPES, dtype=np.float32)
    return YoloHead(nb_box, nb_class, nb_param, fit_dim=2, class_softmax=0, priors=priors, slopes=slopes)


def sdc1_backbone() -> list[Step]:
    """The SDC1 layer plan before the YOLO output conv, layer for layer as in CIANNA's example."""
    return [
        Conv(32, 5, padding=2),
        Conv(16, 2, stride=2),
        Conv(24, 3, padding=1),
        Conv(32, 3, padding=1),
        Conv(64, 2, stride=2),
        Conv(128, 1),
        Conv(192, 3, padding=1),
        Conv(128, 2, stride=2),
        Conv(192, 1),
        Conv(384, 3, padding=1),
        Conv(256, 1),
        Conv(384, 3, padding=1),
        Conv(512, 2, stride=2),
        Conv(768, 1),
        Conv(1024, 3, padding=1),
        GroupNorm(4),
        Conv(2048, 1, dropout=0.25),
    ]


def sdc1_reference(input_size: int = 512, seed: int = 0) -> NetworkSpec:
    """The YOLO-CIANNA SDC1 reference network with seeded random weights.

    Parameters
    ----------
    input_size : int
        Square input side in pixels. 512 is the inference patch of the SDC1 example (a 32 x 32
        grid); the network was trained at 256. Must be a multiple of 16, the grid cell.
    seed : int
        Seed of the numpy generator that draws the weights: the same seed gives the same file.

    Returns
    -------
    NetworkSpec
        1 input channel, 18 layers, output ``[N, 117, input_size/16, input_size/16]``
        (9 boxes of 13 channels: 3 position, 3 size, probability, objectness, 5 parameters).
    """
    _check_grid(input_size, SDC1_GRID_CELL)
    return build_yolo(input_size, sdc1_backbone(), sdc1_yolo_head(), seed=seed)


def _check_grid(input_size: int, cell: int) -> None:
    """YOLO decoding takes the cell as ``input // grid``: the input must tile into whole cells."""
    if input_size < cell or input_size % cell:
        raise ValueError(f"input_size must be a positive multiple of the {cell} px grid cell, not {input_size}")


def small_yolo(
    input_size: int = 128,
    widths: Sequence[int] = (16, 32, 48, 96),
    depth: int = 1,
    stem: int = 8,
    head_width: int = 128,
    nb_box: int = 9,
    seed: int = 0,
) -> NetworkSpec:
    """A smaller member of the SDC1 family, for CPU tests and quick training.

    Same shape of network as `sdc1_reference` (5 x 5 stem, stride-2 2 x 2 convs that halve the
    map, 1 x 1 / 3 x 3 pairs, one group norm of 4 channels per group, a 1 x 1 conv with dropout
    0.25, the SDC1 YOLO head) with widths and depth as parameters.

    Parameters
    ----------
    input_size : int
        Square input side in pixels; a multiple of ``2 ** len(widths)`` (the grid cell).
    widths : sequence of int
        Output channels of each stage (one stage per halving); the last must be a multiple of 4.
        With 4 stages the grid cell is 16 px, as in SDC1, so the pixel priors keep their meaning.
    depth : int
        Number of (1 x 1 to width/2, 3 x 3 to width) pairs after each stage's downsampling conv.
    stem : int
        Filters of the first 5 x 5 conv.
    head_width : int
        Filters of the 1 x 1 conv before the YOLO output.
    nb_box : int
        Boxes per grid cell (the first ``nb_box`` SDC1 priors).
    seed : int
        Seed of the weights.
    """
    if depth < 1 or not widths:
        raise ValueError("small_yolo needs at least one stage and depth >= 1")
    if widths[-1] % 4:
        raise ValueError("the last width must be a multiple of 4 (group norm of 4 channels)")
    _check_grid(input_size, 2 ** len(widths))
    steps: list[Step] = [Conv(stem, 5, padding=2)]
    for width in widths:
        steps.append(Conv(max(width // 2, 1), 2, stride=2))
        for _ in range(depth):
            steps.append(Conv(max(width // 2, 1), 1))
            steps.append(Conv(width, 3, padding=1))
    steps += [GroupNorm(4), Conv(head_width, 1, dropout=0.25)]
    return build_yolo(input_size, steps, sdc1_yolo_head(nb_box=nb_box), seed=seed)


def build_yolo(
    input_size: int,
    steps: Sequence[Step],
    head: YoloHead,
    seed: int = 0,
    in_channels: int = 1,
    input_bias: float = INPUT_BIAS,
    yolo_init_scaling: float = 1.0,
) -> NetworkSpec:
    """Turn a layer plan and a YOLO head into a spec, with CIANNA-style random weights.

    Parameters
    ----------
    input_size : int
        Square input side in pixels.
    steps : sequence of Conv or GroupNorm
        The backbone; a 1 x 1 YOLO conv with ``head.nb_box * head.channels_per_box`` filters is
        appended.
    head : YoloHead
        Priors and slopes written with the YOLO layer.
    seed : int
        Seed of the numpy generator that draws every weight, in layer order.
    in_channels : int
        Input channels (1 for a radio image).
    input_bias : float
        The first layer's ``bias_value``: CIANNA uses the input bias there, not the activation default.
    yolo_init_scaling : float
        CIANNA's ``init_scaling`` of the YOLO conv (1 by default; larger values push the head into
        its clamps, which tests of the decoding want).
    """
    rng = np.random.default_rng(seed)
    width = height = int(input_size)
    channels = int(in_channels)
    layers: list[Layer] = []
    yolo = Conv(head.nb_box * head.channels_per_box, 1, activation=Activation("YOLO"))
    for step in [*steps, yolo]:
        if isinstance(step, GroupNorm):
            if channels % step.group_size:
                raise ValueError(f"{channels} channels do not split into groups of {step.group_size}")
            nb_group = channels // step.group_size
            layers.append(
                NormLayer(
                    "GN", step.group_size, 0, step.activation,
                    gamma=np.ones(nb_group, dtype=np.float32), beta=np.zeros(nb_group, dtype=np.float32),
                )
            )
            continue
        is_yolo = step is yolo
        bias_value = input_bias if not layers else DEFAULT_BIAS[step.activation.kind]
        scaling = yolo_init_scaling if is_yolo else 1.0
        layers.append(
            ConvLayer(
                nb_filters=step.filters,
                f_size=(step.kernel, step.kernel, 1),
                stride=(step.stride, step.stride, 1),
                padding=(step.padding, step.padding, 0),
                int_padding=(0, 0, 0),
                prev_size=(width, height, 1),
                prev_depth=channels,
                dropout=float(step.dropout),
                bias_value=float(bias_value),
                activation=step.activation,
                weights=xavier_normal(rng, step.filters, channels * step.kernel * step.kernel, scaling),
                yolo=head if is_yolo else None,
            )
        )
        width = (width + 2 * step.padding - step.kernel) // step.stride + 1
        height = (height + 2 * step.padding - step.kernel) // step.stride + 1
        channels = step.filters
    spec = NetworkSpec((int(input_size), int(input_size), 1, int(in_channels)), layers)
    compute_shapes(spec)  # raises on an input too small for the plan
    return spec


def xavier_normal(rng: np.random.Generator, nb_filters: int, fan_in: int, scaling: float = 1.0) -> np.ndarray:
    """CIANNA's conv initialisation: ``N(0, 2 / (fan_in + 1 + nb_filters))`` on every weight.

    The row holds ``fan_in`` kernel weights and the bias weight last, drawn alike, as CIANNA's
    ``xavier_normal`` does for conv filters (the bias slot counts in fan-in). Returns float32
    ``[nb_filters, fan_in + 1]``.
    """
    std = np.sqrt(2.0 / (fan_in + 1 + nb_filters)) * scaling
    return (rng.standard_normal((nb_filters, fan_in + 1)) * std).astype(np.float32)


def count_parameters(spec: NetworkSpec) -> int:
    """Trainable values in the network: conv and dense weights (bias weights included), gamma, beta."""
    total = 0
    for layer in spec.layers:
        if isinstance(layer, (ConvLayer, DenseLayer)):
            total += int(layer.weights.size)
        elif isinstance(layer, NormLayer):
            total += int(layer.gamma.size + layer.beta.size)
    return total


def count_macs(spec: NetworkSpec) -> int:
    """Multiply-accumulates of one forward pass for one input example (conv and dense only).

    Counts kernel products (``out_W*out_H*out_D * filters * C_in*fw*fh*fd``), not the bias add,
    the activations, pools or norms; 2 FLOP per MAC gives the usual FLOP figure.
    """
    shapes = compute_shapes(spec)
    channels = spec.in_dims[3]
    flat = int(np.prod(spec.in_dims))
    total = 0
    for layer, shape in zip(spec.layers, shapes):
        if isinstance(layer, ConvLayer):
            fw, fh, fd = layer.f_size
            total += shape.width * shape.height * shape.depth * layer.nb_filters * channels * fw * fh * fd
        elif isinstance(layer, DenseLayer):
            total += (flat + 1) * (layer.nb_neurons + 1)
        elif isinstance(layer, PoolLayer):
            pass
        channels, flat = shape.channels, shape.size
    return total
