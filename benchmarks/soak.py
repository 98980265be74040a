"""Soak: a real `cianna-otf serve` process driven through create/run/poll/fetch/delete for a long time.

A service that runs for weeks must not grow: each cycle makes a cheap classic job on a small
simulated sky (by data-root path or uploaded, in turn), waits for it with blocking WAITs,
fetches its catalogue, regions and provenance, deletes it and checks that it is gone. At the
start (after a short warm-up), every `--sample-seconds` and at the end the server process's
resident memory, open file descriptors and threads, the job rows in its database and the disk
use of its data folder are sampled. Prints a table and writes the samples and a summary as
JSON; the figure to watch is the RSS growth from the first to the last sample (aim: < 5%).

    python benchmarks/soak.py                      # an hour
    python benchmarks/soak.py --minutes 2          # a smoke run
    python benchmarks/soak.py --minutes 3 --out benchmarks/results/soak_3min.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

TOKEN = "soak-token"
FINAL = ("COMPLETED", "ERROR", "ABORTED")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, data_root: Path, log_path: Path, workers: int) -> tuple[subprocess.Popen, str]:
    """`cianna-otf serve` on a free loopback port; its output goes to `log_path` (a pipe would fill up)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CIANNA_OTF_TOKEN"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
             "--data-root", str(data_root), "--token", TOKEN, "--workers", str(workers), "--max-wait", "30"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if session.get(url + "/", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("cianna-otf serve did not start:\n" + log_path.read_text(errors="replace")[-3000:])


# -- what is sampled ------------------------------------------------------------------------------
def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} in /proc/{pid}/status")


