"""Deblending around network detections (`pipeline._components`, ``[yolo] deblend``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from cianna_otf_server.pipeline._boxes import Boxes
from cianna_otf_server.pipeline._components import component_boxes, one_per_peak
from cianna_otf_server.pipeline._measure import measure_sources

BEAM = 2.5  # FWHM, pixels
SIGMA = BEAM / math.sqrt(8.0 * math.log(2.0))


def sky(sources: list[tuple[float, float, float]], size: int = 96, seed: int = 1) -> np.ndarray:
    """A signal-to-noise image: unit white noise plus Gaussian point sources (x, y, peak SNR)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for x, y, peak in sources:
        image += (peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2.0 * SIGMA ** 2))).astype(np.float32)
    return image


def boxes_at(centres: list[tuple[float, float]], side: float = 5.5, score: list[float] | None = None) -> Boxes:
    """Beam-sized boxes centred on 0-based pixel positions (corner convention: pixel k spans [k, k+1])."""
    x = np.array([c[0] for c in centres], dtype=np.float64)
    y = np.array([c[1] for c in centres], dtype=np.float64)
    n = len(centres)
    objectness = np.asarray(score if score is not None else [0.9] * n, dtype=np.float64)
    return Boxes(x + 0.5 - side / 2, y + 0.5 - side / 2, x + 0.5 + side / 2, y + 0.5 + side / 2, objectness,
                 np.ones(n), np.zeros((n, 0)), np.zeros((n, 5)), np.zeros(n, dtype=np.int64),
                 np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))


def components(image: np.ndarray, boxes: Boxes, min_peak_snr: float = 4.0) -> Boxes:
    measurement = measure_sources(image, boxes, BEAM, BEAM)
    return component_boxes(image, boxes, measurement, min_peak_snr, BEAM)


def test_a_box_between_two_sources_gives_both_of_them() -> None:
    image = sky([(40.0, 40.0, 20.0), (40.0, 53.0, 15.0)])
    between = boxes_at([(40.0, 46.5)])
    assert measure_sources(image, between, BEAM, BEAM).peak[0] < 4.0  # measured, the box holds noise
    found = components(image, between)
    assert len(found) == 2
    assert sorted(np.round(found.y_center).tolist()) == [40.0, 53.0]
    assert np.allclose(found.x_center, 40.0, atol=1.0)
    assert np.allclose(found.width, 5.5) and np.allclose(found.objectness, 0.9)


def test_a_neighbour_the_nms_hid_is_added() -> None:
    image = sky([(40.0, 40.0, 60.0), (46.5, 41.0, 12.0)])  # 2.6 beams apart
    found = components(image, boxes_at([(40.0, 40.0)]))
    assert len(found) == 1
    assert abs(found.x_center[0] - 46.5) <= 1.0 and abs(found.y_center[0] - 41.0) <= 1.0


def test_nothing_is_added_around_a_lone_source_or_below_the_threshold() -> None:
    image = sky([(40.0, 40.0, 50.0), (47.0, 40.0, 3.0)])
    assert len(components(image, boxes_at([(40.0, 40.0)]))) == 0


def test_a_sidelobe_ring_of_a_bright_source_is_not_a_source() -> None:
    image = sky([(48.0, 48.0, 2000.0)])
    yy, xx = np.mgrid[0:96, 0:96]
    ring = np.hypot(xx - 48.0, yy - 48.0)
    image += (12.0 * np.exp(-((ring - 10.0) ** 2) / 2.0) * (1.0 + np.cos(6 * np.arctan2(yy - 48, xx - 48)))).astype(np.float32)
    assert len(components(image, boxes_at([(48.0, 48.0)]))) == 0


def test_the_shoulder_of_an_extended_source_is_not_split() -> None:
    yy, xx = np.mgrid[0:96, 0:96]
    image = sky([])
    image += (40.0 * np.exp(-((xx - 48.0) ** 2 / (2 * 6.0 ** 2) + (yy - 48.0) ** 2 / (2 * 1.2 ** 2)))).astype(np.float32)
    found = components(image, boxes_at([(48.0, 48.0)], side=30.0))
    assert len(found) == 0


def test_one_detection_per_measured_peak_keeps_the_best_scored() -> None:
    x = np.array([10.0, 10.6, 30.0, np.nan])
    y = np.array([10.0, 10.2, 30.0, 10.0])
    keep = one_per_peak(x, y, np.array([0.5, 0.9, 0.4, 0.3]), 2.5)
    assert keep.tolist() == [False, True, True, True]


