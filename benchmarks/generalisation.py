"""Generalisation benchmark: every model on simulated domains no training used, and on real images.

Part 1 simulates a fixed grid of named domains (`generalisation_domains.DOMAINS`: pixel scales
0.5-10 arcsec, beams 1.2-12 px, round and elliptical, noise 1e-7 to 1e-2 Jy/beam, mJy/beam
units, 4-D images, NaN frames and primary-beam cuts, a flipped x axis, a Galactic frame, TAN
and AZP projections, confusion-level density, doubles, artefacts and varying noise, plus the
SDC1-like default sky as the in-domain reference), writes each image to a temporary FITS file
and runs every model on it through the pipeline's `detect(path, card, device="cpu")`, the same
reader and adaptation users get. Detections are matched to the truth one-to-one in pixels
within one beam FWHM (major axis, at least 2 px); detections on a lobe of a simulated double
count as true (`cianna_otf_server.sky.quality.quality_report`).

Part 2 runs every model on the real observed images of `real_images.py` (fetched into
``--cache``; skipped with a message when unavailable). Without a truth catalogue, each run is
judged against SEP's own 10-sigma islands (connected pixels above 10 times the local rms of the
background-subtracted image, at least 3 pixels, NaN pixels masked): the share of islands with a
detection within one beam FWHM of the island's peak or centroid. Background and rms are SEP's,
as the pipeline measures them (`measure_noise`: a 64 px mesh, 3 x 3 median filter), with the
interpolated rms floored at the smallest measured mesh value (the bicubic interpolation can dip
to zero or below between cells of very different rms, which would make any pixel an island).
The share of detections below 3 sigma is read off the same maps. An overlay picture per image
shows the image and every model's detections.

Outputs (``--out DIR``, default ``benchmarks/results``): ``generalisation.json``,
``generalisation.png`` (precision, recall and F1 per domain and model; island recovery per real
image) and ``real-<key>.png``. ``--markdown`` also prints the README tables; ``--from-json
FILE`` prints the tables of an earlier run without running anything.

Example::

    python benchmarks/generalisation.py --cache /tmp/real-images-cache            # full, ~2048 px
    python benchmarks/generalisation.py --quick --cache /tmp/real-images-cache    # smoke run, 1024 px
    python benchmarks/generalisation.py --models classic,yolo-demo --markdown

JSON layout
-----------
::

    {
      "config": {"quick": bool, "size": int, "images_per_domain": "per domain" | 1,
                 "domains": [name, ...], "models": [name, ...], "snr_min": 5.0,
                 "flux_snr": [10.0, 20.0], "faint_snr": 3.0, "snr_bins": [edges],
                 "radius_rule": "...", "island_rule": "...", "own_snr_rule": "...", "rms_rule": "...",
                 "real_cache": str | null, "date": ISO 8601, "seconds": float},
      "machine": {"python", "platform", "processor", "cpus", "torch_threads"},
      "models": {name: {"version", "family", "sha256", "training_*": ..., "domain": {...}}
                 | {"error": str}},
      "domains": {name: {
          "description": str, "seeds": [int, ...], "size": int,
          "settings": {"options": {simulation options differing from the defaults},
                       "transforms": [name, ...]},
          "beam_pixels": [major, minor], "radius_pix": float,
          "n_true": int, "n_true_snr5": int, "simulation_seconds": float,
          "results": {model: {
              "n_detected", "n_true", "n_true_snr5", "n_matched", "n_lobe_detections": int,
              "precision": float | null,          # overall, lobes count as true
              "recall_snr5": float | null,        # recall of true sources with SNR >= 5
              "f1": float | null,                 # harmonic mean of the two above
              "f1_report_overall", "f1_report_snr5": float | null,   # quality_report's own
              "median_position_error_beam": float | null,  # in units of the beam FWHM (major)
              "median_position_error_beam_snr10": float | null,  # the same, true SNR >= 10 only
              "median_position_error_pix": float | null,
              "median_abs_flux_error_snr10", "median_abs_flux_error_snr20": float | null,
                                                  # median |S_det - S_true| / S_true
              "n_flux_masked": int, "flux_note": str | null,  # why the flux errors are null
              "share_own_snr_below3": float | null, "own_snr_source": "catalogue" | "image",
              "snr_bins": [{"snr_min", "snr_max", "n_true", "n_recovered", "recall",
                            "n_detected", "n_true_positive", "precision"}, ...],
              "warnings": [str, ...], "domain_plan": {"convention", "zoom", "fit", "notes"},
              "seconds": float,                   # detect() wall time, all images
              "error": str                        # only when detect() failed
          }}}},
      "real_images": {key: {
          "survey", "telescope", "frequency_hz", "shape", "bunit", "beam", "projection", "frame",
          "beam_pixels": [major, minor] | null, "beam_estimated": bool, "radius_pix": float,
          "median_rms": float, "rms_floored_fraction": float,  # share of pixels whose rms was floored
          "n_islands": int, "overlay": "real-<key>.png" | null, "seconds": float,
          "reader_error": str,                    # only when the pipeline cannot open the image
          "results": {model: {"n_detected": int, "island_recovery": float | null,
                              "n_islands_recovered": int, "share_below3": float | null,
                              "warnings": [str, ...], "domain_plan": {...}, "seconds": float,
                              "error": str}}}},
      "real_images_skipped": [str, ...]
    }
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.table import Table
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalisation_domains import DOMAINS, QUICK_DOMAINS, Domain, simulate_domain  # noqa: E402

from cianna_otf_server.sky.quality import DEFAULT_SNR_BINS, match_catalogues, quality_report  # noqa: E402

SNR_MIN = 5.0
FLUX_SNR = (10.0, 20.0)
FAINT_SNR = 3.0
ISLAND_SIGMA = 10.0
ISLAND_MIN_PIXELS = 3
MIN_RADIUS_PIX = 2.0
FULL_SIZE, QUICK_SIZE = 2048, 1024
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
_COUNTS = ("n_true", "n_recovered", "n_detected", "n_true_positive")


# ----------------------------------------------------------------------------------------------
# models


def registry_models() -> list[str]:
    """Every model the default registry holds (usable or not: a broken one is reported, not hidden)."""
    from cianna_otf_server.models import default_registry

    return default_registry().names(available_only=False)


def load_cards(names: Sequence[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Verified cards by name, and each model's provenance (or the reason it cannot run)."""
    from cianna_otf_server.models import default_registry

    registry = default_registry()
    cards: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            card = registry.verify(name)
        except Exception as exc:  # unknown or broken model: listed with the reason
            info[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        cards[name] = card
        entry: dict[str, Any] = {"version": card.version, "family": card.family}
        if card.sha256:
            entry["sha256"] = card.sha256
        for key in ("seed", "steps", "patches", "train_minutes", "date"):
            if key in card.training:
                entry[f"training_{key}"] = card.training[key]
        domain = getattr(card, "domain", None)
        if domain is not None and getattr(domain, "declared", False):
            entry["domain"] = {k: (list(v) if isinstance(v, tuple) else v)
                               for k, v in vars(domain).items() if not k.startswith("_")
                               and isinstance(v, (str, int, float, bool, tuple, list, type(None)))}
        info[name] = entry
    return cards, info


def run_detect(path: Path, card: Any) -> tuple[Table, float]:
    """`detect` on a FITS file, as users run it; returns the catalogue and its wall time."""
    from cianna_otf_server.pipeline import detect

    start = time.perf_counter()
    table = detect(str(path), card, device="cpu")
    return table, time.perf_counter() - start


def _plan_summary(table: Table) -> dict[str, Any]:
    plan = table.meta.get("domain") or {}
    return {k: plan.get(k) for k in ("convention", "zoom", "fit", "notes")}


# ----------------------------------------------------------------------------------------------
# pixel statistics


class PixelNoise:
    """The pipeline's background and rms maps of an image (as `open_image` reads it), full size."""

    def __init__(self, path: Path) -> None:
        from cianna_otf_server.pipeline import open_image

        self.reader_error: str | None = None
        try:
            image = open_image(str(path), estimate=True)
        except Exception as exc:  # what the pipeline cannot open is still measured, by astropy alone
            self.reader_error = f"{type(exc).__name__}: {exc}"
            self._plain(path)
            return
        try:
            self.data = np.array(image.data, dtype=np.float32)
            major_minor = None
            try:
                beam = image.beam_pixels
                if beam is not None and all(np.isfinite(beam[:2])):
                    major_minor = (float(beam[0]), float(beam[1]))
            except Exception:
                major_minor = None
            self.beam_pixels = major_minor
            self.beam_estimated = bool(image.beam is not None and image.beam.estimated)
        finally:
            image.close()
        self._maps()

    def _maps(self) -> None:
        """Full-size background and rms, the rms floored at the smallest measured mesh value.

        The bicubic interpolation between mesh cells of very different rms (a bright lobe next
        to empty sky) can undershoot to zero or below; no pixel's noise is taken to be lower than
        the quietest measured cell's.
        """
        from cianna_otf_server.pipeline._noise import measure_noise

        ny, nx = self.data.shape
        noise = measure_noise(self.data)
        self.background, rms = noise.window(0, nx, 0, ny)
        measured = noise.rms[np.isfinite(noise.rms) & (noise.rms > 0)]
        floor = np.float32(measured.min()) if measured.size else np.float32(np.finfo(np.float32).tiny)
        low = ~(rms >= floor)
        self.rms_floored_fraction = float(low[np.isfinite(self.data)].mean()) if np.isfinite(self.data).any() else 0.0
        self.rms = np.where(low, floor, rms).astype(np.float32)
        self.median_rms = noise.median_rms

    def _plain(self, path: Path) -> None:
        """The first image HDU read whole by astropy (scaled, leading length-1 axes dropped), no beam."""
        from astropy.io import fits

        with fits.open(path, memmap=False) as hdul:
            data = next(h.data for h in hdul if h.data is not None and h.data.ndim >= 2)
            data = np.array(data, dtype=np.float32)
        while data.ndim > 2:
            data = data[0]
        self.data = data
        self.beam_pixels, self.beam_estimated = None, False
        self._maps()

    def snr_image(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.data - self.background) / self.rms

    def peak_snr(self, x: np.ndarray, y: np.ndarray, snr: np.ndarray | None = None) -> np.ndarray:
        """Signal-to-noise of the brightest of the 3 x 3 pixels around each FITS 1-based (x, y); NaN off the data."""
        snr = self.snr_image() if snr is None else snr
        ny, nx = snr.shape
        out = np.full(len(x), np.nan)
        for k, (xx, yy) in enumerate(zip(np.asarray(x, float) - 1.0, np.asarray(y, float) - 1.0)):
            if not (np.isfinite(xx) and np.isfinite(yy)):
                continue
            ix, iy = int(round(xx)), int(round(yy))
            cut = snr[max(0, iy - 1):min(ny, iy + 2), max(0, ix - 1):min(nx, ix + 2)]
            if cut.size and np.isfinite(cut).any():
                out[k] = float(np.nanmax(cut))
        return out


def _column(table: Table, name: str) -> np.ndarray:
    return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan), dtype=np.float64)


