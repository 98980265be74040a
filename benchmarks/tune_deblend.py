"""Choose yolo-demo's deblending constants (`pipeline._components`) on held-out randomised skies.

The deblending step adds the significant peaks around the network's detections as components
of their own; its constants (`DeblendSettings`: the sidelobe rule, the dip, the distance that
makes a peak distinct, ...) decide which peaks are kept. They are chosen here on skies of the
training recipe (`training._data.simulate_training_sky`, yolo-demo 2's `TrainConfig`: a random
domain per seed, randomising beams, noise, density, artefacts, blanks and doubles), never on the
generalisation benchmark's domains (seeds from 3,000,000) nor on any seed training, validation
(2,000,000+), threshold tuning (2,100,000+) or the quality benchmark (1,000,001+) uses: seeds
from 7,000,000. The recipe draws artefacts (sidelobe rings and spokes, calibration stripes)
around bright sources for half its skies; the images are taken in order of seed, half of them
among the skies with artefacts and half among those without, so both kinds weigh as the recipe
means them to.

As in `training._tune`, the network runs once per image; deblending runs after it, so the
decoded, merged and measured network detections of each image are kept (the measurement of the
network's own boxes is the same for every setting) and only the deblending, the measurement of
its new components and the catalogue are made again for every candidate setting. Each catalogue
is matched with the truth as `training._tune` does (`quality_report` within `match_radius`: one
beam FWHM, at least 2 px; detections on a lobe of a double count as true).

Candidates come in two stages: every sidelobe rule (a constant ratio of the brightest standing
detection within some beams, or a ratio that falls with the distance beyond a knee: sidelobe
rings of a point source lie at a few beams and fade outward) at today's dip and distinct
distance; then today's rule and the best rules of stage 1 with every dip and distinct distance.

A third stage (``--stage ownership``, run on its own) starts from the shipped setting and tries
how far a non-compact detection owns the peaks inside its box (``owned_within_beams``, `OWNED`)
with the largest side of a component's box (``component_box_beams``, `COMPONENT_BOX`), each
pair at the dips of `OWNERSHIP_DIPS`; its table goes to ``--out`` (default
``benchmarks/results/deblend_tuning_ownership.json``), the same choice rule against the shipped
setting.

A fourth stage (``--stage adaptive``, run on its own) starts from the shipped setting and tries
the factor on the sidelobe ratio on images that show no sidelobes (``sidelobe_ratio_clean``,
`CLEAN_FACTORS`; 1 is the same rule on every image, the reference) with the brightness of the
detections looked at for evidence (``sidelobe_bright_snr``, `BRIGHT_SNR`) and the significance
of the excess (``sidelobe_excess_sigma``, `EXCESS_SIGMA`); its table goes to ``--out`` (default
``benchmarks/results/deblend_tuning_adaptive.json``), the same choice rule against the shipped
setting.

Choice rule: the best pooled recall of true sources of SNR >= 5 (then the best pooled precision)
among the candidates whose pooled precision is no more than ``--precision-slack`` (0.003) below
the shipped setting's and whose precision is at least ``--min-precision`` (0.95) on every image;
on an image where the shipped setting is already below that (the network alone, without any
deblending, is below 0.95 on some sparse and artefact skies), no more than the slack below the
shipped setting's there. The table of every candidate goes to ``--out`` (default
``benchmarks/results/deblend_tuning.json``) with the device, date and versions.

Example::

    python benchmarks/tune_deblend.py                      # 16 images of 2048 x 2048 px (~5 min, 2 cores)
    python benchmarks/tune_deblend.py --images 4 --size 1024 --quick   # smoke run, a small grid
    python benchmarks/tune_deblend.py --stage ownership    # stage 3 alone (~4 min, 2 cores)
    python benchmarks/tune_deblend.py --stage adaptive     # stage 4 alone (~4 min, 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import json
import math
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cianna_otf_server.pipeline import _components, _detect  # noqa: E402
from cianna_otf_server.pipeline._components import DEFAULT_SETTINGS, DeblendSettings  # noqa: E402

FIRST_SEED = 7_000_000
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "deblend_tuning.json"
OWNERSHIP_OUT = ROOT / "benchmarks" / "results" / "deblend_tuning_ownership.json"
ADAPTIVE_OUT = ROOT / "benchmarks" / "results" / "deblend_tuning_adaptive.json"

#: The sidelobe rules tried: (ratio, beams) of the constant rule, and (ratio, knee, slope, beams)
#: of the rule whose ratio falls beyond the knee as (knee / d) ** slope.
RATIOS = (0.01, 0.015, 0.02, 0.03)
SIDELOBE_BEAMS = (4.0, 6.0, 8.0)
FALLING = tuple(itertools.product((0.02, 0.03), (2.0, 3.0, 4.0, 5.0), (1.0, 1.5, 2.0), (8.0, 12.0)))
DIPS = (0.65, 0.75, 0.85)
DISTINCT = (1.0, 1.25)
#: Sidelobe rules of stage 1 (best by the choice rule) tried with every dip and distinct distance.
STAGE2_RULES = 6
#: Stage 3: how far (beams) a non-compact detection owns the peaks in its box, the largest side of
#: a component's box (beam major axes), and the dips each pair is tried with.
OWNED = (1.5, 2.0, 2.5, 3.0, math.inf)
COMPONENT_BOX = (2.0, 3.0, 4.0, 6.0, math.inf)
OWNERSHIP_DIPS = (0.75, 0.85)
#: Stage 4: the factor on the sidelobe ratio on images without evidence of sidelobes, the
#: brightness (sigmas) of the detections looked at for it, and the significance of the excess.
CLEAN_FACTORS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.0)
BRIGHT_SNR = (100.0, 300.0, 1000.0)
EXCESS_SIGMA = (2.0, 3.0)


def environment() -> dict[str, Any]:
    """Device, date and versions, as the other benchmarks record them."""
    import astropy
    import scipy
    import torch

    import cianna_otf_server

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "astropy": astropy.__version__, "cianna_otf": getattr(cianna_otf_server, "__version__", None),
            "cpu": platform.processor() or platform.machine(), "cpu_count": __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": "cpu"}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sidelobe_rules(quick: bool = False) -> list[DeblendSettings]:
    """Stage 1: every sidelobe rule at today's dip and distinct distance (today's setting first)."""
    rules = [dict(sidelobe_ratio=r, sidelobe_beams=b, sidelobe_slope=0.0) for r, b in
             itertools.product(RATIOS, SIDELOBE_BEAMS)]
    rules += [dict(sidelobe_ratio=r, sidelobe_knee_beams=k, sidelobe_slope=sl, sidelobe_beams=b)
              for r, k, sl, b in FALLING]
    if quick:
        rules = rules[::6]
    out = [DEFAULT_SETTINGS]
    for rule in rules:
        setting = dataclasses.replace(DEFAULT_SETTINGS, **rule)
        if setting not in out:
            out.append(setting)
    return out


def dip_variants(rules: Sequence[DeblendSettings], quick: bool = False) -> list[DeblendSettings]:
    """Stage 2: the best sidelobe rules (and today's) with every dip and distinct distance."""
    dips, distinct = (DIPS, DISTINCT) if not quick else (DIPS[::2], DISTINCT[:1])
    out = []
    for rule, dip, dist in itertools.product(rules, dips, distinct):
        setting = dataclasses.replace(rule, dip=dip, distinct_beams=dist)
        if setting not in rules and setting not in out:
            out.append(setting)
    return out


def ownership_variants(quick: bool = False) -> list[DeblendSettings]:
    """Stage 3: the shipped setting (first) with every owned distance, component box side and dip."""
    owned, sides, dips = (OWNED, COMPONENT_BOX, OWNERSHIP_DIPS) if not quick else \
        (OWNED[1::2] + OWNED[-1:], COMPONENT_BOX[1::2] + COMPONENT_BOX[-1:], OWNERSHIP_DIPS[-1:])
    out = [DEFAULT_SETTINGS]
    for dip, within, side in itertools.product(dips, owned, sides):
        setting = dataclasses.replace(DEFAULT_SETTINGS, dip=dip, owned_within_beams=within, component_box_beams=side)
        if setting not in out:
            out.append(setting)
    return out


def adaptive_variants(quick: bool = False) -> list[DeblendSettings]:
    """Stage 4: the shipped setting (first) with every clean factor, bright level and excess significance."""
    factors, bright, excess = (CLEAN_FACTORS, BRIGHT_SNR, EXCESS_SIGMA) if not quick else \
        (CLEAN_FACTORS[::3], BRIGHT_SNR[1:2], EXCESS_SIGMA[-1:])
    out = [DEFAULT_SETTINGS]
    for factor, level, sig in itertools.product(factors, bright, excess):
        if factor == 1.0:  # the same rule on every image, whatever the evidence: the shipped setting
            continue
        setting = dataclasses.replace(DEFAULT_SETTINGS, sidelobe_ratio_clean=factor, sidelobe_bright_snr=level,
                                      sidelobe_excess_sigma=sig)
        if setting not in out:
            out.append(setting)
    return out


def label(s: DeblendSettings) -> str:
    rule = f"ratio {s.sidelobe_ratio:.3f}"
    if s.sidelobe_slope:
        rule += f" (d/{s.sidelobe_knee_beams:g})^-{s.sidelobe_slope:g}"
    text = f"{rule} within {s.sidelobe_beams:g} beams, dip {s.dip:.2f}, distinct {s.distinct_beams:.2f}"
    if math.isfinite(s.owned_within_beams) or math.isfinite(s.component_box_beams):
        text += f", owned {s.owned_within_beams:g}, box {s.component_box_beams:g}"
    if s.sidelobe_ratio_clean != 1.0:
        text += (f", clean x{s.sidelobe_ratio_clean:g} (bright {s.sidelobe_bright_snr:g}, "
                 f"excess {s.sidelobe_excess_sigma:g})")
    return text


@contextlib.contextmanager
def deblend_with(settings: DeblendSettings) -> Iterator[None]:
    """The pipeline's deblending step with `settings`, restored afterwards."""
    shipped = _detect.component_boxes
    _detect.component_boxes = functools.partial(_components.component_boxes, settings=settings)
    try:
        yield
    finally:
        _detect.component_boxes = shipped


def held_out_seeds(config: Any, count: int, size: int, first: int = FIRST_SEED) -> list[int]:
    """Seeds from `first` in order: the first ``count // 2`` skies with artefacts, the rest without."""
    from cianna_otf_server.training._data import sky_options

    with_artefacts, without = [], []
    seed = first
    while len(with_artefacts) < count // 2 or len(without) < count - count // 2:
        has = sky_options(config, seed, size).artefact_level > 0
        group, want = (with_artefacts, count // 2) if has else (without, count - count // 2)
        if len(group) < want:
            group.append(seed)
        seed += 1
    return sorted(with_artefacts + without)


class Image:
    """One held-out sky: its truth, domain, and a `YoloDetection` holding the network's decoded outputs.

    The measurement of the network's own (merged) boxes is made once and reused by every setting.
    """

    def __init__(self, seed: int, config: Any, size: int, card: Any, net: Any, batch_size: int) -> None:
        from cianna_otf_server.pipeline._detect import YoloDetection, run_network
        from cianna_otf_server.pipeline._image import open_image
        from cianna_otf_server.pipeline._region import full_box
        from cianna_otf_server.pipeline._tiling import iter_batches
        from cianna_otf_server.training._data import simulate_training_sky, sky_options
        from cianna_otf_server.training._tune import match_radius

        started = time.perf_counter()
        self.seed = seed
        opts = sky_options(config, seed, size)
        self.domain = {"beam_px": round(opts.beam_bmaj / opts.pixel_scale, 2),
                       "axis_ratio": round(opts.beam_bmin / opts.beam_bmaj, 2),
                       "artefact_level": round(opts.artefact_level, 4), "n_sources_mode": opts.n_sources,
                       "density": round(float(opts.density), 1), "double_fraction": round(opts.double_fraction, 3),
                       "extended_fraction": round(opts.extended_fraction, 3),
                       "brightest_snr": round(opts.flux_max / opts.noise, 0)}
        hdul, self.truth = simulate_training_sky(config, seed, size)
        self.radius = match_radius(self.truth)
        image = open_image(hdul)
        self.detection = YoloDetection(image, card, full_box(image), precision="fp32")
        for tiles, batch in iter_batches(self.detection.view, self.detection.plan, card.normalisation, batch_size):
            self.detection.add_outputs(tiles, run_network(net, batch))
        measure, kept = self.detection._measure, []

        def once(boxes: Any) -> Any:
            if not kept:
                kept.append(measure(boxes))
            return kept[0]

        self.detection._measure = once
        self.n_true = len(self.truth)
        self.n_true5 = int(np.sum(np.asarray(self.truth["snr"]) >= 5.0)) if len(self.truth) else 0
        self.seconds = time.perf_counter() - started

    def score(self, settings: DeblendSettings | None) -> dict[str, Any]:
        """The catalogue's counts with `settings`; None: without deblending (the card's ``deblend`` off)."""
        from cianna_otf_server.sky.quality import quality_report

        if settings is None:
            shipped = self.detection.yolo
            self.detection.yolo = dataclasses.replace(shipped, deblend=False)
            try:
                table = self.detection.catalogue()
            finally:
                self.detection.yolo = shipped
        else:
            with deblend_with(settings):
                table = self.detection.catalogue()
        report = quality_report(table, self.truth, radius_pix=self.radius)
        o, a = report["overall"], report["above"]
        return {"n_detected": int(o["n_detected"]), "n_true_positive": int(o["n_true_positive"]),
                "n_true": int(o["n_true"]), "n_recovered": int(o["n_recovered"]),
                "n_true_snr5": int(a["n_true"]), "n_recovered_snr5": int(a["n_recovered"]),
                "precision": o["precision"]}


def pooled(images: Sequence[Any], per_image: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting's figures pooled over the skies (each sky's `quality_report` counts in `per_image`)."""
    tp = sum(r["n_true_positive"] for r in per_image)
    det = sum(r["n_detected"] for r in per_image)
    found5 = sum(r["n_recovered_snr5"] for r in per_image)
    true5 = sum(r["n_true_snr5"] for r in per_image)
    found = sum(r["n_recovered"] for r in per_image)
    true = sum(r["n_true"] for r in per_image)
    precisions = [(r["precision"], item.seed) for r, item in zip(per_image, images) if r["precision"] is not None]
    worst, worst_seed = min(precisions, default=(0.0, None))
    return {"precision": tp / det if det else 0.0, "worst_image_precision": float(worst),
            "worst_image_seed": worst_seed, "recall": found / true if true else 0.0,
            "recall_snr5": found5 / true5 if true5 else 0.0, "n_recovered_snr5": found5, "detections": det,
            "false_positives": det - tp, "per_image": per_image}


def evaluate(images: Sequence[Image], settings: DeblendSettings | None) -> dict[str, Any]:
    per_image = [item.score(settings) for item in images]
    return {"settings": dataclasses.asdict(settings) if settings is not None else None,
            "label": label(settings) if settings is not None else "no deblending (reference, not a candidate)",
            "today": settings == DEFAULT_SETTINGS, **pooled(images, per_image)}


def passes(row: dict[str, Any], today: dict[str, Any], min_precision: float, slack: float) -> bool:
    """The precision rule: pooled precision at most `slack` below today's, and on every image at
    least `min_precision`, or, on an image today's setting already leaves below it, at most `slack`
    below today's there (the network alone, without deblending, misses `min_precision` on some
    sparse and artefact skies: no deblending setting can lift those)."""
    if row["precision"] < today["precision"] - slack:
        return False
    for mine, base in zip(row["per_image"], today["per_image"]):
        if mine["precision"] is None or base["precision"] is None:
            continue
        if mine["precision"] < min(min_precision, base["precision"] - slack):
            return False
    return True


def print_per_image(images: Sequence[Any], settings: dict[str, dict[str, Any]]) -> None:
    """Each sky's seed, artefact level, SNR >= 5 sources, and precision and recall under each named setting."""
    print(f"\nper image ({' / '.join(settings)}): seed, artefacts, SNR>=5 sources, P, R5")
    for item, *rows in zip(images, *(r["per_image"] for r in settings.values())):
        r5 = " / ".join(f"{x['n_recovered_snr5'] / x['n_true_snr5']:.3f}" if x["n_true_snr5"] else "-" for x in rows)
        p = " / ".join(f"{x['precision']:.3f}" if x["precision"] is not None else "-" for x in rows)
        print(f"  {item.seed} art {item.domain['artefact_level']:.4f} n5 {item.n_true5:5d}  P {p}  R5 {r5}")


def base_config(args: Any, card: Any, seeds: Sequence[int], first_seed: int) -> dict[str, Any]:
    """What a tuning run's JSON records of its model, skies, matching and choice thresholds."""
    return {"model": args.model, "model_version": card.version, "size": args.size, "seeds": list(seeds),
            "seed_rule": f"from {first_seed} in order, half among skies with artefacts and half without",
            "recipe": "training._data.simulate_training_sky(TrainConfig(seed=3, recipe='snr'), seed, size)",
            "matching": "quality_report within training._tune.match_radius (one beam FWHM, >= 2 px)",
            "min_precision": args.min_precision, "precision_slack": args.precision_slack}


def candidate_records(rows: list[dict[str, Any]], reference: dict[str, Any], min_precision: float,
                      slack: float) -> list[dict[str, Any]]:
    """Every candidate's pooled figures, whether it passes the rule, and its per-image precision and recall."""
    return [{**{k: v for k, v in r.items() if k != "per_image"},
             "passes": passes(r, reference, min_precision, slack),
             "per_image_precision": [x["precision"] for x in r["per_image"]],
             "per_image_recovered_snr5": [x["n_recovered_snr5"] for x in r["per_image"]]} for r in rows]


def _strict(value: Any) -> Any:
    """`value` with numpy scalars as numbers and unbounded settings (inf) as the text "inf" (strict JSON)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else None
    return value


def write_result(result: dict[str, Any], out: str | Path) -> None:
    """The tuning's JSON: strict (no NaN or Infinity), numpy scalars as numbers."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_strict(result), indent=1, allow_nan=False, default=str) + "\n")
    print(f"wrote {out}")


def choose(rows: list[dict[str, Any]], min_precision: float, slack: float) -> dict[str, Any]:
    """Best pooled SNR >= 5 recall (then precision) among the candidates that pass the precision rule."""
    today = next(r for r in rows if r["today"])
    good = [r for r in rows if passes(r, today, min_precision, slack)]
    return max(good, key=lambda r: (r["recall_snr5"], r["precision"])) if good else today


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="held-out skies (half with artefacts)")
    parser.add_argument("--size", type=int, default=2048, help="image side, pixels")
    parser.add_argument("--model", default="yolo-demo")
    parser.add_argument("--min-precision", type=float, default=0.95, help="precision every image must reach")
    parser.add_argument("--precision-slack", type=float, default=0.003,
                        help="how far the pooled precision may fall below today's setting's")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="a small grid (smoke run)")
    parser.add_argument("--top", type=int, default=15, help="rows of the printed table")
    parser.add_argument("--stage", choices=("sidelobe", "ownership", "adaptive"), default="sidelobe",
                        help="sidelobe: stages 1 and 2 (sidelobe rule, dip, distinct distance); ownership: "
                             "stage 3 alone (owned distance x component box side x dip, from the shipped setting); "
                             "adaptive: stage 4 alone (clean-image factor on the sidelobe ratio x bright level x "
                             "excess significance, from the shipped setting)")
    parser.add_argument("--out", default=None,
                        help=f"JSON (default {DEFAULT_OUT.relative_to(ROOT)}, or "
                             f"{OWNERSHIP_OUT.relative_to(ROOT)} with --stage ownership, "
                             f"{ADAPTIVE_OUT.relative_to(ROOT)} with --stage adaptive)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str({"ownership": OWNERSHIP_OUT, "adaptive": ADAPTIVE_OUT}.get(args.stage, DEFAULT_OUT))

    import torch

    from cianna_otf_server.models import default_registry
    from cianna_otf_server.pipeline._detect import prepare_network
    from cianna_otf_server.training._config import TrainConfig

    started = time.perf_counter()
    card = default_registry().get(args.model)
    net = prepare_network(card, device="cpu", precision="fp32")
    config = TrainConfig(seed=3, recipe="snr")  # yolo-demo 2's recipe: a random domain per seed
    seeds = held_out_seeds(config, args.images, args.size)
    images = []
    with torch.inference_mode():
        for seed in seeds:
            images.append(Image(seed, config, args.size, card, net, args.batch_size))
            item = images[-1]
            print(f"sky {seed}: {item.n_true} sources ({item.n_true5} of SNR >= 5), {item.domain}, "
                  f"{item.seconds:.1f} s", flush=True)
    rows: list[dict[str, Any]] = []

    def run(grid: list[DeblendSettings], stage: int) -> None:
        for k, setting in enumerate(grid):
            t0 = time.perf_counter()
            rows.append({"stage": stage, **evaluate(images, setting)})
            r = rows[-1]
            print(f"[{stage}: {k + 1}/{len(grid)}] {r['label']}: P {r['precision']:.4f} "
                  f"(worst {r['worst_image_precision']:.3f}) R5 {r['recall_snr5']:.4f} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)

    if args.stage == "ownership":
        run(ownership_variants(args.quick), 3)
        today = next(r for r in rows if r["today"])
    elif args.stage == "adaptive":
        run(adaptive_variants(args.quick), 4)
        today = next(r for r in rows if r["today"])
    else:
        run(sidelobe_rules(args.quick), 1)
        today = next(r for r in rows if r["today"])
        ok = [r for r in rows if passes(r, today, args.min_precision, args.precision_slack)]
        ranked1 = sorted(ok, key=lambda r: (-r["recall_snr5"], -r["precision"]))
        rules = [DEFAULT_SETTINGS] + [DeblendSettings(**r["settings"]) for r in ranked1
                                      if not r["today"]][:STAGE2_RULES]
        run(dip_variants(rules, args.quick), 2)
    plain = evaluate(images, None)
    best = choose(rows, args.min_precision, args.precision_slack)
    eligible = [r for r in rows if passes(r, today, args.min_precision, args.precision_slack)]

    print(f"\n{'':2s} {'setting':92s} {'P':>7s} {'worst':>6s} {'R5':>7s} {'R':>7s} {'FP':>5s}")
    order = sorted(rows, key=lambda r: (-r["recall_snr5"], -r["precision"]))
    shown = [r for r in order if r in eligible][:args.top]
    shown += [r for r in order if r not in eligible][:max(3, args.top // 2)]
    shown += [today] if today not in shown else []
    for r in shown + [plain]:
        mark = ("*" if r is best else "") + ("T" if r["today"] else "") + \
            ("-" if r is plain else "" if r in eligible else "x")
        print(f"{mark:2s} {r['label']:92s} {r['precision']:7.4f} {r['worst_image_precision']:6.3f} "
              f"{r['recall_snr5']:7.4f} {r['recall']:7.4f} {r['false_positives']:5d}")
    print(f"(* chosen, T today's setting, x fails the precision rule, - reference; "
          f"{len(eligible)} of {len(rows)} pass)")
    print(f"\nchosen: {best['label']}: P {best['precision']:.4f} R5 {best['recall_snr5']:.4f} "
          f"(today P {today['precision']:.4f} R5 {today['recall_snr5']:.4f})")
    print_per_image(images, {"no deblending": plain, "today": today, "chosen": best})

    result = {
        "environment": environment(),
        "config": {**base_config(args, card, seeds, FIRST_SEED),
                   "rule": "best pooled recall of SNR >= 5 among candidates whose pooled precision is >= today's "
                           "- precision_slack and whose precision on every image is >= min_precision, or >= today's "
                           "- precision_slack on an image where today's is already below min_precision",
                   "stages": (f"3: the shipped setting with owned_within_beams {list(OWNED)} x "
                              f"component_box_beams {list(COMPONENT_BOX)} x dip {list(OWNERSHIP_DIPS)}"
                              if args.stage == "ownership" else
                              f"4: the shipped setting with sidelobe_ratio_clean {list(CLEAN_FACTORS)} x "
                              f"sidelobe_bright_snr {list(BRIGHT_SNR)} x sidelobe_excess_sigma {list(EXCESS_SIGMA)} "
                              f"(factor 1.0: the shipped setting, once)"
                              if args.stage == "adaptive" else
                              f"1: every sidelobe rule at today's dip and distinct distance; 2: today's and the "
                              f"{STAGE2_RULES} best passing rules of stage 1 with dip {list(DIPS)} and distinct "
                              f"{list(DISTINCT)}"),
                   "quick": args.quick, "seconds": round(time.perf_counter() - started, 1)},
        "images": [{"seed": item.seed, "n_true": item.n_true, "n_true_snr5": item.n_true5, "domain": item.domain,
                    "network_seconds": round(item.seconds, 2)} for item in images],
        "no_deblending": plain,
        "today": {k: v for k, v in today.items()},
        "chosen": {k: v for k, v in best.items()},
        "candidates": candidate_records(rows, today, args.min_precision, args.precision_slack),
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
