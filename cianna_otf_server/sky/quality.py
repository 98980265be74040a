"""Detection quality against a truth catalogue: cross-matching, precision, recall, F1, errors.

Used by the quality benchmark (``benchmarks/quality.py``) and by tests, on simulated images
whose truth table comes from `cianna_otf_server.sky.simulate`. Matching is one-to-one and
nearest first: every pair closer than the radius is a candidate, pairs are taken in order of
increasing separation, and a source already taken is skipped. Sky positions are matched as
unit vectors in a KD-tree (exact great-circle ordering, fast for millions of rows); pixel
positions in the plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

__all__ = ["Match", "match_catalogues", "quality_report", "DEFAULT_SNR_BINS", "DEFAULT_FLUX_BINS"]

DEFAULT_SNR_BINS: tuple[float, ...] = (0.0, 3.0, 5.0, 7.0, 10.0, 20.0, 50.0, 100.0, math.inf)
DEFAULT_FLUX_BINS: tuple[float, ...] = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # Jy
_DEFAULT_BEAM_ARCSEC = 1.5


@dataclass(frozen=True)
class Match:
    """One-to-one pairs between a detected and a true catalogue.

    Attributes
    ----------
    detected, truth : numpy.ndarray of int
        Row indices of each pair in the detected and in the true catalogue.
    separation : numpy.ndarray of float
        Pair separations, in ``unit``.
    unit : str
        ``"arcsec"`` for sky matching, ``"pix"`` for pixel matching.
    radius : float
        The matching radius, in ``unit``.
    """

    detected: np.ndarray
    truth: np.ndarray
    separation: np.ndarray
    unit: str
    radius: float

    def __len__(self) -> int:
        return len(self.detected)


def _unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    cd = np.cos(dec)
    return np.column_stack([cd * np.cos(ra), cd * np.sin(ra), np.sin(dec)])


def _values(table: Table, name: str) -> np.ndarray:
    """A column as float64, masked entries as NaN."""
    col = table[name]
    values = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
    return np.asarray(values, dtype=np.float64)


def _greedy_pairs(a: np.ndarray, b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-first one-to-one pairs of points a and b closer than `radius` (same units)."""
    empty = np.zeros(0, dtype=np.int64)
    if len(a) == 0 or len(b) == 0:
        return empty, empty, np.zeros(0)
    good_a = np.all(np.isfinite(a), axis=1)
    good_b = np.all(np.isfinite(b), axis=1)
    ia, ib = np.nonzero(good_a)[0], np.nonzero(good_b)[0]
    if len(ia) == 0 or len(ib) == 0:
        return empty, empty, np.zeros(0)
    sparse = cKDTree(a[ia]).sparse_distance_matrix(cKDTree(b[ib]), radius, output_type="ndarray")
    if len(sparse) == 0:
        return empty, empty, np.zeros(0)
    order = np.argsort(sparse["v"], kind="stable")
    used_a = np.zeros(len(ia), dtype=bool)
    used_b = np.zeros(len(ib), dtype=bool)
    pa, pb, dist = [], [], []
    for k in order:
        i, j = sparse["i"][k], sparse["j"][k]
        if used_a[i] or used_b[j]:
            continue
        used_a[i] = used_b[j] = True
        pa.append(i)
        pb.append(j)
        dist.append(sparse["v"][k])
    return ia[np.asarray(pa, dtype=np.int64)], ib[np.asarray(pb, dtype=np.int64)], np.asarray(dist)


