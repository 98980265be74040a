"""Daemon worker threads, started on demand, over a queue whose order a subclass decides.

The service's pools differ only in which queued task runs next (`OwnerFairPool`: owners in turn;
`scheduler.PriorityPool`: the most urgent); starting workers, waking them, running tasks without
letting one failure end a worker, and shutting down are the same, and live here.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Hashable

log = logging.getLogger(__name__)

__all__ = ["TaskPool", "Task"]

Task = Callable[[], None]


class TaskPool:
    """``threads`` daemon workers taking tasks in the order `_next` gives (called under the pool's lock).

    Subclasses keep their queue in `_enqueue` / `_next` / `_clear` and may count running tasks
    per key in `_started` / `_finished`. A task's exceptions are logged and swallowed: callers
    report a job's failure inside the task itself.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.threads = max(1, int(threads))
        self._name = name
        self._cond = threading.Condition()
        self._workers: list[threading.Thread] = []
        self._open = True

    # -- the queue, under the lock (subclasses) ---------------------------------------------
    def _enqueue(self, key: Any, task: Task) -> None:
        raise NotImplementedError

    def _next(self) -> tuple[Hashable, Task] | None:
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _started(self, key: Hashable) -> None:
        """A task of `key` starts (under the lock)."""

    def _finished(self, key: Hashable) -> None:
        """A task of `key` ended (under the lock)."""

    # -- shared -------------------------------------------------------------------------------
    def _put(self, key: Any, task: Task) -> None:
        with self._cond:
            if not self._open:
                raise RuntimeError("the pool is shut down")
            self._enqueue(key, task)
            if len(self._workers) < self.threads:
                worker = threading.Thread(target=self._work, daemon=True, name=f"{self._name}-{len(self._workers)}")
                self._workers.append(worker)
                worker.start()
            self._cond.notify()

    def shutdown(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Drop queued tasks, let running ones finish (waiting up to ``timeout`` s when ``wait``)."""
        with self._cond:
            self._open = False
            self._clear()
            self._cond.notify_all()
        if wait:
            for worker in self._workers:
                if worker is not threading.current_thread():
                    worker.join(timeout)
        self._workers = []

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next() if self._open else None
                while picked is None:
                    if not self._open:
                        return
                    self._cond.wait()
                    picked = self._next() if self._open else None
                key, task = picked
                self._started(key)
            try:
                task()
            except BaseException:  # noqa: BLE001 - a task's failure must not end the worker
                log.exception("a task of %s (%r) failed", self._name, key)
            finally:
                with self._cond:
                    self._finished(key)
                    self._cond.notify_all()
