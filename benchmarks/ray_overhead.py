"""What the Ray executor costs: the local batching scheduler vs. one Ray actor on the same device.

Runs the same ``--jobs`` concurrent jobs (one simulated ``--size``² image each, all patches of one
model and precision) through the job service twice, driven without HTTP: once with the local
batching scheduler on ``--device``, once with `RayExecutor` and `--actors` actors (one by default) sharing that same device
(a private Ray started here, or ``--ray-address``). A warm-up job first loads the model (and starts
the actor) outside the timing. Prints the per-batch wall time of both and their difference (the
overhead of a batch through Ray: the object store both ways, the actor call), the throughput ratio,
and whether the catalogues are equal; writes JSON with the device, date and versions.

    python benchmarks/ray_overhead.py --jobs 4 --size 2048 --out benchmarks/results/ray_overhead_cpu.json
    python benchmarks/ray_overhead.py --models-dir DIR --model tiny-yolo --size 1024 --batch-size 16 ...
    python benchmarks/ray_overhead.py --device cuda --precision fp16 --jobs 16 --size 8192 \\
        --out benchmarks/results/ray_overhead_cuda.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cianna_otf_server.jobs import DetectionParameterPolicy, DetectionRunner  # noqa: E402
from cianna_otf_server.models import ModelRegistry  # noqa: E402
from cianna_otf_server.scheduler import (BatchingScheduler, RayExecutor, RaySettings, SchedulerMetrics,  # noqa: E402
                                         SchedulerSettings)
from cianna_otf_server.sky.simulate import write_simulation  # noqa: E402
from cianna_otf_server.uws import JobFiles, JobService, JobStore, Phase  # noqa: E402

FINAL = {Phase.COMPLETED, Phase.ERROR, Phase.ABORTED}


def _run(name: str, make_executor, root: Path, args, registry: ModelRegistry) -> dict:
    """Warm up with one job, then time `args.jobs` jobs submitted together; the executor's figures."""
    metrics = SchedulerMetrics()
    store, files = JobStore(root / f"{name}.sqlite"), JobFiles(root / name)
    runner = DetectionRunner(registry, files, device=args.device)
    executor = make_executor(runner, metrics)
    service = JobService(store, files, executor, DetectionParameterPolicy(registry, data_roots=[root]),
                         lambda j, p="": f"/async/{j}/{p}")
    service.startup()
    params = [("IMAGE", "sky.fits"), ("MODEL", args.model), ("PRECISION", args.precision), ("PHASE", "RUN")]

    def wait(job_ids: list[str]) -> None:
        deadline = time.monotonic() + args.timeout
        for job_id in job_ids:
            while (job := store.get(job_id)).phase not in FINAL:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: job {job_id} still {job.phase.value} after {args.timeout} s")
                time.sleep(0.005)
            if job.phase != Phase.COMPLETED:
                raise SystemExit(f"{name}: job {job_id} {job.phase.value}: {job.error}")

    try:
        wait([service.create("bench", params).job_id])  # model load, actor start, cuDNN autotuning
        before = _batch_totals(metrics)
        start = time.perf_counter()
        jobs = [service.create(f"user{i}", params).job_id for i in range(args.jobs)]
        wait(jobs)
        wall = time.perf_counter() - start
        after = _batch_totals(metrics)
        batches = after[0] - before[0]
        patches = after[1] - before[1]
        out = {
            "wall_s": round(wall, 4),
            "batches": int(batches),
            "patches": int(patches),
            "patches_per_s": round(patches / wall, 2),
            "ms_per_batch_wall": round(1000 * wall / max(batches, 1), 3),
            "ms_per_batch_round_trip": round(1000 * (after[2] - before[2]) / max(batches, 1), 3),
        }
        if isinstance(executor, RayExecutor):
            remote = sum(actor.remote_seconds for actor in executor.devices)
            out["actor_compute_ms_per_batch"] = round(1000 * remote / max(sum(a.batches for a in executor.devices), 1), 3)
            out["batches_per_actor"] = [int(actor.batches) for actor in executor.devices]
        from astropy.io.votable import parse_single_table

        out["_rows"] = parse_single_table(str(files.result_file(jobs[0], "result.xml"))).to_table()
        return out
    finally:
        service.shutdown()
        store.close()


def _batch_totals(metrics: SchedulerMetrics) -> tuple[float, float, float]:
    """(batches, patches, batch seconds) over every device label."""
    batches = patches = seconds = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "cianna_otf_batch_seconds_count":
                batches += sample.value
            elif sample.name == "cianna_otf_batch_seconds_sum":
                seconds += sample.value
            elif sample.name == "cianna_otf_patches_total":
                patches += sample.value
    return batches, patches, seconds


