"""Uploads streamed from disk with their progress, never read whole into memory."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ._job import ProgressCallback

@contextlib.contextmanager
def _streamed_upload(fields: list[tuple[str, str]], name: str, filename: str, content_type: str,
                     source: bytes | Path | IO[bytes], progress: ProgressCallback) -> Iterator[Any]:
    """A ``multipart/form-data`` body read as it is sent, reporting the image's ``(sent, total)``.

    requests-toolbelt's `MultipartEncoderMonitor` streams the parts (the file is read a block at
    a time, never whole into memory) with a Content-Length, so the server sees the same request
    as for ``files=``; its byte count covers the whole body, from which the file's own progress
    is taken (0 before the file's first byte, its size once the body is sent).
    """
    from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

    if isinstance(source, Path):
        handle: IO[bytes] = source.open("rb")
    elif isinstance(source, (bytes, bytearray)):
        handle = io.BytesIO(bytes(source))
    elif hasattr(source, "seekable") and source.seekable():
        handle = source
    else:  # a pipe or socket: its size is known only once it is read
        handle = io.BytesIO(source.read())
    start = handle.tell()
    size = handle.seek(0, io.SEEK_END) - start
    handle.seek(start)
    encoder = MultipartEncoder(fields=[*fields, (name, (filename, handle, content_type))])
    overhead = encoder.len - size

    def report(monitor: Any) -> None:
        progress(max(0, min(size, monitor.bytes_read - overhead)), size)

    progress(0, size)
    try:
        yield MultipartEncoderMonitor(encoder, report)
    finally:
        if isinstance(source, Path):  # the file this function opened
            handle.close()
