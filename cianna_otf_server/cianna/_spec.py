"""Typed, framework-free description of a CIANNA network: what a model file holds.

The reader fills these records from a file, the runtime builds PyTorch modules from them, and
the writer serialises them back. Keeping them free of PyTorch lets the registry inspect a model
(input size, YOLO layout) without building it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SLOPE_ROWS: tuple[str, ...] = ("position", "size", "probability", "objectness", "classes", "parameters")


@dataclass(frozen=True)
class Activation:
    """A parsed CIANNA activation string.

    ``kind`` is one of LIN, RELU, LOGI, SMAX, YOLO. RELU is leaky with ``leaking`` below zero and
    continues with slope ``leaking`` above ``saturation``; LOGI clips ``-beta*x`` at
    ``saturation`` (one side only), exactly as CIANNA does.
    """

    kind: str
    saturation: float = 0.0
    leaking: float = 0.0
    beta: float = 1.0

    @staticmethod
    def parse(text: str) -> "Activation":
        """Parse ``LIN``, ``SMAX``, ``YOLO``, ``RELU_S800.00_L0.05`` or ``LOGI_S6.00_B1.00``."""
        text = text.strip()
        if text in ("LIN", "SMAX", "YOLO"):
            return Activation(text)
        if text == "RELU":
            return Activation("RELU", 800.0, 0.05)
        if text == "LOGI":
            return Activation("LOGI", 6.0, 0.0, 1.0)
        parts = text.split("_")
        try:
            if parts[0] == "RELU" and len(parts) == 3 and parts[1][0] == "S" and parts[2][0] == "L":
                return Activation("RELU", float(parts[1][1:]), float(parts[2][1:]))
            if parts[0] == "LOGI" and len(parts) == 3 and parts[1][0] == "S" and parts[2][0] == "B":
                return Activation("LOGI", float(parts[1][1:]), 0.0, float(parts[2][1:]))
        except (ValueError, IndexError):
            pass
        raise ValueError(f"unknown activation {text!r}")

    def format(self) -> str:
        """The string CIANNA writes for this activation (parameters kept to 2 decimals)."""
        if self.kind == "RELU":
            return f"RELU_S{self.saturation:.2f}_L{self.leaking:.2f}"
        if self.kind == "LOGI":
            return f"LOGI_S{self.saturation:.2f}_B{self.beta:.2f}"
        return self.kind


@dataclass
class YoloHead:
    """YOLO head settings stored after a conv layer whose activation is YOLO.

    ``priors`` is ``[3, nb_box]`` (W, H, D priors in input pixels); ``slopes`` is ``[6, 3]``
    with rows `SLOPE_ROWS` and columns (slope, fmax, fmin): note max before min, as in the file.
    """

    nb_box: int
    nb_class: int
    nb_param: int
    fit_dim: int
    class_softmax: int
    priors: np.ndarray
    slopes: np.ndarray

    @property
    def channels_per_box(self) -> int:
        """Channels one box occupies: position (3), size (3), probability, objectness, classes, params."""
        return 8 + self.nb_class + self.nb_param


@dataclass
class ConvLayer:
    """A convolution. ``weights`` is ``[nb_filters, C_in*fd*fh*fw + 1]``, the bias weight last."""

    nb_filters: int
    f_size: tuple[int, int, int]  # W, H, D
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    int_padding: tuple[int, int, int]
    prev_size: tuple[int, int, int]  # stored W, H, D of the input (informative only)
    prev_depth: int
    dropout: float
    bias_value: float
    activation: Activation
    weights: np.ndarray
    yolo: YoloHead | None = None
    type_code: str = field(default="C", init=False)


@dataclass
class PoolLayer:
    """A MAX or AVG pool; a global pool stores its window already expanded to the map size."""

    p_size: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    is_global: bool
    dropout: float
    pool_type: str  # "MAX" or "AVG"
    activation: Activation
    type_code: str = field(default="P", init=False)


@dataclass
class NormLayer:
    """Group normalisation: ``group_size`` channels per group, the last ``set_off`` groups untouched."""

    norm_type: str
    group_size: int
    set_off: int
    activation: Activation
    gamma: np.ndarray
    beta: np.ndarray
    type_code: str = field(default="N", init=False)


@dataclass
class DenseLayer:
    """A dense layer. ``weights`` is ``[in_size, nb_neurons + 1]``; in_size counts the bias input."""

    nb_neurons: int
    dropout: float
    bias_value: float
    activation: Activation
    weights: np.ndarray
    type_code: str = field(default="D", init=False)


Layer = ConvLayer | PoolLayer | NormLayer | DenseLayer


@dataclass
class LayerShape:
    """Output shape of one layer, as CIANNA recomputes it from the network input."""

    width: int
    height: int
    depth: int
    channels: int

    @property
    def size(self) -> int:
        return self.width * self.height * self.depth * self.channels


@dataclass
class NetworkSpec:
    """A whole network: the input dimensions (W, H, D, C) and the layers in order."""

    in_dims: tuple[int, int, int, int]
    layers: list[Layer]
    source: Path | None = None

    @property
    def yolo(self) -> YoloHead | None:
        """The YOLO head of the last layer, if the network ends in one."""
        last = self.layers[-1] if self.layers else None
        return last.yolo if isinstance(last, ConvLayer) else None

    def shapes(self) -> list[LayerShape]:
        """Each layer's output shape, recomputed from the input like CIANNA's loader does."""
        return compute_shapes(self)


def conv_output_length(length: int, f_size: int, stride: int, padding: int, int_padding: int) -> int:
    """CIANNA's conv output size: zero insertion, padding, then a floored strided window count."""
    return (length + (length - 1) * int_padding + 2 * padding - f_size) // stride + 1


def pool_output_length(length: int, p_size: int, stride: int, padding: int) -> int:
    """CIANNA's pool output size (floored, like the conv)."""
    return (length + 2 * padding - p_size) // stride + 1


def compute_shapes(spec: NetworkSpec) -> list[LayerShape]:
    """Propagate the input shape through the layers; raise ValueError on an impossible shape."""
    width, height, depth, channels = spec.in_dims
    shapes: list[LayerShape] = []
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, ConvLayer):
            dims = [
                conv_output_length(n, layer.f_size[d], layer.stride[d], layer.padding[d], layer.int_padding[d])
                for d, n in enumerate((width, height, depth))
            ]
            width, height, depth = dims
            channels = layer.nb_filters
        elif isinstance(layer, PoolLayer):
            if layer.is_global:
                width = height = depth = 1
            else:
                width, height, depth = (
                    pool_output_length(n, layer.p_size[d], layer.stride[d], layer.padding[d])
                    for d, n in enumerate((width, height, depth))
                )
        elif isinstance(layer, DenseLayer):
            # the extra "bias neuron" column is tracked by the runtime, not counted here
            width, height, depth, channels = layer.nb_neurons, 1, 1, 1
        if min(width, height, depth, channels) <= 0:
            raise ValueError(f"layer {index} ({layer.type_code}) would produce an empty output")
        shapes.append(LayerShape(width, height, depth, channels))
    return shapes
