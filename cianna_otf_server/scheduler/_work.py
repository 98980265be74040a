"""One job's patches on their way through the scheduler: cut ahead, batched, decoded, merged.

A `JobWork` is filled by reader threads (raw patches cut from the memory-mapped image), drained
by the device workers (a few patches at a time, mixed with other jobs' patches), and fed back
the network outputs, which it decodes under its own lock. It never holds more than
`prefetch` cut patches, so a 32768 x 32768 image streams through in bounded memory.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
import numpy as np

from ..jobs import PreparedJob
from ..models import ModelCard
from ..pipeline import Tile, YoloDetection, cut_raw_patch
from ._cache import ModelKey
from ._pool import PinnedPool, PinnedSlot


@dataclass
class ReadyPatch:
    """A cut (not yet normalised) patch and when it became ready."""

    tile: Tile
    pixels: np.ndarray  # [C, H, W] float32, model-domain units, NaN outside the image
    ready_at: float
    slot: PinnedSlot | None = None  # the pinned buffer holding `pixels`, returned to its pool after the copy


@dataclass
class JobWork:
    """The scheduler's state of one YOLO job."""

    job_id: str
    owner: str | None
    card: ModelCard
    key: ModelKey  # the model version and precision (device filled by the worker)
    detection: YoloDetection
    prepared: PreparedJob  # what the runner needs to finish the job
    prefetch: int = 64
    submitted_at: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ready: deque = field(default_factory=deque)
    next_tile: int = 0
    in_flight: int = 0
    done: int = 0
    failed: bool = False
    filling: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_progress: float = 0.0

    def __post_init__(self) -> None:
        self.tiles = self.detection.plan.tiles
        self.patch_size = self.detection.plan.patch_size
        self.channels = int(self.card.channels)

    @property
    def total(self) -> int:
        return len(self.tiles)

    @property
    def remaining(self) -> int:
        """Patches not yet through the network: the job's priority (fewest first)."""
        return self.total - self.done - self.in_flight

    @property
    def fully_cut(self) -> bool:
        return self.next_tile >= self.total

    def needs_fill(self) -> bool:
        """More patches should be cut (call under the scheduler's lock)."""
        return (not self.fully_cut and not self.filling and not self.cancelled.is_set()
                and len(self.ready) < self.prefetch)

    def cut(self, tile: Tile, pool: PinnedPool | None = None) -> ReadyPatch:
        """Read one raw patch from the image (no shared state touched: call without the lock).

        With a `pool`, the patch goes straight into pinned memory for an asynchronous copy to
        the GPU; if no slot frees up within a second, ordinary memory is used instead.
        """
        w, h = self.patch_size
        slot = pool.take(timeout=1.0) if pool is not None else None
        pixels = slot.array if slot is not None else np.empty((self.channels, h, w), dtype=np.float32)
        cut_raw_patch(self.detection.view, tile, (w, h), out=pixels[0])
        if self.channels > 1:
            pixels[1:] = pixels[0]
        return ReadyPatch(tile, pixels, time.monotonic(), slot)

    def oldest_ready(self) -> float | None:
        return self.ready[0].ready_at if self.ready else None

    def take(self, count: int) -> list[ReadyPatch]:
        """Take up to `count` ready patches for a batch (under the scheduler's lock)."""
        taken = []
        while self.ready and len(taken) < count:
            taken.append(self.ready.popleft())
        self.in_flight += len(taken)
        return taken

    def drop_ready(self) -> None:
        """Forget the cut patches (abort, failure), returning their pinned buffers."""
        for patch in self.ready:
            if patch.slot is not None:
                patch.slot.release()
        self.ready.clear()

    def give_back(self, patches: list[ReadyPatch]) -> None:
        """Return patches whose batch could not run (out of GPU memory) to the front of the queue."""
        for patch in reversed(patches):
            self.ready.appendleft(patch)
        self.in_flight -= len(patches)

    def decode(self, patches: list[ReadyPatch], outputs: np.ndarray) -> None:
        """Decode this job's share of a batch (thresholds, first NMS); serialised per job."""
        with self.lock:
            if not (self.cancelled.is_set() or self.failed):
                self.detection.add_outputs([p.tile for p in patches], outputs)
