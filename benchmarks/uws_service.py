"""UWS job service figures: job creations per second and the wake-up delay of blocking WAIT.

Starts a real `cianna-otf serve` process on loopback and drives it with requests, as a pyvo
client would. Prints the figures and writes them as JSON.

    python benchmarks/uws_service.py --jobs 300 --waits 40 --out benchmarks/results/uws_service.json
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

TOKEN = "benchmark-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, data_root: Path) -> tuple[subprocess.Popen, str, requests.Session]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--data-root", str(data_root), "--token", TOKEN],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if session.get(url + "/models", timeout=2).status_code == 200:
                return process, url, session
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def creations(url: str, session: requests.Session, count: int, upload: Path | None) -> dict:
    """Sequential POST /async (PENDING jobs): by reference, or with a multipart upload."""
    timings = []
    for _ in range(count):
        start = time.perf_counter()
        if upload is None:
            response = session.post(url + "/async", data={"IMAGE": "sky.fits"}, allow_redirects=False)
        else:
            with upload.open("rb") as handle:
                response = session.post(url + "/async", files={"IMAGE": handle}, allow_redirects=False)
        timings.append(time.perf_counter() - start)
        assert response.status_code == 303, response.text
    total = sum(timings)
    return {"jobs": count, "seconds": total, "per_second": count / total,
            "median_ms": 1000 * statistics.median(timings), "p95_ms": 1000 * percentile(timings, 0.95)}


def wait_wakeups(url: str, session: requests.Session, count: int) -> dict:
    """Delay between a phase change (PHASE=RUN on a PENDING job) and a blocked WAIT returning."""
    delays = []
    for _ in range(count):
        job = session.post(url + "/async", data={"IMAGE": "sky.fits"}, allow_redirects=False).headers["Location"]
        returned: dict[str, float] = {}
        waiter_session = requests.Session()
        waiter_session.headers.update(session.headers)

        def waiter() -> None:
            waiter_session.get(f"{url}{job}?WAIT=30&PHASE=PENDING")
            returned["t"] = time.perf_counter()

        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)  # let the WAIT reach the server and block
        sent = time.perf_counter()
        session.post(f"{url}{job}/phase", data={"PHASE": "RUN"}, allow_redirects=False)
        thread.join(40)
        delays.append(returned["t"] - sent)
    return {"waits": count, "median_ms": 1000 * statistics.median(delays), "p95_ms": 1000 * percentile(delays, 0.95),
            "max_ms": 1000 * max(delays)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="job creations to time")
    parser.add_argument("--waits", type=int, default=40, help="WAIT wake-ups to time")
    parser.add_argument("--out", default="benchmarks/results/uws_service.json")
    args = parser.parse_args()

    from cianna_otf_server.sky.simulate import write_simulation

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_simulation(root / "sky.fits", 256, seed=1)
        process, url, session = start_server(root / "data", root)
        try:
            by_reference = creations(url, session, args.jobs, None)
            uploads = creations(url, session, max(1, args.jobs // 3), root / "sky.fits")
            wakeups = wait_wakeups(url, session, args.waits)
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "benchmark": "uws_service",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "job_creation_by_reference": by_reference,
        "job_creation_with_upload_256px": uploads,
        "wait_wakeup": wakeups,
    }
    print(f"job creations (by reference): {by_reference['per_second']:.0f}/s "
          f"(median {by_reference['median_ms']:.1f} ms, p95 {by_reference['p95_ms']:.1f} ms)")
    print(f"job creations (256 px upload, {uploads['jobs']} jobs): {uploads['per_second']:.0f}/s")
    print(f"WAIT wake-up delay: median {wakeups['median_ms']:.1f} ms, p95 {wakeups['p95_ms']:.1f} ms "
          f"over {wakeups['waits']} waits")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
