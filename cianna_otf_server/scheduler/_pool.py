"""Patch buffers in pinned (page-locked) host memory, shared by all jobs and reused.

Reader threads cut patches straight into these slots, and the device worker copies each slot
to the GPU asynchronously: there is no host-side gathering of a batch at all. The pool is also
the bound on host memory for cut-ahead patches: when every slot is taken, readers wait until a
batch's copies have completed and its slots come back.
"""

from __future__ import annotations

import threading
from typing import Any

import torch


class PinnedSlot:
    """One patch-sized pinned buffer; `release` returns it to its pool (once)."""

    __slots__ = ("pool", "index", "tensor", "array", "_free")

    def __init__(self, pool: "PinnedPool", index: int, tensor: torch.Tensor) -> None:
        self.pool = pool
        self.index = index
        self.tensor = tensor
        self.array = tensor.numpy()
        self._free = False

    def release(self) -> None:
        if not self._free:
            self._free = True
            self.pool._give(self)


class PinnedPool:
    """A fixed number of pinned patch buffers of one shape, allocated on first use."""

    def __init__(self, shape: tuple[int, ...], capacity: int) -> None:
        self.shape = tuple(shape)
        self.capacity = int(capacity)
        self._cond = threading.Condition()
        self._storage: torch.Tensor | None = None
        self._free: list[int] = []

    def _allocate(self) -> None:
        self._storage = torch.empty((self.capacity,) + self.shape, dtype=torch.float32).pin_memory()
        self._free = list(range(self.capacity - 1, -1, -1))

    def take(self, timeout: float | None = None) -> PinnedSlot | None:
        """A free slot, waiting up to `timeout` seconds for one (None if none came)."""
        with self._cond:
            if self._storage is None:
                self._allocate()
            if not self._free and not self._cond.wait_for(lambda: bool(self._free), timeout):
                return None
            index = self._free.pop()
            return PinnedSlot(self, index, self._storage[index])

    def _give(self, slot: PinnedSlot) -> None:
        with self._cond:
            self._free.append(slot.index)
            self._cond.notify()

    @property
    def available(self) -> int:
        with self._cond:
            return len(self._free) if self._storage is not None else self.capacity


def release_all(patches: Any) -> None:
    """Return the pinned slots of patches that will not be sent to a device."""
    for patch in patches:
        slot = getattr(patch, "slot", None)
        if slot is not None:
            slot.release()


__all__ = ["PinnedPool", "PinnedSlot", "release_all"]