def match_catalogues(detected: Table, truth: Table, radius_arcsec: float | None = None,
                     radius_pix: float | None = None) -> Match:
    """Match detections to true sources one-to-one, nearest pairs first.

    Parameters
    ----------
    detected, truth : astropy.table.Table
        Catalogues with ``ra``, ``dec`` (deg) for sky matching, or ``x``, ``y`` (pixels, the
        same convention in both) for pixel matching.
    radius_arcsec : float, optional
        Matching radius on the sky, arcsec. When neither radius is given, the beam FWHM major
        axis recorded in ``truth.meta['beam_bmaj']`` (arcsec; 1.5 when absent) is used: a
        detection counts if it lies within one beam of the source.
    radius_pix : float, optional
        Matching radius in pixels; selects pixel matching on ``x``, ``y``.

    Returns
    -------
    Match
        Index pairs and separations (arcsec, or pixels with `radius_pix`).
    """
    if radius_arcsec is not None and radius_pix is not None:
        raise ValueError("give radius_arcsec or radius_pix, not both")
    if radius_pix is not None:
        a = np.column_stack([_values(detected, "x"), _values(detected, "y")]) if len(detected) else np.zeros((0, 2))
        b = np.column_stack([_values(truth, "x"), _values(truth, "y")]) if len(truth) else np.zeros((0, 2))
        i, j, d = _greedy_pairs(a, b, float(radius_pix))
        return Match(i, j, d, "pix", float(radius_pix))
    if radius_arcsec is None:
        radius_arcsec = float(truth.meta.get("beam_bmaj", _DEFAULT_BEAM_ARCSEC))
    a = _unit_vectors(_values(detected, "ra"), _values(detected, "dec")) if len(detected) else np.zeros((0, 3))
    b = _unit_vectors(_values(truth, "ra"), _values(truth, "dec")) if len(truth) else np.zeros((0, 3))
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    i, j, d = _greedy_pairs(a, b, chord)
    sep_arcsec = np.degrees(2.0 * np.arcsin(np.clip(d / 2.0, 0.0, 1.0))) * 3600.0
    return Match(i, j, sep_arcsec, "arcsec", float(radius_arcsec))


def _lobe_detections(detected: Table, truth: Table, candidates: np.ndarray, match: Match) -> np.ndarray:
    """Unmatched detections within the matching radius of a double source's lobe (pixel matching)."""
    out = np.zeros(len(detected), dtype=bool)
    names = ("lobe1_x", "lobe1_y", "lobe2_x", "lobe2_y")
    if not candidates.any() or not all(n in truth.colnames for n in names) or not len(truth):
        return out
    lobes = np.vstack([np.column_stack([_values(truth, "lobe1_x"), _values(truth, "lobe1_y")]),
                       np.column_stack([_values(truth, "lobe2_x"), _values(truth, "lobe2_y")])])
    lobes = lobes[np.all(np.isfinite(lobes), axis=1)]
    if not len(lobes):
        return out
    index = np.nonzero(candidates)[0]
    points = np.column_stack([_values(detected, "x")[index], _values(detected, "y")[index]])
    good = np.all(np.isfinite(points), axis=1)
    distance, _ = cKDTree(lobes).query(np.where(good[:, None], points, 0.0), k=1)
    out[index] = good & (distance <= match.radius)
    return out


def _ratio(num: int, den: int) -> float | None:
    return float(num) / float(den) if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2.0 * p * r / (p + r) if (p + r) > 0 else 0.0