def _job_rows(data_dir: Path) -> int:
    """Rows of the jobs table, read from a read-only connection (the server keeps writing)."""
    with sqlite3.connect(f"file:{data_dir / 'jobs.sqlite'}?mode=ro", uri=True, timeout=10) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def _disk_bytes(folder: Path) -> int:
    """Space the folder's files take on disk (allocated blocks, so sparse files count what they use)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except FileNotFoundError:  # deleted while walking
                pass
    return total


def sample(pid: int, data_dir: Path, started: float, cycles: int, label: str) -> dict:
    return {
        "label": label,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cycles": cycles,
        "rss_mb": round(_status_field(pid, "VmRSS") / 1024.0, 1),
        "peak_rss_mb": round(_status_field(pid, "VmHWM") / 1024.0, 1),
        "open_fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": _status_field(pid, "Threads"),
        "job_rows": _job_rows(data_dir),
        "disk_mb": round(_disk_bytes(data_dir) / 1e6, 2),
        "jobs_dir_mb": round(_disk_bytes(data_dir / "jobs") / 1e6, 2),  # the rest: the database and its WAL
    }


# -- one cycle --------------------------------------------------------------------------------------
def cycle(session: requests.Session, url: str, image: Path, upload: bool) -> float:
    """Create, run, poll, fetch and delete one job; its wall time in seconds. Raises on any surprise."""
    start = time.perf_counter()
    data = {"MODEL": "classic", "PHASE": "RUN", "RUNID": "soak"}
    if upload:
        with image.open("rb") as handle:
            created = session.post(url + "/async", data=data, files={"IMAGE": (image.name, handle, "application/fits")},
                                   allow_redirects=False, timeout=60)
    else:
        created = session.post(url + "/async", data={**data, "IMAGE": image.name}, allow_redirects=False, timeout=60)
    if created.status_code != 303:
        raise RuntimeError(f"creation answered {created.status_code}: {created.text[:200]}")
    job = url + created.headers["Location"]
    phase = ""
    deadline = time.monotonic() + 120
    while phase not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} stayed {phase}")
        session.get(job, params={"WAIT": "10"}, timeout=60)
        phase = session.get(job + "/phase", timeout=60).text.strip()
    if phase != "COMPLETED":
        raise RuntimeError(f"job {job} ended {phase}: {session.get(job + '/error', timeout=60).text[:300]}")
    for name in ("result", "regions", "provenance"):
        fetched = session.get(f"{job}/results/{name}", timeout=60)
        if fetched.status_code != 200 or not fetched.content:
            raise RuntimeError(f"result {name} answered {fetched.status_code}")
    deleted = session.delete(job, allow_redirects=False, timeout=60)
    if deleted.status_code != 303 or session.get(job + "/phase", timeout=60).status_code != 404:
        raise RuntimeError(f"job {job} was not deleted ({deleted.status_code})")
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _growth(first: float, last: float) -> float:
    return 100.0 * (last - first) / first if first else 0.0


def print_table(samples: list[dict]) -> None:
    columns = [("label", "sample", 7), ("elapsed_s", "t (s)", 8), ("cycles", "cycles", 7), ("rss_mb", "RSS MB", 8),
               ("peak_rss_mb", "peak MB", 8), ("open_fds", "fds", 5), ("threads", "threads", 8),
               ("job_rows", "rows", 5), ("disk_mb", "disk MB", 8), ("jobs_dir_mb", "jobs/ MB", 9)]
    print("  ".join(f"{title:>{width}}" for _, title, width in columns))
    for row in samples:
        print("  ".join(f"{row[key]:>{width}}" for key, _, width in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to run the cycles (default 60)")
    parser.add_argument("--sample-seconds", type=float, default=60.0, help="seconds between samples (default 60)")
    parser.add_argument("--warmup-cycles", type=int, default=20,
                        help="cycles before the first sample, so that what loads once is loaded (default 20)")
    parser.add_argument("--size", type=int, default=256, help="side of the simulated sky, pixels (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers (default 1)")
    parser.add_argument("--out", default="benchmarks/results/soak.json", help="JSON output file")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        parser.error("needs /proc to read the server's memory, descriptors and threads")

    from cianna_otf_server.sky.simulate import write_simulation

    with tempfile.TemporaryDirectory(prefix="cianna-otf-soak-") as tmp:
        root = Path(tmp)
        images = root / "images"
        images.mkdir()
        image = images / "sky.fits"
        write_simulation(image, args.size, seed=7)
        data_dir = root / "data"
        process, url = start_server(data_dir, images, root / "serve.log", args.workers)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        started = time.monotonic()
        samples = [sample(process.pid, data_dir, started, 0, "cold")]
        timings: list[float] = []
        errors: list[str] = []
        cycles = 0
        try:
            for _ in range(args.warmup_cycles):
                cycle(session, url, image, upload=cycles % 2 == 1)
                cycles += 1
            samples.append(sample(process.pid, data_dir, started, cycles, "start"))
            soak_started = time.monotonic()
            next_sample = soak_started + args.sample_seconds
            end = soak_started + 60.0 * args.minutes
            number = 0
            while time.monotonic() < end:
                try:
                    timings.append(cycle(session, url, image, upload=cycles % 2 == 1))
                except (RuntimeError, requests.RequestException) as exc:
                    errors.append(f"cycle {cycles}: {exc}")
                    if process.poll() is not None:
                        break
                cycles += 1
                if time.monotonic() >= next_sample:
                    number += 1
                    samples.append(sample(process.pid, data_dir, started, cycles, f"{number}"))
                    next_sample += args.sample_seconds
            if process.poll() is None:
                if samples[-1]["cycles"] == cycles:  # the last periodic sample is the end
                    samples[-1]["label"] = "end"
                else:
                    samples.append(sample(process.pid, data_dir, started, cycles, "end"))
            soak_seconds = time.monotonic() - soak_started
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        log = (root / "serve.log").read_text(errors="replace")

    first = next(row for row in samples if row["label"] == "start")
    last = samples[-1]
    soak_cycles = len(timings)
    summary = {
        "cycles": soak_cycles,
        "cycles_per_minute": round(60.0 * soak_cycles / soak_seconds, 1) if soak_seconds else 0.0,
        "errors": len(errors),
        "first_errors": errors[:5],
        "cycle_median_ms": round(1000 * statistics.median(timings), 1) if timings else None,
        "cycle_p95_ms": round(1000 * percentile(timings, 0.95), 1) if timings else None,
        "rss_growth_percent": round(_growth(first["rss_mb"], last["rss_mb"]), 2),
        "rss_start_mb": first["rss_mb"],
        "rss_end_mb": last["rss_mb"],
        "peak_rss_mb": max(row["peak_rss_mb"] for row in samples),
        "open_fds_start": first["open_fds"],
        "open_fds_end": last["open_fds"],
        "threads_start": first["threads"],
        "threads_end": last["threads"],
        "job_rows_end": last["job_rows"],
        "disk_growth_mb": round(last["disk_mb"] - first["disk_mb"], 2),
        "jobs_dir_growth_mb": round(last["jobs_dir_mb"] - first["jobs_dir_mb"], 2),
        "server_exit_status": process.returncode,
        "server_log_tracebacks": log.count("Traceback"),
        "rss_target_met": _growth(first["rss_mb"], last["rss_mb"]) < 5.0,
    }
    result = {
        "benchmark": "soak",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "settings": {"minutes": args.minutes, "sample_seconds": args.sample_seconds,
                     "warmup_cycles": args.warmup_cycles, "image_px": args.size, "workers": args.workers,
                     "model": "classic", "cycle": "create (path or upload, in turn), WAIT, fetch result/regions/"
                                                   "provenance, DELETE, check 404"},
        "samples": samples,
        "summary": summary,
    }
    print_table(samples)
    print(f"{soak_cycles} cycles in {soak_seconds / 60:.1f} min ({summary['cycles_per_minute']}/min, median "
          f"{summary['cycle_median_ms']} ms, p95 {summary['cycle_p95_ms']} ms), {len(errors)} errors")
    print(f"RSS {first['rss_mb']} -> {last['rss_mb']} MB ({summary['rss_growth_percent']:+.2f}%, aim < 5%); "
          f"fds {first['open_fds']} -> {last['open_fds']}; threads {first['threads']} -> {last['threads']}; "
          f"job rows {last['job_rows']}; disk {summary['disk_growth_mb']:+.2f} MB "
          f"(job folders {summary['jobs_dir_growth_mb']:+.2f} MB, the rest the database and its WAL)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not errors and summary["server_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
