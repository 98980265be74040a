"""Running one batch on one device: staging, normalisation on the device, forward, decode.

On a GPU the raw patches go through a pinned host buffer (fast asynchronous copies), are
normalised there (the host only cuts pixels), run channels-last with cuDNN autotuning, and the
decoded boxes come back as float32. On a CPU the same steps run in place.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import torch

from ..pipeline import normalise_tensor


class OutOfDeviceMemory(RuntimeError):
    """The batch did not fit in the device memory; the scheduler halves it and retries."""


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class DeviceRunner:
    """Runs batches on one device (``cpu``, ``cuda``, ``cuda:1`` ...); one worker thread uses it."""

    def __init__(self, device: str, metrics: Any = None) -> None:
        self.device = str(device)
        self.torch_device = torch.device(self.device)
        self.metrics = metrics
        self.is_cuda = self.torch_device.type == "cuda"
        self._pinned: torch.Tensor | None = None
        self._lock = threading.Lock()

    @staticmethod
    def optimise(network: Any, device: str) -> Any:
        """Device-specific settings applied once when a network is loaded.

        Channels-last (NHWC) convolutions measured faster on both GPUs and CPUs; on a GPU cuDNN
        also autotunes its kernels for each batch shape it sees.
        """
        if str(device).startswith("cuda"):
            torch.backends.cudnn.benchmark = True
        if hasattr(network, "set_channels_last"):
            network.set_channels_last(True)
        return network

    def _stage(self, batch: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(batch)
        if not self.is_cuda:
            return host
        if self._pinned is None or self._pinned.numel() < host.numel():
            self._pinned = torch.empty(host.numel(), dtype=torch.float32).pin_memory()
        staging = self._pinned[: host.numel()].view(host.shape)
        staging.copy_(host)
        return staging.to(self.torch_device, non_blocking=True)

    @torch.inference_mode()
    def forward(self, network: Any, card: Any, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Decoded YOLO outputs ``[N, C_out, gh, gw]`` float32 for raw patches ``[N, C, H, W]``."""
        start = time.perf_counter()
        with self._lock:
            try:
                x = self._stage(np.ascontiguousarray(batch, dtype=np.float32))
                x = normalise_tensor(x, card.normalisation).to(network.dtype)
                activated = network.forward_tensor(x)  # lays the batch out as the network wants
                decoded = network.decode(activated)
                if decoded.dim() == 5 and decoded.shape[2] == 1:
                    decoded = decoded[:, :, 0]
                out = decoded.float().cpu().numpy()
            except BaseException as exc:
                if _is_oom(exc):
                    if self.is_cuda:
                        torch.cuda.empty_cache()
                    raise OutOfDeviceMemory(str(exc)) from exc
                raise
        return out, time.perf_counter() - start

    def memory_bytes(self) -> int | None:
        if not self.is_cuda:
            return None
        return int(torch.cuda.memory_allocated(self.torch_device))
