"""Detection quality benchmark: precision, recall and F1 against simulated truth, per SNR.

Simulates held-out images (seeds no test, training, validation or tuning run uses), runs each
model through the detection pipeline the service uses, cross-matches each catalogue with its
truth within one beam, pools the counts over the images, prints a table per model, and writes
the full report as JSON and a precision / recall / F1 versus SNR plot.

Example::

    python benchmarks/quality.py --models yolo-demo classic --size 2048 --images 4 \
        --out benchmarks/results/quality.json --plot benchmarks/results/quality.png
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table

from cianna_otf_server.sky.quality import DEFAULT_SNR_BINS, match_catalogues, quality_report
from cianna_otf_server.sky.simulate import write_simulation

#: First held-out seed; image k uses HELD_OUT_SEED + k. Training skies draw seeds above 10**7,
#: its validation skies 2000000 + k and its threshold tuning 2100000 + k.
HELD_OUT_SEED = 1_000_001
_COUNTS = ("n_true", "n_recovered", "n_detected", "n_true_positive")


def detect_catalogue(image_path: Path, model: str) -> Table:
    """Run one registered model on a FITS file through the pipeline's `detect`, as users get it."""
    from cianna_otf_server.models import default_registry
    from cianna_otf_server.pipeline import detect

    card = default_registry().verify(model)
    return detect(str(image_path), card)


def model_provenance(model: str) -> dict[str, Any]:
    """What identifies the model that was measured (version, weights digest, training summary)."""
    from cianna_otf_server.models import default_registry

    card = default_registry().get(model)
    info: dict[str, Any] = {"version": card.version, "family": card.family}
    if card.sha256:
        info["sha256"] = card.sha256
    for key in ("seed", "steps", "patches", "train_minutes", "commands"):
        if key in card.training:
            info[f"training_{key}"] = card.training[key]
    return info


def _with_ratios(counts: dict[str, Any]) -> dict[str, Any]:
    """Precision, recall and F1 from summed counts."""
    out = dict(counts)
    det, true = counts["n_detected"], counts["n_true"]
    precision = counts["n_true_positive"] / det if det else None
    recall = counts["n_recovered"] / true if true else None
    out["precision"], out["recall"] = precision, recall
    out["f1"] = (2 * precision * recall / (precision + recall) if precision and recall else
                 (0.0 if precision is not None and recall is not None else None))
    return out


def _median(values: Sequence[float]) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(np.median(array)) if array.size else None