def _median(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def quality_report(detected: Table, truth: Table, snr_bins: Sequence[float] = DEFAULT_SNR_BINS,
                   flux_bins: Sequence[float] = DEFAULT_FLUX_BINS, *, radius_arcsec: float | None = None,
                   radius_pix: float | None = None, detected_snr: np.ndarray | None = None,
                   snr_min: float = 5.0) -> dict[str, Any]:
    """Precision, recall and F1 overall, above an SNR and per bin; positional and flux errors.

    Parameters
    ----------
    detected : astropy.table.Table
        The catalogue to judge (``ra``, ``dec`` or ``x``, ``y``; ``flux`` in Jy for flux errors).
    truth : astropy.table.Table
        The simulation's truth (``snr``, ``flux``, ``ra``, ``dec``, ``x``, ``y``).
    snr_bins : sequence of float
        Edges of the true-SNR bins (``inf`` allowed as the last edge).
    flux_bins : sequence of float
        Edges of the true integrated flux bins, Jy (recall only).
    radius_arcsec, radius_pix : float, optional
        Matching radius, as in `match_catalogues` (default: one beam FWHM).
    detected_snr : numpy.ndarray, optional
        An SNR estimate for each detection, used to bin detections that match no true source
        (false positives). When None, the detected table's ``snr`` column is used if present;
        otherwise unmatched detections only count in the overall precision.
    snr_min : float
        The SNR above which the headline figures (``above``) are computed.

    Returns
    -------
    dict
        ``overall`` and ``above`` (precision, recall, f1 and counts), ``snr_bins`` and
        ``flux_bins`` (lists of per-bin dicts), ``median_position_error_arcsec`` (or
        ``median_position_error_pix``), ``median_relative_flux_error`` (``(S_det - S_true) /
        S_true``, also its absolute value's median), ``radius`` and ``radius_unit``.

    Notes
    -----
    Recall in a bin is the fraction of true sources of that true SNR that are matched. With
    pixel matching, a detection that matches no source but lies on a lobe of a simulated double
    (truth columns ``lobe1_x`` ... ``lobe2_y``) is real emission found as a component: it counts
    as a true detection in precision (``n_lobe_detections``), never in recall.
    Precision in a bin is matched / (matched + unmatched) over detections binned by the true
    SNR of their match, or their own SNR estimate when unmatched. A source right at the
    threshold is found about half the time, since noise moves its measured peak either way.
    """
    match = match_catalogues(detected, truth, radius_arcsec=radius_arcsec, radius_pix=radius_pix)
    n_det, n_true = len(detected), len(truth)
    true_snr = _values(truth, "snr") if "snr" in truth.colnames else np.full(n_true, np.nan)
    if detected_snr is None and "snr" in detected.colnames:
        detected_snr = _values(detected, "snr")
    det_snr = np.full(n_det, np.nan) if detected_snr is None else np.asarray(detected_snr, dtype=np.float64)
    if len(det_snr) != n_det:
        raise ValueError("detected_snr needs one value per detection")

    matched_true = np.zeros(n_true, dtype=bool)
    matched_true[match.truth] = True
    matched_det = np.zeros(n_det, dtype=bool)
    matched_det[match.detected] = True
    on_lobe = _lobe_detections(detected, truth, ~matched_det, match) if match.unit == "pix" else np.zeros(n_det, bool)
    # the SNR a detection is binned by: its match's true SNR, else its own estimate
    bin_snr = det_snr.copy()
    bin_snr[match.detected] = true_snr[match.truth]

    def counts(true_sel: np.ndarray, det_sel: np.ndarray) -> dict[str, Any]:
        n_t = int(true_sel.sum())
        n_found = int((true_sel & matched_true).sum())
        n_d = int(det_sel.sum())
        n_tp = int((det_sel & (matched_det | on_lobe)).sum())
        precision, recall = _ratio(n_tp, n_d), _ratio(n_found, n_t)
        return {"n_true": n_t, "n_recovered": n_found, "n_detected": n_d, "n_true_positive": n_tp,
                "precision": precision, "recall": recall, "f1": _f1(precision, recall)}

    report: dict[str, Any] = {
        "n_detected": n_det,
        "n_true": n_true,
        "n_matched": len(match),
        "radius": match.radius,
        "radius_unit": match.unit,
        "n_lobe_detections": int(on_lobe.sum()),
        "overall": counts(np.ones(n_true, dtype=bool), np.ones(n_det, dtype=bool)),
    }
    above_det = (bin_snr >= snr_min) | (matched_det & ~np.isfinite(bin_snr))
    if detected_snr is None:
        above_det |= ~matched_det  # unknown SNR: a false positive counts against every cut
    report["above"] = {"snr_min": snr_min, **counts(true_snr >= snr_min, above_det)}

    edges = list(snr_bins)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        row = counts((true_snr >= lo) & (true_snr < hi), (bin_snr >= lo) & (bin_snr < hi))
        rows.append({"snr_min": lo, "snr_max": hi if math.isfinite(hi) else None, **row})
    report["snr_bins"] = rows
    if detected_snr is None:
        report["n_unbinned_false_positives"] = int((~matched_det).sum())

    if "flux" in truth.colnames:
        true_flux = _values(truth, "flux")
        fedges = list(flux_bins)
        report["flux_bins"] = [
            {"flux_min": lo, "flux_max": hi,
             **{k: v for k, v in counts((true_flux >= lo) & (true_flux < hi), np.zeros(n_det, bool)).items()
                if k in ("n_true", "n_recovered", "recall")}}
            for lo, hi in zip(fedges[:-1], fedges[1:])
        ]

    key = "median_position_error_arcsec" if match.unit == "arcsec" else "median_position_error_pix"
    report[key] = _median(match.separation)
    if "flux" in detected.colnames and "flux" in truth.colnames and len(match):
        rel = (_values(detected, "flux")[match.detected] - _values(truth, "flux")[match.truth]) \
            / _values(truth, "flux")[match.truth]
        report["median_relative_flux_error"] = _median(rel)
        report["median_abs_relative_flux_error"] = _median(np.abs(rel))
        strong = true_snr[match.truth] >= snr_min
        report["median_abs_relative_flux_error_above"] = _median(np.abs(rel[strong]))
    else:
        report["median_relative_flux_error"] = None
        report["median_abs_relative_flux_error"] = None
        report["median_abs_relative_flux_error_above"] = None
    return report
