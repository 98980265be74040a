"""Give freed heap memory back to the operating system, so that a long-running service does not creep.

A service process allocates and frees many short-lived buffers from several threads (uploads,
FITS cut-outs, catalogues); glibc's allocator keeps freed memory in per-thread arenas and
returns the top of a heap only, so resident memory creeps up over hours although nothing leaks
(the one-hour soak benchmark, `benchmarks/soak.py`, grew 9% with Python's own allocations flat
under tracemalloc). ``malloc_trim(0)`` releases the free pages of every arena. It exists in
glibc only: elsewhere (macOS, musl) `trim_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache
from typing import Any

__all__ = ["trim_free_memory"]

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim_free_memory() -> bool:
    """Return free heap pages to the system; True where the C library could (glibc)."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True
