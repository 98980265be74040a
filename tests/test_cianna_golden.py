"""The PyTorch runtime reproduces the real CIANNA's outputs (golden vectors, sets A, B, C, CUDA).

Tolerances are those suggested in cianna_golden/README.md §8 for a float32 re-implementation:
raw and intermediate tensors rtol=atol=1e-4, probabilities atol=1e-5, decoded boxes atol=1e-3 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cianna_otf_server.cianna import load_network

SET_A = [
    ("arch1_res128_err1.81_ms79", 128),
    ("arch1_res192_err1.2_ms174", 192),
    ("arch2_res128_err1.76_ms89", 128),
]
SET_C = [
    "C01_conv_pad", "C02_conv_rect_filters", "C03_conv_stride2", "C04_conv_int_padding",
    "C05_relu_sat_logi_beta", "C06_pool_max_pad", "C07_pool_avg_pad", "C08_pool_avg_rect",
    "C09_pool_global_max", "C10_norm_gn", "C11_norm_set_off", "C12_norm_relu_activation",
    "C13_norm_after_pool", "C14_dense_relu_logi_smax", "C15_dense_lin_chain", "C16_conv_pool_dense",
    "C17_dropout_avg", "C18_conv_softmax", "C19_conv3d",
]


def _layer_outputs(net, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's output for one example, as CIANNA's truncated-network dumps hold them."""
    outputs = []
    tensor = torch.from_numpy(x)
    with torch.inference_mode():
        for module in net.layers:
            tensor = module(tensor)
            outputs.append(tensor.numpy()[0])
    return outputs


@pytest.fixture(scope="module")
def c_specs(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "manifest.json").read_text())["set_C_specs"]


