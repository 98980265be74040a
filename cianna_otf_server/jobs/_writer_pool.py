"""Processes that write result files, so that writing does not hold the service's interpreter lock.

Turning a catalogue into a VOTable (astropy builds and serialises an element tree per field)
and the job's provenance into PROV-JSON is pure Python: for a click-sized job it was the largest
share of the host time spent under the one interpreter lock that the HTTP handlers, the job
store and the device worker's feeding share (about a fifth on a GPU host serving 4-patch jobs).
On a host with cores to spare, `WriterProcesses` runs that work in a few processes of their
own; the finishing thread only waits for it, the lock released.

The processes are started with ``spawn`` (a fork of a threaded process holding CUDA state is not
safe) when the service starts, in the background, so no job pays their start. A writer process
that dies (killed for memory, say) costs no job: the pool is replaced and the files are written
again, in the calling thread if it breaks a second time.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

__all__ = ["WriterProcesses", "default_writer_processes"]

log = logging.getLogger(__name__)

Result = TypeVar("Result")


def default_writer_processes(cpus: int | None = None) -> int:
    """Writer processes for a host: none up to 4 CPUs (the threads do it), then one per 4 CPUs, at most 4."""
    cpus = cpus or os.cpu_count() or 2
    return 0 if cpus <= 4 else min(4, cpus // 4)


def _ready() -> int:
    """Run in each new process: import what writing needs, so the first job does not pay it."""
    from .. import catalogue, provenance  # noqa: F401

    return os.getpid()


class WriterProcesses:
    """A pool of `processes` writer processes; `run(fn, *args)` runs ``fn(*args)`` in one of them."""

    def __init__(self, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"writer processes must be at least 1, not {processes}")
        self.processes = int(processes)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _current(self) -> ProcessPoolExecutor | None:
        """The pool, started if need be; None once closed."""
        with self._lock:
            if self._closed:
                return None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def start(self) -> list[Future]:
        """Start the processes now (in the background) and import the writers in each."""
        pool = self._current()
        return [] if pool is None else [pool.submit(_ready) for _ in range(self.processes)]

    def run(self, fn: Callable[..., Result], *args: Any) -> Result:
        """``fn(*args)`` in a writer process (arguments and result are pickled); its exceptions are raised here.

        A broken pool (a process died) is replaced and the call tried once more; if that breaks
        too, or the pool is closed (the service stopping), ``fn`` runs in this thread: a job's
        files are written either way.
        """
        for attempt in range(2):
            pool = self._current()
            if pool is None:
                break
            try:
                future = pool.submit(fn, *args)
            except RuntimeError:  # shut down meanwhile (closed, or replaced after a break)
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                log.warning("a result-writing process died; %s", "starting new ones" if attempt == 0 else
                            "writing in the service's own process")
                self._replace(pool)
        return fn(*args)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the processes (writes in progress finish first)."""
        with self._lock:
            pool, self._pool, self._closed = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
