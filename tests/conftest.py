"""Shared fixtures: the CIANNA golden vectors and the UWS schemas live in ../shared beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres_db import postgres_url  # noqa: F401  (a fixture: the test run's PostgreSQL server)

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
    from cianna_otf_server.testing import load_uws_schema

    path = SCHEMAS / "UWS-1.1.xsd"
    if not path.is_file():
        pytest.skip(f"UWS schema not found at {path}")
    return load_uws_schema(path)


@pytest.fixture(scope="session")
def sky_fits(tmp_path_factory) -> Path:
    """A small simulated radio image (256 x 256 px) with a WCS and a beam."""
    from cianna_otf_server.sky.simulate import write_simulation

    path = tmp_path_factory.mktemp("sky") / "sky.fits"
    write_simulation(path, 256, seed=11)
    return path


@pytest.fixture
def service_settings(tmp_path):
    """Settings for a test server: data under tmp_path, a fast reaper, short waits."""
    from cianna_otf_server.server import ServiceConfig

    # URL images on: the tests serve their images from a local (loopback) server
    return ServiceConfig(data_dir=tmp_path / "service", reaper_interval_seconds=0.5, max_wait_seconds=30.0,
                         data_roots=[tmp_path], allow_http_images=True, allow_private_image_hosts=True)


@pytest.fixture
def standalone(service_settings):
    """A running standalone server (`cianna_otf_server.testing.ServiceThread`); tune `service_settings` to change limits."""
    from cianna_otf_server.testing import ServiceThread

    service = ServiceThread(service_settings)
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
