"""Faults of the machine and of the network, each with a clear answer, on real parts.

A full disk (faked at the lowest level, and real on a small tmpfs where user namespaces allow
one), a damaged job database, a deleted one with job folders left behind, and request heads
that tornado alone drops: each gets a status and a sentence, and leaves the store consistent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from uws_helpers import NS, create, job_id, parse, text, wait_for

pytest_plugins = ["pytest_jupyter.jupyter_server"]

TOKEN = "faults-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_command(data_dir: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cianna_otf_server.cli", "serve", "--port", str(port), "--data-dir",
            str(data_dir), "--token", TOKEN, "--workers", "1", "--device", "cpu", *extra]


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CIANNA_OTF_TOKEN"}


def _wait_until_serving(process: subprocess.Popen, url: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("cianna-otf serve ended:\n" + (process.stdout.read() if process.stdout else ""))
        try:
            if session.get(url + "/models", timeout=2).status_code == 200:
                return session
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("cianna-otf serve did not start")


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output or ""


def _rows(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT job_id FROM jobs")}


def _folders(data_dir: Path) -> set[str]:
    jobs = data_dir / "jobs"
    return {p.name for p in jobs.iterdir() if p.is_dir()} if jobs.is_dir() else set()


def _assert_plain_refusal(response: requests.Response, status: int, *words: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    body = response.text
    assert "Traceback" not in body and "rollback" not in body and "sqlite" not in body.lower(), body
    for word in words:
        assert word in body, body


@pytest.fixture
def local_image(tmp_path: Path, sky_fits: Path) -> str:
    """The test image inside the service's data root, named as a job's IMAGE parameter names it."""
    shutil.copyfile(sky_fits, tmp_path / "sky.fits")
    return "sky.fits"


# -- 1. a full disk -----------------------------------------------------------------------------
def test_a_full_job_database_answers_507_and_keeps_the_store_consistent(standalone, local_image):
    """SQLite's own "database or disk is full" (``max_page_count``): 507, no row, no folder; then it recovers."""
    store = standalone.context.store
    session = standalone.session("alice")
    created = [job_id(create(standalone, data={"MODEL": "classic", "IMAGE": local_image}))]
    with store._lock:  # the database may grow no further: the next page it needs is refused
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        for _ in range(200):
            response = session.post(f"{standalone.url}/async", data={"MODEL": "classic", "IMAGE": local_image},
                                    allow_redirects=False)
            if response.status_code != 303:
                break
            created.append(job_id(response.headers["Location"]))
        _assert_plain_refusal(response, 507, "could not create the job", "disk", "full")
        data_dir = standalone.settings.data_path
        assert _rows(data_dir / "jobs.sqlite") == set(created)
        assert _folders(data_dir) == set(created)  # the refused job left no folder behind
    finally:
        with store._lock:
            store._db.execute("PRAGMA max_page_count = 1073741823")
    again = create(standalone, data={"MODEL": "classic", "IMAGE": local_image, "PHASE": "RUN"})
    assert text(wait_for(session, again), "phase") == "COMPLETED"


class FullDiskConnection:
    """A real SQLite connection whose statements starting with `prefix` fail as on a full disk.

    As SQLite does on SQLITE_FULL, the open transaction is rolled back before the error is
    raised: a store that rolls back again hides the real error behind "no transaction is active".
    """

    def __init__(self, db: sqlite3.Connection, prefix: str) -> None:
        self._db, self._prefix = db, prefix.upper()

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    def _check(self, sql: str) -> None:
        if sql.lstrip().upper().startswith(self._prefix):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql: str, *args):
        self._check(sql)
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args):
        self._check(sql)
        return self._db.executemany(sql, *args)


