"""CIANNA model files: round trips, reduced precision and clear errors on damaged files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from cianna_otf_server.cianna import load_network, read_model_file, save_network
from cianna_otf_server.errors import ModelFileError, UserInputError

B_MODEL = "B/B_yolo_sdc1_small.dat"


def _all_models(golden: Path) -> list[Path]:
    return sorted(golden.glob("A/*.dat")) + [golden / B_MODEL] + sorted(golden.glob("C/*/model.dat"))


def test_load_save_load_is_numerically_identical(golden_dir: Path, tmp_path: Path) -> None:
    for path in _all_models(golden_dir):
        net = load_network(path)
        copy_path = tmp_path / path.name
        save_network(net, copy_path)
        original, again = read_model_file(path), read_model_file(copy_path)
        assert again.in_dims == original.in_dims
        assert len(again.layers) == len(original.layers)
        for a, b in zip(original.layers, again.layers):
            assert type(a) is type(b)
            for field in ("weights", "gamma", "beta"):
                if hasattr(a, field):
                    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            if getattr(a, "yolo", None) is not None:
                np.testing.assert_array_equal(a.yolo.priors, b.yolo.priors)
                np.testing.assert_array_equal(a.yolo.slopes, b.yolo.slopes)
        # the same bytes as CIANNA's file once the 40-byte string fields are cleaned of garbage
        assert copy_path.stat().st_size == path.stat().st_size


def test_round_trip_forward_is_bit_identical(golden_dir: Path, tmp_path: Path) -> None:
    x = np.load(golden_dir / "B/B_yolo_sdc1_small_input.npy")
    net = load_network(golden_dir / B_MODEL)
    save_network(net, tmp_path / "copy.dat")
    np.testing.assert_array_equal(load_network(tmp_path / "copy.dat").forward(x), net.forward(x))


def test_saving_twice_gives_identical_bytes(golden_dir: Path, tmp_path: Path) -> None:
    net = load_network(golden_dir / B_MODEL)
    save_network(net, tmp_path / "a.dat")
    save_network(load_network(tmp_path / "a.dat"), tmp_path / "b.dat")
    assert (tmp_path / "a.dat").read_bytes() == (tmp_path / "b.dat").read_bytes()


def test_modified_weights_are_saved(golden_dir: Path, tmp_path: Path) -> None:
    """What training changes in the PyTorch parameters reaches the CIANNA file."""
    net = load_network(golden_dir / B_MODEL)
    with np.errstate(all="ignore"):
        net.layers[0].weight_rows.data *= 2.0
        net.layers[13].gamma.data += 0.25  # layer 13 is the group norm
    save_network(net, tmp_path / "changed.dat")
    spec = read_model_file(tmp_path / "changed.dat")
    original = read_model_file(golden_dir / B_MODEL)
    np.testing.assert_allclose(spec.layers[0].weights, original.layers[0].weights * 2.0)
    np.testing.assert_allclose(spec.layers[13].gamma, original.layers[13].gamma + 0.25)


def test_ascii_round_trip(golden_dir: Path, tmp_path: Path) -> None:
    folder = golden_dir / "C" / "C16_conv_pool_dense"
    net = load_network(folder / "model.dat")
    save_network(net, tmp_path / "model.txt", binary=False)
    x = np.load(folder / "input.npy")
    np.testing.assert_allclose(load_network(tmp_path / "model.txt").forward(x), net.forward(x), atol=1e-5)


@pytest.mark.parametrize("precision,raw_atol,box_atol", [("fp16", 0.02, 0.25), ("bf16", 0.1, 2.0)])
def test_reduced_precision_is_close_to_fp32(golden_dir: Path, precision: str, raw_atol: float, box_atol: float) -> None:
    """fp16/bf16 tolerances on set B: activated outputs in [-1.2, 1.5], boxes in pixels (-34 .. 162)."""
    x = np.load(golden_dir / "B/B_yolo_sdc1_small_input.npy")
    reference = load_network(golden_dir / B_MODEL)
    reduced = load_network(golden_dir / B_MODEL, precision=precision)
    assert reduced.dtype != reference.dtype
    np.testing.assert_allclose(reduced.forward(x), reference.forward(x), atol=raw_atol, rtol=0)
    np.testing.assert_allclose(reduced.forward(x, raw_output=False), reference.forward(x, raw_output=False), atol=box_atol, rtol=0)


def test_unknown_precision_is_refused(golden_dir: Path) -> None:
    with pytest.raises(UserInputError, match="precision"):
        load_network(golden_dir / B_MODEL, precision="fp8")


def test_truncated_file_names_file_layer_and_offset(golden_dir: Path, tmp_path: Path) -> None:
    data = (golden_dir / B_MODEL).read_bytes()
    broken = tmp_path / "truncated.dat"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as info:
        load_network(broken)
    message = str(info.value)
    assert "truncated.dat" in message and "truncated" in message
    assert "byte offset" in message and "layer" in message


def test_unknown_layer_type_is_reported(golden_dir: Path, tmp_path: Path) -> None:
    data = bytearray((golden_dir / "C/C01_conv_pad/model.dat").read_bytes())
    data[16] = ord("X")  # first layer's type byte, after the 4 int32 input dimensions
    broken = tmp_path / "unknown.dat"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"unknown\.dat: unknown layer type 'X' \(layer 0 .*byte offset 16\)"):
        read_model_file(broken)


def test_corrupted_geometry_is_reported(golden_dir: Path, tmp_path: Path) -> None:
    data = bytearray((golden_dir / "C/C01_conv_pad/model.dat").read_bytes())
    data[17:21] = struct.pack("<i", -5)  # number of filters
    broken = tmp_path / "corrupt.dat"
    broken.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt.dat: implausible conv geometry"):
        read_model_file(broken)


def test_trailing_garbage_is_reported(golden_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "trailing.dat"
    broken.write_bytes((golden_dir / "C/C01_conv_pad/model.dat").read_bytes() + b"\x07junk")
    with pytest.raises(ModelFileError, match="trailing.dat"):
        read_model_file(broken)


def test_not_a_model_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty.dat: file is too short"):
        read_model_file(empty)
    with pytest.raises(ModelFileError, match="missing.dat: cannot read"):
        read_model_file(tmp_path / "missing.dat")


def test_malformed_ascii_names_the_line(golden_dir: Path, tmp_path: Path) -> None:
    text = (golden_dir / "C/C06_pool_max_pad/model_ascii.txt").read_text().replace("dMAX", "dMIN")
    broken = tmp_path / "bad.txt"
    broken.write_text(text)
    with pytest.raises(ModelFileError, match=r"bad.txt: malformed layer line .*line \d+"):
        read_model_file(broken)


def test_wrong_channel_count_is_a_clear_error(golden_dir: Path) -> None:
    net = load_network(golden_dir / "A/arch1_res128_err1.81_ms79.dat")
    with pytest.raises(UserInputError, match=r"expects input \[N, C, H, W\] = \[N, 3, 128, 128\], got \[2, 1, 128, 128\]"):
        net.forward(np.zeros((2, 1, 128, 128), dtype=np.float32))


def test_spec_exposes_the_yolo_layout(golden_dir: Path) -> None:
    spec = read_model_file(golden_dir / B_MODEL)
    assert spec.in_dims == (128, 128, 1, 1)
    head = spec.yolo
    assert (head.nb_box, head.nb_class, head.nb_param, head.fit_dim) == (9, 0, 5, 2)
    np.testing.assert_array_equal(head.priors[0], [6, 6, 6, 6, 6, 6, 12, 9, 24])
    assert spec.shapes()[-1].width == 8 and spec.shapes()[-1].channels == 117
