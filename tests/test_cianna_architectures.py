"""YOLO-CIANNA architecture builders: real CIANNA files of the published shapes, random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cianna_otf_server.cianna import (
    CiannaNetwork,
    ConvLayer,
    NormLayer,
    load_network,
    read_model_file,
    save_network,
)
from cianna_otf_server.cianna.architectures import (
    build_yolo,
    count_macs,
    count_parameters,
    sdc1_reference,
    sdc1_yolo_head,
    small_yolo,
)

SDC1_PARAMETERS = 12_621_373  # the SDC1 reference network: ~12.6 M parameters
SDC1_MACS_512 = 23_012_048_896  # and ~23 GMAC per 512 x 512 patch


@pytest.fixture(scope="module")
def sdc1_512():
    return sdc1_reference(512, seed=0)


def test_sdc1_layer_list_matches_the_cianna_example(sdc1_512) -> None:
    convs = [layer for layer in sdc1_512.layers if isinstance(layer, ConvLayer)]
    assert [c.nb_filters for c in convs] == [
        32, 16, 24, 32, 64, 128, 192, 128, 192, 384, 256, 384, 512, 768, 1024, 2048, 117,
    ]
    assert [c.f_size[0] for c in convs] == [5, 2, 3, 3, 2, 1, 3, 2, 1, 3, 1, 3, 2, 1, 3, 1, 1]
    assert [c.stride[0] for c in convs].count(2) == 4
    norm = sdc1_512.layers[15]
    assert isinstance(norm, NormLayer) and norm.group_size == 4 and norm.activation.kind == "LIN"
    assert len(norm.gamma) == 256 and np.all(norm.gamma == 1) and np.all(norm.beta == 0)
    assert convs[-2].dropout == 0.25 and convs[-2].activation.format() == "RELU_S800.00_L0.05"
    assert convs[0].bias_value == pytest.approx(0.1)  # the input bias
    assert convs[1].bias_value == pytest.approx(0.1)  # RELU default
    assert convs[-1].bias_value == pytest.approx(0.5)  # YOLO default
    head = sdc1_512.yolo
    assert (head.nb_box, head.nb_class, head.nb_param, head.fit_dim) == (9, 0, 5, 2)
    assert head.priors[:, 6].tolist() == [12.0, 9.0, 0.0]
    assert head.slopes[1].tolist() == pytest.approx([0.5, 1.2, -1.2])
    assert head.slopes[5].tolist() == pytest.approx([0.5, 1.5, -0.2])


def test_sdc1_parameter_and_mac_counts(sdc1_512) -> None:
    assert count_parameters(sdc1_512) == SDC1_PARAMETERS
    assert count_macs(sdc1_512) == SDC1_MACS_512
    assert count_macs(sdc1_reference(256)) == SDC1_MACS_512 // 4


def test_sdc1_round_trips_through_a_cianna_file(tmp_path: Path, sdc1_512) -> None:
    path = tmp_path / "sdc1.dat"
    save_network(sdc1_512, path)
    back = read_model_file(path)
    assert back.in_dims == (512, 512, 1, 1)
    assert count_parameters(back) == SDC1_PARAMETERS
    for original, loaded in zip(sdc1_512.layers, back.layers):
        assert type(original) is type(loaded)
        if isinstance(original, ConvLayer):
            np.testing.assert_array_equal(original.weights, loaded.weights)
            assert loaded.bias_value == pytest.approx(original.bias_value)
    net = load_network(path)
    assert net.output_grid == (32, 32, 1)
    assert sum(p.numel() for p in net.parameters()) == SDC1_PARAMETERS


def test_sdc1_output_shape_on_a_reduced_input() -> None:
    """The full 512 px forward is slow on CPU; the same layers at 64 px check the layout."""
    net = CiannaNetwork(sdc1_reference(64)).eval()
    out = net.forward(np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32))
    assert out.shape == (2, 9 * 13, 4, 4)
    assert np.isfinite(out).all()


def test_weights_are_seeded_and_xavier_scaled() -> None:
    a, b, c = small_yolo(seed=1), small_yolo(seed=1), small_yolo(seed=2)
    np.testing.assert_array_equal(a.layers[3].weights, b.layers[3].weights)
    assert not np.array_equal(a.layers[3].weights, c.layers[3].weights)
    weights = sdc1_reference(64).layers[9].weights  # 3 x 3 conv, 192 -> 384 filters
    fan_in = 192 * 9 + 1
    assert weights.dtype == np.float32 and weights.shape == (384, fan_in)
    assert weights.std() == pytest.approx(np.sqrt(2.0 / (fan_in + 384)), rel=0.02)


def test_small_yolo_runs_and_round_trips(tmp_path: Path) -> None:
    spec = small_yolo(128)
    assert count_parameters(spec) < 200_000
    path = tmp_path / "small.dat"
    save_network(spec, path)
    net = load_network(path)
    x = np.random.default_rng(1).random((3, 1, 128, 128), dtype=np.float32)
    raw = net.forward(x)
    assert raw.shape == (3, 117, 8, 8)
    decoded = net.forward(x, raw_output=False)
    assert decoded.shape == raw.shape and np.isfinite(decoded).all()
    np.testing.assert_allclose(CiannaNetwork(spec).eval().forward(x), raw, rtol=1e-5, atol=1e-5)


def test_small_yolo_parameters() -> None:
    spec = small_yolo(96, widths=(8, 16, 32), depth=2, stem=4, head_width=32, nb_box=3)
    assert spec.shapes()[-1].width == 96 // 8
    assert spec.yolo.nb_box == 3 and spec.layers[-1].nb_filters == 3 * 13
    with pytest.raises(ValueError):
        small_yolo(widths=(16, 30))
    with pytest.raises(ValueError):
        small_yolo(120)  # not a whole number of 16 px cells
    with pytest.raises(ValueError):
        sdc1_reference(500)


def test_build_yolo_init_scaling_widens_the_head() -> None:
    steps: list = []  # no backbone: the YOLO conv reads the input
    plain = build_yolo(32, steps, sdc1_yolo_head(), seed=3)
    scaled = build_yolo(32, steps, sdc1_yolo_head(), seed=3, yolo_init_scaling=6.0)
    np.testing.assert_allclose(scaled.layers[-1].weights, 6.0 * plain.layers[-1].weights, rtol=1e-6)


def test_training_reaches_the_weights_and_inference_cache_follows_updates() -> None:
    """Gradients flow to ``weight_rows``; the cached inference kernel sees the optimiser step."""
    torch.manual_seed(0)
    net = CiannaNetwork(small_yolo(64, widths=(8, 16), head_width=16, nb_box=2))
    x = torch.rand(2, 1, 64, 64)
    net.eval()
    with torch.inference_mode():
        before = net.forward_tensor(x).clone()
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    loss = net.forward_tensor(x).square().mean()
    loss.backward()
    grads = [m.weight_rows.grad for m in net.layers if hasattr(m, "weight_rows")]
    assert all(g is not None and torch.count_nonzero(g) > 0 for g in grads)
    optimiser.step()
    net.eval()
    with torch.inference_mode():
        after = net.forward_tensor(x)
        again = net.forward_tensor(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, again, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_tensor(x), after, rtol=0, atol=0)


def test_channels_last_gives_the_same_numbers() -> None:
    spec = small_yolo(64, widths=(8, 16), head_width=16)
    x = np.random.default_rng(2).random((2, 1, 64, 64), dtype=np.float32)
    plain = CiannaNetwork(spec).eval().forward(x)
    nhwc = CiannaNetwork(spec).eval().set_channels_last(True).forward(x)
    np.testing.assert_allclose(nhwc, plain, rtol=1e-5, atol=1e-5)


def test_relu_matches_cianna_branches() -> None:
    from cianna_otf_server.cianna._layers import cianna_relu

    x = torch.linspace(-2000, 2000, 40001)
    leak, sat = 0.05, 800.0
    branches = torch.where(x <= 0, x * leak, torch.where(x > sat, sat + (x - sat) * leak, x))
    out = cianna_relu(x, leak, sat)
    below = x <= sat
    assert torch.equal(out[below], branches[below])  # bit-identical up to the saturation
    torch.testing.assert_close(out, branches, rtol=1e-6, atol=0)
