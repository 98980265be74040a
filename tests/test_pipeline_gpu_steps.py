"""The scheduler's split of patch preparation (raw cut on the host, normalisation on the device)
gives exactly what the one-step `cut_patch` gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cianna_otf_server.models._card import NormalisationSpec
from cianna_otf_server.pipeline import Tile, cut_patch, cut_raw_patch, normalise, normalise_tensor


class _Image:
    def __init__(self, data: np.ndarray) -> None:
        self.data = data


@pytest.mark.parametrize("function", ["tanh", "linear", "sqrt", "log"])
def test_tensor_normalisation_matches_numpy(function: str) -> None:
    spec = NormalisationSpec(function=function, clip_min=0.4e-6, clip_max=0.4e-4, scale=3.0)
    values = np.random.default_rng(1).normal(1e-5, 2e-5, size=(64, 64)).astype(np.float32)
    values[3, 5] = np.nan
    values[7, 7] = np.inf
    expected = normalise(values, spec)
    got = normalise_tensor(torch.from_numpy(values), spec).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[3, 5] == 0.0


@pytest.mark.parametrize("x0,y0", [(-5, -3), (10, 12), (40, 50), (100, 100)])
def test_raw_cut_then_normalise_equals_cut_patch(x0: int, y0: int) -> None:
    spec = NormalisationSpec()
    image = _Image(np.random.default_rng(2).normal(1e-5, 1e-5, size=(70, 60)).astype(np.float32))
    tile = Tile(index=0, i=0, j=0, x0=x0, y0=y0)
    raw = cut_raw_patch(image, tile, (32, 32))
    np.testing.assert_allclose(normalise_tensor(torch.from_numpy(raw), spec).numpy(),
                               cut_patch(image, tile, (32, 32), spec), atol=1e-6)