@pytest.fixture(scope="module")
def crowded_sky(tmp_path_factory: pytest.TempPathFactory):
    """A VLASS-like sky (2.5 px beam): close pairs of unrelated sources are common."""
    from cianna_otf_server.sky.simulate import simulate_sky

    path = tmp_path_factory.mktemp("deblend") / "sky.fits"
    hdul, truth = simulate_sky(768, seed=4242, pixel_scale=1.0, beam_bmaj=2.5, beam_bmin=2.5, noise=1.2e-4,
                               density=40000.0, flux_min=1.2e-4, flux_max=0.3)
    hdul.writeto(path)
    return path, truth


def test_deblending_finds_more_true_sources_and_is_off_without_the_flag(crowded_sky) -> None:
    from cianna_otf_server.models import default_registry
    from cianna_otf_server.pipeline import detect
    from cianna_otf_server.sky.quality import match_catalogues

    path, truth = crowded_sky
    card = default_registry().get("yolo-demo")
    assert card.yolo.deblend and not default_registry().get("yolo-demo-sdc1").yolo.deblend  # off unless asked
    plain = dataclasses.replace(card, yolo=dataclasses.replace(card.yolo, deblend=False))
    with_deblend = detect(str(path), card)
    without = detect(str(path), plain)
    bright = truth[np.asarray(truth["snr"]) >= 10]

    def found(table) -> int:
        return len(match_catalogues(table, bright, radius_pix=2.5).truth)

    def precision(table) -> float:
        return len(match_catalogues(table, truth, radius_pix=2.5).detected) / max(1, len(table))

    assert found(with_deblend) > found(without)
    assert precision(with_deblend) >= precision(without) - 0.01
    assert precision(with_deblend) >= 0.95


def _greedy_walk(x, y, score, distance):
    """The greedy choice walked point by point (what `greedy_apart` must equal)."""
    from scipy.spatial import cKDTree

    keep = np.zeros(len(x), dtype=bool)
    taken = np.zeros(len(x), dtype=bool)
    tree = cKDTree(np.c_[x, y])
    for k in np.argsort(-score, kind="stable"):
        if not taken[k]:
            keep[k] = True
            taken[tree.query_ball_point([x[k], y[k]], distance)] = True
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_greedy_apart_equals_the_point_by_point_walk(seed, monkeypatch):
    from cianna_otf_server.pipeline import _components
    from cianna_otf_server.pipeline._components import greedy_apart

    rng = np.random.default_rng(seed)
    n = 3000
    x, y = rng.uniform(0, 400, n), rng.uniform(0, 400, n)  # crowded: chains of neighbours
    score = np.round(rng.uniform(0, 1, n), 2)  # many ties
    expected = _greedy_walk(x, y, score, 6.0)
    assert 0.1 * n < expected.sum() < 0.9 * n
    np.testing.assert_array_equal(greedy_apart(x, y, score, 6.0), expected)
    monkeypatch.setattr(_components, "_MAX_ROUNDS", 1)  # the fallback walk gives the same
    np.testing.assert_array_equal(greedy_apart(x, y, score, 6.0), expected)


def test_inside_boxes_and_brightest_near_equal_the_point_by_point_answers():
    from scipy.spatial import cKDTree

    from cianna_otf_server.pipeline._components import _brightest_near, _inside_boxes

    rng = np.random.default_rng(3)
    n, m = 2000, 500
    cx, cy = rng.uniform(0, 300, n), rng.uniform(0, 300, n)
    sx, sy = rng.uniform(0, 300, m), rng.uniform(0, 300, m)
    sx[:5], sy[:5] = cx[:5], cy[:5]  # points on a detection's centre
    speak = rng.uniform(5, 500, m)
    w, h = rng.uniform(2, 20, m), rng.uniform(2, 20, m)
    f, i = np.zeros(m), np.zeros(m, dtype=np.int64)
    held = Boxes(sx + 0.5 - w / 2, sy + 0.5 - h / 2, sx + 0.5 + w / 2, sy + 0.5 + h / 2, f, f,
                 np.zeros((m, 0)), np.zeros((m, 0)), i, i, i)
    tree = cKDTree(np.c_[sx, sy])
    brightest = np.array([max((speak[j] for j in tree.query_ball_point([x, y], 6.0)), default=0.0)
                          for x, y in zip(cx, cy)])
    np.testing.assert_array_equal(_brightest_near(cx, cy, sx, sy, speak, 6.0), brightest)
    inside = np.array([bool(np.any((held.x_min - 0.5 <= x) & (x <= held.x_max - 0.5)
                                   & (held.y_min - 0.5 <= y) & (y <= held.y_max - 0.5))) for x, y in zip(cx, cy)])
    assert 0.05 * n < inside.sum() < 0.95 * n
    np.testing.assert_array_equal(_inside_boxes(cx, cy, held), inside)


