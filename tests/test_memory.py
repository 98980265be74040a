"""Freed heap memory goes back to the system: the service's resident memory does not creep over hours."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cianna_otf_server.server import ServiceConfig
from cianna_otf_server.server._memory import _malloc_trim, trim_free_memory
from cianna_otf_server.testing import ServiceThread

pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the resident memory from /proc"),
    pytest.mark.skipif(_malloc_trim() is None, reason="malloc_trim is glibc's"),
]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def _fragment_a_thread_arena(kept: list) -> None:
    """What a worker does: many 64 KiB buffers freed, a few kept, so the arena cannot shrink by itself."""
    def work() -> None:
        blocks = [np.ones(64 * 1024 // 8) for _ in range(3000)]  # ~190 MB from the thread's arena
        kept.extend(blocks[::16])
        blocks.clear()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_trim_returns_the_free_pages_of_a_fragmented_arena() -> None:
    kept: list = []
    _fragment_a_thread_arena(kept)
    before = _rss_mb()
    assert trim_free_memory() is True
    assert before - _rss_mb() > 100, "the ~180 MB freed between the kept buffers went back to the system"


def _released_while_serving(tmp_path: Path, trim_memory_seconds: float, seconds: float) -> float:
    """MB of a fragmented arena given back within `seconds` while a service with that setting runs."""
    service = ServiceThread(ServiceConfig(data_dir=tmp_path / "service", trim_memory_seconds=trim_memory_seconds))
    try:
        kept: list = []
        _fragment_a_thread_arena(kept)
        before = _rss_mb()
        deadline = time.monotonic() + seconds
        while before - _rss_mb() < 100 and time.monotonic() < deadline:
            time.sleep(0.1)
        return before - _rss_mb()
    finally:
        service.stop()
        trim_free_memory()


def test_the_service_trims_on_its_own(tmp_path) -> None:
    assert _released_while_serving(tmp_path, trim_memory_seconds=0.2, seconds=10) > 100


def test_no_trimming_when_switched_off(tmp_path) -> None:
    assert _released_while_serving(tmp_path, trim_memory_seconds=0.0, seconds=1.0) < 50