def own_snr(table: Table, noise: PixelNoise | None, snr_image: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Each detection's peak SNR: the catalogue's ``snr`` column, else read off the image."""
    if "snr" in table.colnames and len(table):
        values = _column(table, "snr")
        if np.isfinite(values).any():
            return values, "catalogue"
    if not len(table) or noise is None:
        return np.full(len(table), np.nan), "image"
    return noise.peak_snr(_column(table, "x"), _column(table, "y"), snr_image), "image"


def _median(values: np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else None


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None:
        return None
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# part 1: simulated domains


class _Pool:
    """Counts and per-match values of one model over a domain's images."""

    def __init__(self) -> None:
        self.overall = dict.fromkeys(_COUNTS, 0)
        self.above = dict.fromkeys(_COUNTS, 0)
        self.bins: list[dict[str, int]] | None = None
        self.bin_edges: list[tuple[float, float | None]] = []
        self.n_det = self.n_true = self.n_matched = self.n_lobe = 0
        self.separation: list[np.ndarray] = []
        self.rel_flux: list[np.ndarray] = []
        self.match_snr: list[np.ndarray] = []
        self.own: list[np.ndarray] = []
        self.n_flux_masked = 0
        self.has_flux = True
        self.own_source = "catalogue"
        self.warnings: list[str] = []
        self.plan: dict[str, Any] = {}
        self.seconds = 0.0

    def add(self, table: Table, truth: Table, radius: float, own: np.ndarray, source: str, seconds: float) -> None:
        report = quality_report(table, truth, radius_pix=radius, detected_snr=own, snr_min=SNR_MIN)
        match = match_catalogues(table, truth, radius_pix=radius)
        self.seconds += seconds
        self.n_det += report["n_detected"]
        self.n_true += report["n_true"]
        self.n_matched += report["n_matched"]
        self.n_lobe += report.get("n_lobe_detections", 0)
        for key in _COUNTS:
            self.overall[key] += int(report["overall"][key])
            self.above[key] += int(report["above"][key])
        if self.bins is None:
            self.bins = [dict.fromkeys(_COUNTS, 0) for _ in report["snr_bins"]]
            self.bin_edges = [(row["snr_min"], row["snr_max"]) for row in report["snr_bins"]]
        for acc, row in zip(self.bins, report["snr_bins"]):
            for key in _COUNTS:
                acc[key] += int(row[key])
        self.separation.append(np.asarray(match.separation, dtype=np.float64))
        true_flux = _column(truth, "flux")[match.truth]
        self.match_snr.append(_column(truth, "snr")[match.truth])
        if "flux" in table.colnames:
            det_flux = _column(table, "flux")[match.detected]
            self.n_flux_masked += int((~np.isfinite(det_flux)).sum())
            self.rel_flux.append(np.abs(det_flux - true_flux) / true_flux)
        else:
            self.has_flux = False
            self.n_flux_masked += len(match)
            self.rel_flux.append(np.full(len(match), np.nan))
        self.own.append(own)
        if source == "image":
            self.own_source = "image"
        self.warnings.extend(w for w in table.meta.get("warnings", []) if w not in self.warnings)
        if not self.plan:
            self.plan = _plan_summary(table)

    def result(self, beam_major: float) -> dict[str, Any]:
        precision = _ratio(self.overall["n_true_positive"], self.overall["n_detected"])
        recall = _ratio(self.above["n_recovered"], self.above["n_true"])
        p_above = _ratio(self.above["n_true_positive"], self.above["n_detected"])
        r_overall = _ratio(self.overall["n_recovered"], self.overall["n_true"])
        separation = np.concatenate(self.separation) if self.separation else np.zeros(0)
        rel = np.concatenate(self.rel_flux) if self.rel_flux else np.zeros(0)
        snr = np.concatenate(self.match_snr) if self.match_snr else np.zeros(0)
        own = np.concatenate(self.own) if self.own else np.zeros(0)
        pos_pix = _median(separation)
        flux: dict[str, float | None] = {}
        for cut in FLUX_SNR:
            flux[f"median_abs_flux_error_snr{cut:g}"] = _median(rel[snr >= cut])
        note = None
        if not self.has_flux:
            note = "the catalogue has no flux column"
        elif len(rel) and self.n_flux_masked == len(rel):
            note = "every matched detection's flux is masked (empty)"
        elif self.n_flux_masked:
            note = f"{self.n_flux_masked} of {len(rel)} matched detections have a masked flux"
        finite_own = own[np.isfinite(own)]
        bins = []
        for (lo, hi), acc in zip(self.bin_edges, self.bins or []):
            bins.append({"snr_min": lo, "snr_max": hi, **acc,
                         "recall": _ratio(acc["n_recovered"], acc["n_true"]),
                         "precision": _ratio(acc["n_true_positive"], acc["n_detected"])})
        return {
            "n_detected": self.n_det, "n_true": self.n_true, "n_true_snr5": self.above["n_true"],
            "n_matched": self.n_matched, "n_lobe_detections": self.n_lobe,
            "precision": precision, "recall_snr5": recall, "f1": _f1(precision, recall),
            "f1_report_overall": _f1(precision, r_overall), "f1_report_snr5": _f1(p_above, recall),
            "median_position_error_beam": None if pos_pix is None else pos_pix / beam_major,
            "median_position_error_pix": pos_pix,
            # the same over true SNR >= 10 only: models that find more faint sources are not
            # penalised for their harder matches when positions are compared
            "median_position_error_beam_snr10": (None if (pos10 := _median(separation[snr >= 10])) is None
                                                 else pos10 / beam_major),
            **flux, "n_flux_masked": self.n_flux_masked, "flux_note": note,
            "share_own_snr_below3": (float((finite_own < FAINT_SNR).mean()) if finite_own.size else None),
            "own_snr_source": self.own_source,
            "snr_bins": bins,
            "warnings": self.warnings, "domain_plan": self.plan, "seconds": self.seconds,
        }


def match_radius(beam_major_pix: float | None) -> float:
    """One beam FWHM (major axis) in pixels, at least 2 px."""
    if beam_major_pix is None or not math.isfinite(beam_major_pix):
        return 3.0
    return max(MIN_RADIUS_PIX, float(beam_major_pix))


def run_domain(domain: Domain, size: int, images: int, cards: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Simulate a domain's images, run every model on each, and pool the measures per model."""
    beam_major, beam_minor = domain.beam_pixels()
    radius = match_radius(beam_major)
    pools = {name: _Pool() for name in cards}
    errors: dict[str, str] = {}
    n_true = n_true5 = 0
    sim_seconds = 0.0
    seeds = [domain.seed + k for k in range(images)]
    for k in range(images):
        start = time.perf_counter()
        hdul, truth = simulate_domain(domain, size, k)
        path = tmp / f"{domain.name}-{k}.fits"
        hdul.writeto(path, overwrite=True)
        del hdul
        sim_seconds += time.perf_counter() - start
        n_true += len(truth)
        n_true5 += int((_column(truth, "snr") >= SNR_MIN).sum())
        noise: PixelNoise | None = None
        snr_image: np.ndarray | None = None
        for name, card in cards.items():
            if name in errors:
                continue
            try:
                table, seconds = run_detect(path, card)
            except Exception as exc:  # a failure is a result: reported, and the run goes on
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"  {domain.name} / {name}: detect failed: {errors[name]}", file=sys.stderr)
                traceback.print_exc(limit=3)
                continue
            if "snr" not in table.colnames and len(table) and noise is None:
                noise = PixelNoise(path)
                snr_image = noise.snr_image()
            own, source = own_snr(table, noise, snr_image)
            pools[name].add(table, truth, radius, own, source, seconds)
        path.unlink()
    results: dict[str, Any] = {}
    for name in cards:
        results[name] = {"error": errors[name]} if name in errors else pools[name].result(beam_major)
    return {
        "description": domain.description, "seeds": seeds, "size": size,
        "settings": domain.settings(size), "beam_pixels": [beam_major, beam_minor], "radius_pix": radius,
        "n_true": n_true, "n_true_snr5": n_true5, "simulation_seconds": sim_seconds, "results": results,
    }


# ----------------------------------------------------------------------------------------------
# part 2: real images


def sep_islands(noise: PixelNoise) -> np.ndarray:
    """SEP's 10-sigma islands: ``[n, 4]`` (x_peak, y_peak, x_centroid, y_centroid), FITS 1-based.

    Connected pixels above ``ISLAND_SIGMA`` times the local rms of the background-subtracted
    image, at least ``ISLAND_MIN_PIXELS`` of them, no deblending (an island is one object),
    no filtering (a restored image is already smoothed by its beam), NaN pixels masked.
    """
    import sep

    data = noise.data - noise.background
    bad = ~np.isfinite(data) | ~np.isfinite(noise.rms) | (noise.rms <= 0)
    data = np.ascontiguousarray(np.where(bad, 0.0, data), dtype=np.float32)
    rms = np.ascontiguousarray(np.where(bad, 1.0, noise.rms), dtype=np.float32)
    sep.set_extract_pixstack(max(300_000, data.size * 2))
    sep.set_sub_object_limit(4096)
    objects = sep.extract(data, ISLAND_SIGMA, err=rms, mask=bad, minarea=ISLAND_MIN_PIXELS,
                          filter_kernel=None, deblend_cont=1.0, clean=False)
    if not len(objects):
        return np.zeros((0, 4))
    return np.column_stack([objects["xpeak"] + 1.0, objects["ypeak"] + 1.0, objects["x"] + 1.0, objects["y"] + 1.0])


def island_recovery(islands: np.ndarray, table: Table, radius: float) -> int:
    """Islands with a detection within `radius` pixels of their peak or centroid."""
    if not len(islands) or not len(table):
        return 0
    points = np.column_stack([_column(table, "x"), _column(table, "y")])
    points = points[np.all(np.isfinite(points), axis=1)]
    if not len(points):
        return 0
    tree = cKDTree(points)
    near_peak, _ = tree.query(islands[:, :2], k=1)
    near_centroid, _ = tree.query(islands[:, 2:], k=1)
    return int(((near_peak <= radius) | (near_centroid <= radius)).sum())


def run_real(cache: Path, cards: dict[str, Any], out: Path) -> tuple[dict[str, Any], list[str]]:
    """Every model on every real image that can be fetched; overlays written into `out`."""
    import io
    from contextlib import redirect_stderr

    from real_images import MANIFEST, fetch_real_images

    stderr = io.StringIO()
    with redirect_stderr(stderr):
        fetched = fetch_real_images(cache, skip_unavailable=True)
    skipped = [line.strip() for line in stderr.getvalue().splitlines() if line.strip()]
    have = {image.key for image, _ in fetched}
    for image in MANIFEST:
        if image.key not in have and not any(image.key in line for line in skipped):
            skipped.append(f"real_images: skipping {image.key}: not available")
    for line in skipped:
        print(line, file=sys.stderr)
    results: dict[str, Any] = {}
    for image, path in fetched:
        start = time.perf_counter()
        noise = PixelNoise(path)
        snr_image = noise.snr_image()
        beam_major = noise.beam_pixels[0] if noise.beam_pixels else None
        radius = match_radius(beam_major)
        try:
            islands = sep_islands(noise)
            island_error = None
        except Exception as exc:
            islands, island_error = np.zeros((0, 4)), f"{type(exc).__name__}: {exc}"
        entry: dict[str, Any] = {
            "survey": image.survey, "telescope": image.telescope, "frequency_hz": image.frequency_hz,
            "shape": list(image.shape), "bunit": image.bunit, "beam": image.beam,
            "projection": image.projection, "frame": image.frame,
            "beam_pixels": list(noise.beam_pixels) if noise.beam_pixels else None,
            "beam_estimated": noise.beam_estimated, "radius_pix": radius,
            "median_rms": noise.median_rms, "rms_floored_fraction": noise.rms_floored_fraction,
            "n_islands": int(len(islands)),
            "overlay": f"real-{image.key}.png", "results": {},
        }
        if island_error:
            entry["island_error"] = island_error
        if noise.reader_error:
            entry["reader_error"] = noise.reader_error
            print(f"  {image.key}: the pipeline cannot open it ({noise.reader_error}); islands measured with "
                  "astropy alone", file=sys.stderr)
        tables: dict[str, Table] = {}
        for name, card in cards.items():
            try:
                table, seconds = run_detect(path, card)
            except Exception as exc:
                entry["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"  {image.key} / {name}: detect failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            tables[name] = table
            peak = noise.peak_snr(_column(table, "x"), _column(table, "y"), snr_image) if len(table) else np.zeros(0)
            finite = peak[np.isfinite(peak)]
            recovered = island_recovery(islands, table, radius)
            entry["results"][name] = {
                "n_detected": len(table),
                "island_recovery": _ratio(recovered, len(islands)),
                "n_islands_recovered": recovered,
                "share_below3": float((finite < FAINT_SNR).mean()) if finite.size else None,
                "warnings": list(table.meta.get("warnings", [])),
                "domain_plan": _plan_summary(table), "seconds": seconds,
            }
        try:
            overlay(image, noise, islands, tables, radius, out / entry["overlay"])
        except Exception as exc:  # a picture must never lose the measurements
            entry["overlay_error"] = f"{type(exc).__name__}: {exc}"
            entry["overlay"] = None
        entry["seconds"] = time.perf_counter() - start
        results[image.key] = entry
    return results, skipped


# ----------------------------------------------------------------------------------------------
# pictures

_COLOURS = ("#00e5ff", "#ff9100", "#76ff03", "#ff4081", "#ffea00", "#b388ff", "#ffffff")


def overlay(image: Any, noise: PixelNoise, islands: np.ndarray, tables: dict[str, Table], radius: float,
            path: Path) -> None:
    """The image (asinh stretch between percentiles) and each model's detections as circles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle
    from astropy.visualization import AsinhStretch, AsymmetricPercentileInterval, ImageNormalize

    data = noise.data
    ny, nx = data.shape
    finite = data[np.isfinite(data)]
    norm = None
    if finite.size:
        norm = ImageNormalize(finite, interval=AsymmetricPercentileInterval(1.0, 99.7), stretch=AsinhStretch(0.05))
    long_side = 8.0
    aspect = ny / nx
    fig_w, fig_h = (long_side, long_side * aspect) if nx >= ny else (long_side / aspect, long_side)
    fig = plt.figure(figsize=(fig_w + 0.4, fig_h + 0.9), dpi=100)
    ax = fig.add_axes([0.07, 0.06, 0.9, 0.84])
    cmap = plt.get_cmap("gray").copy()
    cmap.set_bad("#402020")  # NaN (blank) pixels
    ax.imshow(np.where(np.isfinite(data), data, np.nan), origin="lower", cmap=cmap, norm=norm,
              extent=(0.5, nx + 0.5, 0.5, ny + 0.5), interpolation="nearest")
    base = max(radius, max(nx, ny) / 160.0)
    handles = []
    if len(islands):
        ax.plot(islands[:, 0], islands[:, 1], "+", color="#ff1744", ms=5, mew=0.8, alpha=0.9)
        handles.append(Line2D([], [], ls="", marker="+", color="#ff1744",
                              label=f"SEP 10\u03c3 islands ({len(islands)})"))
    for k, (name, table) in enumerate(tables.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        r = base * (1.0 + 0.45 * k)
        if len(table):
            x, y = _column(table, "x"), _column(table, "y")
            good = np.isfinite(x) & np.isfinite(y)
            circles = [Circle((a, b), r) for a, b in zip(x[good], y[good])]
            ax.add_collection(PatchCollection(circles, facecolor="none", edgecolor=colour, linewidth=0.9))
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec=colour, ms=8, label=f"{name} ({len(table)})"))
    ax.set_xlim(0.5, nx + 0.5)
    ax.set_ylim(0.5, ny + 0.5)
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.75)
    ax.set_title(f"{image.key}: {image.survey}\n{image.telescope}, {image.frequency_hz / 1e6:.0f} MHz, "
                 f"beam {image.beam}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot(results: dict[str, Any], path: Path) -> None:
    """Precision, recall (SNR >= 5) and F1 per simulated domain; island recovery per real image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["config"]["models"])
    domains = list(results["domains"])
    real = list(results.get("real_images", {}))
    per_label = 0.16 * max(2, len(models))
    rows = [max(1, len(domains))] + ([len(real)] if real else [])
    fig = plt.figure(figsize=(15.0, per_label * sum(rows) + 1.6 * len(rows) + 0.4))
    grid = fig.add_gridspec(len(rows), 3, height_ratios=rows)
    axes = [fig.add_subplot(grid[0, k]) for k in range(3)]
    if real:
        axes += [fig.add_subplot(grid[1, k]) for k in range(2)]
    width = 0.8 / max(1, len(models))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def bars(ax: Any, labels: list[str], value: Any, title: str) -> None:
        ys = np.arange(len(labels))
        for k, model in enumerate(models):
            vals = [value(label, model) for label in labels]
            offsets = ys + (k - (len(models) - 1) / 2) * width
            ax.barh(offsets, [np.nan if v is None else v for v in vals], height=width,
                    color=colours[k % len(colours)], label=model)
            for y, v in zip(offsets, vals):
                if v is None:  # not measured (failed run, nothing to measure): said, not drawn as 0
                    ax.text(0.01, y, "n/a", va="center", fontsize=6, color=colours[k % len(colours)])
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.02)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(title, fontsize=10)

    def sim(key: str) -> Any:
        return lambda d, m: results["domains"][d]["results"].get(m, {}).get(key)

    bars(axes[0], domains, sim("precision"), "Precision (simulated)")
    bars(axes[1], domains, sim("recall_snr5"), "Recall, true SNR \u2265 5")
    bars(axes[2], domains, sim("f1"), "F1")
    for ax in axes[1:3]:
        ax.set_yticklabels([])
    if real:
        bars(axes[3], real, lambda k, m: results["real_images"][k]["results"].get(m, {}).get("island_recovery"),
             "Real images: SEP 10\u03c3 islands recovered")
        bars(axes[4], real, lambda k, m: results["real_images"][k]["results"].get(m, {}).get("share_below3"),
             "Real images: share of detections below 3\u03c3")
        axes[4].set_yticklabels([])
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center", bbox_to_anchor=(0.83, 0.5 * rows[1] / sum(rows)), fontsize=10,
                   title="model")
    else:
        axes[0].legend(fontsize=8, loc="lower left")
    cfg = results["config"]
    fig.suptitle(f"Generalisation: {len(domains)} simulated domains at {cfg['size']} px "
                 f"({'quick run' if cfg['quick'] else 'seeds from 3,000,000'}), {len(real)} real images", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# tables


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_domain_table(results: dict[str, Any]) -> None:
    """One line per domain and model."""
    print(f"\n{'domain':<20} {'model':<14} {'n_true':>6} {'n_det':>6} {'P':>5} {'R5':>5} {'F1':>5} "
          f"{'dpos/b':>6} {'dpos':>5} {'dS10':>5} {'dS20':>5} {'<3s':>5} {'time':>6} warn")
    for name, entry in results["domains"].items():
        for model, r in entry["results"].items():
            if "error" in r:
                print(f"{name:<20} {model:<14} ERROR {r['error'][:80]}")
                continue
            print(f"{name:<20} {model:<14} {r['n_true']:>6} {r['n_detected']:>6} {_f(r['precision']):>5} "
                  f"{_f(r['recall_snr5']):>5} {_f(r['f1']):>5} {_f(r['median_position_error_beam']):>6} "
                  f"{_f(r['median_position_error_pix']):>5} {_f(r['median_abs_flux_error_snr10']):>5} "
                  f"{_f(r['median_abs_flux_error_snr20']):>5} {_f(r['share_own_snr_below3']):>5} "
                  f"{r['seconds']:>5.1f}s {len(r['warnings'])}")


def print_real_table(results: dict[str, Any]) -> None:
    real = results.get("real_images") or {}
    if not real:
        return
    print(f"\n{'real image':<22} {'model':<14} {'islands':>7} {'n_det':>6} {'recov':>6} {'<3s':>5} {'time':>6} warn")
    for key, entry in real.items():
        for model, r in entry["results"].items():
            if "error" in r:
                print(f"{key:<22} {model:<14} ERROR {r['error'][:80]}")
                continue
            print(f"{key:<22} {model:<14} {entry['n_islands']:>7} {r['n_detected']:>6} "
                  f"{_f(r['island_recovery']):>6} {_f(r['share_below3']):>5} {r['seconds']:>5.1f}s "
                  f"{len(r['warnings'])}")


def print_warnings(results: dict[str, Any]) -> None:
    """Each distinct warning once, with where it was raised."""
    seen: dict[str, list[str]] = {}
    for name, entry in results["domains"].items():
        for model, r in entry["results"].items():
            for w in r.get("warnings", []):
                seen.setdefault(w, []).append(f"{name}/{model}")
    for key, entry in (results.get("real_images") or {}).items():
        for model, r in entry["results"].items():
            for w in r.get("warnings", []):
                seen.setdefault(w, []).append(f"{key}/{model}")
    if seen:
        print("\nwarnings raised:")
        for w, where in seen.items():
            print(f"  - {w}\n    ({', '.join(where)})")
    flux = [(name, model, r["flux_note"]) for name, entry in results["domains"].items()
            for model, r in entry["results"].items() if r.get("flux_note")]
    if flux:
        print("\nflux errors:")
        for name, model, note in flux:
            print(f"  - {name}/{model}: {note}")


def markdown(results: dict[str, Any]) -> str:
    """The README tables: simulated domains and real images, with numbered warnings."""
    notes: dict[str, int] = {}

    def refs(warnings: list[str]) -> str:
        if not warnings:
            return ""
        return " ".join(f"[{notes.setdefault(w, len(notes) + 1)}]" for w in warnings)

    cfg = results["config"]
    lines = [f"Simulated domains ({cfg['size']} x {cfg['size']} px, seeds from 3,000,000; matching within "
             f"one beam FWHM, at least 2 px):", "",
             "| Domain | Model | Precision | Recall (SNR ≥ 5) | F1 | Position error (beam) | "
             "Flux error (SNR ≥ 10) | Detections < 3σ | Time (s) | Warnings |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, entry in results["domains"].items():
        for model, r in entry["results"].items():
            if "error" in r:
                lines.append(f"| {name} | {model} | failed: {r['error'][:60]} | | | | | | | |")
                continue
            flux = _f(r["median_abs_flux_error_snr10"]) if r["median_abs_flux_error_snr10"] is not None else "n/a"
            lines.append(f"| {name} | {model} | {_f(r['precision'])} | {_f(r['recall_snr5'])} | {_f(r['f1'])} | "
                         f"{_f(r['median_position_error_beam'])} | {flux} | {_f(r['share_own_snr_below3'])} | "
                         f"{r['seconds']:.1f} | {refs(r['warnings'])} |")
    lines += ["", "| Domain | Setting |", "|---|---|"]
    for name, entry in results["domains"].items():
        lines.append(f"| {name} | {entry['description']} |")
    real = results.get("real_images") or {}
    if real:
        lines += ["", "Real images (recovery: share of SEP's own 10σ islands with a detection within one beam):", "",
                  "| Image | Model | Detections | 10σ islands recovered | Detections < 3σ | Warnings |",
                  "|---|---|---:|---:|---:|---|"]
        for key, entry in real.items():
            for model, r in entry["results"].items():
                if "error" in r:
                    lines.append(f"| {key} | {model} | failed: {r['error'][:60]} | | | |")
                    continue
                rec = (f"{_f(r['island_recovery'])} ({r['n_islands_recovered']}/{entry['n_islands']})"
                       if r["island_recovery"] is not None else "-")
                lines.append(f"| {key} | {model} | {r['n_detected']} | {rec} | {_f(r['share_below3'])} | "
                             f"{refs(r['warnings'])} |")
    if notes:
        lines += ["", "Warnings:", ""]
        lines += [f"{n}. {w}" for w, n in notes.items()]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _clean(value: Any) -> Any:
    """NaN and infinities as null, so the JSON is standard."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_SIZE} px images, one per domain, {len(QUICK_DOMAINS)} domains")
    parser.add_argument("--models", help="comma-separated model names (default: every model of the registry)")
    parser.add_argument("--domains", help="comma-separated domain names (default: all, or the quick subset)")
    parser.add_argument("--size", type=int, help=f"image size, px (default {FULL_SIZE}, {QUICK_SIZE} with --quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default benchmarks/results)")
    parser.add_argument("--cache", type=Path, help="folder of the real images (fetched there when missing)")
    parser.add_argument("--no-real", action="store_true", help="skip the real images")
    parser.add_argument("--markdown", action="store_true", help="also print the README tables")
    parser.add_argument("--from-json", type=Path, help="print the tables of an earlier run and exit")
    args = parser.parse_args(argv)
    from astropy.io.fits.verify import VerifyWarning

    # real headers carry BLANK on float data; astropy ignores it, as the pipeline does: not news here
    warnings.filterwarnings("ignore", message="Invalid 'BLANK' keyword", category=VerifyWarning)

    if args.from_json:
        results = json.loads(args.from_json.read_text())
        print_domain_table(results)
        print_real_table(results)
        print_warnings(results)
        if args.markdown:
            print("\n" + markdown(results))
        return 0

    started = time.perf_counter()
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else registry_models()
    cards, info = load_cards(names)
    by_name = {d.name: d for d in DOMAINS}
    if args.domains:
        wanted = [n.strip() for n in args.domains.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(by_name))
        if unknown:
            parser.error(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    else:
        wanted = list(QUICK_DOMAINS) if args.quick else list(by_name)
    domains = [by_name[n] for n in wanted]
    size = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)

    print(f"models: {', '.join(names)}")
    for name, entry in info.items():
        if "error" in entry:
            print(f"  {name}: cannot run: {entry['error']}", file=sys.stderr)
        else:
            print(f"  {name}: {entry['family']} version {entry['version']}")
    try:
        import torch

        threads = torch.get_num_threads()
    except Exception:
        threads = None
    results: dict[str, Any] = {
        "config": {
            "quick": bool(args.quick), "size": size,
            "images_per_domain": 1 if args.quick else "per domain",
            "domains": wanted, "models": names, "snr_min": SNR_MIN, "flux_snr": list(FLUX_SNR),
            "faint_snr": FAINT_SNR,
            "snr_bins": [b if math.isfinite(b) else None for b in DEFAULT_SNR_BINS],
            "radius_rule": ("one beam FWHM (major axis) in pixels, at least 2 px (3 px where the image gives "
                            "no beam); pixel matching"),
            "island_rule": (f"SEP islands of the background-subtracted image above {ISLAND_SIGMA:g} x the local "
                            f"rms, at least {ISLAND_MIN_PIXELS} pixels, no deblending or filtering, NaN masked; "
                            "recovered when a detection lies within one beam FWHM of its peak or centroid"),
            "own_snr_rule": ("simulated domains: the catalogue's snr column, else (and on real images always) the "
                             "brightest of the 3 x 3 pixels around the detection, background-subtracted, over the "
                             "rms map"),
            "rms_rule": ("background and rms from the pipeline's measure_noise (SEP, 64 px mesh, 3 x 3 median "
                         "filter), interpolated to full size; rms floored at the smallest measured mesh value"),
            "real_cache": str(args.cache) if args.cache else None,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": threads},
        "models": info,
        "domains": {},
    }

    with tempfile.TemporaryDirectory(prefix="generalisation-") as tmp:
        for domain in domains:
            images = 1 if args.quick else domain.images
            start = time.perf_counter()
            results["domains"][domain.name] = run_domain(domain, size, images, cards, Path(tmp))
            entry = results["domains"][domain.name]
            entry["results"].update({n: {"error": info[n]["error"]} for n in names if n not in cards})
            print(f"{domain.name}: {images} image(s), {entry['n_true']} sources "
                  f"({entry['n_true_snr5']} with SNR >= 5), {time.perf_counter() - start:.1f} s", flush=True)

    if args.no_real:
        results["real_images"], results["real_images_skipped"] = {}, ["not asked for (--no-real)"]
    else:
        cache = args.cache or Path(tempfile.gettempdir()) / "real-images-cache"
        results["config"]["real_cache"] = str(cache)
        real, skipped = run_real(cache, cards, args.out)
        for entry in real.values():
            entry["results"].update({n: {"error": info[n]["error"]} for n in names if n not in cards})
        results["real_images"], results["real_images_skipped"] = real, skipped
        print(f"real images: {len(real)} run, {len(skipped)} skipped", flush=True)

    results["config"]["seconds"] = time.perf_counter() - started
    print_domain_table(results)
    print_real_table(results)
    print_warnings(results)
    args.out.mkdir(parents=True, exist_ok=True)
    out_json = args.out / "generalisation.json"
    out_json.write_text(json.dumps(_clean(results), indent=2, default=_json_default) + "\n")
    print(f"\nwrote {out_json}")
    plot(results, args.out / "generalisation.png")
    print(f"wrote {args.out / 'generalisation.png'}")
    for key, entry in results["real_images"].items():
        if entry.get("overlay"):
            print(f"wrote {args.out / entry['overlay']}")
    if args.markdown:
        print("\n" + markdown(results))
    print(f"\ntotal {results['config']['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
