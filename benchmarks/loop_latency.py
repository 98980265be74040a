"""Responsiveness under CPU-bound jobs: creation and status latency while classic jobs run.

Starts a real `cianna-otf serve` process, measures job creation (POST /async) and job status
(GET /async/{id}) latencies on an idle server, then again while ``--jobs`` classic jobs on a
``--size``² simulated image run, and prints p50/p95 of both. Writes JSON.

    python benchmarks/loop_latency.py --jobs 8 --size 2048 --out benchmarks/results/loop_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from uws_service import percentile, start_server


def _sample(url: str, session, status_url: str, seconds: float, stop=None) -> dict[str, list[float]]:
    """Alternate one creation and one status read for ``seconds`` (or until ``stop()``)."""
    created, status = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop and stop()):
        start = time.perf_counter()
        response = session.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "sky.fits"},
                                allow_redirects=False, timeout=60)
        created.append(time.perf_counter() - start)
        assert response.status_code == 303, response.text
        session.delete(f"{url}{response.headers['Location']}" if response.headers["Location"].startswith("/")
                       else response.headers["Location"], allow_redirects=False, timeout=60)
        start = time.perf_counter()
        response = session.get(status_url, timeout=60)
        status.append(time.perf_counter() - start)
        assert response.status_code == 200
        time.sleep(0.02)
    return {"create": created, "status": status}


def _figures(samples: dict[str, list[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in samples.items():
        out[f"{name}_n"] = len(values)
        out[f"{name}_p50_ms"] = round(1000 * percentile(values, 0.5), 1) if values else float("nan")
        out[f"{name}_p95_ms"] = round(1000 * percentile(values, 0.95), 1) if values else float("nan")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="classic jobs running while latencies are measured")
    parser.add_argument("--size", type=int, default=2048, help="side of the simulated image, pixels")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loop_latency.json"))
    args = parser.parse_args()

    from cianna_otf_server.sky.simulate import simulate_sky

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        hdul, _ = simulate_sky(args.size, seed=77)
        hdul.writeto(root / "sky.fits")
        process, url, session = start_server(Path(tmp) / "data", root)
        try:
            first = session.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "sky.fits", "PHASE": "RUN"},
                                 allow_redirects=False)
            status_url = url + first.headers["Location"] if first.headers["Location"].startswith("/") \
                else first.headers["Location"]
            while session.get(status_url + "/phase").text.strip() not in ("COMPLETED", "ERROR"):
                time.sleep(0.2)
            started = time.perf_counter()
            idle = _figures(_sample(url, session, status_url, args.idle_seconds))
            load_urls = []
            for _ in range(args.jobs):
                response = session.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "sky.fits",
                                                               "PHASE": "RUN"}, allow_redirects=False)
                location = response.headers["Location"]
                load_urls.append(url + location if location.startswith("/") else location)

            def done() -> bool:
                return all(session.get(u + "/phase").text.strip() in ("COMPLETED", "ERROR") for u in load_urls)

            load_start = time.perf_counter()
            loaded = _figures(_sample(url, session, status_url, 600.0, stop=done))
            load_seconds = time.perf_counter() - load_start
            phases = [session.get(u + "/phase").text.strip() for u in load_urls]
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "benchmark": "loop_latency",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "jobs": args.jobs,
        "image_size": args.size,
        "idle": idle,
        "under_load": loaded,
        "load_seconds": round(load_seconds, 1),
        "load_phases": phases,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"idle:      create p50 {idle['create_p50_ms']} ms p95 {idle['create_p95_ms']} ms | "
          f"status p50 {idle['status_p50_ms']} ms p95 {idle['status_p95_ms']} ms")
    print(f"{args.jobs} jobs: create p50 {loaded['create_p50_ms']} ms p95 {loaded['create_p95_ms']} ms | "
          f"status p50 {loaded['status_p50_ms']} ms p95 {loaded['status_p95_ms']} ms "
          f"({loaded['create_n']} samples over {load_seconds:.1f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
