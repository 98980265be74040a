"""A whole survey image end to end, FITS to VOTable: seconds, megapixels per second and host memory.

The image is simulated straight to disk in strips (a 32768 x 32768 float32 image is the full
SDC1 field, 4 GiB; it is never held in memory), then each model detects its sources with the
pipeline a user of ``cianna-otf detect`` runs, and the catalogue is written as a VOTable. The
first run of each model warms it up on a 2048 x 2048 image and is not timed.

Host memory is the peak of the process's anonymous resident memory (``RssAnon``, sampled every
100 ms): the memory-mapped image's pages are page cache, not the process's own. ``--profile``
adds the functions that took the most time, and ``--stages`` the seconds of each step of the
pipeline (run once more, step by step), so a figure comes with what bounds it.

    python benchmarks/whole_image.py --size 32768 --models yolo-demo yolo-demo-sdc1 \
        --device cuda --precision fp16 --out benchmarks/results/whole_image_h200.json
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cianna_otf_server import __version__
from cianna_otf_server.catalogue import write_catalogue
from cianna_otf_server.models import default_registry
from cianna_otf_server.pipeline import detect
from cianna_otf_server.sky.simulate import write_simulation


def anon_rss_bytes() -> int:
    """The process's anonymous resident memory now (Linux ``RssAnon``), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples `anon_rss_bytes` in a thread while the ``with`` block runs; `peak` is the largest seen."""

    def __init__(self, period: float = 0.1) -> None:
        self.period, self.peak, self.start = period, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss_bytes())
            time.sleep(self.period)

    def __enter__(self) -> PeakMemory:
        self.start = anon_rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss_bytes())


def run_once(image: Path, card, device: str, precision: str, out: Path, profile: bool) -> dict:
    """Detect and write the VOTable once; the figures of that run."""
    profiler = cProfile.Profile() if profile else None
    with PeakMemory() as memory:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        table = detect(str(image), card, device=device, precision=precision)
        write_catalogue(table, out, "votable")
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - start
    result = {"seconds": round(seconds, 3), "sources": len(table),
              "anon_rss_peak_mb": round(memory.peak / 2**20, 1),
              "anon_rss_growth_mb": round((memory.peak - memory.start) / 2**20, 1)}
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
        result["profile_top"] = text.getvalue().splitlines()[-32:]
    return result


