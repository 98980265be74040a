"""Pixel values to network input values, as the model was trained.

A network only works on inputs scaled like its training data; the SDC1 recipe clips the
image to [0.4e-6, 0.4e-4] Jy/beam, rescales to [0, 1] and compresses with tanh(3x). The card's
`NormalisationSpec` says which variant a model uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..models._card import NormalisationSpec

if TYPE_CHECKING:  # torch is imported where tensors are normalised
    import torch

__all__ = ["normalise", "normalise_tensor", "normalised_blank"]


def normalise(values: np.ndarray, spec: NormalisationSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Apply ``spec`` to pixel values (image units); NaN becomes the normalised blank value.

    Parameters
    ----------
    values : ndarray
        Pixels in image units (e.g. Jy/beam), any shape.
    spec : NormalisationSpec
        ``u = (clip(v, clip_min, clip_max) - clip_min) / (clip_max - clip_min)``, then
        linear ``u``, tanh ``tanh(scale*u)``, sqrt ``sqrt(u)`` or
        log ``log10(1 + scale*u) / log10(1 + scale)``.
    out : ndarray, optional
        float32 array of the same shape to write into (avoids a copy for big batches).

    Returns
    -------
    ndarray
        float32 values in [0, 1] (tanh: [0, tanh(scale)]).
    """
    lo, hi = np.float32(spec.clip_min), np.float32(spec.clip_max)
    if out is None:
        out = np.empty(np.shape(values), dtype=np.float32)
    np.clip(values, lo, hi, out=out, casting="unsafe")  # NaN stays NaN through clip
    out -= lo
    out *= np.float32(1.0 / (spec.clip_max - spec.clip_min))
    function = spec.function
    if function == "tanh":
        out *= np.float32(spec.scale)
        np.tanh(out, out=out)
    elif function == "sqrt":
        np.sqrt(out, out=out)
    elif function == "log":
        out *= np.float32(spec.scale)
        np.log1p(out, out=out)
        out *= np.float32(1.0 / np.log(1.0 + spec.scale))
    elif function != "linear":
        raise ValueError(f"unknown normalisation function {function!r}")
    np.nan_to_num(out, copy=False, nan=normalised_blank(spec), posinf=0.0, neginf=0.0)
    return out


def normalise_tensor(values: "torch.Tensor", spec: NormalisationSpec) -> "torch.Tensor":
    """`normalise` for a torch tensor (on any device), so batches are normalised where they run.

    Computed in float32 whatever the tensor's dtype; NaN (including pixels beyond the image)
    becomes the normalised blank value like in `normalise`.
    """
    import torch

    out = values.float().clamp(spec.clip_min, spec.clip_max)
    out = (out - spec.clip_min) * (1.0 / (spec.clip_max - spec.clip_min))
    function = spec.function
    if function == "tanh":
        out = torch.tanh(out * spec.scale)
    elif function == "sqrt":
        out = torch.sqrt(out)
    elif function == "log":
        out = torch.log1p(out * spec.scale) * (1.0 / float(np.log(1.0 + spec.scale)))
    elif function != "linear":
        raise ValueError(f"unknown normalisation function {function!r}")
    return torch.nan_to_num(out, nan=normalised_blank(spec), posinf=0.0, neginf=0.0)


def normalised_blank(spec: NormalisationSpec) -> float:
    """The normalised value of a blank pixel (NaN in the image, or beyond its edge).

    Blank pixels are replaced by ``spec.blank_value`` (input units) before normalisation: by
    default ``clip_min``, which every function maps to 0 (blank sky, as in the SDC1 reference
    inference); signal-to-noise models set ``blank = 0`` (the background level), which is
    what their training skies use beyond image edges and in NaN blanks.
    """
    return float(_scalar(spec.blank_value, spec))


def _scalar(value: float, spec: NormalisationSpec) -> float:
    lo, hi = spec.clip_min, spec.clip_max
    u = (min(max(value, lo), hi) - lo) / (hi - lo)
    if spec.function == "tanh":
        return float(np.tanh(np.float32(spec.scale * u)))
    if spec.function == "sqrt":
        return float(np.sqrt(np.float32(u)))
    if spec.function == "log":
        return float(np.float32(np.log1p(np.float32(spec.scale * u)) / np.log(1.0 + spec.scale)))
    return float(u)
