"""Worker threads shared fairly between job owners.

A plain thread pool serves tasks first come, first served: one owner who submits a hundred
jobs, or two whose images drip in from slow servers, holds every thread while other owners'
jobs wait QUEUED behind them. This pool keeps one queue per owner, takes owners in turn, and
lets no owner hold more than ``per_owner`` threads at once, so with two or more threads there
is always one free for somebody else.
"""

from __future__ import annotations

from collections import deque
from typing import Hashable

from ._task_pool import Task, TaskPool

__all__ = ["OwnerFairPool"]


class OwnerFairPool(TaskPool):
    """``threads`` daemon workers; tasks are taken round robin over owners, ``per_owner`` at most each.

    ``per_owner`` defaults to ``threads - 1`` (at least 1). A task's exceptions are logged and
    swallowed: callers report a job's failure inside the task itself.
    """

    def __init__(self, threads: int, per_owner: int | None = None, name: str = "otf-fair") -> None:
        super().__init__(threads, name)
        self.per_owner = max(1, int(per_owner) if per_owner is not None else self.threads - 1)
        self._queues: dict[Hashable, deque[Task]] = {}
        self._turns: deque[Hashable] = deque()  # owners with queued tasks, next first
        self._running: dict[Hashable, int] = {}

    def submit(self, owner: Hashable, task: Task) -> None:
        """Queue ``task`` for ``owner`` (None is an owner like any other)."""
        self._put(owner, task)

    def queued(self, owner: Hashable | None = None) -> int:
        """Tasks waiting (of one owner, or of all)."""
        with self._cond:
            if owner is not None:
                return len(self._queues.get(owner, ()))
            return sum(len(q) for q in self._queues.values())

    def _enqueue(self, owner: Hashable, task: Task) -> None:
        queue = self._queues.get(owner)
        if queue is None:
            queue = self._queues[owner] = deque()
            self._turns.append(owner)
        queue.append(task)

    def _clear(self) -> None:
        self._queues.clear()
        self._turns.clear()

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

    def _started(self, owner: Hashable) -> None:
        self._running[owner] = self._running.get(owner, 0) + 1

    def _finished(self, owner: Hashable) -> None:
        left = self._running[owner] - 1
        if left:
            self._running[owner] = left
        else:
            del self._running[owner]
