"""Shared set-up of the service benchmarks: a model directory, test images, a running server.

Used by `throughput.py` and `latency.py`; every figure comes from the real service (standalone
server, HTTP, job store, batching scheduler) on loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import platform
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
from astropy.io import fits

TOKEN = "bench"

CARD = """
[model]
name = "{name}"
version = "1"
family = "yolo-cianna"
description = "{description} (random weights, for speed measurements only)"
default_precision = "fp32"

[weights]
file = "{file}"
sha256 = "{sha}"
input_bias = 0.1

[tiling]
patch_size = {size}
shift = {shift}
offset = 0

[normalisation]
function = "tanh"
clip_min = 0.4e-6
clip_max = 0.4e-4

[yolo]
nb_box = {nb_box}
nb_class = 0
nb_param = {nb_param}
priors_w = {priors_w}
priors_h = {priors_h}
objectness_thresholds = {thresholds}
nms_threshold = 0.05
second_nms_threshold = -0.15
"""


def write_model(directory: Path, architecture: str = "sdc1", size: int = 512) -> tuple[str, Path]:
    """Write a random-weight network and its card; returns (model name, weights path)."""
    from cianna_otf_server.cianna import save_network
    from cianna_otf_server.cianna.architectures import sdc1_reference, small_yolo

    spec = sdc1_reference(input_size=size) if architecture == "sdc1" else small_yolo(input_size=size)
    name = f"bench-{architecture}-{size}"
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.dat"
    save_network(spec, weights)
    head = spec.yolo
    shift = size - size // spec.shapes()[-1].width  # one grid cell of overlap, as in SDC1 (512 -> 480)
    (directory / f"{name}.toml").write_text(CARD.format(
        name=name, description=f"{architecture} architecture", file=weights.name,
        sha=hashlib.sha256(weights.read_bytes()).hexdigest(), size=size, shift=shift, nb_box=head.nb_box,
        nb_param=head.nb_param, priors_w=[float(v) for v in head.priors[0]],
        priors_h=[float(v) for v in head.priors[1]], thresholds=[0.99] * head.nb_box,
    ))
    return name, weights


def write_noise_image(path: Path, size: int, seed: int = 0) -> Path:
    """A Gaussian-noise FITS image with a WCS: speed does not depend on the sky's content."""
    rng = np.random.default_rng(seed)
    data = np.empty((size, size), dtype=np.float32)
    for row in range(0, size, 1024):
        data[row: row + 1024] = rng.normal(0, 3e-7, size=(min(1024, size - row), size))
    header = fits.Header()
    header.update({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRVAL1": 0.0, "CRVAL2": -30.0,
                   "CRPIX1": size / 2, "CRPIX2": size / 2, "CDELT1": -1.6667e-4, "CDELT2": 1.6667e-4,
                   "BUNIT": "JY/BEAM", "BMAJ": 4.2e-4, "BMIN": 4.2e-4, "BPA": 0.0})
    fits.writeto(path, data, header, overwrite=True)
    return path


def patches_per_side(size: int, patch: int, shift: int) -> int:
    return max(1, int(np.ceil((size - patch) / shift)) + 1)


def size_for(patch: int, shift: int, per_side: int) -> int:
    """The image side giving `per_side` patches per side with no offset."""
    return patch + (per_side - 1) * shift


