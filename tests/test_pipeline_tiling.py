"""Normalisation and tiling: patch geometry, padding, bounded reads."""

from __future__ import annotations

import numpy as np
import pytest

from cianna_otf_server.models._card import NormalisationSpec, TilingSpec
from cianna_otf_server.pipeline import PixelBox, cut_patch, iter_batches, normalise, normalised_blank, plan_tiles

SPEC = NormalisationSpec("tanh", 0.4e-6, 0.4e-4, 3.0)


@pytest.mark.parametrize("function", ["linear", "tanh", "sqrt", "log"])
def test_normalise_functions(function):
    spec = NormalisationSpec(function, 1.0, 3.0, 3.0)
    values = np.array([0.0, 1.0, 2.0, 3.0, 10.0, np.nan], dtype=np.float32)
    out = normalise(values, spec)
    u = np.array([0.0, 0.0, 0.5, 1.0, 1.0])
    expected = {
        "linear": u,
        "tanh": np.tanh(3 * u),
        "sqrt": np.sqrt(u),
        "log": np.log10(1 + 3 * u) / np.log10(4),
    }[function]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:5], expected, rtol=1e-6, atol=1e-7)
    assert out[5] == 0.0
    assert normalised_blank(spec) == 0.0


def test_normalise_matches_sdc1_recipe():
    x = np.random.default_rng(0).normal(1e-5, 2e-5, size=1000).astype(np.float32)
    ref = np.tanh(3 * (np.clip(x, 0.4e-6, 0.4e-4) - 0.4e-6) / (0.4e-4 - 0.4e-6))
    np.testing.assert_allclose(normalise(x, SPEC), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "box, size, shift, offset",
    [
        ((0, 1000, 0, 700), 128, 96, 16),
        ((37, 301, 5, 6), 128, 112, 16),
        ((0, 50, 0, 50), 128, 96, 0),
        ((10, 2010, 20, 1020), 512, 480, 33),
        ((0, 128, 0, 128), 128, 128, 0),
    ],
)
def test_plan_covers_box_with_margin(box, size, shift, offset):
    pixel_box = PixelBox(*box)
    plan = plan_tiles(pixel_box, TilingSpec((size, size), (shift, shift), (offset, offset)))
    tiles = plan.tiles
    assert len(tiles) == len(plan) == plan.nx_tiles * plan.ny_tiles
    assert [t.index for t in tiles] == list(range(len(plan)))
    first, last = tiles[0], tiles[-1]
    assert (first.x0, first.y0) == (pixel_box.x0 - offset, pixel_box.y0 - offset)
    assert (last.i, last.j) == (plan.nx_tiles - 1, plan.ny_tiles - 1)
    # the grid reaches `offset` past the box, and one patch fewer would not
    for n, lo, hi in ((plan.nx_tiles, pixel_box.x0, pixel_box.x1), (plan.ny_tiles, pixel_box.y0, pixel_box.y1)):
        end = lo - offset + (n - 1) * shift + size
        assert end >= hi + offset
        assert n == 1 or end - shift < hi + offset
    # every box pixel lies in some patch
    covered = np.zeros((pixel_box.height, pixel_box.width), dtype=bool)
    for t in tiles:
        ys = slice(max(t.y0, pixel_box.y0) - pixel_box.y0, max(0, min(t.y0 + size, pixel_box.y1) - pixel_box.y0))
        xs = slice(max(t.x0, pixel_box.x0) - pixel_box.x0, max(0, min(t.x0 + size, pixel_box.x1) - pixel_box.x0))
        covered[ys, xs] = True
    assert covered.all()


class _RecordingArray:
    """Stands in for a memory-mapped image and records which windows are read."""

    def __init__(self, data):
        self.data, self.reads = data, []
        self.shape = data.shape

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


class _Image:
    def __init__(self, data):
        self.data = data


