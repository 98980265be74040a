"""Running a fully convolutional CIANNA network at another input size than the one it was saved with.

CIANNA itself allows it: its loader (``load_network`` in ``src/auxil.c``) only prints
"WARNING: change in image format" when the file's input size differs from the one given to
``init``, stops only when the channel count differs, and rebuilds every layer's geometry from the
new input (a global pool stretches to the new map). The published SDC1 detector is trained on
256 x 256 patches and run that way on 512 x 512 ones.

It is only meaningful when every layer is a convolution, pool or normalisation layer and the
strides tile the new input exactly. A dense layer reads the whole flattened map, so its weight
matrix fixes the input size (CIANNA's ``dense_load`` would read a matrix of the wrong size and
misread the rest of the file). A strided conv or pool whose windows do not tile its input
exactly drops the remainder (CIANNA warns "unable to divide current input volume into an integer
number of conv/pool regions"), which shifts the grid against the image. A YOLO head decodes box
positions with the cell size ``input // grid``, so the cell must stay the one the network was
trained with, and the input must be a whole number of cells.

Note that a group normalisation layer computes its statistics over the whole map: at another
input size the network is the same function of its input only up to those statistics, exactly
as in CIANNA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Union

from ._spec import ConvLayer, DenseLayer, NetworkSpec, NormLayer, PoolLayer, compute_shapes


class _LoadedNetwork(Protocol):
    """What a loaded `CiannaNetwork` offers here: the spec it was built from (no import of it needed)."""

    _spec_template: NetworkSpec


NetworkLike = Union[NetworkSpec, _LoadedNetwork]

__all__ = ["input_size_problem", "resolve_input_size", "spec_at_input_size"]

_AXES = ("width", "height", "depth")
_SIZED = ("wide", "high", "deep")
# How far around a refused size the message looks for sizes that fit (in multiples of the stride).
_SEARCH_STRIDES = 4


def _spec_of(network: NetworkLike) -> NetworkSpec:
    if isinstance(network, NetworkSpec):
        return network
    spec = getattr(network, "_spec_template", None)
    if not isinstance(spec, NetworkSpec):
        raise TypeError(f"expected a CiannaNetwork or a NetworkSpec, not {type(network).__name__}")
    return spec


def resolve_input_size(in_dims: Sequence[int], size: Sequence[int]) -> tuple[int, int, int]:
    """``(W, H, D)`` from a requested ``(W, H)`` or ``(W, H, D)``; D defaults to the network's.

    Raises ValueError for anything but 2 or 3 positive integers.
    """
    values = tuple(size)
    if len(values) not in (2, 3):
        raise ValueError(f"an input size is (W, H) or (W, H, D), not {list(values)}")
    try:
        ints = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"an input size holds whole pixel counts, not {list(values)}") from None
    if any(int(v) != v for v in values) or min(ints) <= 0:
        raise ValueError(f"an input size holds positive whole pixel counts, not {list(values)}")
    if len(ints) == 2:
        ints = (ints[0], ints[1], int(in_dims[2]))
    return ints  # type: ignore[return-value]


def _describe(index: int, layer: object) -> str:
    """``layer 4 (conv 2x2, stride 2)``-style name of a layer for messages."""
    if isinstance(layer, ConvLayer):
        fw, fh, fd = layer.f_size
        kernel = f"{fw}x{fh}" + (f"x{fd}" if fd > 1 else "")
        extra = [f"stride {_tuple_text(layer.stride)}"] if max(layer.stride) > 1 else []
        if max(layer.padding):
            extra.append(f"padding {_tuple_text(layer.padding)}")
        if max(layer.int_padding):
            extra.append(f"int_padding {_tuple_text(layer.int_padding)}")
        kind = "YOLO conv" if layer.yolo is not None else "conv"
        return f"layer {index} ({kind} {kernel}" + (", " + ", ".join(extra) if extra else "") + ")"
    if isinstance(layer, PoolLayer):
        if layer.is_global:
            return f"layer {index} (global {layer.pool_type} pool)"
        pw, ph, _ = layer.p_size
        return f"layer {index} ({layer.pool_type} pool {pw}x{ph}, stride {_tuple_text(layer.stride)})"
    if isinstance(layer, NormLayer):
        return f"layer {index} (group norm)"
    if isinstance(layer, DenseLayer):
        return f"layer {index} (dense, {layer.nb_neurons} neurons)"
    return f"layer {index}"


def _tuple_text(values: Sequence[int]) -> str:
    """``2`` for (2, 2, 1) on a 2-D layer, else ``2x1x1``."""
    w, h, d = values
    if w == h and d in (1, w):
        return str(w)
    return f"{w}x{h}x{d}"


def _axis_problem(layers: Sequence[object], axis: int, reference: int, length: int) -> str | None:
    """Why inputs of `length` pixels along `axis` do not fit the layers (None when they do).

    Walks the layers like CIANNA's loader, refusing an empty map or a strided window that does
    not tile its input the way it tiles the stored size (exactly, for any sensible network); for
    a YOLO head, the cell (input // grid) must stay the one of the `reference` length and tile
    the input exactly.
    """
    n, n_ref = length, reference
    for index, layer in enumerate(layers):
        if isinstance(layer, ConvLayer):
            f, s = layer.f_size[axis], layer.stride[axis]
            p, ip = layer.padding[axis], layer.int_padding[axis]
            span, span_ref = n + (n - 1) * ip + 2 * p - f, n_ref + (n_ref - 1) * ip + 2 * p - f
        elif isinstance(layer, PoolLayer):
            if layer.is_global:
                n, n_ref = 1, 1
                continue
            f, s, p = layer.p_size[axis], layer.stride[axis], layer.padding[axis]
            span, span_ref = n + 2 * p - f, n_ref + 2 * p - f
        else:  # norm layers keep the geometry
            continue
        if span < 0:
            return f"{_describe(index, layer)} would receive a map only {n} px {_SIZED[axis]}, smaller than its window"
        if span % s != span_ref % s:
            if span_ref % s == 0:
                return (
                    f"{_describe(index, layer)} would receive a map {n} px {_SIZED[axis]}, which its "
                    f"windows (stride {s}) do not tile exactly"
                )
            return (
                f"{_describe(index, layer)} would receive a map {n} px {_SIZED[axis]}, which its windows "
                f"(stride {s}) tile with {span % s} px left over instead of the stored {span_ref % s} px"
            )
        n, n_ref = span // s + 1, span_ref // s + 1
    last = layers[-1] if layers else None
    if isinstance(last, ConvLayer) and last.yolo is not None:
        cell = reference // n_ref
        if length % n or length // n != cell:
            return (
                f"{_describe(len(layers) - 1, last)} would cut {length} px ({_AXES[axis]}) into {n} grid "
                f"cells, not into whole cells of {cell} px as it cuts the stored {reference} px"
            )
    return None


def _nearest_fits(layers: Sequence[object], axis: int, reference: int, length: int) -> list[int]:
    """The closest lengths below and above `length` that fit, for the refusal message."""
    stride = 1
    for layer in layers:
        if isinstance(layer, (ConvLayer, PoolLayer)) and not (isinstance(layer, PoolLayer) and layer.is_global):
            stride *= max(int(layer.stride[axis]), 1)
    reach = _SEARCH_STRIDES * stride + 1
    below = next((m for m in range(length - 1, max(length - reach, 0), -1)
                  if _axis_problem(layers, axis, reference, m) is None), None)
    above = next((m for m in range(length + 1, length + reach)
                  if _axis_problem(layers, axis, reference, m) is None), None)
    return [m for m in (below, above) if m is not None]


def input_size_problem(network: NetworkLike, size: Sequence[int]) -> str | None:
    """Why a network cannot run on inputs of ``size`` pixels; None when it can.

    Parameters
    ----------
    network : CiannaNetwork or NetworkSpec
        A loaded network, or the spec `read_model_file` returns (no PyTorch needed).
    size : (W, H) or (W, H, D)
        The input size asked for, e.g. a model card's ``[tiling] patch_size``.

    Returns
    -------
    str or None
        None when ``size`` is the network's own input size, or when every layer is a conv, pool
        or normalisation layer whose strides tile the new size exactly and, for a YOLO head, the
        grid cell stays the stored one. Otherwise one sentence naming the layer that refuses it
        (and, for a stride problem, the nearest sizes that fit).
    """
    spec = _spec_of(network)
    try:
        wanted = resolve_input_size(spec.in_dims, size)
    except ValueError as exc:
        return str(exc)
    stored = tuple(int(v) for v in spec.in_dims[:3])
    if wanted == stored:
        return None
    shown = "x".join(str(v) for v in (wanted if wanted[2] != 1 or stored[2] != 1 else wanted[:2]))
    stored_shown = "x".join(str(v) for v in (stored if stored[2] != 1 or wanted[2] != 1 else stored[:2]))
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, DenseLayer):
            return (
                f"{_describe(index, layer)} fixes the input size to the stored {stored_shown}: a network "
                f"with a dense layer cannot run at {shown}"
            )
        if not isinstance(layer, (ConvLayer, PoolLayer, NormLayer)):
            return f"{_describe(index, layer)} is not a conv, pool or norm layer: the network cannot run at {shown}"
    if stored[2] == 1 and wanted[2] != 1:
        return f"the network is 2-D (stored depth 1): it cannot run on inputs {wanted[2]} px deep"
    for axis in range(3):
        if wanted[axis] == stored[axis]:
            continue
        problem = _axis_problem(spec.layers, axis, stored[axis], wanted[axis])
        if problem is not None:
            fits = _nearest_fits(spec.layers, axis, stored[axis], wanted[axis])
            hint = f"; the nearest {_AXES[axis]}s that fit are {' and '.join(map(str, fits))} px" if fits else ""
            return f"{shown} px inputs do not fit the network stored at {stored_shown}: {problem}{hint}"
    try:
        compute_shapes(spec_at_input_size(spec, wanted))
    except ValueError as exc:  # pragma: no cover - the axis walk catches empty maps first
        return f"{shown} px inputs do not fit the network: {exc}"
    return None


def spec_at_input_size(spec: NetworkSpec, size: Sequence[int]) -> NetworkSpec:
    """A shallow copy of `spec` whose input is ``size``; layer records are shared except global pools.

    A global pool stores its window expanded to its input map (as CIANNA writes it), so those
    records are copied with the window of the new map. Does not check the geometry: call
    `input_size_problem` first.
    """
    import dataclasses

    wanted = resolve_input_size(spec.in_dims, size)
    in_dims = (wanted[0], wanted[1], wanted[2], int(spec.in_dims[3]))
    layers = list(spec.layers)
    resized = NetworkSpec(in_dims, layers, spec.source)
    if any(isinstance(layer, PoolLayer) and layer.is_global for layer in layers):
        shapes = compute_shapes(resized)
        inputs = [in_dims[:3]] + [(s.width, s.height, s.depth) for s in shapes[:-1]]
        for index, layer in enumerate(layers):
            if isinstance(layer, PoolLayer) and layer.is_global:
                window = tuple(int(v) for v in inputs[index])
                layers[index] = dataclasses.replace(layer, p_size=window, stride=window, padding=(0, 0, 0))
    return resized
