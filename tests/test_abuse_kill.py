"""`cianna-otf serve` killed with SIGKILL again and again, with jobs in every phase.

Each round makes a job in each UWS phase (COMPLETED, ERROR, ABORTED, PENDING, an EXECUTING one
that downloads its image from a local server trickling it, a QUEUED one behind it), kills the
real server process without warning and starts it again on the same data directory (the image
then comes at full speed, so the interrupted job completes in seconds). Every job the server acknowledged (a 303) must
still be listed, in a phase consistent with where it was (interrupted and queued jobs run to
completion), and every result file that was complete before a kill must be byte for byte the
same after it, over HTTP and on disk. The fast test runs one round; the slow one three.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cianna_otf_server.testing import UWS_NAMESPACES, parse_xml
from uws_helpers import ImageServer

TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}
FINAL = {"COMPLETED", "ERROR", "ABORTED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RealServer:
    """`cianna-otf serve` in its own process, as users run it, with its output in a log file.

    The output goes to a file rather than a pipe: a pipe nobody reads fills up after a few
    hundred logged requests and then stalls the server. `options` are extra ``serve`` options.
    """

    def __init__(self, data_dir: Path, options: list[str] | tuple[str, ...] = (), port: int | None = None,
                 tokens: dict[str, str] | None = None, start_timeout: float = 90.0) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens or TOKENS)
        tokens_file = self.data_dir.parent / f"{self.data_dir.name}.tokens"
        tokens_file.write_text("".join(f"{token} {user}\n" for token, user in self.tokens.items()))
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.{self.port}.log"
        env = {k: v for k, v in os.environ.items() if k != "CIANNA_OTF_TOKEN"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(self.port),
                 "--data-dir", str(self.data_dir), "--tokens-file", str(tokens_file), *options],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        probe = self.session()
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if probe.get(self.url + "/", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"cianna-otf serve did not start:\n{self.log()}")

    def session(self, user: str = "alice") -> requests.Session:
        token = next(t for t, owner in self.tokens.items() if owner == user)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return session

    def job_url(self, job_id: str) -> str:
        return f"{self.url}/async/{job_id}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed by the server."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGTERM, the clean stop; returns the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


# -- the jobs of a round -------------------------------------------------------------------------
def _create(server: RealServer, session: requests.Session, **data: str) -> str:
    response = session.post(server.url + "/async", data=data, allow_redirects=False, timeout=30)
    assert response.status_code == 303, (response.status_code, response.text)
    return response.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def _phase(server: RealServer, session: requests.Session, job_id: str) -> str:
    response = session.get(server.job_url(job_id) + "/phase", timeout=30)
    assert response.status_code == 200, (job_id, response.status_code, response.text)
    return response.text.strip()


def _wait(server: RealServer, session: requests.Session, job_id: str, phases: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        phase = _phase(server, session, job_id)
        if phase in phases or time.monotonic() > deadline:
            return phase
        session.get(server.job_url(job_id), params={"WAIT": "1"}, timeout=30)


def _results(server: RealServer, session: requests.Session, job_id: str) -> dict[str, str]:
    """sha256 of every result of a job, fetched over HTTP and read from the job's folder on disk."""
    listing = session.get(server.job_url(job_id) + "/results", timeout=30)
    assert listing.status_code == 200, listing.text
    digests: dict[str, str] = {}
    for result in parse_xml(listing.content).findall("uws:result", UWS_NAMESPACES):
        name = result.get("id")
        body = session.get(f"{server.job_url(job_id)}/results/{name}", timeout=30)
        assert body.status_code == 200, (job_id, name, body.status_code, body.text[:200])
        digests[f"http:{name}"] = hashlib.sha256(body.content).hexdigest()
    folder = server.data_dir / "jobs" / job_id / "results"
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        digests[f"disk:{path.name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert any(key.startswith("http:") for key in digests), f"job {job_id} lists no result"
    return digests


def _error_text(server: RealServer, session: requests.Session, job_id: str) -> str:
    response = session.get(server.job_url(job_id) + "/error", timeout=30)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A small sky (quick with the classic finder) and a broken file."""
    from cianna_otf_server.sky.simulate import write_simulation

    root = tmp_path_factory.mktemp("kill-images")
    write_simulation(root / "small.fits", 256, seed=21)
    (root / "broken.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"not really a FITS file")
    return root


@pytest.fixture(scope="module")
def trickle():
    """A local server of /slow.fits (a 4096 px image of zeros), slow or fast as its PERIOD says."""
    server = ImageServer(b"")
    yield server
    server.close()


def _start(data_dir: Path, images: Path) -> RealServer:
    # one job at a time: the job behind the slow one is reliably QUEUED when the server dies
    return RealServer(data_dir, ["--data-root", str(images), "--executor", "pool", "--workers", "1",
                                 "--max-wait", "5", "--http-images", "--allow-private-image-hosts"])


def _one_round(server: RealServer, jobs: dict[str, str], trickle: ImageServer) -> tuple[str, str]:
    """Make a job in each phase; return the ids of the EXECUTING and the QUEUED job."""
    session = server.session()
    tag = len(jobs)
    done = _create(server, session, MODEL="classic", IMAGE="small.fits", PHASE="RUN")
    assert _wait(server, session, done, FINAL, 60) == "COMPLETED"
    failed = _create(server, session, MODEL="classic", IMAGE="broken.fits", PHASE="RUN")
    assert _wait(server, session, failed, FINAL, 60) == "ERROR"
    aborted = _create(server, session, MODEL="classic", IMAGE="small.fits")
    response = session.post(server.job_url(aborted) + "/phase", data={"PHASE": "ABORT"}, allow_redirects=False,
                            timeout=30)
    assert response.status_code == 303, response.text
    assert _phase(server, session, aborted) == "ABORTED"
    pending = _create(server, session, MODEL="classic", IMAGE="small.fits", RUNID=f"pending-{tag}")
    trickle.PERIOD = ImageServer.PERIOD  # 64 KiB every 50 ms: the download lasts about a minute
    slow = _create(server, session, MODEL="classic", IMAGE=f"{trickle.url}/slow.fits", PHASE="RUN")
    assert _wait(server, session, slow, {"EXECUTING", *FINAL}, 60) == "EXECUTING"
    queued = _create(server, session, MODEL="classic", IMAGE="small.fits", PHASE="RUN")
    jobs.update({done: "COMPLETED", failed: "ERROR", aborted: "ABORTED", pending: "PENDING",
                 slow: "EXECUTING", queued: "QUEUED"})
    return slow, queued


def _kill_rounds(tmp_path: Path, images: Path, trickle: ImageServer, rounds: int) -> None:
    data_dir = tmp_path / "data"
    jobs: dict[str, str] = {}  # id -> the phase it was in when the server was last killed
    digests: dict[str, dict[str, str]] = {}  # id -> result digests once COMPLETED
    errors: dict[str, str] = {}  # id -> its error document once ERROR
    server = _start(data_dir, images)
    try:
        for number in range(rounds):
            session = server.session()
            slow, queued = _one_round(server, jobs, trickle)
            for job_id, phase in jobs.items():  # what the store holds just before the kill
                if phase == "COMPLETED" and job_id not in digests:
                    digests[job_id] = _results(server, session, job_id)
                if phase == "ERROR" and job_id not in errors:
                    errors[job_id] = _error_text(server, session, job_id)
            before = {job_id: _phase(server, session, job_id) for job_id in (slow, queued)}
            assert before == {slow: "EXECUTING", queued: "QUEUED"}, (number, before)
            server.kill()
            trickle.PERIOD = 0.0  # the interrupted download starts again, at full speed

            server = _start(data_dir, images)
            session = server.session()
            listing = session.get(server.url + "/async", timeout=30)
            assert listing.status_code == 200, listing.text
            listed = {ref.get("id") for ref in parse_xml(listing.content).findall("uws:jobref", UWS_NAMESPACES)}
            assert set(jobs) <= listed, (number, sorted(set(jobs) - listed))
            for job_id, phase_then in jobs.items():
                phase_now = _phase(server, session, job_id)
                if phase_then in ("EXECUTING", "QUEUED"):  # re-queued at start: they run to completion
                    assert phase_now in ("QUEUED", "EXECUTING", "COMPLETED"), (number, job_id, phase_then, phase_now)
                else:  # settled phases do not move
                    assert phase_now == phase_then, (number, job_id, phase_then, phase_now)
            for job_id, phase_then in list(jobs.items()):
                if phase_then in ("EXECUTING", "QUEUED"):
                    final = _wait(server, session, job_id, FINAL, 180)
                    assert final == "COMPLETED", (number, job_id, final, _error_text(server, session, job_id)
                                                  if final == "ERROR" else "")
                    jobs[job_id] = "COMPLETED"
            for job_id, expected in digests.items():  # byte for byte what was there before the kill
                assert _results(server, session, job_id) == expected, (number, job_id)
            for job_id, expected in errors.items():
                assert _error_text(server, session, job_id) == expected, (number, job_id)
            for job_id in jobs:  # the results that were made after the restart are complete too
                if jobs[job_id] == "COMPLETED" and job_id not in digests:
                    digests[job_id] = _results(server, session, job_id)
        assert server.alive()
    finally:
        status = server.stop()
    assert status == 0, server.log()[-4000:]
    for log in sorted(tmp_path.glob("*.log")):  # every process of the test: no crash, no unhandled error
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Uncaught exception" not in text, (log.name, text[-4000:])


def test_a_killed_server_keeps_every_job_one_round(tmp_path: Path, images: Path, trickle: ImageServer) -> None:
    """One SIGKILL with a job in each phase: nothing lost, nothing changed, the interrupted job completes."""
    _kill_rounds(tmp_path, images, trickle, rounds=1)


@pytest.mark.slow
def test_a_server_killed_three_times_keeps_every_job(tmp_path: Path, images: Path, trickle: ImageServer) -> None:
    """Three SIGKILLs in a row on the same data directory; every round's jobs survive every later kill."""
    _kill_rounds(tmp_path, images, trickle, rounds=3)
