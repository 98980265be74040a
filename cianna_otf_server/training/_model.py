"""The trainable network: the runtime's own `CiannaNetwork`, plus the pre-activation head for the loss.

Training the runtime's modules directly (their CIANNA-layout weights are ``nn.Parameter``) means
the exported file is exactly the network that was trained: there is no twin to copy weights out
of. The only thing training needs that inference does not is the YOLO layer's input before its
clamped activation, because the clamps have zero gradient where a target lies outside them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..cianna import CiannaNetwork, NetworkSpec
from ..cianna._layers import CiannaConv
from ..cianna.architectures import GroupNorm, Conv, build_yolo
from ._config import ArchitectureConfig, demo_head

__all__ = ["demo_spec", "build_network", "forward_raw", "activate", "head_of"]

#: Starting objectness and probability of every box: sources are rare (about one box in two
#: hundred holds one), so starting near that rate avoids a first phase spent unlearning 0.5.
_INITIAL_OBJECTNESS = 0.01


def demo_spec(architecture: ArchitectureConfig, input_size: int, seed: int = 0,
              objectness_max: float = 6.0) -> NetworkSpec:
    """The demo network as a CIANNA spec: `small_yolo`'s layer plan with the demo head.

    5 x 5 stem, then per stage a 2 x 2 stride-2 conv and ``depth`` (1 x 1, 3 x 3) pairs, one group
    norm of 4 channels per group, a 1 x 1 conv with dropout 0.25, and the YOLO output conv.
    ``objectness_max``: the head's objectness clamp (`Recipe.objectness_max`).
    """
    steps: list[Conv | GroupNorm] = [Conv(architecture.stem, 5, padding=2)]
    for width in architecture.widths:
        steps.append(Conv(max(width // 2, 1), 2, stride=2))
        for _ in range(architecture.depth):
            steps.append(Conv(max(width // 2, 1), 1))
            steps.append(Conv(width, 3, padding=1))
    steps += [GroupNorm(4), Conv(architecture.head_width, 1, dropout=0.25)]
    spec = build_yolo(input_size, steps, demo_head(objectness_max=objectness_max), seed=seed)
    _bias_rare_objects(spec)
    return spec


def _bias_rare_objects(spec: NetworkSpec) -> None:
    """Set the YOLO conv's bias weights so objectness and probability start at `_INITIAL_OBJECTNESS`."""
    layer = spec.layers[-1]
    head = layer.yolo
    per_box = head.channels_per_box
    slopes = np.asarray(head.slopes)
    logit = math.log(_INITIAL_OBJECTNESS / (1.0 - _INITIAL_OBJECTNESS))
    for box in range(head.nb_box):
        for channel, row in ((6, 2), (7, 3)):
            raw = logit / float(slopes[row, 0])
            layer.weights[box * per_box + channel, -1] = raw / layer.bias_value
        layer.weights[box * per_box + 8: box * per_box + per_box, -1] = 0.0


def build_network(spec: NetworkSpec, device: str | torch.device = "cpu") -> CiannaNetwork:
    """The runtime module for `spec`, in fp32 on `device`, ready to train."""
    net = CiannaNetwork(spec, input_bias=0.1, norm_activation="cuda")
    return net.to(torch.device(device))


def head_of(net: CiannaNetwork) -> CiannaConv:
    """The network's YOLO output conv."""
    last = net.layers[-1]
    if not isinstance(last, CiannaConv) or last.yolo is None:
        raise ValueError("the network does not end in a YOLO layer")
    return last


def forward_raw(net: CiannaNetwork, x: torch.Tensor) -> torch.Tensor:
    """The YOLO conv's output before its activation, ``[N, nb_box * per_box, gh, gw]``.

    Every layer but the last runs exactly as in inference; the last is the same convolution
    (kernel, bias weight x bias_value, dropout scaling) without the activation. The network's
    inference output is ``activate(net, forward_raw(net, x))``; a test checks it.
    """
    for module in net.layers[:-1]:
        x = module(x)
    head = head_of(net)
    kernel, bias = head.kernel_and_bias()
    y = F.conv2d(x, kernel.to(x.dtype), bias.to(x.dtype), stride=head.stride[1:], padding=head.padding[1:])
    if head.dropout:
        y = y * (1.0 - head.dropout)
    return y


def activate(net: CiannaNetwork, raw: torch.Tensor) -> torch.Tensor:
    """CIANNA's YOLO activation (the runtime's own module) of a pre-activation head output."""
    return head_of(net).yolo(raw)