def test_neighbours_across_an_elongated_beam_are_two_sources() -> None:
    """A 6 x 2.5 px beam along y: sources 6 px apart in x are 2.4 beams apart, not one beam."""
    from cianna_otf_server.pipeline._beam_metric import BeamMetric

    rng = np.random.default_rng(3)
    size = 96
    image = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    sx, sy = 2.5 / math.sqrt(8 * math.log(2)), 6.0 / math.sqrt(8 * math.log(2))
    for x, peak in ((40.0, 80.0), (46.0, 15.0)):
        image += (peak * np.exp(-((xx - x) ** 2 / (2 * sx ** 2) + (yy - 48.0) ** 2 / (2 * sy ** 2)))).astype(np.float32)
    box = boxes_at([(40.0, 48.0)], side=8.0)
    measurement = measure_sources(image, box, 6.0, 2.5, beam_angle=0.0)
    found = component_boxes(image, box, measurement, 4.0, 6.0, 2.5, 0.0)
    assert len(found) == 1 and abs(found.x_center[0] - 46.0) <= 1.0
    # measured in major axes (a round 6 px beam) the neighbour is within one beam: none found
    assert len(component_boxes(image, box, measurement, 4.0, 6.0)) == 0
    # one per peak: 6 px apart is 2.4 beams across this beam, and 1 beam for a round one
    x, y = np.array([40.0, 46.0]), np.array([48.0, 48.0])
    assert one_per_peak(x, y, np.array([0.9, 0.5]), 1.0, BeamMetric.of(6.0, 2.5, 0.0)).all()
    assert not one_per_peak(x, y, np.array([0.9, 0.5]), 6.5).all()


def test_a_compact_detection_does_not_own_its_whole_box() -> None:
    """The network's box on a bright point source reaches over a neighbour 2 beams away."""
    image = sky([(40.0, 40.0, 400.0), (45.0, 40.0, 20.0)])  # 2 beams apart
    box = boxes_at([(40.0, 40.0)], side=14.0)  # the neighbour lies inside the box
    found = components(image, box)
    assert len(found) == 1 and abs(found.x_center[0] - 45.0) <= 1.0


def test_the_sidelobe_ratio_falls_with_distance_from_a_bright_source() -> None:
    from cianna_otf_server.pipeline._components import DeblendSettings

    # a 5000-sigma source B, a detected 200-sigma source A 4.8 beams from it, and an 80-sigma
    # neighbour N of A: 7.2 beams from B (above the ratio there), or 3 beams (below 3% of B); the
    # rule as it applies on an image that shows sidelobes (these skies show none: factor 1)
    falling = DeblendSettings(sidelobe_ratio_clean=1.0)
    far = sky([(24.0, 48.0, 5000.0), (36.0, 48.0, 200.0), (42.0, 48.0, 80.0)])
    detected = boxes_at([(24.0, 48.0), (36.0, 48.0)])
    measurement = measure_sources(far, detected, BEAM, BEAM)
    found = component_boxes(far, detected, measurement, 4.0, BEAM, settings=falling)
    assert len(found) == 1 and abs(found.x_center[0] - 42.0) <= 1.0
    constant = dataclasses.replace(falling, sidelobe_slope=0.0)  # the former rule: 3% of B out to 8 beams
    assert len(component_boxes(far, detected, measurement, 4.0, BEAM, settings=constant)) == 0

    near = sky([(24.0, 48.0, 5000.0), (31.5, 48.0, 80.0), (40.0, 48.0, 200.0)])
    detected = boxes_at([(24.0, 48.0), (40.0, 48.0)])
    near_measured = measure_sources(near, detected, BEAM, BEAM)
    assert len(component_boxes(near, detected, near_measured, 4.0, BEAM, settings=falling)) == 0
    # with the shipped setting, a sky without sidelobes keeps N
    assert len(component_boxes(near, detected, near_measured, 4.0, BEAM)) == 1