def test_a_full_database_is_reported_as_such_not_as_a_failed_rollback(tmp_path: Path):
    from cianna_otf_server.uws import Job, JobParameter, JobStore, Phase, utc_now
    from cianna_otf_server.uws._storage import StorageFullError

    store = JobStore(tmp_path / "jobs.sqlite")
    real = store._db

    def job(number: int) -> Job:
        return Job(job_id=f"{number:016x}", owner="alice", phase=Phase.PENDING, creation_time=utc_now(),
                   parameters=[JobParameter("IMAGE", "sky.fits")])

    store._db = FullDiskConnection(real, "INSERT INTO parameters")
    with pytest.raises(StorageFullError, match="could not create the job: the disk .* is full") as raised:
        store.add(job(1))
    assert raised.value.status == 507
    assert "database or disk is full" in str(raised.value.__cause__)
    assert not real.in_transaction and store.get(f"{1:016x}") is None  # nothing half-made
    store._db = real
    store.add(job(2))  # the connection is usable again
    assert store.job_ids() == {f"{2:016x}"}
    store.close()


def test_results_that_cannot_be_recorded_end_the_job_in_error(standalone, local_image):
    """The results are written, but the database cannot take their rows: ERROR (transient), saying so."""
    session = standalone.session("alice")
    url = create(standalone, data={"MODEL": "classic", "IMAGE": local_image})
    store = standalone.context.store
    real = store._db
    store._db = FullDiskConnection(real, "INSERT INTO results")
    try:
        session.post(f"{url}/phase", data={"PHASE": "RUN"})
        root = wait_for(session, url)
    finally:
        store._db = real
    assert text(root, "phase") == "ERROR"
    summary = root.find("uws:errorSummary", NS)
    assert summary.get("type") == "transient"
    message = summary.find("uws:message", NS).text
    assert "could not record the job's results" in message and "full" in message, message
    results = standalone.settings.data_path / "jobs" / job_id(url) / "results"
    assert not results.exists() or not any(results.iterdir())


def test_a_full_disk_at_job_creation_answers_507_and_leaves_no_folder(standalone, local_image, monkeypatch):
    """``mkdir`` of the job folder fails with ENOSPC: 507 with a sentence, and neither row nor folder."""
    jobs = str(standalone.settings.data_path / "jobs")
    real_mkdir = os.mkdir

    def full_disk(path, *args, **kwargs):
        if os.fspath(path).startswith(jobs + os.sep):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", full_disk)
    session = standalone.session("alice")
    response = session.post(f"{standalone.url}/async", data={"MODEL": "classic", "IMAGE": local_image},
                            allow_redirects=False)
    _assert_plain_refusal(response, 507, "could not create the job", "disk", "full")
    assert _folders(standalone.settings.data_path) == set()
    assert _rows(standalone.settings.data_path / "jobs.sqlite") == set()
    assert session.get(f"{standalone.url}/async").text.count("jobref") == 0
    monkeypatch.undo()
    create(standalone, data={"MODEL": "classic", "IMAGE": local_image})


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_results_written_to_a_full_disk_end_the_job_in_error(standalone, local_image):
    """The catalogue's file is on a device that is always full (a link to /dev/full): ERROR, saying so."""
    session = standalone.session("alice")
    url = create(standalone, data={"MODEL": "classic", "IMAGE": local_image})
    work = standalone.settings.data_path / "jobs" / job_id(url) / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "result.xml").symlink_to("/dev/full")
    assert session.post(f"{url}/phase", data={"PHASE": "RUN"}, allow_redirects=False).status_code == 303
    root = wait_for(session, url)
    assert text(root, "phase") == "ERROR"
    message = root.find("uws:errorSummary/uws:message", NS).text
    assert "could not write the job's results" in message and "disk" in message and "full" in message, message
    assert not work.exists()  # what the failed run wrote is gone
    assert root.find("uws:results/uws:result", NS) is None


def _user_namespaces_with_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt 2>/dev/null"
                            " || mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _user_namespaces_with_tmpfs(),
                    reason="needs unprivileged user namespaces that may mount a tmpfs")
