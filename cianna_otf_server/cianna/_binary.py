"""CIANNA's binary model format (``bin=1``): read and write, byte for byte as CIANNA does.

All values are little-endian with no padding. Errors name the file, the layer and the byte
offset, because a user holding a truncated download needs to know where it broke.
"""

from __future__ import annotations

import struct
from pathlib import Path

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

STRING_FIELD = 40  # CIANNA's fixed-size string fields (NUL-terminated, garbage after the NUL)
LAYER_NAMES = {"C": "conv", "P": "pool", "N": "norm", "D": "dense", "L": "LRN"}


class _Cursor:
    """Sequential reader over the file bytes that reports where a read failed."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.offset = 0
        self.layer_label = "header"

    def fail(self, message: str, offset: int | None = None) -> ModelFileError:
        at = self.offset if offset is None else offset
        return ModelFileError(f"{self.name}: {message} ({self.layer_label}, byte offset {at})")

    def take(self, size: int, what: str) -> bytes:
        if self.offset + size > len(self.data):
            raise self.fail(
                f"file is truncated: {what} needs {size} bytes but only "
                f"{len(self.data) - self.offset} remain"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def ints(self, count: int, what: str) -> tuple[int, ...]:
        return struct.unpack(f"<{count}i", self.take(4 * count, what))

    def floats(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def float(self, what: str) -> float:
        return float(self.floats(1, what)[0])

    def string(self, what: str) -> str:
        start = self.offset
        raw = self.take(STRING_FIELD, what)
        text = raw.split(b"\0", 1)[0]
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not an ASCII string", start) from None

    def activation(self, what: str = "activation") -> Activation:
        start = self.offset
        text = self.string(what)
        try:
            return Activation.parse(text)
        except ValueError as exc:
            raise self.fail(str(exc), start) from None

    def positive(self, values: tuple[int, ...], what: str, start: int, allow_zero: bool = False) -> None:
        low = 0 if allow_zero else 1
        if any(v < low or v > 1 << 20 for v in values):
            raise self.fail(f"implausible {what} {values}: the file is corrupted or not a CIANNA model", start)


def read_binary(data: bytes, name: str) -> NetworkSpec:
    """Parse a binary model; `name` is used in error messages."""
    cursor = _Cursor(data, name)
    if len(data) < 16:
        raise cursor.fail("file is too short to be a CIANNA model (no input dimensions)")
    in_dims = cursor.ints(4, "input dimensions")
    cursor.positive(in_dims, "input dimensions (W, H, D, C)", 0)
    layers: list[Layer] = []
    while cursor.offset < len(data):
        index = len(layers)
        start = cursor.offset
        code = cursor.take(1, "layer type").decode("latin-1")
        cursor.layer_label = f"layer {index} ({LAYER_NAMES.get(code, repr(code))})"
        if code == "C":
            layers.append(_read_conv(cursor, start))
        elif code == "P":
            layers.append(_read_pool(cursor, start))
        elif code == "N":
            layers.append(_read_norm(cursor, layers, in_dims))
        elif code == "D":
            layers.append(_read_dense(cursor, layers, in_dims))
        elif code == "L":
            raise cursor.fail("LRN layers are not supported by this runtime", start)
        else:
            raise cursor.fail(f"unknown layer type {code!r}", start)
    if not layers:
        raise cursor.fail("the file holds no layers")
    spec = NetworkSpec(in_dims=tuple(in_dims), layers=layers)
    try:
        compute_shapes(spec)
    except ValueError as exc:
        raise ModelFileError(f"{name}: inconsistent network: {exc}") from None
    return spec


def _read_conv(cursor: _Cursor, start: int) -> ConvLayer:
    header_start = cursor.offset
    (nb_filters,) = cursor.ints(1, "number of filters")
    f_size = cursor.ints(3, "filter size")
    stride = cursor.ints(3, "stride")
    padding = cursor.ints(3, "padding")
    int_padding = cursor.ints(3, "internal padding")
    prev_size = cursor.ints(3, "input size")
    (prev_depth,) = cursor.ints(1, "input depth")
    cursor.positive((nb_filters, prev_depth) + f_size + stride, "conv geometry", header_start)
    cursor.positive(padding + int_padding, "conv padding", header_start, allow_zero=True)
    dropout = cursor.float("dropout rate")
    bias_value = cursor.float("bias value")
    activation = cursor.activation()
    yolo = None
    if activation.kind == "YOLO":
        yolo_start = cursor.offset
        nb_box, nb_class, nb_param, fit_dim, class_softmax = cursor.ints(5, "YOLO settings")
        cursor.positive((nb_box,), "YOLO box count", yolo_start)
        cursor.positive((nb_class, nb_param, fit_dim, class_softmax), "YOLO settings", yolo_start, allow_zero=True)
        priors = cursor.floats(3 * nb_box, "YOLO priors").reshape(3, nb_box)
        slopes = cursor.floats(18, "YOLO slopes").reshape(6, 3)
        yolo = YoloHead(nb_box, nb_class, nb_param, fit_dim, class_softmax, priors, slopes)
        if nb_filters != nb_box * yolo.channels_per_box:
            raise cursor.fail(
                f"YOLO head has {nb_filters} filters but {nb_box} boxes of {yolo.channels_per_box} channels",
                yolo_start,
            )
    row = prev_depth * f_size[0] * f_size[1] * f_size[2] + 1
    weights = cursor.floats(nb_filters * row, "conv weights").reshape(nb_filters, row)
    return ConvLayer(
        nb_filters, f_size, stride, padding, int_padding, prev_size, prev_depth,
        dropout, bias_value, activation, weights, yolo,
    )


def _read_pool(cursor: _Cursor, start: int) -> PoolLayer:
    header_start = cursor.offset
    p_size = cursor.ints(3, "pool size")
    stride = cursor.ints(3, "pool stride")
    padding = cursor.ints(3, "pool padding")
    (is_global,) = cursor.ints(1, "global pool flag")
    cursor.positive(p_size + stride, "pool geometry", header_start)
    cursor.positive(padding, "pool padding", header_start, allow_zero=True)
    dropout = cursor.float("dropout rate")
    type_start = cursor.offset
    pool_type = cursor.string("pool type")
    if pool_type not in ("MAX", "AVG"):
        raise cursor.fail(f"unknown pool type {pool_type!r}", type_start)
    activation = cursor.activation()
    return PoolLayer(p_size, stride, padding, bool(is_global), dropout, pool_type, activation)


def _channels_before(layers: list[Layer], in_dims: tuple[int, ...]) -> int:
    spec = NetworkSpec(in_dims=tuple(in_dims), layers=list(layers))
    return compute_shapes(spec)[-1].channels if layers else in_dims[3]


def _flat_size_before(layers: list[Layer], in_dims: tuple[int, ...]) -> int:
    if not layers:
        return in_dims[0] * in_dims[1] * in_dims[2] * in_dims[3]
    return compute_shapes(NetworkSpec(in_dims=tuple(in_dims), layers=list(layers)))[-1].size


def _read_norm(cursor: _Cursor, layers: list[Layer], in_dims: tuple[int, ...]) -> NormLayer:
    type_start = cursor.offset
    norm_type = cursor.string("norm type")
    if norm_type != "GN":
        raise cursor.fail(f"unknown normalisation type {norm_type!r} (only GN exists)", type_start)
    group_start = cursor.offset
    group_size, set_off = cursor.ints(2, "group size and set_off")
    cursor.positive((group_size,), "group size", group_start)
    cursor.positive((set_off,), "set_off", group_start, allow_zero=True)
    activation = cursor.activation()
    try:
        channels = _channels_before(layers, in_dims)
    except ValueError as exc:
        raise cursor.fail(f"inconsistent network before this layer: {exc}") from None
    if channels % group_size:
        raise cursor.fail(f"{channels} channels are not divisible by group size {group_size}", group_start)
    nb_group = -(-channels // group_size)
    if set_off > nb_group:
        raise cursor.fail(f"set_off {set_off} exceeds the {nb_group} groups", group_start)
    gamma = cursor.floats(nb_group, "norm gamma")
    beta = cursor.floats(nb_group, "norm beta")
    return NormLayer(norm_type, group_size, set_off, activation, gamma, beta)


def _read_dense(cursor: _Cursor, layers: list[Layer], in_dims: tuple[int, ...]) -> DenseLayer:
    header_start = cursor.offset
    (nb_neurons,) = cursor.ints(1, "number of neurons")
    cursor.positive((nb_neurons,), "number of neurons", header_start)
    dropout = cursor.float("dropout rate")
    bias_value = cursor.float("bias value")
    activation = cursor.activation()
    try:
        in_size = _flat_size_before(layers, in_dims) + 1
    except ValueError as exc:
        raise cursor.fail(f"inconsistent network before this layer: {exc}") from None
    weights = cursor.floats(in_size * (nb_neurons + 1), "dense weights").reshape(in_size, nb_neurons + 1)
    return DenseLayer(nb_neurons, dropout, bias_value, activation, weights)


# --------------------------------------------------------------------------------------------
# Writing


def _string_field(text: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) >= STRING_FIELD:
        raise ValueError(f"string {text!r} does not fit CIANNA's {STRING_FIELD}-byte field")
    return raw + b"\0" * (STRING_FIELD - len(raw))


def _pack_ints(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


def _pack_floats(values: np.ndarray | list[float] | float) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def write_binary(spec: NetworkSpec, path: str | Path) -> None:
    """Write `spec` in CIANNA's binary format (string fields NUL-padded, so output is repeatable)."""
    compute_shapes(spec)  # refuse to write a network CIANNA could not load
    parts = [_pack_ints(*spec.in_dims)]
    for layer in spec.layers:
        parts.append(layer.type_code.encode("ascii"))
        if isinstance(layer, ConvLayer):
            parts.append(_pack_ints(layer.nb_filters, *layer.f_size, *layer.stride, *layer.padding,
                                    *layer.int_padding, *layer.prev_size, layer.prev_depth))
            parts.append(_pack_floats([layer.dropout, layer.bias_value]))
            parts.append(_string_field(layer.activation.format()))
            if layer.yolo is not None:
                y = layer.yolo
                parts.append(_pack_ints(y.nb_box, y.nb_class, y.nb_param, y.fit_dim, y.class_softmax))
                parts.append(_pack_floats(np.asarray(y.priors).reshape(3, y.nb_box)))
                parts.append(_pack_floats(np.asarray(y.slopes).reshape(6, 3)))
            parts.append(_pack_floats(layer.weights))
        elif isinstance(layer, PoolLayer):
            parts.append(_pack_ints(*layer.p_size, *layer.stride, *layer.padding, int(layer.is_global)))
            parts.append(_pack_floats(layer.dropout))
            parts.append(_string_field(layer.pool_type))
            parts.append(_string_field(layer.activation.format()))
        elif isinstance(layer, NormLayer):
            parts.append(_string_field(layer.norm_type))
            parts.append(_pack_ints(layer.group_size, layer.set_off))
            parts.append(_string_field(layer.activation.format()))
            parts.append(_pack_floats(layer.gamma))
            parts.append(_pack_floats(layer.beta))
        elif isinstance(layer, DenseLayer):
            parts.append(_pack_ints(layer.nb_neurons))
            parts.append(_pack_floats([layer.dropout, layer.bias_value]))
            parts.append(_string_field(layer.activation.format()))
            parts.append(_pack_floats(layer.weights))
        else:  # pragma: no cover - the spec types are closed
            raise TypeError(f"cannot write layer {layer!r}")
    Path(path).write_bytes(b"".join(parts))