def _rescue(image: np.ndarray, standing: Boxes, candidates: Boxes, rescue_snr: float = 8.0) -> np.ndarray:
    """`rescued` as `YoloDetection` calls it: both sets measured, the standing ones' measured peaks."""
    from cianna_otf_server.pipeline._components import rescued

    held, measured = measure_sources(image, standing, BEAM, BEAM), measure_sources(image, candidates, BEAM, BEAM)
    return rescued(measured, candidates.objectness, held, held.peak, rescue_snr, BEAM)


def test_a_bright_source_scored_below_the_threshold_is_rescued_and_a_faint_one_is_not() -> None:
    image = sky([(20.0, 20.0, 60.0), (70.0, 70.0, 7.0), (20.0, 75.0, 30.0)])  # the 7 measures 5.3
    standing = boxes_at([(20.0, 75.0)])
    candidates = boxes_at([(20.0, 20.0), (70.0, 70.0)], score=[0.3, 0.3])
    assert _rescue(image, standing, candidates).tolist() == [True, False]  # 60 sigma kept; 5.3 < rescue_snr 8
    assert _rescue(image, standing, candidates, rescue_snr=5.0).tolist() == [True, True]
    nothing = boxes_at([(20.0, 75.0)]).take(np.zeros(0, dtype=np.int64))
    assert _rescue(image, nothing, candidates).tolist() == [True, False]  # no standing detection at all


def test_a_sidelobe_level_peak_next_to_a_very_bright_source_is_not_rescued() -> None:
    # a 40-sigma peak 3 beams from a 5000-sigma detection: below 3% of it (150 sigma)
    image = sky([(30.0, 48.0, 5000.0), (37.5, 48.0, 40.0)])
    candidate = boxes_at([(37.5, 48.0)], score=[0.3])
    assert _rescue(image, boxes_at([(30.0, 48.0)]), candidate).tolist() == [False]
    alone = sky([(37.5, 48.0, 40.0), (80.0, 80.0, 50.0)])  # the same peak without the bright neighbour
    assert _rescue(alone, boxes_at([(80.0, 80.0)]), candidate).tolist() == [True]


def test_a_rescued_box_does_not_duplicate_a_standing_detection_or_another_candidate() -> None:
    image = sky([(40.0, 40.0, 50.0), (70.0, 40.0, 30.0)])
    standing = boxes_at([(40.0, 40.0)])
    # one candidate on the standing source, two on the other source (the better scored is kept)
    candidates = boxes_at([(41.0, 40.0), (70.0, 40.0), (70.5, 40.5)], score=[0.3, 0.2, 0.25])
    assert _rescue(image, standing, candidates).tolist() == [False, False, True]


def test_a_broad_bright_detection_owns_its_box_only_near_its_centre() -> None:
    """A 52-sigma source 2.5 beams from a 148-sigma one, with a dip between: two sources.

    The bright detection's fit is broadened by the neighbour, so it is not compact and its box
    (which covers the neighbour) owns every peak inside it unless ``owned_within_beams`` bounds that.
    """
    from cianna_otf_server.pipeline._components import DeblendSettings

    image = sky([(40.0, 40.0, 148.0), (40.0 + 2.5 * BEAM, 40.0, 52.0)])
    box = boxes_at([(40.0, 40.0)], side=16.0)  # the neighbour lies inside the box
    measurement = measure_sources(image, box, BEAM, BEAM)
    assert measurement.major[0] > 1.3 * BEAM  # fitted as resolved: it owns its box
    whole_box = DeblendSettings(owned_within_beams=math.inf)
    assert len(component_boxes(image, box, measurement, 4.0, BEAM, settings=whole_box)) == 0
    for within in (1.5, 2.0):
        found = component_boxes(image, box, measurement, 4.0, BEAM,
                                settings=DeblendSettings(owned_within_beams=within))
        assert len(found) == 1 and abs(found.x_center[0] - (40.0 + 2.5 * BEAM)) <= 1.0
    # a knot within the owned distance stays the detection's
    assert len(component_boxes(image, box, measurement, 4.0, BEAM,
                               settings=DeblendSettings(owned_within_beams=3.0))) == 0