def _same_rows(a, b) -> tuple[bool, float]:
    """Whether two catalogues hold the same rows, and the largest difference of a float column."""
    if len(a) != len(b) or a.colnames != b.colnames:
        return False, float("inf")
    oa, ob = np.lexsort((a["dec"], a["ra"])), np.lexsort((b["dec"], b["ra"]))
    worst = 0.0
    for name in a.colnames:
        x, y = np.asarray(a[name])[oa], np.asarray(b[name])[ob]
        if x.dtype.kind in "fc":
            worst = max(worst, float(np.nanmax(np.abs(x - y))) if len(x) else 0.0)
        elif not (x == y).all():
            return False, worst
    return True, worst


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo-demo", help="a model of the registry (default: yolo-demo)")
    parser.add_argument("--architecture", choices=["sdc1", "small"],
                        help="instead of --model: a random-weight network of this architecture with a plain card "
                        "(no noise map or measurement: the device, not the host, bounds the rate), as in "
                        "throughput.py")
    parser.add_argument("--models-dir", type=Path, action="append", default=[],
                        help="an extra model directory (cards + weights), repeatable")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the actor gets one GPU)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--jobs", type=int, default=4, help="jobs submitted together (N)")
    parser.add_argument("--size", type=int, default=2048, help="image side, pixels (sets M patches per job)")
    parser.add_argument("--batch-size", type=int, default=0, help="patches per batch; 0: 2 on a CPU, 64 on a GPU")
    parser.add_argument("--max-wait", type=float, default=0.02, help="seconds a patch may wait for a fuller batch")
    parser.add_argument("--ray-address", default="", help="an existing Ray cluster; empty: a private one here")
    parser.add_argument("--actor-cpus", type=float, default=float(os.cpu_count() or 1),
                        help="CPUs of the actor (its PyTorch threads on a CPU); default: all, like the local run")
    parser.add_argument("--actors", type=int, default=1,
                        help="Ray actors sharing the device (on a GPU each holds 1/N of it)")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_overhead.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import ray
    import torch

    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is visible")
    batch = args.batch_size or (64 if gpu else 2)
    scheduler = SchedulerSettings(devices=[args.device], batch_size={"cpu": batch, "cuda": batch, "ray": batch},
                                  max_wait=args.max_wait)
    if args.ray_address:
        ray.init(address=args.ray_address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=max(1, int(args.actor_cpus)), num_gpus=1 if gpu else 0, include_dashboard=False,
                 logging_level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as folder:
        root = Path(folder)
        if args.architecture:
            from service_bench import write_model

            args.model, _ = write_model(root / "models", args.architecture)
            args.models_dir.append(root / "models")
        registry = ModelRegistry(args.models_dir)
        write_simulation(root / "sky.fits", args.size, seed=1)
        local = _run("local", lambda runner, metrics: BatchingScheduler(runner, scheduler, metrics), root, args,
                     registry)
        settings = RaySettings(address=args.ray_address, actors=args.actors, actor_cpus=args.actor_cpus / args.actors,
                               actor_gpus=(1.0 / args.actors) if gpu else 0.0, batch_size=batch)
        remote = _run("ray", lambda runner, metrics: RayExecutor(runner, settings, metrics, scheduler), root, args,
                      registry)
    equal, worst = _same_rows(local.pop("_rows"), remote.pop("_rows"))
    ray.shutdown()
    result = {
        "benchmark": "ray_overhead",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "device": args.device,
        "device_name": _device_name(args.device),
        "host": platform.node(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                     "numpy": np.__version__},
        "model": args.model,
        "precision": args.precision,
        "jobs": args.jobs,
        "image_size": args.size,
        "patches_per_job": local["patches"] // max(args.jobs, 1),
        "batch_size": batch,
        "actors": args.actors,
        "local": local,
        "ray": remote,
        "overhead_ms_per_batch": round(remote["ms_per_batch_wall"] - local["ms_per_batch_wall"], 3),
        "throughput_ratio": round(remote["patches_per_s"] / local["patches_per_s"], 3),
        "catalogues_equal": equal,
        "max_abs_difference": worst,
    }
    print(f"{args.jobs} jobs x {result['patches_per_job']} patches, {args.model} {args.precision} on "
          f"{result['device_name']}, batch {batch}")
    for name, figures in (("local", local), ("ray", remote)):
        extra = f", actor compute {figures['actor_compute_ms_per_batch']} ms/batch" if name == "ray" else ""
        print(f"  {name:5s}: {figures['patches_per_s']:9.1f} patches/s, {figures['batches']} batches, "
              f"{figures['ms_per_batch_wall']:.2f} ms/batch (wall), {figures['ms_per_batch_round_trip']:.2f} ms "
              f"launch-to-results{extra}")
    print(f"  Ray overhead per batch: {result['overhead_ms_per_batch']:+.2f} ms; throughput ratio ray/local "
          f"{result['throughput_ratio']:.3f}; catalogues equal: {equal} (max |difference| {worst:.3g})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
