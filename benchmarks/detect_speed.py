"""Time one model's detection of whole simulated images, per device and precision.

What a user of ``cianna-otf detect`` waits for: the full pipeline (memory-mapped FITS, tiling,
normalisation, network, decode, both NMS passes, catalogue), on a 2048 x 2048 image and on a
16384 x 16384 one (1 GiB). Also checks that every precision finds (nearly) the same sources as
fp32 on the CPU. The first detection of each setting warms the model up and is not timed.

    python benchmarks/detect_speed.py --model yolo-demo --devices cpu cuda \
        --out benchmarks/results/detect_speed_h200.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from cianna_otf_server.models import DEFAULT_MODEL, default_registry
from cianna_otf_server.pipeline import detect
from cianna_otf_server.sky.simulate import write_simulation


def timed(path: Path, card, device: str, precision: str, repeats: int) -> tuple[float, int]:
    """Best wall time of `repeats` detections (after one untimed warm-up) and the source count."""
    detect(str(path), card, device=device, precision=precision)
    best, count = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        count = len(detect(str(path), card, device=device, precision=precision))
        best = min(best, time.perf_counter() - start)
    return best, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    parser.add_argument("--large", type=int, default=16384, help="side of the large image (0: skip it)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    card = default_registry().get(args.model)
    report: dict = {"model": f"{card.name} {card.version}", "torch": torch.__version__,
                    "machine": platform.machine(), "cpu_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        images = {2048: Path(tmp) / "sky2048.fits"}
        write_simulation(images[2048], 2048, seed=1_000_001)
        if args.large:
            images[args.large] = Path(tmp) / f"sky{args.large}.fits"
            write_simulation(images[args.large], args.large, seed=7)
        for device in args.devices:
            for precision in args.precisions if device != "cpu" else ["fp32"]:
                for size, path in images.items():
                    if device == "cpu" and size > 2048:
                        continue  # minutes on a laptop CPU; the 2048 figure scales with the area
                    seconds, sources = timed(path, card, device, precision, args.repeats)
                    run = {"device": device, "precision": precision, "size": size,
                           "seconds": round(seconds, 3), "sources": sources,
                           "megapixels_per_second": round(size * size / seconds / 1e6, 1)}
                    report["runs"].append(run)
                    print(f"{device:5s} {precision:5s} {size:6d}^2: {seconds:7.2f} s  {sources:6d} sources  "
                          f"{run['megapixels_per_second']:8.1f} Mpx/s", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