def test_a_component_next_to_a_very_bright_parent_gets_a_bounded_box_and_survives() -> None:
    """A 34-sigma peak 4.4 beams from an 886-sigma source whose network box is 12 beams wide.

    With its parent's size, the component's box reaches the bright source, its fit lands there
    and one detection per peak drops it; with ``component_box_beams`` it measures its own peak.
    """
    from cianna_otf_server.pipeline._components import DeblendSettings

    x = 40.0 + 4.4 * BEAM
    image = sky([(40.0, 48.0, 886.0), (x, 48.0, 34.0)])
    box = boxes_at([(40.0, 48.0)], side=30.0)
    measurement = measure_sources(image, box, BEAM, BEAM)

    def kept(settings: DeblendSettings) -> tuple[Boxes, np.ndarray, object]:
        found = component_boxes(image, box, measurement, 4.0, BEAM, settings=settings)
        assert len(found) == 1 and abs(found.x_center[0] - x) <= 1.0  # the peak is found either way
        fitted = measure_sources(image, found, BEAM, BEAM)
        keep = one_per_peak(np.r_[measurement.x, fitted.x], np.r_[measurement.y, fitted.y],
                            np.r_[box.objectness, found.objectness], BEAM)  # 1 beam, as `_deblend`
        return found, keep, fitted

    found, keep, _ = kept(DeblendSettings(component_box_beams=math.inf))
    assert np.allclose(found.width, 30.0) and keep.tolist() == [True, False]  # fitted on the parent: dropped
    for side in (2.0, 3.0, 6.0):
        found, keep, fitted = kept(DeblendSettings(component_box_beams=side))
        assert np.allclose(found.width, side * BEAM) and np.allclose(found.height, side * BEAM)
        assert keep.tolist() == [True, True]
        assert abs(fitted.x[0] - x) <= 0.5 and 30.0 <= fitted.peak[0] <= 38.0
    # a parent smaller than the cap gives its own size
    small = boxes_at([(40.0, 48.0)], side=10.0)
    found = component_boxes(image, small, measure_sources(image, small, BEAM, BEAM), 4.0, BEAM,
                            settings=DeblendSettings(component_box_beams=6.0))
    assert len(found) == 1 and np.allclose(found.width, 10.0)


def _ring(image: np.ndarray, x: float, y: float, radius: float = 10.0, level: float = 12.0) -> np.ndarray:
    """`image` with a sidelobe ring of six knots (up to 2 * level) around (x, y)."""
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    r, angle = np.hypot(xx - x, yy - y), np.arctan2(yy - y, xx - x)
    return image + (level * np.exp(-((r - radius) ** 2) / 2.0) * (1.0 + np.cos(6 * angle))).astype(np.float32)


def test_a_neighbour_of_a_very_bright_source_is_kept_unless_the_image_shows_sidelobes() -> None:
    from cianna_otf_server.pipeline._components import DEFAULT_SETTINGS, DeblendSettings

    # a real 40-sigma source 4 beams from a 3000-sigma one, between two knots of where a ring would be
    x, y = 48.0 + 10.0 * math.cos(math.radians(30.0)), 48.0 + 10.0 * math.sin(math.radians(30.0))
    clean = sky([(48.0, 48.0, 3000.0), (x, y, 40.0)])
    detected = boxes_at([(48.0, 48.0)])
    adaptive = DEFAULT_SETTINGS if DEFAULT_SETTINGS.sidelobe_ratio_clean < 1.0 else \
        dataclasses.replace(DEFAULT_SETTINGS, sidelobe_ratio_clean=0.2)
    found = component_boxes(clean, detected, measure_sources(clean, detected, BEAM, BEAM), 4.0, BEAM,
                            settings=adaptive)
    assert len(found) == 1 and abs(found.x_center[0] - x) <= 1.0 and abs(found.y_center[0] - y) <= 1.0
    # the same rule on every image (factor 1): below 3% of the bright source, dropped
    same = dataclasses.replace(adaptive, sidelobe_ratio_clean=1.0)
    assert len(component_boxes(clean, detected, measure_sources(clean, detected, BEAM, BEAM), 4.0, BEAM,
                               settings=same)) == 0
    # with a sidelobe ring around the bright source the image shows sidelobes: the full ratio
    ringed = _ring(clean, 48.0, 48.0)
    assert len(component_boxes(ringed, detected, measure_sources(ringed, detected, BEAM, BEAM), 4.0, BEAM,
                               settings=adaptive)) == 0
    # and a bright source's ring is still no source with the factor
    ring_only = _ring(sky([(48.0, 48.0, 2000.0)]), 48.0, 48.0)
    assert len(component_boxes(ring_only, detected, measure_sources(ring_only, detected, BEAM, BEAM), 4.0, BEAM,
                               settings=adaptive)) == 0
    assert isinstance(adaptive, DeblendSettings)
