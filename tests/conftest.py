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
