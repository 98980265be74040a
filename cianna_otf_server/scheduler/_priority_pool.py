"""Worker threads that take the most urgent task first, not the oldest.

The scheduler decodes every batch's outputs on a few post-processing threads. Served first come,
first served, the one batch of a click waits behind the queued batches of a survey job; taken by
priority (the scheduler's: the job's number of patches, so a click's decode always goes next),
it waits for at most the tasks already running.
"""

from __future__ import annotations

import heapq
import itertools

from ..jobs._task_pool import Task, TaskPool

__all__ = ["PriorityPool"]


class PriorityPool(TaskPool):
    """``threads`` daemon workers running queued tasks by increasing priority, in order of submission on ties."""

    def __init__(self, threads: int, name: str = "otf-priority") -> None:
        super().__init__(threads, name)
        self._heap: list[tuple[float, int, Task]] = []
        self._order = itertools.count()

    def submit(self, priority: float, task: Task) -> None:
        """Queue ``task``; lower ``priority`` runs first."""
        self._put(float(priority), task)

    def queued(self) -> int:
        with self._cond:
            return len(self._heap)

    def _enqueue(self, priority: float, task: Task) -> None:
        heapq.heappush(self._heap, (priority, next(self._order), task))

    def _next(self) -> tuple[float, Task] | None:
        if not self._heap:
            return None
        priority, _, task = heapq.heappop(self._heap)
        return priority, task

    def _clear(self) -> None:
        self._heap.clear()
