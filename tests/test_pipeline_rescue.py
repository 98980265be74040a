"""The significance rescue (``[yolo] rescue_threshold`` / ``rescue_snr``) in the detection path of yolo-demo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cianna_otf_server.models import default_registry  # noqa: E402
from cianna_otf_server.pipeline import YoloDetection, full_box, open_image  # noqa: E402
from cianna_otf_server.pipeline._decode import decode_batch  # noqa: E402
from cianna_otf_server.pipeline._detect import prepare_network, run_detection  # noqa: E402
from cianna_otf_server.pipeline._device_decode import (  # noqa: E402
    decode_batch_tensor,
    tensor_outputs,
)
from cianna_otf_server.pipeline._device_tiling import DeviceTiler  # noqa: E402
from cianna_otf_server.sky.simulate import write_simulation  # noqa: E402


def _cards():
    """yolo-demo without the rescue (as every card without the settings) and with one."""
    card = default_registry().get("yolo-demo")
    card = getattr(card, "card", card)
    off = dataclasses.replace(card, yolo=dataclasses.replace(card.yolo, rescue_threshold=0.0, rescue_snr=0.0))
    on = dataclasses.replace(card, yolo=dataclasses.replace(card.yolo, rescue_threshold=0.15, rescue_snr=8.0))
    return off, on


@pytest.fixture(scope="module")
def sky_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("rescue") / "sky.fits"
    write_simulation(path, (600, 700), seed=21)
    return path


@pytest.fixture(scope="module")
def network():
    return prepare_network(_cards()[0])


def _detection(path, card, **kwargs) -> YoloDetection:
    image = open_image(str(path))
    return YoloDetection(image, card, full_box(image), precision="fp32", **kwargs)


def test_off_decodes_at_the_card_thresholds():
    off, on = _cards()
    yolo = off.yolo
    assert not yolo.rescues
    from cianna_otf_server.pipeline._decode import decode_settings

    assert decode_settings(yolo).floor == tuple(yolo.objectness_thresholds)
    assert decode_settings(on.yolo).floor == (0.15,) * on.yolo.nb_box
    assert decode_settings(on.yolo, threshold=0.1).floor == (0.1,) * on.yolo.nb_box  # a lower override wins


def test_device_and_host_decode_agree_down_to_the_rescue_floor(sky_path, network):
    """`decode_batch_tensor` (run here on CPU tensors) equals `decode_batch` with the rescue's lower floor."""
    _, on = _cards()
    detection = _detection(sky_path, on)
    below, seen = 0, 0
    for tiles, batch in DeviceTiler(detection.view, detection.plan, on.normalisation, "cpu").batches(4):
        outputs = tensor_outputs(network, batch)
        indices = [t.index for t in tiles]
        for a, b in zip(decode_batch_tensor(outputs, indices, on.yolo, detection.settings),
                        decode_batch(outputs.numpy(), indices, on.yolo, detection.settings)):
            assert len(a) == len(b)
            for name in ("x_min", "y_min", "x_max", "y_max", "objectness", "params"):
                np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)
            np.testing.assert_array_equal(a.prior, b.prior)
            below += int(np.sum(~detection.settings.standing(b)))
            seen += len(b)
    assert below > 0 and seen > below


def test_the_standing_detections_are_those_of_the_card_without_the_rescue(sky_path, network):
    off, on = _cards()
    plain = run_detection(_detection(sky_path, off), network)
    assert "rescue" not in plain.meta["parameters"]
    none_kept = run_detection(_detection(sky_path, dataclasses.replace(
        on, yolo=dataclasses.replace(on.yolo, rescue_snr=np.inf))), network)
    assert len(none_kept) == len(plain) > 10
    for name in ("ra", "dec", "flux", "snr"):
        np.testing.assert_array_equal(np.asarray(none_kept[name]), np.asarray(plain[name]))
    rescued = run_detection(_detection(sky_path, on), network)
    assert rescued.meta["parameters"]["rescue"] == [0.15, 8.0]
    assert len(rescued) >= len(plain)
    for name in ("ra", "dec"):
        np.testing.assert_array_equal(np.asarray(rescued[name])[:len(plain)], np.asarray(plain[name]))


def test_under_a_threshold_no_box_reaches_only_significant_sources_are_rescued(sky_path, network):
    """Every box below the threshold: the rescue keeps the significant ones, one per peak, and nothing fainter."""
    off, on = _cards()
    assert len(run_detection(_detection(sky_path, off, threshold=0.999), network)) == 0
    table = run_detection(_detection(sky_path, on, threshold=0.999), network)
    snr = np.asarray(table["snr"])
    assert len(table) > 5 and np.all(snr >= 8.0)
    assert len(table) <= len(run_detection(_detection(sky_path, off, threshold=0.15), network))