def run_stages(image: Path, card, device: str, precision: str, out: Path) -> dict:
    """The one-job path of `detect`, step by step, with the seconds of each step.

    The same public steps `detect` chains (plan and noise map, cutting and scaling the patches,
    the network with its transfers, decoding with the first NMS, the second NMS and region,
    the measurement, the peak signal to noise, the catalogue columns, the VOTable), each timed
    on its own, so that a whole-image figure comes with the step that bounds it. The patches are
    cut ahead in threads as `detect` cuts them; "cut_and_scale" is the time the loop waited.
    """
    from cianna_otf_server.pipeline import YoloDetection, open_image, parse_region
    from cianna_otf_server.pipeline._detect import MAX_CUT_WORKERS, patch_batches, prepare_network, run_network

    times: dict[str, float] = {"open": 0.0, "plan_and_noise": 0.0, "cut_and_scale": 0.0, "network": 0.0,
                               "decode": 0.0, "measure": 0.0, "peak_snr": 0.0, "merge_and_region": 0.0,
                               "columns": 0.0, "votable": 0.0}
    network = prepare_network(card, device=device, precision=precision)

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] += time.perf_counter() - begin
        return wrapper

    start = time.perf_counter()
    sky = open_image(str(image))
    box = parse_region(None, None, sky)
    times["open"] = time.perf_counter() - start
    begin = time.perf_counter()
    detection = YoloDetection(sky, card, box, precision=precision, device=device)
    times["plan_and_noise"] = time.perf_counter() - begin
    workers = min(MAX_CUT_WORKERS, os.cpu_count() or 1)  # as `detect` cuts: ahead, in threads
    batches = iter(patch_batches(detection, 16, workers))  # on the GPU where `detect` makes them there
    while True:
        begin = time.perf_counter()
        item = next(batches, None)
        times["cut_and_scale"] += time.perf_counter() - begin
        if item is None:
            break
        tiles, batch = item
        begin = time.perf_counter()
        outputs = run_network(network, batch)
        times["network"] += time.perf_counter() - begin
        begin = time.perf_counter()
        detection.add_outputs(tiles, outputs, inputs=batch)
        times["decode"] += time.perf_counter() - begin
    detection._measure = timed("measure", detection._measure)
    detection.view.snr_peak = timed("peak_snr", detection.view.snr_peak)
    boxes = detection.boxes
    detection.boxes = timed("merge_and_region", boxes)
    begin = time.perf_counter()
    table = detection.catalogue()
    times["columns"] = time.perf_counter() - begin - times["merge_and_region"]
    times["merge_and_region"] -= times["measure"] + times["peak_snr"]
    begin = time.perf_counter()
    write_catalogue(table, out, "votable")
    times["votable"] = time.perf_counter() - begin
    sky.close()
    total = time.perf_counter() - start
    return {"seconds": round(total, 3), "sources": len(table),
            "stages_s": {name: round(value, 3) for name, value in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768, help="image side in pixels")
    parser.add_argument("--image", default=None, help="an existing FITS image instead of a simulated one")
    parser.add_argument("--models", nargs="+", default=["yolo-demo", "yolo-demo-sdc1"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp16" if torch.cuda.is_available() else "fp32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="add the 25 costliest functions of one more, untimed, run")
    parser.add_argument("--workdir", default=None, help="where the image is written (default: a temporary folder)")
    parser.add_argument("--stages", action="store_true",
                        help="also run each network model step by step and report the seconds of each step")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    registry = default_registry()
    report: dict = {
        "benchmark": "whole_image", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cianna_otf": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": args.device, "precision": args.precision, "runs": [],
    }
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp_path = Path(tmp)
        warm = tmp_path / "warm.fits"
        write_simulation(warm, 2048, seed=1_000_002)
        if args.image:
            image = Path(args.image)
            report["image"] = str(image)
        else:
            image = tmp_path / f"sky{args.size}.fits"
            start = time.perf_counter()
            write_simulation(image, args.size, seed=1_000_003)
            report["simulation_seconds"] = round(time.perf_counter() - start, 1)
            print(f"simulated {args.size} x {args.size} in {report['simulation_seconds']} s", flush=True)
            report["image"] = f"simulated {args.size} x {args.size} float32"
        from astropy.io import fits

        with fits.open(image, memmap=True) as hdus:
            ny, nx = hdus[0].data.shape[-2:]
        report["pixels"] = int(nx) * int(ny)
        report["image_gib"] = round(image.stat().st_size / 2**30, 2)
        for name in args.models:
            card = registry.verify(name)
            precision = args.precision if card.is_network else "fp32"
            detect(str(warm), card, device=args.device, precision=precision)
            for repeat in range(args.repeats + (1 if args.profile else 0)):
                profiled = repeat == args.repeats  # an extra run: the profiler's overhead is not timed
                run = run_once(image, card, args.device, precision, tmp_path / "sources.xml", profiled)
                if profiled:
                    report["runs"][-1]["profile_top"] = run["profile_top"]
                    continue
                run.update(model=f"{card.name} {card.version}", precision=precision, repeat=repeat,
                           mpx_per_s=round(report["pixels"] / 1e6 / run["seconds"], 1))
                report["runs"].append(run)
                write_report(report, args.out)  # after every run: a run cut short keeps the ones before
                print(f"{card.name:16s} {precision:5s} {run['seconds']:8.2f} s  {run['mpx_per_s']:8.1f} Mpx/s  "
                      f"{run['sources']:7d} sources  anon RSS peak {run['anon_rss_peak_mb']:.0f} MB", flush=True)
            if args.stages and card.is_network:
                staged = run_stages(image, card, args.device, precision, tmp_path / "sources.xml")
                staged["model"] = f"{card.name} {card.version}"
                report.setdefault("stages", []).append(staged)
                write_report(report, args.out)
                print(f"{card.name:16s} step by step {staged['seconds']:.2f} s: " + ", ".join(
                    f"{name} {value:.2f}" for name, value in staged["stages_s"].items()), flush=True)
    write_report(report, args.out)
    return 0


def write_report(report: dict, out: str | None) -> None:
    """The figures so far as JSON at `out` (nothing without one)."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
