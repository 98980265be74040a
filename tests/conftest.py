"""Shared fixtures: the CIANNA golden vectors and the UWS schemas live in ../shared beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN = SHARED / "cianna_golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden vectors made by the real CIANNA; tests using them skip where the folder is absent."""
    if not (GOLDEN / "manifest.json").is_file():
        pytest.skip(f"CIANNA golden vectors not found at {GOLDEN}")
    return GOLDEN

SCHEMAS = SHARED / "schemas"


@pytest.fixture(scope="session")
def uws_schema():
    """The UWS 1.1 XML schema (lxml); tests using it skip where ../shared/schemas is absent."""
    from lxml import etree

    path = SCHEMAS / "UWS-1.1.xsd"
    if not path.is_file():
        pytest.skip(f"UWS schema not found at {path}")
    return etree.XMLSchema(etree.parse(str(path)))


@pytest.fixture(scope="session")
def sky_fits(tmp_path_factory) -> Path:
    """A small simulated radio image (256 x 256 px) with a WCS and a beam."""
    from cianna_otf_server.simulate import write_simulation

    path = tmp_path_factory.mktemp("sky") / "sky.fits"
    write_simulation(path, 256, seed=11)
    return path


class RunningService:
    """A standalone server running in a background thread, with one token per user."""

    TOKENS = {"tok-alice": "alice", "tok-bob": "bob"}

    def __init__(self, settings) -> None:
        import asyncio
        import threading

        from tornado.httpserver import HTTPServer
        from tornado.testing import bind_unused_port

        from cianna_otf_server.server import make_app

        self.settings = settings
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        sock, self.port = bind_unused_port()
        self.url = f"http://127.0.0.1:{self.port}{settings.root_path}".rstrip("/")

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self.app, self.context = make_app(settings, self.TOKENS)
            self.server = HTTPServer(self.app, max_body_size=settings.max_upload_bytes + 2 * 1024 * 1024)
            self.server.add_sockets([sock])
            self.context.start()
            self._ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the test server did not start")

    def session(self, user: str = "alice"):
        """A requests session authenticated as `user` ('alice' or 'bob')."""
        import requests

        token = next(t for t, u in self.TOKENS.items() if u == user)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        return session

    def call(self, function, *args):
        """Run `function(*args)` on the server's event loop and return its result."""
        import asyncio

        async def wrapper():
            return function(*args)

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(30)

    def stop(self) -> None:
        def shutdown() -> None:
            self.server.stop()
            self._loop.stop()

        self._loop.call_soon_threadsafe(shutdown)
        self._thread.join(30)
        self.context.stop()


@pytest.fixture
def service_settings(tmp_path):
    """Settings for a test server: data under tmp_path, a fast reaper, short waits."""
    from cianna_otf_server.server import ServiceConfig

    return ServiceConfig(data_dir=tmp_path / "service", reaper_interval_seconds=0.5, max_wait_seconds=30.0,
                           data_roots=[tmp_path])


@pytest.fixture
def standalone(service_settings):
    """A running standalone server (see `RunningService`); tune `service_settings` to change limits."""
    service = RunningService(service_settings)
    yield service
    service.stop()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip, with a message, where no CUDA device is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on a GPU host: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
