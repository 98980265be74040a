"""URL references: off by default, an allow-list, no internal addresses, bounded in size and time.

A by-reference IMAGE makes the server fetch on the user's behalf. These tests play the hostile
user against a real server and a local HTTP server they start.
"""

from __future__ import annotations

import socket
import time

import pytest

from cianna_otf_server.jobs import UrlPolicy, UrlRefused
from uws_helpers import ImageServer, create, phase, text, wait_for

NEUTRAL = "could not fetch the image from"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def image_server(sky_fits):
    server = ImageServer(sky_fits.read_bytes())
    yield server
    server.close()


@pytest.fixture
def serve(tmp_path):
    """Start a server with URL images on and the given settings; stopped after the test."""
    from cianna_otf_server.server import ServiceConfig
    from cianna_otf_server.testing import ServiceThread

    started = []

    def start(**settings):
        settings = {"allow_http_images": True, "allow_private_image_hosts": True, **settings}
        service = ServiceThread(ServiceConfig(data_dir=tmp_path / f"service{len(started)}", max_wait_seconds=30.0,
                                              **settings))
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


def _error_of(standalone, url: str, timeout: float = 60.0) -> str:
    session = standalone.session("alice")
    job = create(standalone, session, data={"MODEL": "classic", "IMAGE": url, "PHASE": "RUN"})
    root = wait_for(session, job, timeout=timeout)
    assert text(root, "phase") == "ERROR", text(root, "phase")
    return session.get(f"{job}/error").text


# -- the policy itself -------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f.1", "2130706433", "::1", "169.254.169.254",
                                  "10.1.2.3", "192.168.0.1", "[::ffff:127.0.0.1]"])
def test_internal_addresses_are_refused_at_connect_time(host):
    policy = UrlPolicy(enabled=True)
    with pytest.raises(UrlRefused):
        policy.connect((host.strip("[]"), 80), timeout=1)


@pytest.mark.parametrize("url, allowed", [
    ("https://archive.example.org/surveys/a.fits", True),
    ("HTTPS://ARCHIVE.example.org/surveys/b.fits", True),
    ("https://archive.example.org/other/a.fits", False),
    ("https://data.nrao.edu/x.fits", True),
    ("https://nrao.edu.evil.org/x.fits", False),
    ("ftp://archive.example.org/surveys/a.fits", False),
    ("https://user:pw@archive.example.org/surveys/a.fits", False),
])
def test_the_allow_list_takes_prefixes_and_domains(url, allowed):
    policy = UrlPolicy(enabled=True, allowed=("https://archive.example.org/surveys/", ".nrao.edu"))
    if allowed:
        policy.check_url(url)
    else:
        with pytest.raises(UrlRefused):
            policy.check_url(url)


def test_disabled_by_default():
    from cianna_otf_server.server import ServiceConfig

    with pytest.raises(UrlRefused, match="does not fetch images by URL"):
        ServiceConfig().url_policy().check_url("https://archive.example.org/a.fits")


# -- through the service -----------------------------------------------------------------------
def test_a_default_service_refuses_url_images(tmp_path):
    from cianna_otf_server.server import ServiceConfig
    from cianna_otf_server.testing import ServiceThread

    service = ServiceThread(ServiceConfig(data_dir=tmp_path / "service"))
    try:
        response = service.session("alice").post(f"{service.url}/async",
                                                 data={"MODEL": "classic", "IMAGE": "http://127.0.0.1:1/a.fits"})
        assert response.status_code == 400 and "does not fetch images by URL" in response.text
    finally:
        service.stop()


def test_loopback_in_every_spelling_ends_in_one_neutral_error(serve, image_server):
    standalone = serve(allow_private_image_hosts=False)  # the setting a shared service would use
    port = int(image_server.url.rsplit(":", 1)[1])
    closed = _free_port()
    messages = set()
    for host in ("127.0.0.1", "localhost", "0x7f.1", "2130706433", "[::1]"):
        for p in (port, closed):  # a port that answers and one that does not: the same words
            message = _error_of(standalone, f"http://{host}:{p}/sky.fits")
            assert NEUTRAL in message, message
            messages.add(message.replace(f"{host}:{p}", "HOST"))
    assert len(messages) == 1, messages
    # the service's own API is not reachable through it either
    assert NEUTRAL in _error_of(standalone, f"{standalone.url}/async")


def test_redirects_are_checked_at_every_hop(serve, image_server):
    standalone = serve(image_url_allow=[f"{image_server.url}/redirect/"])
    # the first hop is allowed, the target is not on the list
    message = _error_of(standalone, f"{image_server.url}/redirect/{image_server.url}/sky.fits")
    assert NEUTRAL in message, message


def test_downloads_take_the_upload_limit(serve, image_server, sky_fits):
    standalone = serve(max_upload_bytes=sky_fits.stat().st_size // 2)
    message = _error_of(standalone, f"{image_server.url}/sky.fits")
    assert "larger than" in message and "limit" in message, message


def test_a_slow_drip_is_stopped_at_the_deadline(serve, image_server):
    standalone = serve(download_deadline_seconds=2.0)
    start = time.monotonic()
    message = _error_of(standalone, f"{image_server.url}/slow.fits", timeout=30)
    assert time.monotonic() - start < 15
    assert NEUTRAL in message and "within 2 s" in message, message


def test_an_allowed_url_is_fetched(serve, image_server):
    standalone = serve(image_url_allow=[f"{image_server.url}/sky"])
    session = standalone.session("alice")
    job = create(standalone, session, data={"MODEL": "classic", "IMAGE": f"{image_server.url}/sky.fits",
                                            "PHASE": "RUN"})
    assert text(wait_for(session, job, timeout=60), "phase") == "COMPLETED"
    refused = session.post(f"{standalone.url}/async", data={"MODEL": "classic", "IMAGE": f"{image_server.url}/x.fits"})
    assert refused.status_code == 400 and "listed archives" in refused.text


def test_one_owners_slow_downloads_never_hold_other_owners_jobs(serve, image_server, sky_fits):
    """Preparation threads are shared out by owner: alice's drips occupy one, bob's job takes another."""
    standalone = serve(download_deadline_seconds=30.0)
    alice, bob = standalone.session("alice"), standalone.session("bob")
    slow = [create(standalone, alice, data={"MODEL": "classic", "IMAGE": f"{image_server.url}/slow.fits",
                                            "PHASE": "RUN"}) for _ in range(3)]
    time.sleep(0.5)  # alice's first download has taken its thread
    start = time.monotonic()
    job = create(standalone, bob, data={"MODEL": "classic", "PHASE": "RUN"},
                 files={"IMAGE": ("sky.fits", sky_fits.read_bytes(), "application/fits")})
    assert text(wait_for(bob, job, timeout=25), "phase") == "COMPLETED"
    assert time.monotonic() - start < 25
    phases = [phase(alice, url) for url in slow]
    assert "COMPLETED" not in phases and "ERROR" not in phases, phases  # still dripping behind bob's
    for url in slow:
        alice.post(f"{url}/phase", data={"PHASE": "ABORT"})
