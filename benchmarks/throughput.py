"""Patch throughput of the service against naive serving and against a bare PyTorch loop.

N concurrent jobs of M patches each go through the real service (HTTP, job store, batching
scheduler); the same patches are then run (a) naively, one job at a time with a model load per
job, and (b) by a bare PyTorch loop with the same network, precision and batch size (the
ceiling). The ratios are measured in one run, on one machine.

    python benchmarks/throughput.py --device cuda --precisions fp32 fp16 bf16 --jobs 64 --patches 16
    python benchmarks/throughput.py --device cpu --quick
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import (Server, ServerProcess, environment, save, size_for, write_model,  # noqa: E402
                           write_noise_image)


def bare_loop(weights: Path, device: str, precision: str, patches: int, batch: int, size: int) -> float:
    """Patches/s of the network alone: raw patches normalised and run in batches (host to device)."""
    from cianna_otf_server.cianna import load_network
    from cianna_otf_server.models._card import NormalisationSpec
    from cianna_otf_server.pipeline import normalise_tensor
    from cianna_otf_server.scheduler import DeviceRunner

    net = DeviceRunner.optimise(load_network(weights, device=device, precision=precision), device)
    spec = NormalisationSpec()
    host = torch.from_numpy(np.random.default_rng(0).normal(1e-6, 3e-7, (batch, 1, size, size)).astype(np.float32))
    if device.startswith("cuda"):
        host = host.pin_memory()

    def step() -> None:
        with torch.inference_mode():
            x = normalise_tensor(host.to(device, non_blocking=True), spec).to(net.dtype)
            net.decode(net.forward_tensor(x)).float().cpu()

    for _ in range(3):
        step()
    steps = max(1, patches // batch)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def naive(card_dir: Path, model: str, image: Path, jobs: int, device: str, precision: str,
          patches_per_job: int) -> float:
    """One job at a time, loading the model for each job (what a simple service does)."""
    from cianna_otf_server.models import ModelRegistry
    from cianna_otf_server.pipeline import detect, prepare_network

    card = ModelRegistry([card_dir], use_environment=False).get(model)
    start = time.perf_counter()
    for _ in range(jobs):
        net = prepare_network(card, device=device, precision=precision)
        detect(image, card, network=net, device=device, precision=precision, batch_size=16)
        del net
    return jobs * patches_per_job / (time.perf_counter() - start)


def device_activity(server: Server) -> dict[str, float]:
    """Seconds the device workers spent per activity, and patches run per device (/metrics)."""
    out: dict[str, float] = {}
    for line in server.session.get(server.url + "/metrics").text.splitlines():
        if line.startswith("cianna_otf_device_worker_seconds_total{"):
            activity = line.split('activity="', 1)[1].split('"', 1)[0]
            out[activity] = out.get(activity, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith("cianna_otf_patches_total{"):
            device = line.split('device="', 1)[1].split('"', 1)[0]
            out[f"patches on {device}"] = out.get(f"patches on {device}", 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class BatchLog(logging.Handler):
    """The scheduler's batch lines (size, jobs, owners per batch) while it is attached."""

    PATTERN = re.compile(r"batch model=\S+ precision=\S+ size=(\d+) jobs=(\d+) owners=(\d+)")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.batches: list[tuple[int, int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.add(record.getMessage())

    def add(self, line: str) -> None:
        match = self.PATTERN.search(line)
        if match:
            self.batches.append(tuple(int(g) for g in match.groups()))

    def summary(self) -> dict:
        """Batch sizes overall and of the batches that held several users' patches."""
        sizes = np.array([b[0] for b in self.batches]) if self.batches else np.zeros(0)
        shared = np.array([b[0] for b in self.batches if b[2] > 1]) if self.batches else np.zeros(0)
        return {"batches": len(sizes), "mean_batch": float(sizes.mean()) if len(sizes) else None,
                "median_batch": float(np.median(sizes)) if len(sizes) else None,
                "batches_with_several_users": len(shared),
                "share_of_patches_in_shared_batches": float(shared.sum() / sizes.sum()) if sizes.sum() else None,
                "mean_shared_batch": float(shared.mean()) if len(shared) else None,
                "most_users_in_a_batch": max((b[2] for b in self.batches), default=0)}


def service(server: Server, model: str, image: str, jobs: int, precision: str, patches_per_job: int
            ) -> tuple[float, dict]:
    """Patches/s of `jobs` concurrent jobs, shared out over the server's users; and their batches."""
    before = device_activity(server)
    log = BatchLog()
    lines_before = len(server.log_lines()) if isinstance(server, ServerProcess) else 0
    logging.getLogger("cianna_otf_server.scheduler").addHandler(log)
    logging.getLogger("cianna_otf_server.scheduler").setLevel(logging.INFO)
    sessions = [server.sessions[k % len(server.sessions)] for k in range(jobs)]
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(16) as pool:
            urls = list(pool.map(lambda s: server.submit(image, model, precision, s), sessions))
            list(pool.map(server.wait, urls, sessions))
    finally:
        logging.getLogger("cianna_otf_server.scheduler").removeHandler(log)
    elapsed = time.perf_counter() - start
    if isinstance(server, ServerProcess):  # its batch lines are in its log
        for line in server.log_lines()[lines_before:]:
            log.add(line)
    after = device_activity(server)
    print("  device worker: " + ", ".join(f"{k} {after.get(k, 0) - before.get(k, 0):.2f} s" for k in sorted(after))
          + f" of {elapsed:.2f} s", flush=True)
    batches = log.summary()
    print(f"  batches: {batches}", flush=True)
    return jobs * patches_per_job / elapsed, batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", nargs="+", default=None)
    parser.add_argument("--architecture", default="sdc1", choices=["sdc1", "small"])
    parser.add_argument("--size", type=int, default=512, help="patch size in pixels")
    parser.add_argument("--large", nargs=2, type=int, default=[16, 256], metavar=("JOBS", "PATCHES"),
                        help="service vs bare loop: JOBS concurrent jobs of PATCHES patches (square)")
    parser.add_argument("--small", nargs=2, type=int, default=[256, 4], metavar=("JOBS", "PATCHES"),
                        help="service vs naive serving: many small jobs")
    parser.add_argument("--naive-jobs", type=int, default=8, help="jobs timed for naive serving")
    parser.add_argument("--batch", type=int, default=0, help="batch size (0: 64 on GPU, 2 on CPU)")
    parser.add_argument("--quick", action="store_true", help="small run for a CPU")
    parser.add_argument("--compile", action="store_true", help="serve torch.compile'd networks (GPU)")
    parser.add_argument("--server-process", action="store_true",
                        help="run the service as `cianna-otf serve` in a process of its own (its clients, "
                        "these threads, then do not share its interpreter lock); default: a thread here")
    parser.add_argument("--writer-processes", type=int, default=None,
                        help="the service's writer_processes (with --server-process; default: its own default)")
    parser.add_argument("--users", type=int, default=1,
                        help="users the jobs are shared out over (round robin): batches then mix users' patches")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.quick:
        args.large, args.small, args.naive_jobs = [4, 16], [16, 4], 2
    cuda = args.device.startswith("cuda")
    precisions = args.precisions or (["fp32", "fp16", "bf16"] if cuda else ["fp32"])
    batch = args.batch or (64 if cuda else 2)
    large_side, small_side = (int(round(n ** 0.5)) for n in (args.large[1], args.small[1]))
    results = {"benchmark": "throughput", **environment(), "device": args.device, "compiled": args.compile,
               "users": args.users, "server_process": args.server_process,
               "writer_processes": args.writer_processes,
               "architecture": args.architecture,
               "patch_size": args.size, "batch": batch,
               "large_jobs": {"jobs": args.large[0], "patches_per_job": large_side ** 2},
               "small_jobs": {"jobs": args.small[0], "patches_per_job": small_side ** 2}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, weights = write_model(root / "models", args.architecture, args.size)
        from cianna_otf_server.models import load_card

        shift = load_card(root / "models" / f"{model}.toml").tiling.shift[0]
        write_noise_image(root / "large.fits", size_for(args.size, shift, large_side))
        write_noise_image(root / "small.fits", size_for(args.size, shift, small_side))
        kind = ServerProcess if args.server_process else Server
        extra = {} if args.writer_processes is None else {"writer_processes": args.writer_processes}
        server = kind(root / "data", root / "models", root, args.device, users=args.users, batch_size=batch,
                      max_wait=0.005, compile_networks=args.compile, **extra)
        device = "cuda" if cuda else "cpu"
        try:
            for precision in precisions:
                # load the model, capture the CUDA graphs and let cuDNN tune for full and partial batches
                server.warm("large.fits", model, precision)
                server.warm("small.fits", model, precision)
                large, large_batches = service(server, model, "large.fits", args.large[0], precision,
                                               large_side ** 2)
                ceiling = bare_loop(weights, device, precision, args.large[0] * large_side ** 2, batch, args.size)
                small, small_batches = service(server, model, "small.fits", args.small[0], precision,
                                               small_side ** 2)
                one_by_one = naive(root / "models", model, root / "small.fits", args.naive_jobs, device, precision,
                                   small_side ** 2)
                run = {"precision": precision, "service_large_jobs_patches_per_s": large,
                       "bare_loop_patches_per_s": ceiling, "service_over_bare": large / ceiling,
                       "service_small_jobs_patches_per_s": small, "naive_small_jobs_patches_per_s": one_by_one,
                       "service_over_naive": small / one_by_one,
                       "service_small_jobs_per_s": small / small_side ** 2,
                       "small_over_large": small / large,
                       "large_job_batches": large_batches, "small_job_batches": small_batches}
                results["runs"].append(run)
                print(f"{precision}: large jobs {large:.1f} patches/s vs bare loop {ceiling:.1f} "
                      f"({large / ceiling:.2f}); small jobs {small:.1f} patches/s vs naive {one_by_one:.1f} "
                      f"({small / one_by_one:.1f}x)", flush=True)
        finally:
            server.stop()
    save(results, args.out or f"benchmarks/results/throughput_{device}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
