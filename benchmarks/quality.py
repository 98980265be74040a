"""Detection quality benchmark: precision, recall and F1 against simulated truth, per SNR.

Simulates a held-out image (a seed no test or training run uses), runs each model through the
detection pipeline, cross-matches the catalogue with the truth within one beam, prints a table,
and writes the full report as JSON and a precision/recall-versus-SNR plot.

Example::

    python benchmarks/quality.py --models classic --size 2048 --seed 1000001 \
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
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from cianna_otf_server.quality import DEFAULT_SNR_BINS, quality_report
from cianna_otf_server.simulate import write_simulation

HELD_OUT_SEED = 1_000_001


def detect_catalogue(image_path: Path, model: str) -> Table:
    """Run one model on a FITS file and return its catalogue (ra, dec deg; x, y FITS 1-based).

    Goes through the pipeline's `detect` when it is available, so the benchmark measures what
    users get; until then the classic finder is called directly.
    """
    from cianna_otf_server.models import default_registry

    card = default_registry().get(model)
    try:
        from cianna_otf_server.pipeline import detect
    except ImportError:
        if card.family != "classic":
            raise
        return _classic_catalogue(image_path, card)
    return detect(str(image_path), card)


def _classic_catalogue(image_path: Path, card: Any) -> Table:
    """The classic finder run directly, with the catalogue conventions of the pipeline."""
    from astropy.wcs import WCS

    from cianna_otf_server.pipeline._classic import find_sources_classic

    with fits.open(image_path, memmap=True) as hdul:
        header = hdul[0].header
        data = hdul[0].data
        wcs = WCS(header).celestial
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0  # arcsec/px
        bmaj, bmin = header["BMAJ"] * 3600.0 / scale, header["BMIN"] * 3600.0 / scale
        beam_area = math.pi / (4.0 * math.log(2.0)) * bmaj * bmin
        cat = find_sources_classic(data, card.classic, beam_area_pix=beam_area)
    ra, dec = wcs.wcs_pix2world(cat["x"], cat["y"], 0) if len(cat) else (np.zeros(0), np.zeros(0))
    cat["x"] += 1.0
    cat["y"] += 1.0
    cat["ra"], cat["dec"] = ra, dec
    cat["bmaj"] = cat["bmaj"] * scale
    cat["bmin"] = cat["bmin"] * scale
    return cat


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
    """Precision and recall versus true SNR, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, entry in results["models"].items():
        rows = [r for r in entry["report"]["snr_bins"] if r["snr_min"] > 0]
        centres = [math.sqrt(r["snr_min"] * r["snr_max"]) if r["snr_max"] else r["snr_min"] * 1.5 for r in rows]
        for ax, key in zip(axes, ("recall", "precision")):
            values = [np.nan if r[key] is None else r[key] for r in rows]
            ax.plot(centres, values, marker="o", label=name)
    for ax, key in zip(axes, ("Recall (completeness)", "Precision (reliability)")):
        ax.set_xscale("log")
        ax.set_xlabel("true peak SNR")
        ax.set_title(key)
        ax.axvline(5.0, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.05)
    axes[0].set_ylabel("fraction")
    axes[1].legend()
    cfg = results["config"]
    fig.suptitle(f"Detection quality on a simulated {cfg['size']}^2 image (seed {cfg['seed']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["classic"], help="registered model names")
    parser.add_argument("--size", type=int, default=2048, help="simulated image size, pixels")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="simulation seed (held out)")
    parser.add_argument("--snr-min", type=float, default=5.0, help="SNR of the headline figures")
    parser.add_argument("--radius", type=float, default=None, help="matching radius, arcsec (default: beam)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/results/quality.png"))
    args = parser.parse_args(argv)

    results: dict[str, Any] = {
        "config": {"size": args.size, "seed": args.seed, "snr_min": args.snr_min, "radius_arcsec": args.radius,
                   "snr_bins": [b if math.isfinite(b) else None for b in DEFAULT_SNR_BINS]},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "sky.fits"
        start = time.perf_counter()
        truth = write_simulation(image, args.size, args.seed)
        results["config"]["simulation_seconds"] = time.perf_counter() - start
        results["config"]["noise_jy_per_beam"] = float(truth.meta["noise"])
        results["config"]["n_true"] = len(truth)
        print(f"simulated {args.size}x{args.size} px, seed {args.seed}: {len(truth)} sources, "
              f"{int((truth['snr'] >= args.snr_min).sum())} with SNR >= {args.snr_min:g}")
        for name in args.models:
            start = time.perf_counter()
            detected = detect_catalogue(image, name)
            seconds = time.perf_counter() - start
            det_snr = None
            if "snr" not in detected.colnames:
                det_snr = _pixel_snr(image, detected, float(truth.meta["noise"]))
            report = quality_report(detected, truth, radius_arcsec=args.radius, detected_snr=det_snr,
                                    snr_min=args.snr_min)
            results["models"][name] = {"seconds": seconds, "report": report}
            print_table(name, report, seconds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