@pytest.mark.parametrize("name,resolution", SET_A)
def test_set_a_cpu_compatibility_matches_blas(golden_dir: Path, name: str, resolution: int) -> None:
    x = np.load(golden_dir / f"A/A_input_res{resolution}.npy")
    net = load_network(golden_dir / f"A/{name}.dat", norm_activation="cpu")
    reference = np.load(golden_dir / f"A/A_{name}_output_blas.npy")
    np.testing.assert_allclose(net.forward(x).reshape(reference.shape), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,resolution", SET_A)
def test_set_a_default_matches_cuda_cianna(golden_dir: Path, name: str, resolution: int) -> None:
    x = np.load(golden_dir / f"A/A_input_res{resolution}.npy")
    net = load_network(golden_dir / f"A/{name}.dat")  # trained (CUDA) behaviour by default
    reference = np.load(golden_dir / f"cuda/A_{name}_output_cuda.npy")
    np.testing.assert_allclose(net.forward(x).reshape(reference.shape), reference, atol=1e-5, rtol=0)


def test_set_a_cpu_and_cuda_behaviours_differ(golden_dir: Path) -> None:
    """The norm activation matters (0.38 to 0.76 in the probabilities), so the switch is real."""
    x = np.load(golden_dir / "A/A_input_res128.npy")
    path = golden_dir / "A/arch1_res128_err1.81_ms79.dat"
    cpu = load_network(path, norm_activation="cpu").forward(x)
    cuda = load_network(path, norm_activation="cuda").forward(x)
    assert np.abs(cpu - cuda).max() > 0.3


@pytest.mark.parametrize("name", ["arch1_res128_err1.81_ms79", "arch2_res128_err1.76_ms89"])
def test_set_a_every_layer_matches(golden_dir: Path, name: str) -> None:
    dumps = np.load(golden_dir / f"A/A_{name}_layers_ex0.npz")
    net = load_network(golden_dir / f"A/{name}.dat", norm_activation="cpu")
    outputs = _layer_outputs(net, np.load(golden_dir / "A/A_input_res128.npy")[:1])
    assert len(dumps.files) >= 10
    for key in dumps.files:
        index = int(key[5:7])
        np.testing.assert_allclose(outputs[index], dumps[key], rtol=1e-4, atol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def set_b(golden_dir: Path):
    x = np.load(golden_dir / "B/B_yolo_sdc1_small_input.npy")
    net = load_network(golden_dir / "B/B_yolo_sdc1_small.dat")
    return net, x


def test_set_b_raw_output(golden_dir: Path, set_b) -> None:
    net, x = set_b
    raw = net.forward(x, raw_output=True)
    np.testing.assert_allclose(raw, np.load(golden_dir / "B/B_yolo_sdc1_small_output_raw_blas.npy"), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(raw, np.load(golden_dir / "cuda/B_yolo_sdc1_small_output_raw_cuda.npy"), rtol=1e-4, atol=1e-4)


def test_set_b_decoded_boxes(golden_dir: Path, set_b) -> None:
    net, x = set_b
    decoded = net.forward(x, raw_output=False)
    np.testing.assert_allclose(decoded, np.load(golden_dir / "B/B_yolo_sdc1_small_output_decoded_blas.npy"), atol=1e-3, rtol=0)
    np.testing.assert_allclose(decoded, np.load(golden_dir / "cuda/B_yolo_sdc1_small_output_decoded_cuda.npy"), atol=1e-3, rtol=0)
    # the worked example of the README: example 0, box 0, cell x=3, y=2
    assert decoded[0, 0, 2, 3] == pytest.approx(44.574, abs=2e-3)
    assert decoded[0, 1, 2, 3] == pytest.approx(44.375, abs=2e-3)
    assert decoded[0, 2, 2, 3] == pytest.approx(0.5) and decoded[0, 5, 2, 3] == pytest.approx(0.5)


def test_set_b_every_layer_matches(golden_dir: Path, set_b) -> None:
    net, x = set_b
    dumps = np.load(golden_dir / "B/B_yolo_sdc1_small_layers_ex0.npz")
    outputs = _layer_outputs(net, x[:1])
    for key in dumps.files:
        np.testing.assert_allclose(outputs[int(key[5:7])], dumps[key], rtol=1e-4, atol=1e-4, err_msg=key)


def test_set_b_ascii_model_loads_with_its_slopes(golden_dir: Path, set_b) -> None:
    """CIANNA cannot read its own ASCII YOLO files back; this runtime can (6-digit weights)."""
    net, x = set_b
    ascii_net = load_network(golden_dir / "B/B_yolo_sdc1_small_ascii.txt")
    np.testing.assert_array_equal(ascii_net.yolo.slopes, net.yolo.slopes)
    np.testing.assert_allclose(ascii_net.forward(x), net.forward(x), atol=2e-4)


def test_set_b_mc_dropout_file_has_the_documented_layout(golden_dir: Path, set_b) -> None:
    """The MC-dropout sample is random; only its layout and value ranges are comparable."""
    net, x = set_b
    mc = np.load(golden_dir / "B/B_yolo_sdc1_small_output_raw_MC_MODEL_repeat2_blas_NONDETERMINISTIC.npy")
    raw = net.forward(x)
    assert mc.shape == (2,) + raw.shape
    objectness = raw[:, 7::13]
    assert np.all((mc[:, :, 7::13] > 0) & (mc[:, :, 7::13] < 1)) and np.all((objectness > 0) & (objectness < 1))


@pytest.mark.parametrize("test", SET_C)
def test_set_c_binary(golden_dir: Path, c_specs: dict, test: str) -> None:
    folder = golden_dir / "C" / test
    reference = np.load(folder / "output_blas.npy")
    net = load_network(folder / "model.dat", input_bias=c_specs[test]["init_bias"], norm_activation="cpu")
    output = net.forward(np.load(folder / "input.npy"))
    np.testing.assert_allclose(output.reshape(reference.shape), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("test", SET_C)
def test_set_c_ascii(golden_dir: Path, c_specs: dict, test: str) -> None:
    folder = golden_dir / "C" / test
    reference = np.load(folder / "output_from_ascii_blas.npy")
    net = load_network(folder / "model_ascii.txt", input_bias=c_specs[test]["init_bias"], norm_activation="cpu")
    output = net.forward(np.load(folder / "input.npy"))
    np.testing.assert_allclose(output.reshape(reference.shape), reference, rtol=1e-4, atol=1e-5)


def test_c12_default_applies_the_norm_activation_like_cuda(golden_dir: Path) -> None:
    folder = golden_dir / "C" / "C12_norm_relu_activation"
    reference = np.load(golden_dir / "cuda/C12_norm_relu_activation_output_cuda.npy")
    output = load_network(folder / "model.dat").forward(np.load(folder / "input.npy"))
    np.testing.assert_allclose(output.reshape(reference.shape), reference, rtol=1e-4, atol=1e-5)