class _Clients:
    """The benchmark's side: one HTTP session per user, job submission and waiting."""

    url: str
    sessions: list[requests.Session]
    session: requests.Session

    def _open_sessions(self, tokens: dict[str, str]) -> None:
        self.sessions = []
        for token in tokens:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {token}"
            session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64))
            self.sessions.append(session)
        self.session = self.sessions[0]

    def submit(self, image: str, model: str, precision: str, session: requests.Session | None = None) -> str:
        response = (session or self.session).post(
            self.url + "/async", data={"IMAGE": image, "MODEL": model, "PRECISION": precision, "PHASE": "RUN"},
            allow_redirects=False)
        assert response.status_code == 303, response.text
        return self.url + response.headers["Location"]

    def wait(self, job_url: str, session: requests.Session | None = None, timeout: float = 3600) -> str:
        deadline = time.monotonic() + timeout
        session = session or self.session
        while time.monotonic() < deadline:
            xml = session.get(job_url + "?WAIT=60").text
            for phase in ("COMPLETED", "ERROR", "ABORTED"):
                if f"<uws:phase>{phase}</uws:phase>" in xml:
                    if phase != "COMPLETED":
                        raise RuntimeError(xml)
                    return phase
        raise TimeoutError(job_url)

    def warm(self, image: str, model: str, precision: str) -> None:
        """One job to load the model and autotune kernels before timing."""
        self.wait(self.submit(image, model, precision))


def _tokens(users: int) -> dict[str, str]:
    """The first user is "bench"; more users (a shared service) are user1, user2, ..."""
    return {TOKEN: "bench", **{f"{TOKEN}{k}": f"user{k}" for k in range(1, users)}}


class ServerProcess(_Clients):
    """The same service as `Server`, run as ``cianna-otf serve`` in a process of its own.

    Its clients (the benchmark's threads) then do not share the service's interpreter lock, as
    real clients do not; the scheduler's batch lines are read from its log (``-v``).
    """

    def __init__(self, data_dir: Path, models_dir: Path, data_root: Path, device: str, users: int = 1,
                 batch_size: int = 64, max_wait: float = 0.005, compile_networks: bool = False,
                 writer_processes: int | None = None) -> None:
        import socket
        import subprocess
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        tokens = _tokens(users)
        data_dir.mkdir(parents=True, exist_ok=True)
        tokens_file = data_dir.parent / "bench-tokens.txt"
        tokens_file.write_text("".join(f"{t} {u}\n" for t, u in tokens.items()))
        self.log_path = data_dir.parent / "bench-server.log"
        command = [sys.executable, "-m", "cianna_otf_server.cli", "-v", "serve", "--port", str(port),
                   "--tokens-file", str(tokens_file), "--data-dir", str(data_dir), "--models-dir", str(models_dir),
                   "--data-root", str(data_root), "--device", device, "--max-wait", "120",
                   "--max-queued-per-owner", str(10**6), "--max-queued-total", str(10**6),
                   "--batch-size", str(batch_size), "--max-wait-ms", str(1000.0 * max_wait)]
        if compile_networks:
            command.append("--compile")
        if writer_processes is not None:
            command += ["--writer-processes", str(writer_processes)]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self._open_sessions(tokens)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                if self.session.get(self.url + "/models", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(self.log_path.read_text()[-3000:])
            time.sleep(0.2)

    def log_lines(self) -> list[str]:
        """What the server has logged so far."""
        self._log.flush()
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except Exception:  # noqa: BLE001 - a benchmark's clean-up
            self.process.kill()
        self._log.close()


class Server(_Clients):
    """A standalone server in a thread of this process (as in the tests), with its own settings."""

    def __init__(self, data_dir: Path, models_dir: Path, data_root: Path, device: str, users: int = 1,
                 **settings) -> None:
        from tornado.httpserver import HTTPServer
        from tornado.testing import bind_unused_port

        from cianna_otf_server.server import ServiceConfig, make_app

        import logging

        logging.getLogger("tornado.access").setLevel(logging.ERROR)
        self.settings = ServiceConfig(data_dir=data_dir, models_dirs=[models_dir], data_roots=[data_root],
                                        device=device, max_wait_seconds=120.0, max_queued_per_owner=10**6,
                                        max_queued_total=10**6, **settings)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        sock, port = bind_unused_port()
        self.url = f"http://127.0.0.1:{port}"
        tokens = _tokens(users)

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.app, self.context = make_app(self.settings, tokens)
            self.server = HTTPServer(self.app)
            self.server.add_sockets([sock])
            self.context.start()
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(60)
        self._open_sessions(tokens)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.context.stop()


def environment() -> dict:
    import torch

    info = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": __import__("os").cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def save(result: dict, out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
