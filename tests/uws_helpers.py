"""Helpers shared by the UWS HTTP tests (test_uws_*.py): job creation, waiting, XML checks,
and a tiny local HTTP server that serves FITS images, quickly or as slowly as a test needs."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cianna_otf_server.testing import (  # noqa: F401 - re-exported for the UWS tests
    FINAL_PHASES as FINAL,
    UWS_NAMESPACES as NS,
    UWS_TIME as TIME,
    assert_uws_valid as assert_valid,
    is_nil,
    job_phase as phase,
    parse_xml as parse,
    uws_text as text,
    wait_for_phase as wait_for,
)

UWS = NS["uws"]
XLINK = NS["xlink"]
XSI = NS["xsi"]
VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"


def create(standalone, session=None, data=None, files=None, expect: int = 303) -> str:
    """POST to the job list; return the job URL (absolute) from the 303 Location."""
    session = session or standalone.session("alice")
    response = session.post(f"{standalone.url}/async", data=data or {}, files=files, allow_redirects=False)
    assert response.status_code == expect, (response.status_code, response.text)
    if expect != 303:
        return response.text
    location = response.headers["Location"]
    assert location.startswith(standalone.settings.root_path + "async/"), location
    return absolute(standalone, location)


def absolute(standalone, location: str) -> str:
    base = standalone.url[: len(standalone.url) - len(standalone.settings.root_path.rstrip("/"))]
    return base + location


def image_job(standalone, sky_fits: Path, session=None, run: bool = True, **params) -> str:
    """Create a job that uploads `sky_fits` (classic model); queue it when `run`."""
    data = {"MODEL": "classic", **params}
    if run:
        data["PHASE"] = "RUN"
    with open(sky_fits, "rb") as handle:
        return create(standalone, session, data=data, files={"IMAGE": ("sky.fits", handle, "application/fits")})


def job_id(job_url: str) -> str:
    return job_url.rstrip("/").rsplit("/", 1)[1]


def assert_no_trace(response) -> None:
    """No stack trace and no 5xx in a response to malformed input."""
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.text
    assert "Traceback" not in body and 'File "' not in body, body


def slow_fits_header(size: int = 4096) -> bytes:
    """A FITS primary header for a size x size float32 image (2880-byte padded)."""
    cards = [
        "SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
        f"NAXIS1  = {size:20d}", f"NAXIS2  = {size:20d}", "END",
    ]
    header = "".join(card.ljust(80) for card in cards)
    header = header.ljust((len(header) + 2879) // 2880 * 2880)
    return header.encode("ascii")


class ImageServer:
    """Serves ``/sky.fits`` (the given bytes), ``/redirect/TARGET`` (a 302 to TARGET) and ``/slow.fits`` (a FITS file trickled slowly,
    64 KiB every 50 ms, so a job that downloads it stays EXECUTING until aborted) on 127.0.0.1."""

    CHUNK = 64 * 1024
    PERIOD = 0.05

    def __init__(self, sky: bytes) -> None:
        self.sky = sky
        self.stop_event = threading.Event()
        self.slow_started = threading.Event()
        self.slow_disconnected = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/redirect/"):  # /redirect/TARGET: 302 to TARGET
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/redirect/"):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif self.path == "/sky.fits":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fits")
                    self.send_header("Content-Length", str(len(server.sky)))
                    self.end_headers()
                    self.wfile.write(server.sky)
                elif self.path == "/slow.fits":
                    header = slow_fits_header()
                    total = len(header) + 4096 * 4096 * 4
                    self.send_response(200)
                    self.send_header("Content-Type", "application/fits")
                    self.send_header("Content-Length", str(total))
                    self.end_headers()
                    server.slow_started.set()
                    try:
                        self.wfile.write(header)
                        sent = len(header)
                        while sent < total and not server.stop_event.is_set():
                            block = min(server.CHUNK, total - sent)
                            self.wfile.write(b"\0" * block)
                            self.wfile.flush()
                            sent += block
                            time.sleep(server.PERIOD)
                    except OSError:
                        server.slow_disconnected.set()
                else:
                    self.send_error(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM in /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmHWM in /proc status")
