"""Wake-ups for blocking WAIT requests when a job changes, from any thread.

Workers run in threads and the HTTP handlers on the event loop: `notify` may be called from
either, and it hops onto the loop before waking the waiters.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict


class JobEvents:
    """Per-job change notifications for coroutines waiting on the event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that owns the waiters (the server's loop)."""
        self._loop = loop

    def notify(self, job_id: str) -> None:
        """Wake every coroutine waiting on `job_id`; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake(job_id)
        else:
            loop.call_soon_threadsafe(self._wake, job_id)

    def _wake(self, job_id: str) -> None:
        for future in self._waiters.pop(job_id, set()):
            if not future.done():
                future.set_result(None)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until `job_id` changes or `timeout` seconds pass; True if it changed."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        self._waiters[job_id].add(future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    self._waiters.pop(job_id, None)
