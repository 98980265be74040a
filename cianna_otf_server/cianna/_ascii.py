"""CIANNA's ASCII model format (``bin=0``).

Weights are written with ``%g`` (6 significant digits), so an ASCII model is an approximation of
its binary twin. Unlike CIANNA itself, this reader also reads the six YOLO slope lines that
CIANNA writes but never reads back, so ASCII YOLO models load correctly here.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ModelFileError
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

_TRIPLE = r"(\d+)x(\d+)x(\d+)"
_NUMBER = r"([-+0-9.eEinfa]+)"
_CONV = re.compile(
    rf"^C(\d+)f{_TRIPLE}\.{_TRIPLE}s{_TRIPLE}p{_TRIPLE}ip(\d+)x(\d+)x(\d+)x(\d+)idim"
    rf"{_NUMBER}d{_NUMBER}b(\S+)\s*$"
)
_POOL = re.compile(rf"^P{_TRIPLE}\.{_TRIPLE}s{_TRIPLE}p(\d+)g_{_NUMBER}d(MAX|AVG)\s+(\S+)\s*$")
_NORM = re.compile(r"^N\s+(\w+)\s+S(\d+)_O(\d+)(\S+)\s*$")
_DENSE = re.compile(rf"^D(\d+)n{_NUMBER}d{_NUMBER}b(\S+)\s*$")
_HEADER = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)\s*$")


class _Lines:
    """Line and number reader that reports the line where parsing failed."""

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.splitlines()
        self.name = name
        self.index = 0
        self.pending: list[str] = []
        self.layer_label = "header"

    def fail(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.name}: {message} ({self.layer_label}, line {self.index})")

    def next_line(self) -> str | None:
        """The next non-empty line, or None at the end of the file."""
        self.pending = []
        while self.index < len(self.lines):
            line = self.lines[self.index].strip()
            self.index += 1
            if line:
                return line
        return None

    def numbers(self, count: int, what: str) -> np.ndarray:
        values: list[str] = []
        while len(values) < count:
            if not self.pending:
                if self.index >= len(self.lines):
                    raise self.fail(f"file ends early: {what} needs {count} values, found {len(values)}")
                self.pending = self.lines[self.index].split()
                self.index += 1
            take = min(count - len(values), len(self.pending))
            values.extend(self.pending[:take])
            self.pending = self.pending[take:]
        try:
            return np.array([float(v) for v in values], dtype=np.float32)
        except ValueError:
            raise self.fail(f"{what} holds a value that is not a number") from None


def _activation(lines: _Lines, text: str) -> Activation:
    try:
        return Activation.parse(text)
    except ValueError as exc:
        raise lines.fail(str(exc)) from None


def _ints(match: re.Match[str], first: int, count: int = 3) -> tuple[int, ...]:
    return tuple(int(match.group(first + i)) for i in range(count))


def read_ascii(text: str, name: str) -> NetworkSpec:
    """Parse an ASCII model; `name` is used in error messages."""
    lines = _Lines(text, name)
    header = lines.next_line()
    match = _HEADER.match(header or "")
    if not match:
        raise lines.fail("first line must be the input dimensions WxHxDxC")
    in_dims = tuple(int(v) for v in match.groups())
    layers: list[Layer] = []
    while (line := lines.next_line()) is not None:
        lines.layer_label = f"layer {len(layers)}"
        try:
            shapes = compute_shapes(NetworkSpec(in_dims, list(layers))) if layers else None
        except ValueError as exc:
            raise lines.fail(f"inconsistent network: {exc}") from None
        if (m := _CONV.match(line)) is not None:
            layers.append(_conv(lines, m))
        elif (m := _POOL.match(line)) is not None:
            layers.append(
                PoolLayer(_ints(m, 1), _ints(m, 4), _ints(m, 7), bool(int(m.group(10))),
                          float(m.group(11)), m.group(12), _activation(lines, m.group(13)))
            )
        elif (m := _NORM.match(line)) is not None:
            channels = shapes[-1].channels if shapes else in_dims[3]
            group_size, set_off = int(m.group(2)), int(m.group(3))
            if group_size <= 0 or channels % group_size:
                raise lines.fail(f"{channels} channels are not divisible by group size {group_size}")
            nb_group = channels // group_size
            gamma = lines.numbers(nb_group, "norm gamma")
            beta = lines.numbers(nb_group, "norm beta")
            layers.append(NormLayer(m.group(1), group_size, set_off, _activation(lines, m.group(4)), gamma, beta))
        elif (m := _DENSE.match(line)) is not None:
            nb_neurons = int(m.group(1))
            flat = shapes[-1].size if shapes else int(np.prod(in_dims))
            weights = lines.numbers((flat + 1) * (nb_neurons + 1), "dense weights")
            layers.append(
                DenseLayer(nb_neurons, float(m.group(2)), float(m.group(3)), _activation(lines, m.group(4)),
                           weights.reshape(flat + 1, nb_neurons + 1))
            )
        else:
            kind = line[:1]
            if kind in "CPND":
                raise lines.fail(f"malformed layer line {line[:60]!r}")
            raise lines.fail(f"unknown layer type {kind!r}")
    if not layers:
        raise lines.fail("the file holds no layers")
    spec = NetworkSpec(in_dims=in_dims, layers=layers)
    try:
        compute_shapes(spec)
    except ValueError as exc:
        raise ModelFileError(f"{name}: inconsistent network: {exc}") from None
    return spec


def _conv(lines: _Lines, m: re.Match[str]) -> ConvLayer:
    nb_filters = int(m.group(1))
    f_size, stride, padding, int_padding = _ints(m, 2), _ints(m, 5), _ints(m, 8), _ints(m, 11)
    prev_size = _ints(m, 14)
    prev_depth = int(m.group(17))
    activation = _activation(lines, m.group(20))
    yolo = None
    if activation.kind == "YOLO":
        settings = lines.numbers(5, "YOLO settings").astype(int)
        nb_box = int(settings[0])
        priors = lines.numbers(3 * nb_box, "YOLO priors").reshape(3, nb_box)
        slopes = lines.numbers(18, "YOLO slopes").reshape(6, 3)
        yolo = YoloHead(nb_box, int(settings[1]), int(settings[2]), int(settings[3]), int(settings[4]), priors, slopes)
    row = prev_depth * f_size[0] * f_size[1] * f_size[2] + 1
    weights = lines.numbers(nb_filters * row, "conv weights").reshape(nb_filters, row)
    return ConvLayer(nb_filters, f_size, stride, padding, int_padding, prev_size, prev_depth,
                     float(m.group(18)), float(m.group(19)), activation, weights, yolo)


def write_ascii(spec: NetworkSpec) -> str:
    """Serialise in CIANNA's ASCII layout (``%g`` numbers, so weights lose precision)."""
    out = ["{}x{}x{}x{}".format(*spec.in_dims)]

    def rows(matrix: np.ndarray) -> None:
        for row in np.atleast_2d(matrix):
            out.append(" ".join(f"{v:g}" for v in row) + " ")

    shapes = compute_shapes(spec)
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, ConvLayer):
            in_shape = spec.in_dims if index == 0 else (
                shapes[index - 1].width, shapes[index - 1].height, shapes[index - 1].depth, shapes[index - 1].channels)
            out.append(
                "C{}f{}x{}x{}.{}x{}x{}s{}x{}x{}p{}x{}x{}ip{}x{}x{}x{}idim{:f}d{:f}b{} ".format(
                    layer.nb_filters, *layer.f_size, *layer.stride, *layer.padding, *layer.int_padding,
                    *in_shape, layer.dropout, layer.bias_value, layer.activation.format())
            )
            if layer.yolo is not None:
                y = layer.yolo
                out.append(f"{y.nb_box} {y.nb_class} {y.nb_param} {y.fit_dim} {y.class_softmax}")
                rows(np.asarray(y.priors))
                rows(np.asarray(y.slopes))
            rows(layer.weights)
        elif isinstance(layer, PoolLayer):
            out.append("P{}x{}x{}.{}x{}x{}s{}x{}x{}p{}g_{:f}d{} {} ".format(
                *layer.p_size, *layer.stride, *layer.padding, int(layer.is_global), layer.dropout,
                layer.pool_type, layer.activation.format()))
        elif isinstance(layer, NormLayer):
            out.append(f"N {layer.norm_type} S{layer.group_size}_O{layer.set_off}{layer.activation.format()} ")
            rows(layer.gamma)
            rows(layer.beta)
        elif isinstance(layer, DenseLayer):
            out.append(f"D{layer.nb_neurons}n{layer.dropout:f}d{layer.bias_value:f}b{layer.activation.format()} ")
            rows(layer.weights)
        out.append("")
    return "\n".join(out) + "\n"
