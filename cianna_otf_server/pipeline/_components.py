"""Separate the sources a network's boxes merged: significant peaks around its detections.

A detection network trained on skies with double-lobed sources learns to put one box on a pair
of blobs, and its NMS, which compares boxes, lets one beam-sized box suppress a neighbour two or
three beams away. On a real sky most close pairs are two unrelated sources (or two components a
catalogue lists apart). Measured in the image (`measure_sources`), a box between two sources
finds noise under its centre and is dropped by the card's ``min_peak_snr``, taking both with it;
a box on the brighter of two neighbours measures that one and the other is lost. On the
generalisation benchmark these were most of the sources above SNR 10 that the network missed
and the classic finder found (VLASS-like and confusion-limited skies).

The image knows where the sources are. Around every detection (its measured centre, or its box
centre when the measurement failed; out to `SEARCH_BEAMS` beams beyond a typical box's edge)
this step takes the local maxima of the signal-to-noise image (as the model sees it) and keeps
a peak as a new component when it

* reaches the card's ``min_peak_snr``;
* lies farther than `DISTINCT_BEAMS` beams from every standing detection's centre (one whose
  measured peak meets the threshold) and outside its box (a knot of an extended source, or the
  other lobe of a double the network boxed whole, belongs to that detection);
* is brighter than `SIDELOBE_RATIO` of every standing detection within `SIDELOBE_KNEE_BEAMS`
  beams, and than a ratio falling as the inverse square of the distance beyond, out to
  `SIDELOBE_BEAMS` (sidelobe and calibration patterns sit at a few per cent of their source,
  their rings at a few beams, fading outward; the network learnt to leave them alone);
* on an image that shows no sidelobes (below), is brighter than ``sidelobe_ratio_clean`` times
  that level instead;
* is separated from that neighbour by a dip (the pixels between them fall below `DIP` of the
  peak): a distinct source, not the shoulder of the same one.

Whether the image shows sidelobes is read from the peaks already found (`_sidelobe_evidence`):
the local maxima at or above ``min_peak_snr`` that are no standing detection's own (farther than
`DISTINCT_BEAMS` from every standing centre) are counted within `SIDELOBE_EVIDENCE_BEAMS` beams
to `SIDELOBE_BEAMS` (or the search window's radius, if less) of each standing detection brighter
than `SIDELOBE_BRIGHT_SNR`, and of each fainter one. The faint detections' count per detection
is what the same area holds on that sky (real neighbours, noise peaks, the sky's clustering),
measured in the same windows, so the density of the sky, its beam and its threshold cancel; a
sidelobe pattern adds many peaks (a ring of a few at a few beams) around every bright source.
The excess is significant when the bright detections' count exceeds its expectation ``m`` (the
faint rate times their number) by more than ``sidelobe_excess_sigma * sqrt(m + 1)`` (Poisson,
the ``+ 1`` so that one real neighbour of the only bright source on a sky without faint
detections is no evidence). A simple count against a rate measured on the same image needs no
model of the sidelobes' shape and no calibration per survey. Without significant excess, or
without a bright detection, the sidelobe ratio is scaled by ``sidelobe_ratio_clean``: on skies
without artefacts, the full ratio dropped real 5-50 sigma sources a few beams from sources of
a thousand sigma and more. The decision is one per call (the catalogue's whole region); the
shipped factor 0 drops no peak as a sidelobe on an image without evidence (the dip and the
ownership rules still apply), and ``sidelobe_ratio_clean`` 1 is the former behaviour (the count
is not made). `rescued` keeps the full ratio (it has no peaks to count).

Each kept peak becomes a box of its parent detection's size centred on the peak (each side at
most `COMPONENT_BOX_BEAMS` beam major axes), with the parent's objectness, prior and tile, and
is then measured like every detection. A detection with no significant peak nearby stays
dropped, as before.

Distances are measured in beams along the line that joins two points (`BeamMetric`): with an
elongated beam, two sources side by side across its minor axis are as far apart, in beams, as
twice that separation along its major axis. Measured in major axes, such pairs were taken for
one source (most of the bright sources lost on a 6 x 2.5 px beam). A compact standing detection
(fitted as about one beam) owns the pixels within `DISTINCT_BEAMS` of its centre, not its
whole box: the network's box on a bright point source reaches well beyond the source, over its
neighbours; the box still owns what lies inside it for a resolved or complex detection, out to
`OWNED_WITHIN_BEAMS` beams from its centre, and beyond that what no dip parts from it.

Two limits bound what a bright detection's box does to its neighbours. Its fit is broadened by
the very neighbour it hides, so it may count as non-compact and own its whole box, however far
the neighbour lies and however deep the dip between them: ``owned_within_beams`` caps the
distance out to which a non-compact detection owns the peaks inside its box (a peak beyond it
must still be parted from the detection by a dip, at any distance: far along an extended
source's ridge, a noise bump on its wing is not a source). And a component's
box is its parent's size: next to a very bright parent, whose network box is large, the box
(and so the fit, `measure_sources` in the box) reaches the bright wing, the fit lands on the
parent and `one_per_peak` drops the component as a duplicate; ``component_box_beams`` caps its
side (infinity, for either, is the former behaviour: no limit).

The constants below are the defaults of `DeblendSettings`; `component_boxes` takes another
setting (``settings=``) for tuning (``benchmarks/tune_deblend.py``).

The work is a few array operations over stacks of equal windows (one per detection), so it
costs what the pixels around the catalogue cost, not a Python loop per source.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ._beam_metric import BeamMetric
from ._boxes import Boxes
from ._measure import Measurement
from ._windows import STACK_PIXELS, read_windows

__all__ = ["BeamMetric", "DeblendSettings", "DEFAULT_SETTINGS", "component_boxes", "one_per_peak", "greedy_apart",
           "rescued",
           "COMPACT_BEAMS", "PEAK_DISTANCE_BEAMS", "SEARCH_BEAMS", "DISTINCT_BEAMS", "SIDELOBE_RATIO",
           "SIDELOBE_BEAMS", "SIDELOBE_KNEE_BEAMS", "SIDELOBE_SLOPE", "DIP", "OWNED_WITHIN_BEAMS",
           "COMPONENT_BOX_BEAMS", "SIDELOBE_BRIGHT_SNR", "SIDELOBE_RATIO_CLEAN", "SIDELOBE_EXCESS_SIGMA",
           "SIDELOBE_EVIDENCE_BEAMS"]

# The sidelobe rule and the dip were chosen by benchmarks/tune_deblend.py on 16 held-out skies
# of yolo-demo 2's training recipe (2048 px, seeds from 7,000,000; results/deblend_tuning.json):
# recall of SNR >= 5 sources 0.8983 -> 0.9037 at pooled precision 0.9694 -> 0.9689, no image
# more than 0.003 below its earlier precision. The former constant ratio (0.03 within 8 beams,
# dip 0.75) dropped every neighbour of a 5000-sigma source below 150 sigma out to 8 beams; now
# 150 sigma out to 4 beams, 38 sigma at 8. No constant ratio of the grid (0.01-0.03 within 4-8
# beams) kept the precision of the skies with artefacts (0.64-0.91 on the one with the strongest,
# 0.92 before).

#: Components are looked for this many beam FWHMs around each detection's centre.
SEARCH_BEAMS = 3.0
#: A peak closer than this many beams to a standing detection's centre is that detection's.
DISTINCT_BEAMS = 1.25
#: A peak fainter than this fraction of a standing neighbour's peak may be its sidelobe.
SIDELOBE_RATIO = 0.03
#: Sidelobe and calibration patterns reach this many beams from their source.
SIDELOBE_BEAMS = 8.0
#: Beyond this many beams from the neighbour the sidelobe ratio falls as ``(knee / d) ** SIDELOBE_SLOPE``
#: (sidelobe rings of a point source lie at a few beams and fade outward); slope 0: a constant ratio.
SIDELOBE_KNEE_BEAMS = 4.0
SIDELOBE_SLOPE = 2.0
#: The pixels between a peak and its neighbour must fall below this fraction of the peak.
DIP = 0.85
#: Two detections whose measured centres are closer than this many beams measure one source.
PEAK_DISTANCE_BEAMS = 1.0
#: A detection fitted with a major axis up to this many beam major axes is compact (owns no box).
COMPACT_BEAMS = 1.3
# Ownership and the component's box were chosen by benchmarks/tune_deblend.py --stage ownership on
# the same 16 held-out skies (2026-12-08, results/deblend_tuning_ownership.json; owned 1.5-3 or
# the whole box x box side 2-6 beam major axes or the parent's, at dip 0.75 and 0.85): recall of
# SNR >= 5 sources 0.9039 -> 0.9075 at pooled precision 0.9685 -> 0.9664, every image at 0.95 or
# more or no more than 0.003 below its earlier precision (the largest fall: 0.967 -> 0.952). Boxes
# of 2 beams lost more precision than the slack allows (0.9651 at owned 1.5); 1.5 beams is the
# grid's shortest owned distance.
#: A non-compact standing detection owns the peaks inside its box out to this many beams from its
#: measured centre (`BeamMetric` distance); infinity: its whole box.
OWNED_WITHIN_BEAMS = 1.5
#: A component's box side is at most this many beam major axes (infinity: its parent's size).
COMPONENT_BOX_BEAMS = 3.0
# The evidence of sidelobes and the factor on a clean image were chosen by benchmarks/tune_deblend.py
# --stage adaptive on the same 16 held-out skies (2026-12-08, results/deblend_tuning_adaptive.json;
# factor 1, 0.5, 0.3, 0.2, 0.1, 0 x bright level 100, 300, 1000 sigma x excess 2, 3): recall of
# SNR >= 5 sources 0.9075 -> 0.9110 (29912 -> 30029) at pooled precision 0.9664 -> 0.9660, every
# image no more than 0.002 below its earlier precision; the 8 skies with artefacts unchanged (each
# showed its sidelobes), the gain all on skies without. Excess 2 and 3 gave the same catalogues
# (the rule keeps the first); a bright level of 1000 sigma failed the precision rule (a sky with
# artefacts, 7000019, 0.942 -> 0.895: its sidelobes went unseen), 100 gained less (0.9092).
# Factor 0: on an image without sidelobes no peak is dropped as one (0.1 and 0.2: 0.9107, 0.9102).
#: Standing detections at least this bright (sigmas) are looked at for evidence of sidelobes.
SIDELOBE_BRIGHT_SNR = 300.0
#: The sidelobe ratio is scaled by this factor on an image without evidence of sidelobes (1: the
#: same rule on every image, the former behaviour).
SIDELOBE_RATIO_CLEAN = 0.0
#: The excess of peaks around the bright detections is evidence when it exceeds this many
#: ``sqrt(expected + 1)``.
SIDELOBE_EXCESS_SIGMA = 2.0
#: The evidence's annulus starts this many beams from the detection (inside it: its own wing).
SIDELOBE_EVIDENCE_BEAMS = 1.5
#: Points sampled along the line from a peak to its neighbour for the dip.
_DIP_SAMPLES = (0.25, 0.4, 0.5, 0.6, 0.75)


@dataclass(frozen=True)
class DeblendSettings:
    """The constants of `component_boxes`, module constants of the same names as defaults.

    ``sidelobe_ratio`` applies out to ``sidelobe_knee_beams`` from the bright neighbour and falls
    as ``(sidelobe_knee_beams / d) ** sidelobe_slope`` beyond (``d`` in beam major axes), out to
    ``sidelobe_beams``; with ``sidelobe_slope`` 0 the ratio is the same at every distance.

    ``owned_within_beams``: a non-compact standing detection owns the peaks inside its box only
    within this many beams of its centre (its fit, broadened by the neighbour it hides, may make
    a bright point source look resolved and its network box reach over distinct neighbours);
    beyond it a peak in the box is released only if a dip (``dip``) parts it from the detection.
    ``component_box_beams``: each side of a component's box is at most this many beam major axes
    (a bright parent's large box would reach its wing and the component's fit land on it).
    Infinity: no limit (the former behaviour).

    ``sidelobe_ratio_clean``: the factor on ``sidelobe_ratio`` on an image that shows no sidelobes
    (no significant excess of peaks around the standing detections of at least
    ``sidelobe_bright_snr`` over the fainter ones', by ``sidelobe_excess_sigma``); 1: the former
    behaviour.
    """

    search_beams: float = SEARCH_BEAMS
    distinct_beams: float = DISTINCT_BEAMS
    sidelobe_ratio: float = SIDELOBE_RATIO
    sidelobe_beams: float = SIDELOBE_BEAMS
    sidelobe_knee_beams: float = SIDELOBE_KNEE_BEAMS
    sidelobe_slope: float = SIDELOBE_SLOPE
    dip: float = DIP
    compact_beams: float = COMPACT_BEAMS
    owned_within_beams: float = OWNED_WITHIN_BEAMS
    component_box_beams: float = COMPONENT_BOX_BEAMS
    sidelobe_bright_snr: float = SIDELOBE_BRIGHT_SNR
    sidelobe_ratio_clean: float = SIDELOBE_RATIO_CLEAN
    sidelobe_excess_sigma: float = SIDELOBE_EXCESS_SIGMA


#: The shipped setting.
DEFAULT_SETTINGS = DeblendSettings()


def component_boxes(pixels: Any, boxes: Boxes, measurement: Measurement, min_peak_snr: float,
                    beam_major: float, beam_minor: float | None = None,
                    beam_angle: float | None = None, settings: DeblendSettings | None = None) -> Boxes:
    """New boxes for the significant peaks around `boxes` that no detection accounts for.

    Parameters
    ----------
    pixels : array-like
        The signal-to-noise image as the model sees it (``pixels[y0:y1, x0:x1]``, NaN blanks;
        a `DomainView`'s data reads many windows at once).
    boxes : Boxes
        The detections, in the frame of `pixels` (model pixels).
    measurement : Measurement
        Their measurement in that frame (`measure_sources`).
    min_peak_snr : float
        The card's threshold on the measured peak, in sigmas.
    beam_major : float
        Beam FWHM major axis in pixels of that frame.
    beam_minor, beam_angle : float, optional
        Its minor axis (pixels) and major-axis angle (degrees from +y towards -x); without them
        the beam is taken as round.
    settings : DeblendSettings, optional
        The constants (default `DEFAULT_SETTINGS`).

    Returns
    -------
    Boxes
        One box per new component (not measured yet); empty when there is none.
    """
    s = DEFAULT_SETTINGS if settings is None else settings
    none = boxes.take(np.zeros(0, dtype=np.int64))
    if len(boxes) == 0 or min_peak_snr <= 0:
        return none
    beam = max(1.0, float(beam_major))
    metric = BeamMetric.of(beam_major, beam_minor, beam_angle)
    peak = np.nan_to_num(np.asarray(measurement.peak, dtype=np.float64), nan=-np.inf)
    standing = peak >= min_peak_snr
    mx = np.where(standing & np.isfinite(measurement.x), measurement.x, boxes.x_center)
    my = np.where(standing & np.isfinite(measurement.y), measurement.y, boxes.y_center)
    size = float(np.median(np.maximum(boxes.width, boxes.height)))
    cx, cy, value, owner = _local_peaks(pixels, mx, my, min_peak_snr, beam, 0.5 * size, s.search_beams)
    if len(cx) == 0:
        return none
    where = metric.whiten(cx, cy)
    # the cheap test first: most peaks found are the standing detections' own
    if standing.any():
        sx, sy, speak = mx[standing], my[standing], peak[standing]
        distance, nearest = cKDTree(metric.whiten(sx, sy)).query(where)
        distance, nearest = np.asarray(distance), np.asarray(nearest)
        alive = np.flatnonzero(distance > s.distinct_beams)
        owning = np.flatnonzero(standing)
        owning = owning[~_compact(measurement, owning, metric, s.compact_beams)]
        ox, oy = mx[owning], my[owning]
        owned, far, by = _owned_by_boxes(cx[alive], cy[alive], boxes.take(owning), ox, oy, metric,
                                         s.owned_within_beams)
        # a peak a box holds beyond the owned distance is released only if a dip parts it from
        # that detection (the dip test below reaches 2 search radii of the nearest detection
        # only: far along an extended source's ridge a noise bump on its wing would pass)
        if len(far):
            k = alive[far]
            parted = _dipped(pixels, cx[k], cy[k], value[k], ox[by], oy[by], s.dip)
            owned[far[~parted]] = True
        alive = alive[~owned]
        rule = s
        if s.sidelobe_ratio_clean != 1.0 and len(alive):
            reach = min(s.sidelobe_beams * beam, s.search_beams * beam + 0.5 * size)
            loose = np.flatnonzero(distance > s.distinct_beams)
            if not _sidelobe_evidence(cx[loose], cy[loose], sx, sy, speak, beam, reach, s):
                rule = dataclasses.replace(s, sidelobe_ratio=s.sidelobe_ratio * s.sidelobe_ratio_clean)
        alive = alive[value[alive] >= _sidelobe_level(cx[alive], cy[alive], sx, sy, speak, beam, rule)]
        close = alive[distance[alive] <= 2.0 * s.search_beams]
        if len(close):
            dipped = _dipped(pixels, cx[close], cy[close], value[close], sx[nearest[close]], sy[nearest[close]],
                             s.dip)
            alive = np.setdiff1d(alive, close[~dipped])
    else:
        alive = np.arange(len(cx))
    keep = np.zeros(len(cx), dtype=bool)
    apart = greedy_apart(where[alive, 0], where[alive, 1], value[alive], s.distinct_beams)
    keep[alive[apart]] = True
    if not keep.any():
        return none
    cx, cy, owner = cx[keep], cy[keep], owner[keep]
    out = boxes.take(owner)
    # each side capped on its own (a square box when both exceed the cap), not the parent's
    # aspect scaled down: the component is a peak of about one beam, and scaling an elongated
    # parent's box would cut its short side below the beam's footprint, which the fit needs
    cap = s.component_box_beams * beam
    half_w, half_h = 0.5 * np.minimum(out.width, cap), 0.5 * np.minimum(out.height, cap)
    # corners follow the box convention: pixel k spans [k, k+1], centre (x_min + x_max)/2 - 0.5
    out.x_min, out.x_max = cx + 0.5 - half_w, cx + 0.5 + half_w
    out.y_min, out.y_max = cy + 0.5 - half_h, cy + 0.5 + half_h
    return out


def _local_peaks(pixels: Any, mx: np.ndarray, my: np.ndarray, level: float, beam: float,
                 half_box: float, search_beams: float = SEARCH_BEAMS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The local maxima at or above `level` in a window around each centre, each peak once.

    The window reaches `search_beams` beams beyond a typical box's half side (`half_box`).
    Returns the peaks' pixel coordinates, values and the index of a detection whose window
    holds them. A peak is the highest pixel within about a beam; one on a window's border
    may be the slope of something outside it and is left to the window that holds it inside.
    """
    ny, nx = (int(v) for v in pixels.shape)
    reach = int(math.ceil(search_beams * beam + half_box))
    side = 2 * reach + 1
    footprint = 2 * max(1, int(round(0.5 * beam))) + 1
    x0 = np.floor(mx + 0.5).astype(np.int64) - reach
    y0 = np.floor(my + 0.5).astype(np.int64) - reach
    per_stack = max(1, STACK_PIXELS // (side * side))
    found: list[tuple[np.ndarray, ...]] = []
    for start in range(0, len(mx), per_stack):
        part = slice(start, start + per_stack)
        values = _windows(pixels, y0[part], x0[part], side)
        values = np.where(np.isfinite(values), values, -np.inf)
        highest = ndimage.maximum_filter(values, size=(1, footprint, footprint), mode="constant", cval=-np.inf)
        is_peak = (values == highest) & (values >= level)
        is_peak[:, 0, :] = is_peak[:, -1, :] = False
        is_peak[:, :, 0] = is_peak[:, :, -1] = False
        k, iy, ix = np.nonzero(is_peak)
        found.append((x0[part][k] + ix, y0[part][k] + iy, values[k, iy, ix].astype(np.float64), start + k))
    px, py, value, owner = (np.concatenate(column) for column in zip(*found))
    inside = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    px, py, value, owner = px[inside], py[inside], value[inside], owner[inside]
    _, first = np.unique(py * nx + px, return_index=True)
    return px[first].astype(np.float64), py[first].astype(np.float64), value[first], owner[first]


def _windows(pixels: Any, y0: np.ndarray, x0: np.ndarray, side: int) -> np.ndarray:
    """``[n, side, side]`` windows of `pixels` (NaN beyond it), read as one stack where it can."""
    reader = getattr(pixels, "windows", None)
    stack = reader(y0, x0, side, side) if callable(reader) else None
    if stack is None:
        stack = read_windows(pixels, y0, x0, side, side, np.float32)
    return np.asarray(stack)


def _inside_boxes(cx: np.ndarray, cy: np.ndarray, held: Boxes) -> np.ndarray:
    """Which points lie inside any of the boxes (0-based pixel centres, box corners ``[k, k+1]``)."""
    k, _ = _box_pairs(cx, cy, held)
    inside = np.zeros(len(cx), dtype=bool)
    inside[k] = True
    return inside


def _owned_by_boxes(cx: np.ndarray, cy: np.ndarray, held: Boxes, hx: np.ndarray, hy: np.ndarray,
                    metric: BeamMetric, within: float = math.inf
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points the boxes own: inside a box and within `within` beams (`metric`) of its centre ``(hx, hy)``.

    A bright detection's box may reach well beyond its source, over distinct neighbours
    (``owned_within_beams``). Also returns the pairs (point, box) of the boxes that hold a point
    beyond that distance, for the points no box owns.
    """
    k, j = _box_pairs(cx, cy, held)
    owned = np.zeros(len(cx), dtype=bool)
    if not math.isfinite(within):
        owned[k] = True
        return owned, k[:0], j[:0]
    near = metric.squared(cx[k] - np.asarray(hx, dtype=np.float64)[j],
                          cy[k] - np.asarray(hy, dtype=np.float64)[j]) <= within * within
    owned[k[near]] = True
    far = ~near & ~owned[k]
    return owned, k[far], j[far]


def _box_pairs(cx: np.ndarray, cy: np.ndarray, held: Boxes) -> tuple[np.ndarray, np.ndarray]:
    """``(k, j)``: every point ``k`` inside box ``j`` (0-based pixel centres, box corners ``[k, k+1]``)."""
    if len(held) == 0 or len(cx) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    reach = 0.5 * float(np.max(np.hypot(held.width, held.height))) + 1.0
    k, j = _pairs_within(cx, cy, held.x_center, held.y_center, reach)
    hit = ((held.x_min[j] - 0.5 <= cx[k]) & (cx[k] <= held.x_max[j] - 0.5)
           & (held.y_min[j] - 0.5 <= cy[k]) & (cy[k] <= held.y_max[j] - 0.5))
    return k[hit], j[hit]


def _sidelobe_level(cx: np.ndarray, cy: np.ndarray, sx: np.ndarray, sy: np.ndarray, speak: np.ndarray,
                    beam: float, s: DeblendSettings) -> np.ndarray:
    """The level each point must reach not to be a sidelobe of a standing detection (0 if none near).

    ``sidelobe_ratio`` of the brightest standing detection within ``sidelobe_beams`` beams; with a
    ``sidelobe_slope``, the largest of each such neighbour's peak times the ratio at its distance.
    """
    radius = s.sidelobe_beams * beam
    if s.sidelobe_slope == 0:
        return s.sidelobe_ratio * _brightest_near(cx, cy, sx, sy, speak, radius)
    out = np.zeros(len(cx))
    if len(cx) == 0 or len(sx) == 0:
        return out
    k, j = _pairs_within(cx, cy, sx, sy, radius)
    d = np.hypot(cx[k] - sx[j], cy[k] - sy[j]) / beam
    ratio = s.sidelobe_ratio * np.minimum(1.0, s.sidelobe_knee_beams / np.maximum(d, 1e-9)) ** s.sidelobe_slope
    np.maximum.at(out, k, ratio * np.asarray(speak, dtype=np.float64)[j])
    return out


def _sidelobe_evidence(cx: np.ndarray, cy: np.ndarray, sx: np.ndarray, sy: np.ndarray, speak: np.ndarray,
                       beam: float, reach: float, s: DeblendSettings) -> bool:
    """Whether the image shows sidelobes: more peaks around its bright standing detections than its faint ones hold.

    ``(cx, cy)``: the local peaks that are no standing detection's own; ``(sx, sy, speak)``: the
    standing detections. Peaks are counted (pairs: a peak near two detections counts for each)
    from `SIDELOBE_EVIDENCE_BEAMS` beams to `reach` pixels of each detection (within the search
    windows, which every detection has alike). The bright ones' count is evidence when it exceeds
    the faint ones' rate times their number ``m`` by more than ``sidelobe_excess_sigma * sqrt(m + 1)``.
    """
    bright = np.asarray(speak, dtype=np.float64) >= s.sidelobe_bright_snr
    n_bright = int(bright.sum())
    if n_bright == 0 or len(cx) == 0:
        return False
    k, j = _pairs_within(cx, cy, sx, sy, reach)
    inner = SIDELOBE_EVIDENCE_BEAMS * beam
    ring = np.hypot(cx[k] - sx[j], cy[k] - sy[j]) >= inner
    held = bright[j[ring]]
    n_faint = len(sx) - n_bright
    rate = float(np.sum(~held)) / n_faint if n_faint else 0.0
    expected = rate * n_bright
    return float(np.sum(held)) > expected + s.sidelobe_excess_sigma * math.sqrt(expected + 1.0)


def _brightest_near(cx: np.ndarray, cy: np.ndarray, sx: np.ndarray, sy: np.ndarray, speak: np.ndarray,
                    radius: float) -> np.ndarray:
    """The highest peak among the standing detections within `radius` of each point (0 if none)."""
    out = np.zeros(len(cx))
    if len(cx) == 0 or len(sx) == 0:
        return out
    k, j = _pairs_within(cx, cy, sx, sy, radius)
    np.maximum.at(out, k, np.asarray(speak, dtype=np.float64)[j])
    return out


def _pairs_within(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray,
                  radius: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k, j)``: every point ``k`` of a and ``j`` of b at most `radius` apart (one pair of trees, no loop)."""
    pairs = cKDTree(np.c_[ax, ay]).sparse_distance_matrix(cKDTree(np.c_[bx, by]), radius, output_type="ndarray")
    return pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)


def _dipped(pixels: Any, cx: np.ndarray, cy: np.ndarray, value: np.ndarray, sx: np.ndarray,
            sy: np.ndarray, dip: float = DIP) -> np.ndarray:
    """Whether the pixels on the line from each peak to its neighbour fall below `dip` of the peak."""
    lowest = np.full(len(cx), np.inf)
    for t in _DIP_SAMPLES:
        x = np.floor(cx + t * (sx - cx) + 0.5).astype(np.int64)
        y = np.floor(cy + t * (sy - cy) + 0.5).astype(np.int64)
        sample = _windows(pixels, y, x, 1)[:, 0, 0].astype(np.float64)
        lowest = np.fmin(lowest, sample)
    return lowest <= dip * value


def _compact(measurement: Measurement, index: np.ndarray, metric: BeamMetric,
             compact_beams: float = COMPACT_BEAMS) -> np.ndarray:
    """Which of the detections `index` were fitted as about one beam (a point source)."""
    major = np.asarray(measurement.major, dtype=np.float64)[index]
    fitted = np.asarray(measurement.fitted, dtype=bool)[index]
    return fitted & np.isfinite(major) & (major <= compact_beams * metric.major)


#: Rounds of `greedy_apart`'s fixed point before it walks the points one by one instead (a
#: chain of ever fainter neighbours that long does not occur on real skies).
_MAX_ROUNDS = 64


def greedy_apart(x: np.ndarray, y: np.ndarray, score: np.ndarray, distance: float) -> np.ndarray:
    """Keep mask of the greedy choice: by decreasing score, a point is kept unless a kept one within `distance` came first.

    A catalogue of a survey image holds 10^5 points: walked one by one in Python, with a tree
    query each, that is seconds. The greedy choice is the unique fixed point of "kept unless an
    earlier neighbour is kept" (each point depends on earlier ones only), so it is reached by a
    few vectorised rounds over the neighbour pairs found in one tree query, starting with every
    point kept; each round settles at least the next point in order. Ties keep the earlier index.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    pairs = cKDTree(np.c_[x, y]).query_pairs(distance, output_type="ndarray")
    if len(pairs) == 0:
        return np.ones(n, dtype=bool)
    a, b = pairs[:, 0], pairs[:, 1]
    a_first = rank[a] < rank[b]
    first, later = np.where(a_first, a, b), np.where(a_first, b, a)
    alive = np.ones(n, dtype=bool)
    for _ in range(_MAX_ROUNDS):
        updated = np.ones(n, dtype=bool)
        updated[later[alive[first]]] = False
        if np.array_equal(updated, alive):
            return alive
        alive = updated
    # the walk, point by point in order, over the same pairs
    neighbours = [[] for _ in range(n)]
    for i, j in zip(first.tolist(), later.tolist()):
        neighbours[i].append(j)
    alive = np.ones(n, dtype=bool)
    for k in order.tolist():
        if alive[k]:
            alive[neighbours[k]] = False
    return alive


def rescued(candidates: Measurement, score: np.ndarray, standing: Measurement, standing_peak: np.ndarray,
            rescue_snr: float, beam_major: float, beam_minor: float | None = None,
            beam_angle: float | None = None, settings: DeblendSettings | None = None) -> np.ndarray:
    """Which boxes scored below the network's threshold to keep for their significance (``[yolo] rescue_*``).

    The network scores some isolated, clearly significant sources just below its threshold; the
    image says they are real. A candidate is kept when its measured peak reaches `rescue_snr`,
    when it is not below the sidelobe level of a brighter standing detection (`_sidelobe_level`,
    as the deblending tests its peaks: the network learnt to score calibration sidelobes low, and
    those may be bright), and when no standing detection's measured centre lies within
    `PEAK_DISTANCE_BEAMS` beams of its own (the same source, as `one_per_peak` sees it); of
    candidates that measure one peak, the best scored is kept.

    Parameters
    ----------
    candidates, standing : Measurement
        The candidates' and the standing detections' measurements (same pixel frame as the beam).
    score : ndarray
        The candidates' objectness.
    standing_peak : ndarray
        The standing detections' peak SNR (the values the ``min_peak_snr`` cut kept them on).
    rescue_snr : float
        The measured peak a candidate needs, in sigmas.
    beam_major, beam_minor, beam_angle : float
        The beam in that frame (pixels, degrees from +y towards -x); round without the last two.
    settings : DeblendSettings, optional
        The sidelobe rule (default `DEFAULT_SETTINGS`, the deblending's).
    """
    s = DEFAULT_SETTINGS if settings is None else settings
    peak = np.nan_to_num(np.asarray(candidates.peak, dtype=np.float64), nan=-np.inf)
    cx, cy = np.asarray(candidates.x, dtype=np.float64), np.asarray(candidates.y, dtype=np.float64)
    alive = np.flatnonzero((peak >= rescue_snr) & np.isfinite(cx) & np.isfinite(cy))
    if len(alive) == 0:
        return np.zeros(len(peak), dtype=bool)
    metric = BeamMetric.of(beam_major, beam_minor, beam_angle)
    sx, sy = np.asarray(standing.x, dtype=np.float64), np.asarray(standing.y, dtype=np.float64)
    speak = np.nan_to_num(np.asarray(standing_peak, dtype=np.float64), nan=0.0)
    held = np.isfinite(sx) & np.isfinite(sy)
    sx, sy, speak = sx[held], sy[held], speak[held]
    if len(sx):
        level = _sidelobe_level(cx[alive], cy[alive], sx, sy, speak, max(1.0, float(beam_major)), s)
        alive = alive[peak[alive] >= level]
        distance, _ = cKDTree(metric.whiten(sx, sy)).query(metric.whiten(cx[alive], cy[alive]))
        alive = alive[np.asarray(distance) > PEAK_DISTANCE_BEAMS]
    keep = np.zeros(len(peak), dtype=bool)
    where = metric.whiten(cx[alive], cy[alive])
    keep[alive[greedy_apart(where[:, 0], where[:, 1], np.asarray(score)[alive], PEAK_DISTANCE_BEAMS)]] = True
    return keep


def one_per_peak(x: np.ndarray, y: np.ndarray, score: np.ndarray, distance: float,
                 metric: BeamMetric | None = None) -> np.ndarray:
    """Which detections to keep so that no two measured centres lie within `distance`.

    Two boxes the NMS let through (its overlap test is on the boxes, loose for beam-sized ones)
    may measure the same source: their fitted centres meet on its peak. The higher-scoring one
    is kept; boxes without a measured centre are kept. With a `metric`, `distance` is in beams
    (`BeamMetric`), else in pixels.
    """
    keep = np.ones(len(x), dtype=bool)
    index = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(index) < 2:
        return keep
    px, py = np.asarray(x, dtype=np.float64)[index], np.asarray(y, dtype=np.float64)[index]
    if metric is not None:
        px, py = metric.whiten(px, py).T
    keep[index] = greedy_apart(px, py, np.asarray(score)[index], distance)
    return keep