def test_a_really_full_disk(tmp_path: Path, sky_fits: Path):
    """`cianna-otf serve` with its data on a 24 MB tmpfs (a user namespace: no root needed).

    An upload larger than the disk, then a job created while the disk is full (the job
    database cannot grow): 507 each time, nothing half-made, and service as usual once there
    is room again.
    """
    images = tmp_path / "images"
    images.mkdir()
    shutil.copyfile(sky_fits, images / "sky.fits")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    port = _free_port()
    serve = " ".join(f"'{part}'" for part in _serve_command(mount / "data", port, "--data-root", str(images)))
    process = subprocess.Popen(
        ["unshare", "-r", "-m", "sh", "-c", f"mount -t tmpfs -o size=24m tmpfs '{mount}' && exec {serve}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_environment())
    url = f"http://127.0.0.1:{port}"
    try:
        session = _wait_until_serving(process, url)
        inside = Path(f"/proc/{process.pid}/root") / str(mount).lstrip("/") / "data"  # the tmpfs, seen from here
        if not (inside / "jobs.sqlite").exists():
            pytest.skip("the server's mount namespace cannot be looked into")
        kept = create_job(session, url)
        big = b"\0" * (32 * 1024 * 1024)
        response = session.post(f"{url}/async", data={"MODEL": "classic"},
                                files={"IMAGE": ("big.fits", big, "application/fits")}, allow_redirects=False)
        _assert_plain_refusal(response, 507, "could not receive the upload", "disk", "full")
        assert _eventually(lambda: not any((inside / "tmp").iterdir())), list((inside / "tmp").rglob("*"))

        filler = inside / "filler"
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to its last byte
            for block in (1024 * 1024, 4096, 1):
                try:
                    while os.write(descriptor, b"\0" * block):
                        pass
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        finally:
            os.close(descriptor)
        response = session.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "sky.fits", "PHASE": "RUN"},
                                allow_redirects=False)
        _assert_plain_refusal(response, 507, "could not create the job", "disk", "full")
        assert {p.name for p in (inside / "jobs").iterdir()} == {kept}

        filler.unlink()
        done = create_job(session, url, PHASE="RUN")
        assert _eventually(lambda: session.get(f"{url}/async/{done}/phase", timeout=30).text.strip() == "COMPLETED",
                           timeout=180)  # a busy machine may take a while
        assert _rows_via(session, url) == {kept, done}
    finally:
        output = _stop(process)
    assert "Traceback" not in output, output


def _eventually(check, timeout: float = 10.0) -> bool:
    """True once `check()` is (the server cleans up just after it has answered)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def create_job(session: requests.Session, url: str, **extra: str) -> str:
    response = session.post(f"{url}/async", data={"MODEL": "classic", "IMAGE": "sky.fits", **extra},
                            allow_redirects=False)
    assert response.status_code == 303, (response.status_code, response.text)
    return job_id(response.headers["Location"])


def _rows_via(session: requests.Session, url: str) -> set[str]:
    root = parse(session.get(f"{url}/async").content)
    return {ref.get("id") for ref in root.findall("uws:jobref", NS)}


# -- 2. a damaged job database -------------------------------------------------------------------
def test_serve_refuses_a_damaged_database(tmp_path: Path):
    """Garbage bytes as jobs.sqlite: no "serving at", exit status 2, the file named and what to do."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database = data_dir / "jobs.sqlite"
    garbage = os.urandom(64 * 1024)
    database.write_bytes(garbage)
    result = subprocess.run(_serve_command(data_dir, _free_port()), capture_output=True, text=True,
                            timeout=120, env=_environment())
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "serving at" not in output, output
    assert str(database) in output and "damaged" in output and "move the file aside" in output, output
    assert "Traceback" not in output, output
    assert database.read_bytes() == garbage  # left as it was, for the operator to look at
    assert _folders(data_dir) == set()