def test_cut_patch_pads_with_blank_sky_and_reads_only_the_window():
    rng = np.random.default_rng(3)
    data = rng.normal(2e-5, 1e-5, size=(100, 120)).astype(np.float32)
    data[50, 60] = np.nan
    recorder = _RecordingArray(data)
    plan = plan_tiles(PixelBox(0, 120, 0, 100), TilingSpec((64, 64), (48, 48), (16, 16)))
    tile = plan.tile(0, 0)  # starts at (-16, -16)
    patch = cut_patch(_Image(recorder), tile, (64, 64), SPEC)
    assert patch.shape == (64, 64) and patch.dtype == np.float32
    assert np.all(patch[:16, :] == 0) and np.all(patch[:, :16] == 0)
    np.testing.assert_allclose(patch[16:, 16:], normalise(data[0:48, 0:48], SPEC))
    assert recorder.reads == [(slice(0, 48), slice(0, 48))]
    inner = cut_patch(_Image(recorder), plan.tile(1, 1), (64, 64), SPEC)  # origin (32, 32): holds the NaN
    assert inner[50 - 32, 60 - 32] == 0.0 and np.isfinite(inner).all()


def test_iter_batches_shapes_and_order():
    data = np.random.default_rng(4).normal(size=(90, 130)).astype(np.float32)
    plan = plan_tiles(PixelBox(0, 130, 0, 90), TilingSpec((32, 32), (24, 24), (4, 4)))
    seen = []
    for tiles, batch in iter_batches(_Image(data), plan, SPEC, batch_size=5, channels=2):
        assert batch.shape == (len(tiles), 2, 32, 32) and batch.dtype == np.float32
        assert len(tiles) <= 5
        np.testing.assert_array_equal(batch[:, 0], batch[:, 1])
        for tile, patch in zip(tiles, batch):
            np.testing.assert_array_equal(patch[0], cut_patch(_Image(data), tile, (32, 32), SPEC))
        seen += [t.index for t in tiles]
    assert seen == list(range(len(plan)))


def test_iter_batches_reads_a_signal_to_noise_view_batch_at_once(tmp_path):
    """A `DomainView` (here a signal-to-noise model's) gives each batch in one read, equal to patch-by-patch cuts."""
    from cianna_otf_server.models import default_registry
    from cianna_otf_server.pipeline import YoloDetection, open_image
    from cianna_otf_server.sky.simulate import write_simulation

    path = tmp_path / "sky.fits"
    write_simulation(path, 300, seed=5)
    card = default_registry().get("yolo-demo")
    card = getattr(card, "card", card)
    image = open_image(str(path))
    detection = YoloDetection(image, card, PixelBox(0, 300, 0, 300), precision="fp32")
    assert detection.domain.convention == "snr" and detection.view.data.windows is not None
    reads = []
    original = detection.view.image_windows

    def counting(*args):
        reads.append(args)
        return original(*args)

    detection.view.image_windows = counting
    batches = list(iter_batches(detection.view, detection.plan, card.normalisation, batch_size=4))
    assert len(reads) == len(batches) == -(-len(detection.plan) // 4)
    detection.view.image_windows = original
    for tiles, batch in batches:
        for tile, patch in zip(tiles, batch):
            single = cut_patch(detection.view, tile, detection.plan.patch_size, card.normalisation)
            np.testing.assert_allclose(patch[0], single, atol=1e-5)


class _CountingArray:
    """An image array that records how many reads are under way at once (a slow disk's reads)."""

    def __init__(self, data):
        import threading

        self.data, self.shape, self.dtype = data, data.shape, data.dtype
        self.active = self.most = 0
        self._lock = threading.Lock()

    def __getitem__(self, key):
        import time

        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.002)
        try:
            return self.data[key]
        finally:
            with self._lock:
                self.active -= 1


def test_iter_batches_cuts_ahead_in_threads_in_order_and_bounded():
    data = np.random.default_rng(9).normal(size=(200, 260)).astype(np.float32)
    plan = plan_tiles(PixelBox(0, 260, 0, 200), TilingSpec((32, 32), (24, 24), (4, 4)))
    serial = list(iter_batches(_Image(data), plan, SPEC, batch_size=3))
    counting = _CountingArray(data)
    threaded = list(iter_batches(_Image(counting), plan, SPEC, batch_size=3, workers=3))
    assert [[t.index for t in tiles] for tiles, _ in threaded] == [[t.index for t in tiles] for tiles, _ in serial]
    for (_, a), (_, b) in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
    assert 1 < counting.most <= 3, "reads overlap, never more than the workers"

    # a caller that stops early leaves no work behind
    stopped = iter_batches(_Image(counting), plan, SPEC, batch_size=1, workers=2)
    next(stopped)
    stopped.close()
    assert counting.active == 0
