"""Patches made and decoded on the network's device equal the host path's (`DeviceTiler`, `decode_batch_tensor`)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from astropy.io import fits

torch = pytest.importorskip("torch")

from cianna_otf_server.models import default_registry  # noqa: E402
from cianna_otf_server.pipeline import PixelBox, YoloDetection, full_box, iter_batches, open_image  # noqa: E402
from cianna_otf_server.pipeline._decode import decode_batch, decode_settings  # noqa: E402
from cianna_otf_server.pipeline._device_decode import decode_batch_tensor, tensor_outputs  # noqa: E402
from cianna_otf_server.pipeline._device_tiling import DeviceTiler, device_tiling_problem  # noqa: E402
from cianna_otf_server.pipeline._detect import patch_batches  # noqa: E402
from cianna_otf_server.sky.simulate import write_simulation  # noqa: E402


def _card(name: str):
    card = default_registry().get(name)
    return getattr(card, "card", card)


def _assert_same_batches(detection: YoloDetection, device: str = "cpu", batch_size: int = 3) -> int:
    card = detection.card
    host = list(iter_batches(detection.view, detection.plan, card.normalisation, batch_size=1000,
                             channels=card.channels))
    host_patches = {t.index: patch for tiles, batch in host for t, patch in zip(tiles, batch)}
    tiler = DeviceTiler(detection.view, detection.plan, card.normalisation, device, channels=card.channels,
                        workers=3)
    order = []
    for tiles, batch in tiler.batches(batch_size):
        assert batch.device.type == torch.device(device).type and batch.dtype == torch.float32
        assert len(tiles) <= batch_size and len({t.j for t in tiles}) == 1, "a batch is part of one row"
        values = batch.cpu().numpy()
        for tile, patch in zip(tiles, values):
            order.append(tile.index)
            np.testing.assert_allclose(patch, host_patches[tile.index], atol=2e-5, rtol=1e-5)
    assert order == [t.index for t in detection.plan.tiles], "plan order"
    return len(order)


@pytest.fixture(scope="module")
def sky_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("device-tiling") / "sky.fits"
    write_simulation(path, (700, 1100), seed=11)
    with fits.open(path, mode="update") as hdul:  # a blank corner, as a mosaic edge
        hdul[0].data[:90, :130] = np.nan
    return path


def test_signal_to_noise_patches_equal_the_host_path_at_edges_and_blanks(sky_path):
    """Big-endian FITS pixels read raw and swapped where the patches are made; noise maps from two products."""
    image = open_image(str(sky_path))
    assert not image.data.dtype.isnative, "FITS pixels are big-endian: the swap is exercised"
    card = _card("yolo-demo")
    detection = YoloDetection(image, card, full_box(image), precision="fp32")
    assert detection.domain.convention == "snr" and detection.view.zoom == 1.0
    assert _assert_same_batches(detection) == len(detection.plan) > 3
    # a region inside the image: patches reach real pixels beyond the box and past the image edge
    region = YoloDetection(image, card, PixelBox(300, 700, 600, 1100), precision="fp32")
    _assert_same_batches(region, batch_size=2)
    image.close()


def test_absolute_patches_in_another_unit_and_native_float64_equal_the_host_path(sky_path):
    """An absolute model on a mJy/beam image held in memory as native float64."""
    with fits.open(sky_path) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data.astype(np.float64) * 1e3
    header["BUNIT"] = "mJy/beam"
    image = open_image(fits.HDUList([fits.PrimaryHDU(data, header)]))
    assert image.data.dtype.isnative and image.data.dtype.itemsize == 8
    detection = YoloDetection(image, _card("yolo-demo-sdc1"), full_box(image), precision="fp32")
    assert detection.domain.convention == "absolute" and detection.view.scale == pytest.approx(1e-3)
    _assert_same_batches(detection, batch_size=4)


def test_views_the_device_cannot_cut_keep_the_host_path(sky_path):
    image = open_image(str(sky_path))
    detection = YoloDetection(image, _card("yolo-demo"), full_box(image), precision="fp32")
    assert "CPU" in device_tiling_problem(detection.view, "cpu")
    assert device_tiling_problem(detection.view, "cuda:0") is None
    # a resampled view (the beam outside the model's range) is interpolated on the host
    detection.view.zoom = 0.5
    assert "resampled" in device_tiling_problem(detection.view, "cuda")
    detection.view.zoom = 1.0
    # on a CPU-only run, `patch_batches` gives the host's numpy batches
    tiles, batch = next(iter(patch_batches(detection, 2)))
    assert isinstance(batch, np.ndarray) and len(tiles) == 2
    image.close()


def test_stopping_early_leaves_no_copy_thread(sky_path):
    image = open_image(str(sky_path))
    card = _card("yolo-demo")
    detection = YoloDetection(image, card, full_box(image), precision="fp32")
    batches = DeviceTiler(detection.view, detection.plan, card.normalisation, "cpu", workers=2).batches(1)
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("cianna-otf-strip")]
    image.close()


def _assert_same_boxes(a, b):
    assert len(a) == len(b)
    for name in ("x_min", "y_min", "x_max", "y_max", "objectness", "probability", "classes", "params"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12, err_msg=name)
    for name in ("prior", "cell", "tile"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("settings_case", ["card", "crowded", "sdc1-tiers"])
def test_batches_decoded_on_the_device_equal_the_host_decode(sky_path, settings_case):
    """Thresholds, edge penalty, sizes and the greedy NMS of every patch at once: the host's boxes, in its order."""
    from cianna_otf_server.pipeline._detect import prepare_network

    card = _card("yolo-demo")
    image = open_image(str(sky_path))
    detection = YoloDetection(image, card, full_box(image), precision="fp32")
    network = prepare_network(card)
    yolo = card.yolo
    settings = detection.settings
    if settings_case == "crowded":  # a low threshold: hundreds of overlapping candidates per patch
        settings = decode_settings(yolo, threshold=0.02, nms=0.1, min_size=3.0, min_box_size=6.0, edge_penalty=0.05)
    elif settings_case == "sdc1-tiers":
        settings = decode_settings(yolo, threshold=0.1, nms_tiers=((0.05, 1.0), (-0.1, 0.7), (-0.3, 0.5)),
                                   min_box_size=5.0, edge_penalty=0.05)
    assert settings.extended_filter is None
    seen = 0
    for tiles, batch in DeviceTiler(detection.view, detection.plan, card.normalisation, "cpu").batches(4):
        outputs = tensor_outputs(network, batch)
        assert outputs is not None and isinstance(outputs, torch.Tensor)
        indices = [t.index for t in tiles]
        on_device = decode_batch_tensor(outputs, indices, yolo, settings)
        on_host = decode_batch(outputs.numpy(), indices, yolo, settings)
        for a, b in zip(on_device, on_host):
            _assert_same_boxes(a, b)
            seen += len(b)
    assert seen > (1000 if settings_case == "crowded" else 20)
    image.close()