def pool_reports(reports: list[dict[str, Any]], errors: dict[str, list[np.ndarray]], snr_min: float) -> dict[str, Any]:
    """One report for several images: counts summed per bin, errors' medians over all matches.

    ``errors`` holds, per image, the matches' separations (arcsec), relative flux errors and true SNRs.
    """
    def summed(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return _with_ratios({key: sum(int(r[key]) for r in rows) for key in _COUNTS})

    pooled: dict[str, Any] = {
        "images": len(reports),
        "n_detected": sum(r["n_detected"] for r in reports),
        "n_true": sum(r["n_true"] for r in reports),
        "n_matched": sum(r["n_matched"] for r in reports),
        "radius": reports[0]["radius"],
        "radius_unit": reports[0]["radius_unit"],
        "overall": summed([r["overall"] for r in reports]),
        "above": {"snr_min": snr_min, **summed([r["above"] for r in reports])},
        "snr_bins": [
            {"snr_min": rows[0]["snr_min"], "snr_max": rows[0]["snr_max"], **summed(list(rows))}
            for rows in zip(*(r["snr_bins"] for r in reports))
        ],
    }
    separation = np.concatenate(errors["separation"]) if errors["separation"] else np.zeros(0)
    relative = np.concatenate(errors["relative_flux"]) if errors["relative_flux"] else np.zeros(0)
    snr = np.concatenate(errors["snr"]) if errors["snr"] else np.zeros(0)
    pooled["median_position_error_arcsec"] = _median(separation)
    pooled["median_relative_flux_error"] = _median(relative)
    pooled["median_abs_relative_flux_error"] = _median(np.abs(relative))
    pooled["median_abs_relative_flux_error_above"] = _median(np.abs(relative[snr >= snr_min]))
    return pooled


def _pixel_snr(image_path: Path, detected: Table, noise: float) -> np.ndarray:
    """SNR of each detection read off the image (brightest of the 3x3 pixels around it)."""
    with fits.open(image_path, memmap=True) as hdul:
        data = hdul[0].data
        ny, nx = data.shape
        snr = np.full(len(detected), np.nan)
        for k, (x, y) in enumerate(zip(np.asarray(detected["x"]) - 1, np.asarray(detected["y"]) - 1)):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            ix, iy = int(round(x)), int(round(y))
            cut = data[max(0, iy - 1):min(ny, iy + 2), max(0, ix - 1):min(nx, ix + 2)]
            if cut.size:
                snr[k] = float(np.nanmax(cut)) / noise
    return snr


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(name: str, report: dict[str, Any], seconds: float) -> None:
    """A plain-text summary: one line per SNR bin, then the headline figures."""
    print(f"\nmodel {name}: {report['n_detected']} detections, {report['n_true']} true sources, "
          f"{report['n_matched']} matched within {report['radius']:.2f} {report['radius_unit']} "
          f"({seconds:.2f} s)")
    print(f"{'true SNR':>12} {'n_true':>7} {'recall':>7} {'n_det':>6} {'precision':>9} {'F1':>6}")
    for row in report["snr_bins"]:
        hi = "inf" if row["snr_max"] is None else f"{row['snr_max']:g}"
        print(f"{row['snr_min']:>5g} - {hi:<4} {row['n_true']:>7} {_fmt(row['recall']):>7} "
              f"{row['n_detected']:>6} {_fmt(row['precision']):>9} {_fmt(row['f1']):>6}")
    for label, key in (("all", "overall"), (f"SNR >= {report['above']['snr_min']:g}", "above")):
        row = report[key]
        print(f"{label:>12} {row['n_true']:>7} {_fmt(row['recall']):>7} {row['n_detected']:>6} "
              f"{_fmt(row['precision']):>9} {_fmt(row['f1']):>6}")
    pos = report.get("median_position_error_arcsec")
    print(f"median position error {_fmt(pos)} arcsec; median relative flux error "
          f"{_fmt(report['median_relative_flux_error'])} (|.| {_fmt(report['median_abs_relative_flux_error'])}, "
          f"SNR >= {report['above']['snr_min']:g}: {_fmt(report['median_abs_relative_flux_error_above'])})")


def plot(results: dict[str, Any], path: Path) -> None:
    """Recall, precision and F1 versus true SNR, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("recall", "Recall (completeness)"), ("precision", "Precision (reliability)"), ("f1", "F1"))
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 4), sharey=True)
    for name, entry in results["models"].items():
        rows = [r for r in entry["report"]["snr_bins"] if r["snr_min"] > 0]
        centres = [math.sqrt(r["snr_min"] * r["snr_max"]) if r["snr_max"] else r["snr_min"] * 1.5 for r in rows]
        for ax, (key, _) in zip(axes, panels):
            values = [np.nan if r[key] is None else r[key] for r in rows]
            ax.plot(centres, values, marker="o", label=name)
    for ax, (_, title) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_xlabel("true peak SNR")
        ax.set_title(title)
        ax.axvline(5.0, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.05)
    axes[0].set_ylabel("fraction")
    axes[-1].legend()
    cfg = results["config"]
    fig.suptitle(f"Detection quality on {cfg['images']} simulated {cfg['size']}^2 images "
                 f"(seeds {cfg['seeds'][0]}-{cfg['seeds'][-1]}, {cfg['n_true']} sources)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def measure(name: str, images: list[tuple[Path, Table]], radius: float | None, snr_min: float) -> dict[str, Any]:
    """Run a model on every image and pool its report; time the detections only."""
    reports, seconds = [], 0.0
    errors: dict[str, list[np.ndarray]] = {"separation": [], "relative_flux": [], "snr": []}
    for path, truth in images:
        start = time.perf_counter()
        detected = detect_catalogue(path, name)
        seconds += time.perf_counter() - start
        det_snr = None
        if "snr" not in detected.colnames:
            det_snr = _pixel_snr(path, detected, float(truth.meta["noise"]))
        reports.append(quality_report(detected, truth, radius_arcsec=radius, detected_snr=det_snr, snr_min=snr_min))
        match = match_catalogues(detected, truth, radius_arcsec=radius)
        true_flux = np.asarray(truth["flux"], dtype=np.float64)[match.truth]
        det_flux = np.ma.filled(np.ma.asarray(detected["flux"], dtype=np.float64), np.nan)[match.detected]
        errors["separation"].append(np.asarray(match.separation))
        errors["relative_flux"].append((det_flux - true_flux) / true_flux)
        errors["snr"].append(np.asarray(truth["snr"], dtype=np.float64)[match.truth])
    report = pool_reports(reports, errors, snr_min)
    return {"seconds": seconds, "seconds_per_image": seconds / len(images), "model": model_provenance(name),
            "report": report, "per_image": reports}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["yolo-demo", "classic"], help="registered model names")
    parser.add_argument("--size", type=int, default=2048, help="simulated image size, pixels")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="seed of the first image (held out)")
    parser.add_argument("--images", type=int, default=4, help="images, with seeds SEED, SEED+1, ...")
    parser.add_argument("--snr-min", type=float, default=5.0, help="SNR of the headline figures")
    parser.add_argument("--radius", type=float, default=None, help="matching radius, arcsec (default: beam)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/quality.png"))
    args = parser.parse_args(argv)

    seeds = [args.seed + k for k in range(max(1, args.images))]
    results: dict[str, Any] = {
        "config": {"size": args.size, "seed": args.seed, "seeds": seeds, "images": len(seeds),
                   "snr_min": args.snr_min, "radius_arcsec": args.radius,
                   "snr_bins": [b if math.isfinite(b) else None for b in DEFAULT_SNR_BINS]},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        images: list[tuple[Path, Table]] = []
        start = time.perf_counter()
        for seed in seeds:
            path = Path(tmp) / f"sky-{seed}.fits"
            images.append((path, write_simulation(path, args.size, seed)))
        truths = [truth for _, truth in images]
        config = results["config"]
        config["simulation_seconds"] = time.perf_counter() - start
        config["noise_jy_per_beam"] = float(truths[0].meta["noise"])
        config["n_true"] = sum(len(t) for t in truths)
        strong = sum(int((t["snr"] >= args.snr_min).sum()) for t in truths)
        print(f"simulated {len(seeds)} images of {args.size}x{args.size} px, seeds {seeds[0]}-{seeds[-1]}: "
              f"{config['n_true']} sources, {strong} with SNR >= {args.snr_min:g}")
        for name in args.models:
            entry = measure(name, images, args.radius, args.snr_min)
            results["models"][name] = entry
            print_table(name, entry["report"], entry["seconds"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
