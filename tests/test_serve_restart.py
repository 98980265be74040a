"""`cianna-otf serve` as users run it: a real process, killed with SIGKILL and started again.

Nothing may be lost: every job is still listed, finished results are still served, QUEUED jobs
run, and the job that was EXECUTING when the process died is queued again and completes.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from astropy.io.votable import parse_single_table

from uws_helpers import peak_rss_mb

TOKEN = "restart-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, data_dir: Path, data_root: Path, port: int, extra: tuple[str, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CIANNA_OTF_TOKEN"}
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--data-root", str(data_root), "--token", TOKEN, "--workers", "1", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.url + "/models", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.process.kill()
        raise RuntimeError("cianna-otf serve did not start:\n" + (self.process.stdout.read() or ""))

    def phase(self, job_url: str) -> str:
        return self.session.get(job_url + "/phase", timeout=10).text.strip()

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        output, _ = self.process.communicate(timeout=60)
        return output


@pytest.fixture(scope="module")
def big_images(tmp_path_factory) -> Path:
    """Images large enough (3072 px) that one job is still running when the server is killed."""
    from cianna_otf_server.sky.simulate import write_simulation

    root = tmp_path_factory.mktemp("images")
    write_simulation(root / "big.fits", 3072, seed=5)
    write_simulation(root / "small.fits", 256, seed=6)
    return root


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_sigkill_loses_nothing(tmp_path: Path, big_images: Path, store: str, request) -> None:
    """Every acknowledged job survives a SIGKILL, with the job records in SQLite or in PostgreSQL."""
    data_dir = tmp_path / "data"
    extra: tuple[str, ...] = ()
    if store == "postgres":
        from postgres_db import fresh_database

        extra = ("--database-url", fresh_database(request.getfixturevalue("postgres_url")))
    server = ServeProcess(data_dir, big_images, _free_port(), extra)
    try:
        done = server.session.post(server.url + "/async", data={"IMAGE": "small.fits", "PHASE": "RUN"}, timeout=30).url
        assert server.session.get(done + "?WAIT=30", timeout=40).text.count("COMPLETED") == 1
        pending = server.session.post(server.url + "/async", data={"IMAGE": "small.fits"}, timeout=30).url
        running = [server.session.post(server.url + "/async", data={"IMAGE": "big.fits", "PHASE": "RUN"},
                                       timeout=30).url for _ in range(3)]
        deadline = time.monotonic() + 30
        while server.phase(running[0]) != "EXECUTING" and time.monotonic() < deadline:
            time.sleep(0.05)
        phases_before = [server.phase(url) for url in running]
        # the batching scheduler may have started all three (their patches interleave): none is done
        assert phases_before[0] == "EXECUTING"
        assert set(phases_before) <= {"QUEUED", "EXECUTING"}, phases_before
    finally:
        server.stop(signal.SIGKILL)

    restarted = ServeProcess(data_dir, big_images, _free_port(), extra)
    try:
        def url_on(new: ServeProcess, old: str) -> str:
            return new.url + old[old.index("/async/"):]

        listing = restarted.session.get(restarted.url + "/async", timeout=10).text
        for old in [done, pending, *running]:
            assert old.rsplit("/", 1)[1] in listing
        assert restarted.phase(url_on(restarted, done)) == "COMPLETED"
        assert restarted.session.get(url_on(restarted, done) + "/results/result", timeout=10).status_code == 200
        assert restarted.phase(url_on(restarted, pending)) == "PENDING"
        for old in running:  # the interrupted job and the queued ones all run to completion
            xml = restarted.session.get(url_on(restarted, old) + "?WAIT=60", timeout=90).text
            deadline = time.monotonic() + 120
            while "<uws:phase>COMPLETED" not in xml and time.monotonic() < deadline:
                xml = restarted.session.get(url_on(restarted, old) + "?WAIT=30", timeout=60).text
            assert "<uws:phase>COMPLETED" in xml, xml
            results = restarted.session.get(url_on(restarted, old) + "/results/result", timeout=10)
            assert results.status_code == 200
            table = parse_single_table(io.BytesIO(results.content)).to_table()
            assert len(table) > 100  # a 3072 px simulated sky holds hundreds of detectable sources
    finally:
        output = restarted.stop(signal.SIGTERM)
    assert restarted.process.returncode == 0, output
    assert "stopped" in output


def test_one_configuration_for_every_hosting_mode(tmp_path):
    """The README's settings table is the class's; serve options and config files set every setting."""
    import argparse

    from cianna_otf_jupyter.extension import CiannaOTF
    from cianna_otf_server.cli.serve import register, service_config
    from cianna_otf_server.server import ServiceConfig, settings_table

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert settings_table() in readme
    names = ServiceConfig.class_trait_names(config=True)
    assert set(names) <= set(CiannaOTF.class_trait_names(config=True))  # the extension is the same class

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    (tmp_path / "config.py").write_text("c.ServiceConfig.max_queued_total = 7\nc.ServiceConfig.workers = 3\n")
    args = parser.parse_args(["serve", "--config", str(tmp_path / "config.py"), "--workers", "5",
                              "--max-upload-mb", "2", "--sync-timeout-seconds", "9", "--no-http-images"])
    config = service_config(args)
    assert (config.max_queued_total, config.workers) == (7, 5)  # the file's, then the options'
    assert config.max_upload_bytes == 2 * 1024 * 1024 and config.sync_timeout_seconds == 9.0
    assert config.allow_http_images is False
    urls = service_config(parser.parse_args(["serve", "--http-images", "--image-url-allow", "https://archive.org/x/",
                                             "--image-url-allow", ".nrao.edu", "--max-download-bytes", "5"]))
    assert urls.allow_http_images and urls.image_url_allow == ["https://archive.org/x/", ".nrao.edu"]
    assert urls.download_limit == 5 and config.download_limit == config.max_upload_bytes
    assert not urls.allow_private_image_hosts
    for name in names:  # every setting has an option
        option = "--" + name.replace("_", "-")
        assert option in parser._subparsers._group_actions[0].choices["serve"]._option_string_actions or \
            name in ("data_roots", "models_dirs", "allow_http_images", "max_upload_bytes", "max_wait_seconds",
                     "max_wait", "compile_networks"), name
    bad = parser.parse_args(["serve", "--workers", "0"])
    with pytest.raises(Exception, match="workers"):
        service_config(bad)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
@pytest.mark.parametrize("megabytes, bound", [(300, 50.0), pytest.param(1024, 100.0, marks=pytest.mark.slow)])
def test_a_large_upload_streams_to_disk(tmp_path: Path, megabytes: int, bound: float) -> None:
    """A 300 MB upload (1 GiB in the slow set) raises the real server's peak memory far less than its size."""
    from cianna_otf_server.client import Client

    image = tmp_path / "large.fits"
    with image.open("wb") as handle:  # a sparse file: quick to make, its full size on the wire
        handle.truncate(megabytes * 1024 * 1024)
    server = ServeProcess(tmp_path / "data", tmp_path, _free_port())
    try:
        before = peak_rss_mb(server.process.pid)
        with Client(server.url, token=TOKEN) as client:
            job = client.submit(image, model="classic", run=False, upload_progress=lambda sent, total: None)
        after = peak_rss_mb(server.process.pid)
        stored = tmp_path / "data" / "jobs" / job.job_id / "uploads" / "IMAGE"
        assert stored.stat().st_size == megabytes * 1024 * 1024
        assert after - before < bound, f"peak RSS grew by {after - before:.0f} MB for a {megabytes} MB upload"
        assert not any((tmp_path / "data" / "tmp").glob("upload-*/*")), "nothing left in the scratch folder"
    finally:
        server.stop()