def test_a_damaged_page_is_found_at_open(tmp_path: Path):
    """A database whose header is sound but whose pages are not: ``quick_check`` refuses it."""
    from cianna_otf_server.errors import CorruptDatabaseError
    from cianna_otf_server.uws import Job, JobParameter, JobStore, Phase, utc_now

    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    for number in range(300):
        store.add(Job(job_id=f"{number:016x}", owner="alice", phase=Phase.PENDING, creation_time=utc_now(),
                      parameters=[JobParameter("IMAGE", "x" * 200)]))
    store.close()
    with open(path, "r+b") as handle:
        handle.seek(4096 * 12)
        handle.write(b"\xff" * 4096)
    with pytest.raises(CorruptDatabaseError, match="is damaged") as raised:
        JobStore(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.fixture
def jp_server_config(tmp_path):
    """A Jupyter server with the extension enabled, its data folder holding a damaged jobs.sqlite."""
    data_dir = tmp_path / "otf"
    data_dir.mkdir()
    (data_dir / "jobs.sqlite").write_bytes(b"this is not a database" * 1000)
    return {
        "ServerApp": {"jpserver_extensions": {"cianna_otf_jupyter": True}},
        "CiannaOTF": {"data_dir": str(data_dir), "device": "cpu"},
    }


async def test_the_jupyter_extension_mounts_nothing_on_a_damaged_database(capsys, jp_serverapp, http_server,
                                                                          jp_http_port, tmp_path):
    """The Jupyter server runs on; the service is not mounted (404) and the log says why and what to do."""
    await jp_serverapp.extension_manager.start_all_extensions()
    (app,) = jp_serverapp.extension_manager.extension_apps["cianna_otf_jupyter"]
    assert app.context is None
    token = jp_serverapp.identity_provider.token
    base = f"http://127.0.0.1:{jp_http_port}{jp_serverapp.base_url}"

    def get(path: str) -> requests.Response:
        return requests.get(base + path, headers={"Authorization": f"token {token}"}, timeout=10)

    assert (await asyncio.to_thread(get, "cianna-otf/async")).status_code == 404
    assert (await asyncio.to_thread(get, "api/status")).status_code == 200
    database = str(tmp_path / "otf" / "jobs.sqlite")
    logged = capsys.readouterr().err  # Jupyter's log handlers write to stderr
    line = next((l for l in logged.splitlines() if "CIANNA On-The-Fly is not available" in l), "")
    assert database in line and "damaged" in line and "move the file aside" in line, logged
    await jp_serverapp.extension_manager.stop_all_extensions()


# -- 3. a deleted database ----------------------------------------------------------------------
def test_job_folders_no_job_owns_are_removed_at_start(service_settings, local_image, caplog):
    """The database deleted, its job folders left: the next start removes them and logs it; owned ones stay."""
    from cianna_otf_server.testing import ServiceThread

    data_dir = service_settings.data_path
    service = ServiceThread(service_settings)
    try:
        lost = [job_id(create(service, data={"MODEL": "classic", "IMAGE": local_image})) for _ in range(2)]
    finally:
        service.stop()
    assert _folders(data_dir) == set(lost)
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"jobs.sqlite{suffix}").unlink(missing_ok=True)

    caplog.set_level(logging.WARNING, logger="cianna_otf_server")
    service = ServiceThread(service_settings)
    try:
        assert _folders(data_dir) == set()
        kept = job_id(create(service, data={"MODEL": "classic", "IMAGE": local_image}))
    finally:
        service.stop()
    reports = [r.getMessage() for r in caplog.records if "no job in the database owns" in r.getMessage()]
    assert len(reports) == 1 and all(name in reports[0] for name in lost), reports

    stray = data_dir / "jobs" / "0123456789abcdef"  # e.g. a crash between a folder and its row
    (stray / "uploads").mkdir(parents=True)
    service = ServiceThread(service_settings)
    try:
        assert _folders(data_dir) == {kept}
        assert service.session("alice").get(f"{service.url}/async/{kept}/phase").text == "PENDING"
    finally:
        service.stop()


