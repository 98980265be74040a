"""Bare-loop throughput of a CIANNA network: the ceiling the detection service is compared with.

Loads a CIANNA model file (or builds the SDC1 reference architecture with random weights and
saves it to a temporary file) with `load_network`, then times a loop that does nothing but run
random patches through it: no tiling, no decoding, no catalogue. The network runs
channels-last (``--layout``), on CUDA with ``cudnn.benchmark``, from inputs already on the GPU
and, as a second variant, from pinned host memory with non-blocking copies (what a pipeline
that stages through pinned memory can reach). Reports patches/s, ms per batch and the achieved TFLOP/s (2 FLOP per MAC)
as a fraction of a peak, prints a table and writes JSON.

Examples::

    python benchmarks/bare_loop.py --quick                      # CPU smoke run, seconds
    python benchmarks/bare_loop.py --device cpu --batch-sizes 1 4
    python benchmarks/bare_loop.py                              # on a GPU host: fp32/fp16/bf16
    python benchmarks/bare_loop.py --compile --batch-sizes 128  # also try torch.compile
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from cianna_otf_server.cianna import load_network, read_model_file, save_network  # noqa: E402
from cianna_otf_server.cianna.architectures import (  # noqa: E402
    count_macs,
    count_parameters,
    sdc1_reference,
    small_yolo,
)

DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM dense fp16/bf16 tensor-core peak
GPU_BATCHES = (1, 8, 32, 64, 128)
CPU_BATCHES = (1, 4, 8)


@dataclass
class Row:
    """One timed configuration; times in ms, throughput in patches/s, compute in TFLOP/s."""

    precision: str
    batch: int
    source: str  # "device" (inputs already there) or "pinned" (host copy each batch)
    compiled: str  # "" (eager) or the torch.compile mode ("default", "max-autotune", ...)
    ms_per_batch: float  # median (CPU) or loop mean (GPU)
    ms_best: float  # fastest single batch (CPU); the loop mean on a GPU
    patches_per_s: float  # from ms_per_batch
    tflops: float
    peak_fraction: float
    iterations: int
    error: str | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a CIANNA model file; default: build --arch")
    parser.add_argument("--arch", choices=("sdc1", "small"), default="sdc1",
                        help="architecture built with random weights when no --model is given")
    parser.add_argument("--input-size", type=int, help="patch side in pixels (default 512 for sdc1, 128 small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 8 32 64 128 (GPU), 1 4 8 (CPU)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "fp16", "bf16"),
                        help="default fp32 fp16 bf16 on GPU, fp32 on CPU")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before each timing")
    parser.add_argument("--min-iters", type=int, default=5, help="timed batches at least")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="time each configuration at least this long")
    parser.add_argument("--no-pinned", action="store_true", help="skip the pinned-host-memory variant (GPU)")
    parser.add_argument("--layout", choices=("auto", "nchw", "nhwc"), default="auto",
                        help="activation layout; auto: channels-last (NHWC), faster on CUDA and on CPU")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (one graph per batch size)")
    parser.add_argument("--compile-modes", nargs="+", default=["default"],
                        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                        help="torch.compile modes timed with --compile (reduce-overhead and max-autotune use "
                        "CUDA graphs)")
    parser.add_argument("--no-eager", action="store_true", help="with --compile: time the compiled variants only")
    parser.add_argument("--peak-tflops", type=float,
                        help=f"peak dense TFLOP/s the achieved rate is compared with "
                             f"(default {DEFAULT_PEAK_TFLOPS:g}, H100 fp16, on CUDA; none on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run: 128 px, batches 1 and 2 (CPU) / 1 and 8 (GPU), 1 s")
    parser.add_argument("--out", type=Path, help="JSON report (default benchmarks/results/bare_loop_<device>.json)")
    args = parser.parse_args(argv)
    is_cuda = torch.device(args.device).type == "cuda"
    if args.quick:
        args.input_size = args.input_size or 128
        args.batch_sizes = args.batch_sizes or ([1, 8] if is_cuda else [1, 2])
        args.min_seconds = min(args.min_seconds, 1.0)
        args.min_iters = min(args.min_iters, 3)
        args.warmup = min(args.warmup, 1)
    args.input_size = args.input_size or (512 if args.arch == "sdc1" else 128)
    args.batch_sizes = args.batch_sizes or list(GPU_BATCHES if is_cuda else CPU_BATCHES)
    args.precisions = args.precisions or (["fp32", "fp16", "bf16"] if is_cuda else ["fp32"])
    if args.peak_tflops is None and is_cuda:
        args.peak_tflops = DEFAULT_PEAK_TFLOPS
    if args.out is None:
        name = torch.device(args.device).type
        args.out = Path(__file__).resolve().parent / "results" / f"bare_loop_{name}.json"
    return args


def model_file(args: argparse.Namespace, workdir: Path) -> Path:
    """The model to time: --model as given, or the chosen architecture saved to a temporary file."""
    if args.model is not None:
        return args.model
    spec = sdc1_reference(args.input_size) if args.arch == "sdc1" else small_yolo(args.input_size)
    path = workdir / f"{args.arch}_{args.input_size}.dat"
    save_network(spec, path)
    return path


def channels_last(args: argparse.Namespace) -> bool:
    """Whether to run NHWC: the default, since cuDNN's tensor-core kernels and oneDNN's CPU
    kernels both run the SDC1 network faster that way (measured: 1.27x on an H100 in fp16,
    1.1-2x on a 2-core CPU); ``--layout nchw`` measures the other."""
    return args.layout != "nchw"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(step: Callable[[], Any], device: torch.device, warmup: int, min_iters: int,
              min_seconds: float) -> list[float]:
    """Seconds per call of `step` after `warmup` calls, over at least min_iters and min_seconds.

    On a GPU the calls are queued back to back and timed together (a synchronisation per call
    would expose launch gaps that a pipeline never sees), so every entry is the loop's mean. On a
    CPU each call is timed alone: other work on a shared host then shows as outliers, and the
    median and best of the list stay meaningful.
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        before = time.perf_counter()
        step()
        times.append(time.perf_counter() - before)
        if len(times) >= min_iters:
            synchronize(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return [elapsed / len(times)] * len(times) if device.type == "cuda" else times


def bench_precision(path: Path, args: argparse.Namespace, macs: int) -> list[Row]:
    """Time every batch size (and variant) at one precision; an out-of-memory row is recorded, not fatal."""
    device = torch.device(args.device)
    precision = args.precisions_current
    net = load_network(path, device, precision)
    net.set_channels_last(channels_last(args))
    w, h, _, c = net.in_dims
    rows: list[Row] = []
    variants: list[tuple[str, str]] = [] if (args.compile and args.no_eager) else [("device", "")]
    if device.type == "cuda" and not args.no_pinned and not (args.compile and args.no_eager):
        variants.append(("pinned", ""))
    if args.compile:
        variants.extend(("device", mode) for mode in args.compile_modes)
    for batch in args.batch_sizes:
        for source, compiled in variants:
            row = _bench_one(net, device, precision, batch, source, compiled, (c, h, w), args, macs)
            rows.append(row)
            print(_format_row(row), flush=True)
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _bench_one(net: Any, device: torch.device, precision: str, batch: int, source: str, compiled: str,
               chw: tuple[int, int, int], args: argparse.Namespace, macs: int) -> Row:
    generator = torch.Generator().manual_seed(batch)
    host = torch.rand((batch, *chw), generator=generator, dtype=torch.float32)
    forward = net.forward_tensor
    try:
        with torch.inference_mode():
            if compiled:
                torch._dynamo.reset()
                forward = torch.compile(net.forward_tensor, dynamic=False,
                                        mode=None if compiled == "default" else compiled)
            if source == "pinned":
                pinned = host.to(net.dtype).pin_memory()

                def step() -> Any:
                    return forward(pinned.to(device, non_blocking=True))
            else:
                on_device = host.to(device=device, dtype=net.dtype)
                if channels_last(args):
                    on_device = on_device.contiguous(memory_format=torch.channels_last)

                def step() -> Any:
                    return forward(on_device)

            times = time_loop(step, device, args.warmup, args.min_iters, args.min_seconds)
    except torch.OutOfMemoryError as exc:
        return Row(precision, batch, source, compiled, math.nan, math.nan, math.nan, math.nan, math.nan, 0,
                   f"out of memory: {str(exc).splitlines()[0]}")
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = float(np.median(times))
    tflops = 2.0 * macs * batch / seconds / 1e12
    return Row(precision, batch, source, compiled, seconds * 1e3, min(times) * 1e3, batch / seconds, tflops,
               tflops / args.peak_tflops if args.peak_tflops else math.nan, len(times))


def _format_row(row: Row) -> str:
    mode = row.source + (f"+{row.compiled}" if row.compiled else "")
    if row.error:
        return f"{row.precision:>5} {row.batch:>6} {mode:>15}  {row.error}"
    return (f"{row.precision:>5} {row.batch:>6} {mode:>15} {row.ms_per_batch:>11.2f} {row.ms_best:>9.2f} "
            f"{row.patches_per_s:>11.2f} "
            f"{row.tflops:>9.3f} {_percent(row.peak_fraction)}")


def _percent(fraction: float) -> str:
    return f"{'-':>8}" if math.isnan(fraction) else f"{100 * fraction:>7.2f}%"


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as tmp:
        path = model_file(args, Path(tmp))
        spec = read_model_file(path)
        macs, params = count_macs(spec), count_parameters(spec)
        w, h, _, c = spec.in_dims
        print(f"model {path.name}: {len(spec.layers)} layers, {params:,} parameters, "
              f"{macs / 1e9:.3f} GMAC per {w} x {h} x {c} patch; device {device}, "
              f"{environment(device).get('gpu', platform.processor() or platform.machine())}")
        print(f"{'prec':>5} {'batch':>6} {'variant':>15} {'ms/batch':>11} {'best ms':>9} {'patches/s':>11} "
              f"{'TFLOP/s':>9} {'of peak':>8}")
        rows: list[Row] = []
        for precision in args.precisions:
            args.precisions_current = precision
            rows += bench_precision(path, args, macs)
    report = {
        "model": str(args.model) if args.model else f"{args.arch} (random weights, seed 0)",
        "input": {"width": w, "height": h, "channels": c},
        "parameters": params,
        "macs_per_patch": macs,
        "device": str(device),
        "channels_last": channels_last(args),
        "peak_tflops": args.peak_tflops,
        "environment": environment(device),
        "rows": [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(row).items()}
                 for row in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    print(f"wrote {args.out}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot serialise {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
