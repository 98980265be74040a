"""The runtime and the scheduler on a CUDA GPU: same numbers as the CPU, every precision."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_golden_set_b_on_cuda(golden_dir: Path) -> None:
    """fp32 on the GPU reproduces CIANNA (TF32 off); fp16/bf16 stay within the stated tolerances."""
    import torch

    from cianna_otf_server.cianna import load_network

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    x = np.load(golden_dir / "B/B_yolo_sdc1_small_input.npy")
    raw_ref = np.load(golden_dir / "cuda/B_yolo_sdc1_small_output_raw_cuda.npy")
    decoded_ref = np.load(golden_dir / "cuda/B_yolo_sdc1_small_output_decoded_cuda.npy")
    net = load_network(golden_dir / "B/B_yolo_sdc1_small.dat", device="cuda")
    np.testing.assert_allclose(net.forward(x), raw_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net.forward(x, raw_output=False), decoded_ref, atol=1e-3)
    for precision, raw_atol, box_atol in (("fp16", 0.02, 0.25), ("bf16", 0.1, 2.0)):
        reduced = load_network(golden_dir / "B/B_yolo_sdc1_small.dat", device="cuda", precision=precision)
        np.testing.assert_allclose(reduced.forward(x), raw_ref, atol=raw_atol)
        np.testing.assert_allclose(reduced.forward(x, raw_output=False), decoded_ref, atol=box_atol)


def test_golden_set_a_on_cuda(golden_dir: Path) -> None:
    import torch

    from cianna_otf_server.cianna import load_network

    torch.backends.cudnn.allow_tf32 = False
    for name, res in [("arch1_res128_err1.81_ms79", 128), ("arch2_res128_err1.76_ms89", 128)]:
        x = np.load(golden_dir / f"A/A_input_res{res}.npy")
        reference = np.load(golden_dir / f"cuda/A_{name}_output_cuda.npy")
        out = load_network(golden_dir / f"A/{name}.dat", device="cuda").forward(x)
        np.testing.assert_allclose(out.reshape(reference.shape), reference, atol=1e-5)


def test_scheduler_on_cuda_batches_jobs_in_every_precision(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from yolo_models import write_tiny_yolo

    from cianna_otf_server.jobs import DetectionParameterPolicy, DetectionRunner
    from cianna_otf_server.models import ModelRegistry
    from cianna_otf_server.scheduler import BatchingScheduler, SchedulerSettings
    from cianna_otf_server.sky.simulate import write_simulation
    from cianna_otf_server.uws import JobFiles, JobService, JobStore, Phase

    write_tiny_yolo(tmp_path / "models")
    write_simulation(tmp_path / "sky.fits", 512, seed=3)
    registry = ModelRegistry([tmp_path / "models"], use_environment=False)
    store, files = JobStore(tmp_path / "jobs.sqlite"), JobFiles(tmp_path / "data")
    scheduler = BatchingScheduler(DetectionRunner(registry, files, device="cuda"),
                                  SchedulerSettings(devices=["cuda"], batch_size={"cuda": 64}, max_wait=0.05))
    service = JobService(store, files, scheduler, DetectionParameterPolicy(registry, data_roots=[tmp_path]),
                         lambda j, p="": f"/async/{j}/{p}")
    service.startup()
    try:
        jobs = [service.create("alice", [("IMAGE", "sky.fits"), ("MODEL", "tiny-yolo"), ("PRECISION", p),
                                         ("PHASE", "RUN")]).job_id for p in ("fp32", "fp16", "bf16") for _ in range(3)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(store.get(j).phase not in (Phase.COMPLETED, Phase.ERROR)
                                                  for j in jobs):
            time.sleep(0.05)
        for job_id in jobs:
            job = store.get(job_id)
            assert job.phase == Phase.COMPLETED, job.error
        assert sorted({key.precision for key in scheduler.cache.keys()}) == ["bf16", "fp16", "fp32"]
        assert all(key.device.startswith("cuda") for key in scheduler.cache.keys())
        time.sleep(0.5)
        for pool in scheduler._pools.values():  # every pinned patch buffer came back
            assert pool.available == pool.capacity
    finally:
        service.shutdown()
        store.close()


def test_jobs_spread_over_several_gpus(tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    sys.path.insert(0, str(Path(__file__).parent))
    from yolo_models import write_tiny_yolo

    from cianna_otf_server.jobs import DetectionParameterPolicy, DetectionRunner
    from cianna_otf_server.models import ModelRegistry
    from cianna_otf_server.scheduler import BatchingScheduler, SchedulerMetrics, SchedulerSettings
    from cianna_otf_server.sky.simulate import write_simulation
    from cianna_otf_server.uws import JobFiles, JobService, JobStore, Phase

    write_tiny_yolo(tmp_path / "models")
    write_simulation(tmp_path / "sky.fits", 2048, seed=4)
    registry = ModelRegistry([tmp_path / "models"], use_environment=False)
    store, files = JobStore(tmp_path / "jobs.sqlite"), JobFiles(tmp_path / "data")
    metrics = SchedulerMetrics()
    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    scheduler = BatchingScheduler(DetectionRunner(registry, files, device="cuda"),
                                  SchedulerSettings(devices=devices, batch_size={"cuda": 16}, max_wait=0.01), metrics)
    service = JobService(store, files, scheduler, DetectionParameterPolicy(registry, data_roots=[tmp_path]),
                         lambda j, p="": f"/async/{j}/{p}")
    service.startup()
    try:
        jobs = [service.create(f"user{i}", [("IMAGE", "sky.fits"), ("MODEL", "tiny-yolo"), ("PHASE", "RUN")]).job_id
                for i in range(4)]
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and any(store.get(j).phase not in (Phase.COMPLETED, Phase.ERROR)
                                                  for j in jobs):
            time.sleep(0.05)
        for job_id in jobs:
            assert store.get(job_id).phase == Phase.COMPLETED, store.get(job_id).error
        per_device = {device: metrics.patches.labels("tiny-yolo", device)._value.get() for device in devices}
        assert all(count > 0 for count in per_device.values()), per_device
    finally:
        service.shutdown()
        store.close()
