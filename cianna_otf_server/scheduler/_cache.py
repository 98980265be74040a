"""Resident networks: one loaded copy per (model version, precision, device), LRU under a budget.

Loading a detection network costs far more than running it on a patch, so networks stay in
memory between jobs. A new weights file (another checksum, size or modification time) is a
new key: new jobs get the new version while running jobs keep the object they already hold.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """Identifies one loadable network version on one device in one precision."""

    name: str
    version: str
    weights: str  # path
    signature: tuple[int, int]  # (size, mtime_ns) of the weights file
    precision: str
    device: str

    @property
    def group(self) -> tuple[str, str, tuple[int, int], str]:
        """What patches must share to go into one batch (the device is chosen later)."""
        return (self.name, self.weights, self.signature, self.precision)


def model_key(card: Any, precision: str, device: str) -> ModelKey:
    """The key of `card`'s current weights file."""
    path = Path(card.weights_file)
    stat = path.stat()
    return ModelKey(card.name, str(card.version), str(path), (stat.st_size, stat.st_mtime_ns), precision, str(device))


def network_bytes(network: Any) -> int:
    """Memory held by a network's parameters and buffers (bytes)."""
    total = 0
    for tensor in list(network.parameters()) + list(network.buffers()):
        total += tensor.numel() * tensor.element_size()
    return total


class ModelCache:
    """Thread-safe LRU of loaded networks bounded by `budget_bytes` per device.

    Parameters
    ----------
    loader : callable ``(card, device, precision) -> network``
        Loads and checks a network (the pipeline's `prepare_network`).
    budget_bytes : int
        Memory allowed per device for resident networks; the least recently used network that
        no running batch holds is evicted first. One network larger than the budget still loads.
    on_load, on_hit : optional callbacks for metrics, called with the key.
    """

    RETRY_AFTER = 10.0  # seconds

    def __init__(self, loader: Callable[[Any, str, str], Any], budget_bytes: int = 4 * 1024**3,
                 on_load: Callable[[ModelKey, float], None] | None = None,
                 on_hit: Callable[[ModelKey], None] | None = None) -> None:
        self.loader = loader
        self.budget_bytes = budget_bytes
        self.on_load = on_load
        self.on_hit = on_hit
        self._lock = threading.Lock()
        self._entries: OrderedDict[ModelKey, tuple[Any, int]] = OrderedDict()
        self._loading: dict[ModelKey, threading.Event] = {}
        # a failed load is reported to the callers waiting for it, and to those that ask within
        # RETRY_AFTER seconds; later requests try again (the fault may have been transient)
        self._failures: dict[ModelKey, tuple[BaseException, float]] = {}

    def get(self, card: Any, key: ModelKey) -> Any:
        """The loaded network for `key`, loading it once (concurrent callers wait for that load)."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    self._entries.move_to_end(key)
                    if self.on_hit:
                        self.on_hit(key)
                    return entry[0]
                failure = self._failures.get(key)
                if failure is not None and time.monotonic() - failure[1] < self.RETRY_AFTER:
                    raise failure[0]
                pending = self._loading.get(key)
                if pending is None:
                    pending = threading.Event()
                    self._loading[key] = pending
                    break
            pending.wait()
            with self._lock:
                failure = self._failures.get(key)
            if failure is not None and time.monotonic() - failure[1] < self.RETRY_AFTER:
                raise failure[0]
        try:
            start = time.perf_counter()
            network = self.loader(card, key.device, key.precision)
            elapsed = time.perf_counter() - start
        except BaseException as exc:
            with self._lock:
                self._failures[key] = (exc, time.monotonic())
                del self._loading[key]
            pending.set()
            raise
        size = network_bytes(network)
        with self._lock:
            self._failures.pop(key, None)
            self._entries[key] = (network, size)
            del self._loading[key]
            self._evict(key.device, keep=key)
        pending.set()
        log.info("loaded model %s %s (%s, %s) in %.2f s, %.1f MB", key.name, key.version, key.precision,
                 key.device, elapsed, size / 1e6)
        if self.on_load:
            self.on_load(key, elapsed)
        return network

    def _evict(self, device: str, keep: ModelKey) -> None:
        used = sum(size for k, (_, size) in self._entries.items() if k.device == device)
        for key in list(self._entries):
            if used <= self.budget_bytes:
                break
            if key == keep or key.device != device:
                continue
            _, size = self._entries.pop(key)
            used -= size
            log.info("evicted model %s %s (%s, %s) from the cache", key.name, key.version, key.precision, key.device)

    def forget_failure(self, key: ModelKey) -> None:
        """Allow another load attempt of a key whose load failed."""
        with self._lock:
            self._failures.pop(key, None)

    def keys(self) -> list[ModelKey]:
        with self._lock:
            return list(self._entries)

    def resident_bytes(self, device: str | None = None) -> int:
        with self._lock:
            return sum(size for k, (_, size) in self._entries.items() if device is None or k.device == device)