# -- 4. request heads tornado alone would drop ------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real `cianna-otf serve` process (port, session), shared by the raw-socket tests."""
    data_dir = tmp_path_factory.mktemp("served")
    port = _free_port()
    process = subprocess.Popen(_serve_command(data_dir, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=_environment())
    try:
        _wait_until_serving(process, f"http://127.0.0.1:{port}")
        yield port
    finally:
        _stop(process)


def _exchange(port: int, data: bytes, then: bytes | None = None) -> list[tuple[int, dict[str, str], bytes]]:
    """Send `data` on one connection (then `then`, once the first answer is read); return the answers."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(data)
        buffer = b""
        for following in (then, None) if then is not None else (None,):
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, f"the connection closed without an answer (after {buffer[:200]!r})"
                buffer += chunk
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                chunk = sock.recv(65536)
                assert chunk, "the connection closed in the middle of an answer"
                buffer += chunk
            body, buffer = buffer[:length], buffer[length:]
            answers.append((int(status_line.split()[1]), headers, body))
            if following is not None:
                sock.sendall(following)
    return answers


def test_an_over_long_request_line_is_answered_414(served):
    for size in (70 * 1024, 600 * 1024):
        ((status, headers, body),) = _exchange(served, b"GET /async?" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 414, body
        assert headers["content-type"].startswith("text/plain") and b"request line" in body, body
        assert len(body) < 200


def test_over_large_headers_are_answered_431_and_the_connection_serves_on(served):
    one_big = b"GET /models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * (70 * 1024) + b"\r\n\r\n"
    many = b"GET /models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"c" * 100) for n in range(800)) \
        + b"\r\n"
    for request in (one_big, many):
        ((status, headers, body),) = _exchange(served, request)
        assert status == 431 and b"request headers" in body and len(body) < 200, (status, body)
    # the refused request had no body: the same connection answers the next request
    follow = f"GET /models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    (first, second) = _exchange(served, one_big, then=follow)
    assert first[0] == 431 and second[0] == 200, (first, second[:2])
    # with a short body, read (and dropped) before the answer
    post = b"POST /async HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nX-Big: " + b"d" * (70 * 1024) + b"\r\n\r\n"
    ((status, _, body),) = _exchange(served, post + b"e" * 5000)
    assert status == 431, body


def test_an_unsupported_transfer_encoding_is_answered_400(served):
    for encoding, extra in ((b"gzip", b""), (b"gzip, chunked", b""), (b"chunked", b"Content-Length: 5\r\n")):
        request = (b"POST /async HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + encoding + b"\r\n" + extra
                   + b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        ((status, headers, body),) = _exchange(served, request)
        assert status == 400, (encoding, body)
        assert headers["content-type"].startswith("text/plain"), headers
        assert b"Transfer-Encoding" in body or b"not both" in body, body
        assert headers.get("connection", "").lower() == "close"
    ((status, _, body),) = _exchange(served, b"POST /async HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello")
    assert status == 400 and b"Content-Length" in body, body
    # a large body the server cannot frame is drained, not cut: the client reads the answer, not a reset
    big = b"POST /async HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + b"z" * (3 * 1024 * 1024)
    ((status, _, body),) = _exchange(served, big)
    assert status == 400 and b"gzip" in body, body


def test_ordinary_requests_still_pass(served):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    url = f"http://127.0.0.1:{served}"
    assert session.get(f"{url}/models", headers={"X-Fine": "f" * 60_000}).status_code == 200
    response = session.post(f"{url}/async", data={"MODEL": "classic", "RUNID": "r" * 4000}, allow_redirects=False)
    assert response.status_code in (303, 400), response.text  # no IMAGE: refused by the service, not the server
    assert session.head(f"{url}/models", headers={"X-Big": "h" * (70 * 1024)}).status_code == 431
