"""Running batches on one device: staging, normalisation on the device, forward, decode.

On a GPU a batch is copied once, from the cut patches into a pinned host buffer, sent with an
asynchronous copy on the runner's own CUDA stream, normalised there (the host only cuts
pixels), run channels-last with cuDNN autotuning, and its decoded boxes come back through a
pinned output buffer. `launch` returns as soon as the work is queued, so the scheduler stages
the next batch on the CPU while the GPU computes this one; `collect` waits for the results.
Two staging slots alternate so that a launched batch's buffers are never overwritten. On a CPU
the same steps run synchronously inside `launch`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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


@dataclass
class Launched:
    """A batch queued on the device; `collect` turns it into numpy outputs."""

    started: float
    outputs: Any  # numpy array (CPU), or a pinned tensor being filled (GPU)
    event: Any = None
    count: int = 0


class DeviceRunner:
    """Runs batches on one device (``cpu``, ``cuda``, ``cuda:1`` ...); one worker thread uses it."""

    SLOTS = 2

    def __init__(self, device: str, metrics: Any = None) -> None:
        self.device = str(device)
        self.torch_device = torch.device(self.device)
        self.metrics = metrics
        self.is_cuda = self.torch_device.type == "cuda"
        self._inputs: list[torch.Tensor | None] = [None] * self.SLOTS
        self._outputs: list[torch.Tensor | None] = [None] * self.SLOTS
        self._slot = 0
        self._stream = None

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

    # -- staging ---------------------------------------------------------------------------
    def _pinned(self, store: list, slot: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        count = int(np.prod(shape))
        buffer = store[slot]
        if buffer is None or buffer.numel() < count or buffer.dtype != dtype:
            buffer = torch.empty(count, dtype=dtype).pin_memory()
            store[slot] = buffer
        return buffer[:count].view(shape)

    def _stage(self, pixels: list[np.ndarray], slot: int) -> torch.Tensor:
        shape = (len(pixels),) + tuple(pixels[0].shape)
        if not self.is_cuda:
            return torch.from_numpy(np.stack(pixels))
        staging = self._pinned(self._inputs, slot, shape, torch.float32)
        np.stack(pixels, out=staging.numpy())  # the one host copy
        return staging.to(self.torch_device, non_blocking=True)

    # -- running -------------------------------------------------------------------------------
    def launch(self, network: Any, card: Any, pixels: list[np.ndarray]) -> Launched:
        """Queue one batch of raw patches ``[C, H, W]``; raises `OutOfDeviceMemory` if it cannot fit."""
        start = time.perf_counter()
        slot = self._slot
        self._slot = (self._slot + 1) % self.SLOTS
        try:
            if not self.is_cuda:
                with torch.inference_mode():
                    return Launched(start, self._run(network, card, self._stage(pixels, slot)).numpy(),
                                    count=len(pixels))
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.torch_device)
            with torch.cuda.stream(self._stream), torch.inference_mode():
                decoded = self._run(network, card, self._stage(pixels, slot))
                host = self._pinned(self._outputs, slot, tuple(decoded.shape), torch.float32)
                host.copy_(decoded, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
            return Launched(start, host, event, len(pixels))
        except BaseException as exc:
            if _is_oom(exc):
                if self.is_cuda:
                    torch.cuda.synchronize(self.torch_device)
                    torch.cuda.empty_cache()
                raise OutOfDeviceMemory(str(exc)) from exc
            raise

    @staticmethod
    def _run(network: Any, card: Any, x: torch.Tensor) -> torch.Tensor:
        x = normalise_tensor(x, card.normalisation).to(network.dtype)
        decoded = network.decode(network.forward_tensor(x))  # float32 box corners
        if decoded.dim() == 5 and decoded.shape[2] == 1:
            decoded = decoded[:, :, 0]
        return decoded.float()

    def collect(self, launched: Launched) -> tuple[np.ndarray, float]:
        """Wait for a launched batch; its decoded outputs (a copy) and the seconds it took."""
        if launched.event is not None:
            launched.event.synchronize()
            outputs = launched.outputs.numpy().copy()  # the pinned slot will be reused
        else:
            outputs = launched.outputs
        return outputs, time.perf_counter() - launched.started

    def forward(self, network: Any, card: Any, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Launch and collect one batch ``[N, C, H, W]`` (synchronous convenience)."""
        return self.collect(self.launch(network, card, list(batch)))

    def memory_bytes(self) -> int | None:
        if not self.is_cuda:
            return None
        return int(torch.cuda.memory_allocated(self.torch_device))
