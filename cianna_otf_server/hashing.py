"""sha256 of files, cached: model weights are checked at every load and many jobs read one survey image."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["file_sha256"]

_CHUNK = 4 * 1024 * 1024
_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()
_MAX_ENTRIES = 1024  # ~0.5 MB of keys and digests at most


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, cached by resolved path, modification time and size.

    Read in 4 MiB chunks, so a multi-GB file costs no memory. Raises `OSError` when the file
    cannot be read (callers say which kind of file it was).
    """
    given = Path(path)  # read through the name given: a /proc/self/fd link reads the file already opened
    path = given.resolve()
    stat = given.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with given.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _LOCK:
        if len(_CACHE) >= _MAX_ENTRIES:
            _CACHE.clear()
        _CACHE[key] = value
    return value