def test_a_batch_with_too_many_candidates_is_left_to_the_host(sky_path, monkeypatch):
    from cianna_otf_server.pipeline import _device_decode
    from cianna_otf_server.pipeline._detect import prepare_network

    card = _card("yolo-demo")
    image = open_image(str(sky_path))
    detection = YoloDetection(image, card, full_box(image), precision="fp32")
    tiles, batch = next(iter(DeviceTiler(detection.view, detection.plan, card.normalisation, "cpu").batches(2)))
    outputs = tensor_outputs(prepare_network(card), batch)
    settings = dataclasses.replace(detection.settings, thresholds=(0.0,) * card.yolo.nb_box)
    monkeypatch.setattr(_device_decode, "MAX_CANDIDATES", 100)
    assert decode_batch_tensor(outputs, [t.index for t in tiles], card.yolo, settings) is None
    # and `add_outputs` then decodes it on the host, with the same result as numpy outputs
    detection.settings = settings
    detection.add_outputs(tiles, outputs)
    from_tensor = [detection.per_tile[t.index] for t in tiles]
    detection.add_outputs(tiles, outputs.numpy())
    for a, t in zip(from_tensor, tiles):
        _assert_same_boxes(a, detection.per_tile[t.index])
    image.close()


@pytest.mark.gpu
def test_detect_on_the_gpu_with_device_patches_equals_the_host_path(sky_path):
    """`detect` on CUDA (patches made on the GPU) gives the catalogue of host-cut patches."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from cianna_otf_server.pipeline import detect
    from cianna_otf_server.pipeline._detect import prepare_network, run_detection

    card = _card("yolo-demo")
    network = prepare_network(card, device="cuda", precision="fp32")
    image = open_image(str(sky_path))
    detection = YoloDetection(image, card, full_box(image), precision="fp32", device="cuda")
    assert device_tiling_problem(detection.view, detection.device) is None
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # full fp32 convolutions: the two paths' numbers comparable
    try:
        on_device = detect(str(sky_path), card, device="cuda", precision="fp32", network=network)
        host_detection = YoloDetection(image, card, full_box(image), precision="fp32",
                                       device="cpu")  # "cpu": the host path, the network still on the GPU
        on_host = run_detection(host_detection, network, batch_size=64)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    assert len(on_device) == len(on_host) > 20
    for name in ("ra", "dec"):
        np.testing.assert_allclose(np.sort(np.asarray(on_device[name])), np.sort(np.asarray(on_host[name])),
                                   atol=1e-6)
    image.close()
