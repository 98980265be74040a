"""Interactive latency: submit-to-COMPLETED time of a one-patch job, alone and under a survey load.

The interactive job is what a click or a drawn region in the notebook sends (one 512 x 512
patch). Under load, another owner keeps large jobs (>= 1000 patches each) running on the same
model and precision the whole time.

    python benchmarks/latency.py --device cuda --precision fp16
    python benchmarks/latency.py --device cpu --architecture small --size 128 --repeats 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import TOKEN, Server, environment, save, size_for, write_model, write_noise_image  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def interactive(server: Server, model: str, precision: str, repeats: int, pause: float) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        server.wait(server.submit("click.fits", model, precision))
        times.append(time.perf_counter() - start)
        time.sleep(pause)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--architecture", default="sdc1", choices=["sdc1", "small"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--survey-patches", type=int, default=1156, help="patches per survey job (square)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--max-wait", type=float, default=0.005)
    parser.add_argument("--compile", action="store_true", help="serve torch.compile'd networks (GPU)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    precision = args.precision or ("fp16" if cuda else "fp32")
    batch = args.batch or (64 if cuda else 2)
    side = int(round(args.survey_patches ** 0.5))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, _ = write_model(root / "models", args.architecture, args.size)
        from cianna_otf_server.models import load_card

        shift = load_card(root / "models" / f"{model}.toml").tiling.shift[0]
        write_noise_image(root / "click.fits", args.size)
        write_noise_image(root / "survey.fits", size_for(args.size, shift, side))
        server = Server(root / "data", root / "models", root, args.device, batch_size=batch, max_wait=args.max_wait,
                        compile_networks=args.compile)
        try:
            server.warm("click.fits", model, precision)
            server.warm("survey.fits", model, precision)  # full batches too: graphs captured, cuDNN tuned
            alone = interactive(server, model, precision, args.repeats, 0.05)

            stop = threading.Event()
            survey_jobs = []
            survey_session = requests.Session()
            survey_session.headers["Authorization"] = f"Bearer {TOKEN}"

            def survey() -> None:  # keep two large jobs queued or running at all times
                running: list[str] = []
                while not stop.is_set():
                    running = [u for u in running if "EXECUTING" in survey_session.get(u + "/phase").text
                               or "QUEUED" in survey_session.get(u + "/phase").text]
                    while len(running) < 2:
                        url = server.submit("survey.fits", model, precision, session=survey_session)
                        running.append(url)
                        survey_jobs.append(url)
                    time.sleep(0.05)

            loader = threading.Thread(target=survey, daemon=True)
            loader.start()
            time.sleep(2.0)  # the survey is in full flow
            loaded = interactive(server, model, precision, args.repeats, 0.1)
            stop.set()
            loader.join(30)
        finally:
            server.stop()
    result = {
        "benchmark": "latency", **environment(), "device": args.device, "compiled": args.compile,
        "architecture": args.architecture,
        "patch_size": args.size, "precision": precision, "batch": batch, "max_wait_s": args.max_wait,
        "survey_patches_per_job": side * side, "survey_jobs_submitted": len(survey_jobs),
        "alone": {"p50_s": statistics.median(alone), "p95_s": percentile(alone, 0.95), "n": len(alone)},
        "under_load": {"p50_s": statistics.median(loaded), "p95_s": percentile(loaded, 0.95), "n": len(loaded)},
    }
    print(f"interactive job alone: p50 {result['alone']['p50_s'] * 1000:.0f} ms, "
          f"p95 {result['alone']['p95_s'] * 1000:.0f} ms")
    print(f"while {side * side}-patch survey jobs run: p50 {result['under_load']['p50_s'] * 1000:.0f} ms, "
          f"p95 {result['under_load']['p95_s'] * 1000:.0f} ms ({len(survey_jobs)} survey jobs submitted)")
    save(result, args.out or f"benchmarks/results/latency_{'cuda' if cuda else 'cpu'}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
