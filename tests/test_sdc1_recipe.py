"""The SDC1 recipe's inference pieces: a network run at another input size, and the extended-source filter."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cianna_otf_server.cianna import (
    Activation,
    CiannaNetwork,
    ConvLayer,
    DenseLayer,
    NetworkSpec,
    PoolLayer,
    input_size_problem,
    load_network,
    read_model_file,
    save_network,
)
from cianna_otf_server.cianna.architectures import Conv, build_yolo, sdc1_reference, sdc1_yolo_head, small_yolo
from cianna_otf_server.errors import ModelFileError
from cianna_otf_server.pipeline._boxes import Boxes
from cianna_otf_server.pipeline._extended import (
    SDC1_EXTENDED_FILTER,
    ExtendedFilterSettings,
    NormalisedImage,
    drop_extended_false_positives,
    patch_bounds,
    window_medians,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "yolo-sdc1-ref.toml"
RELU = Activation("RELU", 800.0, 0.05)


# -- 1. a fully convolutional network at another input size ----------------------------------------
def conv_only_yolo(size: int = 256, seed: int = 5):
    """SDC1-shaped YOLO network without group norm (16 px cells), so patches can be compared exactly."""
    steps = [
        Conv(8, 5, padding=2),
        Conv(8, 2, stride=2), Conv(12, 3, padding=1),
        Conv(12, 2, stride=2), Conv(16, 3, padding=1),
        Conv(16, 2, stride=2), Conv(24, 3, padding=1),
        Conv(24, 2, stride=2), Conv(32, 1, dropout=0.25),
    ]
    return build_yolo(size, steps, sdc1_yolo_head(nb_box=3), seed=seed)


def receptive_field(spec: NetworkSpec) -> tuple[int, int, int]:
    """(size, jump, padding): output cell i reads input pixels [i*jump - padding, i*jump - padding + size)."""
    size, jump, pad = 1, 1, 0
    for layer in spec.layers:
        if isinstance(layer, ConvLayer):
            pad += layer.padding[0] * jump
            size += (layer.f_size[0] - 1) * jump
            jump *= layer.stride[0]
    return size, jump, pad


def dense_spec() -> NetworkSpec:
    rng = np.random.default_rng(0)
    conv = ConvLayer(4, (3, 3, 1), (1, 1, 1), (1, 1, 0), (0, 0, 0), (8, 8, 1), 1, 0.0, 0.1, RELU,
                     rng.normal(0, 0.3, (4, 10)).astype(np.float32))
    dense = DenseLayer(3, 0.0, 0.1, Activation("SMAX"), rng.normal(0, 0.1, (8 * 8 * 4 + 1, 4)).astype(np.float32))
    return NetworkSpec((8, 8, 1, 1), [conv, dense])


def global_pool_spec() -> NetworkSpec:
    rng = np.random.default_rng(1)
    conv = ConvLayer(3, (3, 3, 1), (1, 1, 1), (1, 1, 0), (0, 0, 0), (8, 6, 1), 1, 0.0, 0.1, RELU,
                     rng.normal(0, 0.5, (3, 10)).astype(np.float32))
    pool = PoolLayer((8, 6, 1), (8, 6, 1), (0, 0, 0), True, 0.0, "AVG", Activation("SMAX"))
    return NetworkSpec((8, 6, 1, 1), [conv, pool])


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nets") / "conv256.dat"
    save_network(conv_only_yolo(256), path)
    return path


def test_conv_network_trained_at_256_runs_at_512_with_twice_the_grid(conv_file: Path, tmp_path: Path) -> None:
    net = load_network(conv_file)
    assert net.in_dims == (256, 256, 1, 1) and net.output_grid == (16, 16, 1)
    assert input_size_problem(net, (512, 512)) is None
    assert input_size_problem(read_model_file(conv_file), (512, 512)) is None  # a spec is enough
    assert net.check_input_size((512, 512)) == (32, 32, 1)
    assert net.check_input_size((512, 256)) == (32, 16, 1)

    big = net.with_input_size((512, 512))
    assert big is not net and big.in_dims == (512, 512, 1, 1) and big.output_grid == (32, 32, 1)
    assert big.stored_in_dims == (256, 256, 1, 1) and big.input_size == (512, 512)
    assert all(a is b for a, b in zip(big.parameters(), net.parameters()))  # shared, not copied
    assert net.with_input_size((256, 256)) is net

    loaded = load_network(conv_file, input_size=(512, 512))
    assert loaded.in_dims == (512, 512, 1, 1) and loaded.stored_in_dims == (256, 256, 1, 1)
    out = loaded.forward(np.zeros((1, 1, 512, 512), np.float32), raw_output=False)
    assert out.shape == (1, 3 * 13, 32, 32)
    with pytest.raises(Exception, match="expects input"):
        loaded.forward(np.zeros((1, 1, 256, 256), np.float32))

    saved = tmp_path / "conv512.dat"  # the resized network writes its new input size
    save_network(big, saved)
    back = read_model_file(saved)
    assert back.in_dims == (512, 512, 1, 1) and back.layers[1].prev_size == (512, 512, 1)
    np.testing.assert_array_equal(back.layers[3].weights, read_model_file(conv_file).layers[3].weights)


def test_outputs_at_512_equal_the_256_network_on_each_quadrant(conv_file: Path) -> None:
    small = load_network(conv_file)
    big = small.with_input_size((512, 512))
    x = np.random.default_rng(7).random((2, 1, 512, 512), dtype=np.float32)
    raw_big, dec_big = big.forward(x, raw_output=True), big.forward(x, raw_output=False)

    rf, jump, pad = receptive_field(read_model_file(conv_file))
    assert jump == 16
    inside = [i for i in range(16) if i * jump - pad >= 0 and i * jump - pad + rf <= 256]
    assert len(inside) >= 12  # the cells whose whole receptive field lies in the quadrant
    cells = slice(inside[0], inside[-1] + 1)
    per_box = 13
    x_channels = [b * per_box + k for b in range(3) for k in (0, 3)]
    y_channels = [b * per_box + k for b in range(3) for k in (1, 4)]
    differs_at_seams = False
    for qy in range(2):
        for qx in range(2):
            quadrant = np.ascontiguousarray(x[:, :, qy * 256:(qy + 1) * 256, qx * 256:(qx + 1) * 256])
            raw_small, dec_small = small.forward(quadrant), small.forward(quadrant, raw_output=False)
            rows, cols = slice(qy * 16, (qy + 1) * 16), slice(qx * 16, (qx + 1) * 16)
            part = raw_big[:, :, rows, cols]
            np.testing.assert_allclose(part[:, :, cells, cells], raw_small[:, :, cells, cells], rtol=1e-5, atol=1e-5)
            differs_at_seams |= not np.allclose(part, raw_small, rtol=1e-5, atol=1e-5)
            # decoded corners: the same boxes, moved by the quadrant's origin
            moved = dec_small.copy()
            moved[:, x_channels] += qx * 256
            moved[:, y_channels] += qy * 256
            np.testing.assert_allclose(dec_big[:, :, rows, cols][:, :, cells, cells], moved[:, :, cells, cells],
                                       rtol=1e-5, atol=1e-3)
    assert differs_at_seams  # cells reading across a quadrant side do see the neighbour, not padding


def test_group_norm_network_is_accepted_too() -> None:
    """The SDC1 network (one group norm) runs at 512 as in CIANNA; only its statistics change."""
    assert input_size_problem(sdc1_reference(256), (512, 512)) is None
    net = CiannaNetwork(small_yolo(64, widths=(8, 16, 32, 64), head_width=16, nb_box=2)).eval()
    assert net.with_input_size((128, 96)).output_grid == (8, 6, 1)


def test_a_dense_layer_fixes_the_input_size(tmp_path: Path) -> None:
    spec = dense_spec()
    assert input_size_problem(spec, (8, 8)) is None
    problem = input_size_problem(spec, (16, 16))
    assert problem is not None and "layer 1 (dense, 3 neurons)" in problem and "8x8" in problem
    path = tmp_path / "dense.dat"
    save_network(spec, path)
    with pytest.raises(ModelFileError, match=r"dense\.dat: layer 1 \(dense, 3 neurons\) fixes the input size"):
        load_network(path, input_size=(16, 16))
    net = load_network(path)
    with pytest.raises(ModelFileError, match="layer 1 \\(dense"):
        net.with_input_size((16, 16))
    assert net.with_input_size((8, 8)) is net


def test_a_size_the_strides_do_not_tile_is_refused(conv_file: Path) -> None:
    net = load_network(conv_file)
    problem = input_size_problem(net, (264, 264))
    assert problem is not None
    assert "264x264 px inputs do not fit the network stored at 256x256" in problem
    assert "layer 7 (conv 2x2, stride 2) would receive a map 33 px wide" in problem
    assert "nearest widths that fit are 256 and 272 px" in problem
    problem = input_size_problem(net, (512, 520))
    assert problem is not None and "65 px high" in problem and "heights that fit are 512 and 528 px" in problem
    with pytest.raises(ModelFileError, match="conv256.dat: 264x264 px inputs do not fit"):
        net.check_input_size((264, 264))
    with pytest.raises(ModelFileError, match="smaller than its window"):
        net.with_input_size((8, 8))
    assert input_size_problem(net, (512,)) is not None
    assert input_size_problem(net, (0, 256)) is not None
    assert input_size_problem(net, (255.5, 256)) is not None
    assert "2-D" in input_size_problem(net, (256, 256, 2))


def test_a_pool_that_does_not_tile_is_refused() -> None:
    rng = np.random.default_rng(2)
    conv = ConvLayer(2, (3, 3, 1), (1, 1, 1), (1, 1, 0), (0, 0, 0), (8, 6, 1), 1, 0.0, 0.1, RELU,
                     rng.normal(0, 0.5, (2, 10)).astype(np.float32))
    pool = PoolLayer((2, 2, 1), (2, 2, 1), (0, 0, 0), False, 0.0, "MAX", Activation("LIN"))
    spec = NetworkSpec((8, 6, 1, 1), [conv, pool])
    assert input_size_problem(spec, (10, 6)) is None
    problem = input_size_problem(spec, (9, 6))
    assert problem is not None and "layer 1 (MAX pool 2x2, stride 2)" in problem and "9 px wide" in problem


def test_a_yolo_cell_must_stay_the_stored_one() -> None:
    """Valid (unpadded) convs make the input/grid ratio depend on the size: the decoding cell would change."""
    spec = build_yolo(8, [Conv(4, 5), Conv(4, 2, stride=2), Conv(4, 2, stride=2)], sdc1_yolo_head(nb_box=1))
    assert CiannaNetwork(spec).output_grid == (1, 1, 1)  # one 8 px cell
    problem = input_size_problem(spec, (12, 12))
    assert problem is not None and "into 2 grid cells, not into whole cells of 8 px" in problem


def test_a_global_pool_follows_the_new_map(tmp_path: Path) -> None:
    spec = global_pool_spec()
    net = CiannaNetwork(spec).eval()
    wide = net.with_input_size((12, 10))
    assert wide.output_grid == (1, 1, 1)
    x = np.random.default_rng(3).normal(size=(2, 1, 10, 12)).astype(np.float32)
    out = wide.forward(x)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    path = tmp_path / "pool.dat"
    save_network(wide, path)
    back = read_model_file(path)
    assert back.in_dims == (12, 10, 1, 1) and back.layers[1].p_size == (12, 10, 1)
    assert spec.layers[1].p_size == (8, 6, 1)  # the original record is untouched
    np.testing.assert_allclose(load_network(path).forward(x), out, rtol=1e-6, atol=1e-7)


def test_golden_sdc1_small_model_runs_at_twice_its_size(golden_dir: Path) -> None:
    path = golden_dir / "B" / "B_yolo_sdc1_small.dat"
    x = np.load(golden_dir / "B" / "B_yolo_sdc1_small_input.npy")
    same = load_network(path, input_size=(128, 128), norm_activation="cpu")
    np.testing.assert_allclose(same.forward(x), np.load(golden_dir / "B" / "B_yolo_sdc1_small_output_raw_blas.npy"),
                               rtol=1e-4, atol=1e-4)
    big = load_network(path, input_size=(256, 256))
    assert big.output_grid == (16, 16, 1)
    tiled = np.tile(x, (1, 1, 2, 2))
    decoded = big.forward(tiled, raw_output=False)
    assert decoded.shape == (4, 117, 16, 16) and np.isfinite(decoded).all()


# -- 2. the extended-source filter -------------------------------------------------------------------
def make_boxes(rows: list[tuple[float, float, float, float, float]], tile: int = -1) -> Boxes:
    """Boxes from (x_min, y_min, x_max, y_max, objectness) rows."""
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    n = len(arr)
    index = np.arange(n, dtype=np.int64)
    return Boxes(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 4].copy(),
                 np.zeros((n, 0)), np.zeros((n, 0)), index, index, np.full(n, tile, dtype=np.int64))


def square(cx: float, cy: float, size: float, objectness: float) -> tuple[float, float, float, float, float]:
    return (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2, objectness)


def extended_source_patch() -> np.ndarray:
    """A normalised 512 px patch: a bright extended Gaussian (peak 0.95, sigma 40 px) and a compact source."""
    yy, xx = np.mgrid[0:512, 0:512] + 0.5  # pixel centres (CIANNA corners: pixel k spans [k, k+1])
    patch = 0.95 * np.exp(-((xx - 256) ** 2 + (yy - 200) ** 2) / (2 * 40.0**2))
    patch += 0.7 * np.exp(-((xx - 450) ** 2 + (yy - 450) ** 2) / (2 * 1.5**2))
    return patch.astype(np.float32)


def kept_objectness(boxes: Boxes) -> list[float]:
    return [round(float(v), 3) for v in boxes.objectness]


def test_default_settings_are_the_sdc1_recipe() -> None:
    assert SDC1_EXTENDED_FILTER == ExtendedFilterSettings()
    assert SDC1_EXTENDED_FILTER.tiers == ((0.6, 0.9), (0.3, 0.7), (0.1, 0.5))
    assert SDC1_EXTENDED_FILTER.margin == 5.0 and SDC1_EXTENDED_FILTER.max_objectness == 0.9
    assert ExtendedFilterSettings.from_yolo(SimpleNamespace()) is None
    assert ExtendedFilterSettings.from_yolo(SimpleNamespace(extended_filter=False)) is None
    assert ExtendedFilterSettings.from_yolo(SimpleNamespace(extended_filter=True)) == SDC1_EXTENDED_FILTER
    custom = ExtendedFilterSettings.from_yolo(SimpleNamespace(
        extended_filter=True, extended_filter_tiers=((0.5, 0.8),), extended_filter_margin=3))
    assert custom == ExtendedFilterSettings(tiers=((0.5, 0.8),), margin=3.0)
    with pytest.raises(ValueError):
        ExtendedFilterSettings(tiers=())
    with pytest.raises(ValueError):
        ExtendedFilterSettings(margin=-1)


def test_small_weak_boxes_on_a_bright_extended_source_are_dropped() -> None:
    patch = extended_source_patch()
    boxes = make_boxes([
        (176, 120, 336, 280, 0.95),   # the extended source itself: confident, kept
        square(256, 200, 8, 0.80),    # on the core (median ~0.9 > 0.6) and below 0.9: dropped
        square(226, 180, 10, 0.88),   # on the core, still below 0.9: dropped
        square(306, 200, 8, 0.60),    # on a wing (median ~0.43 > 0.3) below 0.7: dropped
        square(256, 275, 8, 0.45),    # far wing (median ~0.16 > 0.1) below 0.5: dropped
        square(256, 200, 8, 0.91),    # on the core but confident: kept
        square(306, 200, 8, 0.75),    # wing, objectness above 0.7 (and median < 0.6): kept
        square(256, 275, 8, 0.55),    # far wing, objectness above 0.5: kept
        square(450, 450, 6, 0.20),    # isolated compact source, weak: kept (its window is mostly sky)
        square(60, 460, 6, 0.10),     # isolated, in empty sky: kept
    ])
    medians = window_medians(boxes, patch)
    assert medians[1] > 0.6 and medians[2] > 0.6 and 0.3 < medians[3] < 0.6 and 0.1 < medians[4] < 0.3
    assert medians[8] < 0.1 and medians[9] < 1e-6
    kept = drop_extended_false_positives(boxes, patch)
    assert kept_objectness(kept) == [0.95, 0.91, 0.75, 0.55, 0.20, 0.10]
    assert kept.prior.tolist() == [0, 5, 6, 7, 8, 9]  # order (and every column) preserved


def test_boxes_just_outside_the_criterion_are_kept() -> None:
    # Left half blank, right half at 0.8 from column 300 on: the window median is 0.8 once more
    # than half of the window is bright, 0 when less than half is.
    patch = np.zeros((512, 512), np.float32)
    patch[:, 300:] = 0.8
    # a 10 x 10 box has a 20 x 20 window [floor(x_min - 5), floor(x_max + 5))
    boxes = make_boxes([
        (284.0, 100, 294.0, 110, 0.5),   # window columns 279..298: no bright column -> kept
        (289.0, 100, 299.0, 110, 0.5),   # 284..303: 4 of 20 bright -> median 0 -> kept
        (294.0, 100, 304.0, 110, 0.5),   # 289..308: 9 of 20 bright -> median 0 -> kept
        (294.5, 100, 304.5, 110, 0.5),   # floor(289.5) = 289 .. floor(309.5) = 309: still 9 -> kept
        (295.0, 100, 305.0, 110, 0.5),   # 290..309: 10 of 20 -> median (0 + 0.8) / 2 = 0.4 > 0.3 -> dropped
        (296.0, 100, 306.0, 110, 0.5),   # 11 of 20 bright -> 0.8 -> dropped
        (296.0, 200, 306.0, 210, 0.9),   # same place, objectness 0.9 is not below 0.9 -> kept
        (296.0, 300, 306.0, 310, 0.8999),  # just below 0.9 -> dropped
    ])
    medians = window_medians(boxes, patch)
    np.testing.assert_allclose(medians, [0, 0, 0, 0, 0.4, 0.8, 0.8, 0.8], atol=1e-6)
    kept = drop_extended_false_positives(boxes, patch)
    assert kept.prior.tolist() == [0, 1, 2, 3, 6]

    # medians just below each tier's limit, objectness below every tier's objectness: all kept
    for value, objectness in ((0.5999, 0.89), (0.2999, 0.69), (0.0999, 0.49)):
        flat = np.full((64, 64), value, np.float64)
        assert len(drop_extended_false_positives(make_boxes([square(32, 32, 8, objectness)]), flat)) == 1
        above = np.full((64, 64), value + 0.0002, np.float64)
        assert len(drop_extended_false_positives(make_boxes([square(32, 32, 8, objectness)]), above)) == 0


def test_window_geometry_truncation_clipping_and_origin() -> None:
    ramp = np.tile(np.arange(64, dtype=np.float64), (64, 1))  # value = column index
    boxes = make_boxes([
        (20.7, 30.2, 29.1, 39.9, 0.1),  # columns floor(15.7)=15 .. floor(34.1)=34 (exclusive): median 24
        (1.0, 30.0, 6.0, 40.0, 0.1),    # columns clipped at the patch side: 0 .. 11: median 5
        (58.0, 30.0, 62.0, 40.0, 0.1),  # columns 53 .. clipped at 64: median 58
    ])
    np.testing.assert_allclose(window_medians(boxes, ramp), [24.0, 5.0, 58.0])
    # the same boxes in a frame where the patch starts at (100, 50)
    moved = boxes.shifted(100, 50)
    np.testing.assert_allclose(window_medians(moved, ramp, origin=(100, 50)), [24.0, 5.0, 58.0])
    # explicit bounds narrower than the array, and pixels beyond the array read as `fill`
    np.testing.assert_allclose(window_medians(boxes, ramp, bounds=(18, 0, 64, 64)), [25.5, np.nan, 58.0])
    wide = window_medians(boxes, ramp[:, :60], bounds=(0, 0, 64, 64), fill=0.0)
    assert wide[2] == np.median(np.r_[np.arange(53, 60), np.zeros(4)])
    # an empty window (box beyond the bounds) keeps the box
    far = make_boxes([(80.0, 80.0, 90.0, 90.0, 0.1)])
    assert np.isnan(window_medians(far, ramp)[0])
    assert len(drop_extended_false_positives(far, ramp + 1.0)) == 1


def recipe_decisions(boxes: Boxes, patch: np.ndarray, settings: ExtendedFilterSettings) -> np.ndarray:
    """The recipe written box by box: integer window, patch clip, median, tier test (True = dropped)."""
    size_y, size_x = patch.shape
    dropped = np.zeros(len(boxes), dtype=bool)
    for k in range(len(boxes)):
        x0 = max(0, int(boxes.x_min[k] - settings.margin))
        x1 = min(size_x, int(boxes.x_max[k] + settings.margin))
        y0 = max(0, int(boxes.y_min[k] - settings.margin))
        y1 = min(size_y, int(boxes.y_max[k] + settings.margin))
        window = patch[y0:y1, x0:x1]
        if window.size == 0:
            continue
        median = float(np.median(window))
        dropped[k] = any(median > a and boxes.objectness[k] < b for a, b in settings.tiers)
    return dropped


@pytest.mark.parametrize("quantise", [False, True])
def test_vectorised_filter_equals_the_box_by_box_recipe(quantise: bool) -> None:
    rng = np.random.default_rng(11)
    patch = np.tanh(3 * rng.random((512, 512)) ** 3).astype(np.float32)
    patch[100:300, 50:260] = np.clip(patch[100:300, 50:260] + 0.5, 0, 0.99)
    if quantise:  # many exact ties at the limits: even-sized windows split half and half
        patch = (np.round(patch * 10) / 10).astype(np.float32)
    n = 4000
    cx, cy = rng.uniform(0, 512, n), rng.uniform(0, 512, n)  # decoded centres lie in the patch
    w, h = rng.uniform(5, 40, n), rng.uniform(5, 40, n)
    boxes = make_boxes(np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, rng.random(n)], axis=1).tolist())
    expected = recipe_decisions(boxes, patch, SDC1_EXTENDED_FILTER)
    assert 200 < expected.sum() < n - 200
    kept = drop_extended_false_positives(boxes, patch)
    assert kept.prior.tolist() == np.nonzero(~expected)[0].tolist()


def test_image_frame_filter_equals_the_per_patch_filter() -> None:
    """After merging (image coordinates), a NormalisedImage with each box's patch bounds gives the same decisions."""
    from cianna_otf_server.models._card import NormalisationSpec, TilingSpec
    from cianna_otf_server.pipeline._region import PixelBox
    from cianna_otf_server.pipeline._tiling import cut_patch, plan_tiles

    rng = np.random.default_rng(5)
    ny, nx = 300, 420
    yy, xx = np.mgrid[0:ny, 0:nx]
    data = rng.normal(0, 1e-6, (ny, nx)) + 3e-5 * np.exp(-((xx - 200) ** 2 + (yy - 150) ** 2) / (2 * 35.0**2))
    data[10:20, 10:20] = np.nan  # blanks normalise like the patches do
    image = SimpleNamespace(data=data.astype(np.float32))
    norm = NormalisationSpec()
    plan = plan_tiles(PixelBox(0, nx, 0, ny), TilingSpec((128, 128), (96, 96), (16, 16)))
    per_patch, in_image = [], []
    for tile in plan.tiles:
        patch = cut_patch(image, tile, (128, 128), norm)
        n = 60
        cx, cy = rng.uniform(0, 128, n), rng.uniform(0, 128, n)
        size = rng.uniform(5, 30, n)
        boxes = make_boxes(np.stack([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2,
                                     rng.random(n)], axis=1).tolist(), tile=tile.index)
        kept = drop_extended_false_positives(boxes, patch)
        per_patch.append(kept.shifted(tile.x0, tile.y0))
        in_image.append(boxes.shifted(tile.x0, tile.y0))
        # the same patch-frame boxes against the image, through the patch's origin
        direct = drop_extended_false_positives(boxes, NormalisedImage(image.data, norm),
                                               origin=(-tile.x0, -tile.y0), bounds=(0, 0, 128, 128))
        np.testing.assert_array_equal(direct.x_min, kept.x_min)
    merged = Boxes.concat(in_image)
    expected = Boxes.concat(per_patch)
    assert 0 < len(expected) < len(merged)
    filtered = drop_extended_false_positives(merged, NormalisedImage(image.data, norm),
                                             bounds=patch_bounds(merged, plan))
    np.testing.assert_array_equal(filtered.x_min, expected.x_min)
    np.testing.assert_array_equal(filtered.tile, expected.tile)


# -- 3. the published card ---------------------------------------------------------------------------
def test_sdc1_card_runs_the_256_network_on_512_patches_with_the_filter() -> None:
    from cianna_otf_server.models._card import load_card

    raw = tomllib.loads(CARD.read_text())
    card = load_card(CARD)
    assert card.tiling is not None and card.tiling.patch_size == (512, 512)
    assert raw["weights"]["input_size"] == 256 and raw["training"]["patch_size"] == 256
    stored = sdc1_reference(raw["weights"]["input_size"])
    assert input_size_problem(stored, card.tiling.patch_size) is None
    assert CiannaNetwork(sdc1_reference(64)).with_input_size((128, 128)).output_grid == (8, 8, 1)
    yolo = raw["yolo"]
    assert yolo["extended_filter"] is True
    settings = ExtendedFilterSettings.from_yolo(SimpleNamespace(
        extended_filter=yolo["extended_filter"],
        extended_filter_tiers=tuple(tuple(t) for t in yolo["extended_filter_tiers"]),
        extended_filter_margin=yolo["extended_filter_margin"],
    ))
    assert settings == SDC1_EXTENDED_FILTER
