"""Worker threads shared fairly between job owners.

A plain thread pool serves tasks first come, first served: one owner who submits a hundred
jobs, or two whose images drip in from slow servers, holds every thread while other owners'
jobs wait QUEUED behind them. This pool keeps one queue per owner, takes owners in turn, and
lets no owner hold more than ``per_owner`` threads at once, so with two or more threads there
is always one free for somebody else.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Hashable

log = logging.getLogger(__name__)

__all__ = ["OwnerFairPool"]

Task = Callable[[], None]


class OwnerFairPool:
    """``threads`` daemon workers; tasks are taken round robin over owners, ``per_owner`` at most each.

    ``per_owner`` defaults to ``threads - 1`` (at least 1). A task's exceptions are logged and
    swallowed: callers report a job's failure inside the task itself.
    """

    def __init__(self, threads: int, per_owner: int | None = None, name: str = "otf-fair") -> None:
        self.threads = max(1, int(threads))
        self.per_owner = max(1, int(per_owner) if per_owner is not None else self.threads - 1)
        self._name = name
        self._cond = threading.Condition()
        self._queues: dict[Hashable, deque[Task]] = {}
        self._turns: deque[Hashable] = deque()  # owners with queued tasks, next first
        self._running: dict[Hashable, int] = {}
        self._workers: list[threading.Thread] = []
        self._open = True

    def submit(self, owner: Hashable, task: Task) -> None:
        """Queue ``task`` for ``owner`` (None is an owner like any other)."""
        with self._cond:
            if not self._open:
                raise RuntimeError("the pool is shut down")
            queue = self._queues.get(owner)
            if queue is None:
                queue = self._queues[owner] = deque()
                self._turns.append(owner)
            queue.append(task)
            if len(self._workers) < self.threads:
                worker = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}-{len(self._workers)}")
                self._workers.append(worker)
                worker.start()
            self._cond.notify()

    def queued(self, owner: Hashable | None = None) -> int:
        """Tasks waiting (of one owner, or of all)."""
        with self._cond:
            if owner is not None:
                return len(self._queues.get(owner, ()))
            return sum(len(q) for q in self._queues.values())

    def shutdown(self, wait: bool = True, timeout: float = 30.0) -> None:
        """Drop queued tasks, let running ones finish (waiting up to ``timeout`` s when ``wait``)."""
        with self._cond:
            self._open = False
            self._queues.clear()
            self._turns.clear()
            self._cond.notify_all()
        if wait:
            for worker in self._workers:
                if worker is not threading.current_thread():
                    worker.join(timeout)
        self._workers = []

    def _next(self) -> tuple[Hashable, Task] | None:
        """The next owner in turn that may run another task, and its task (call under the lock)."""
        for _ in range(len(self._turns)):
            owner = self._turns[0]
            self._turns.rotate(-1)
            if self._running.get(owner, 0) >= self.per_owner:
                continue
            queue = self._queues[owner]
            task = queue.popleft()
            if not queue:
                del self._queues[owner]
                self._turns.remove(owner)
            return owner, task
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next() if self._open else None
                while picked is None:
                    if not self._open:
                        return
                    self._cond.wait()
                    picked = self._next() if self._open else None
                owner, task = picked
                self._running[owner] = self._running.get(owner, 0) + 1
            try:
                task()
            except BaseException:  # noqa: BLE001 - a task's failure must not end the worker
                log.exception("a task of owner %r failed", owner)
            finally:
                with self._cond:
                    left = self._running[owner] - 1
                    if left:
                        self._running[owner] = left
                    else:
                        del self._running[owner]
                    self._cond.notify_all()
