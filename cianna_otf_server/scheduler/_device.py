"""Running batches on one device: staging, normalisation on the device, forward, decode.

On a GPU the patches, cut by the readers straight into pinned host buffers, are copied one by
one with asynchronous copies on the runner's own CUDA stream into the input of a captured CUDA
graph, normalised there (the host only cuts pixels), run channels-last with cuDNN autotuning,
and the decoded boxes come back through a pinned output buffer. `launch` returns as soon as the work is queued, so the scheduler stages
the next batch on the CPU while the GPU computes this one; `collect` waits for the results.
Two staging slots alternate so that a launched batch's buffers are never overwritten. On a CPU
the same steps run synchronously inside `launch`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..pipeline import normalise_tensor

log = logging.getLogger(__name__)


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


@dataclass
class _Raw:
    """A patch given as a plain array (no pinned slot)."""

    pixels: np.ndarray
    slot: Any = None


class _CapturedForward:
    """Normalise, forward and decode captured as one CUDA graph for a fixed batch size."""

    def __init__(self, runner: "DeviceRunner", network: Any, card: Any, size: int, shape: tuple[int, ...]) -> None:
        self.network = network
        device = runner.torch_device
        self.static_in = torch.full((size,) + shape, float("nan"), dtype=torch.float32, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # compile if asked, and let cuDNN choose its algorithms, before capture
                runner._run(network, card, self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread-local capture: the other devices' workers keep running (and allocating) meanwhile
        with torch.inference_mode(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = runner._run(network, card, self.static_in)


class DeviceRunner:
    """Runs batches on one device (``cpu``, ``cuda``, ``cuda:1`` ...); one worker thread uses it."""

    SLOTS = 2
    GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)  # a batch runs in the smallest that holds it
    COMPILED_GRAPH_SIZES = (4, 16, 64, 256, 512)  # fewer sizes: each one compiles separately

    def __init__(self, device: str, metrics: Any = None, use_graphs: bool = True, compile: bool = False) -> None:
        self.device = str(device)
        self.torch_device = torch.device(self.device)
        self.metrics = metrics
        self.is_cuda = self.torch_device.type == "cuda"
        self._inputs: list[torch.Tensor | None] = [None] * self.SLOTS
        self._outputs: list[torch.Tensor | None] = [None] * self.SLOTS
        self._slot = 0
        self._stream = None
        self.use_graphs = use_graphs and self.is_cuda
        self.compile = compile and self.is_cuda
        self._compiled: dict[int, tuple[Any, Any]] = {}
        self._graphs: dict[tuple, _CapturedForward] = {}

    def bind_thread(self) -> None:
        """Make this runner's GPU the calling thread's current device (streams, graphs and
        allocations default to it), once, at the start of its worker thread."""
        if self.is_cuda:
            # "cuda" with no index means the current GPU; set_device wants an index
            index = self.torch_device.index
            torch.cuda.set_device(torch.cuda.current_device() if index is None else index)

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

    def _stage(self, patches: list[Any], slot: int, into: torch.Tensor | None = None) -> torch.Tensor:
        """The batch on the device. Patches cut into pinned slots are copied one by one,
        asynchronously (no host-side gathering); others are stacked into a pinned buffer first."""
        pixels = [p.pixels for p in patches]
        shape = (len(pixels),) + tuple(pixels[0].shape)
        if not self.is_cuda:
            return torch.from_numpy(np.stack(pixels))
        if into is None:
            into = torch.empty(shape, dtype=torch.float32, device=self.torch_device)
        if all(getattr(p, "slot", None) is not None for p in patches):
            # one call for all the row copies: every call into torch may wait for the
            # interpreter lock, which reader and post-processing threads keep busy
            rows = list(into[: len(patches)].unbind(0))
            torch._foreach_copy_(rows, [p.slot.tensor for p in patches], non_blocking=True)
            return into[: len(patches)]
        staging = self._pinned(self._inputs, slot, shape, torch.float32)
        np.stack(pixels, out=staging.numpy())
        into[: len(patches)].copy_(staging, non_blocking=True)
        return into[: len(patches)]

    # -- running -------------------------------------------------------------------------------
    def launch(self, network: Any, card: Any, patches: list[Any]) -> Launched:
        """Queue one batch of raw patches (objects with ``.pixels`` ``[C, H, W]`` and maybe a
        pinned ``.slot``); raises `OutOfDeviceMemory` if it cannot fit."""
        start = time.perf_counter()
        slot = self._slot
        self._slot = (self._slot + 1) % self.SLOTS
        try:
            if not self.is_cuda:
                with torch.inference_mode():
                    return Launched(start, self._run(network, card, self._stage(patches, slot)).numpy(),
                                    count=len(patches))
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.torch_device)
            shape = tuple(patches[0].pixels.shape)
            graph = self._graph(network, card, len(patches), shape) if self.use_graphs else None
            with torch.cuda.stream(self._stream), torch.inference_mode():
                if graph is not None:
                    self._stage(patches, slot, into=graph.static_in)
                    graph.graph.replay()
                    decoded = graph.static_out[: len(patches)]
                else:
                    decoded = self._run(network, card, self._stage(patches, slot))
                host = self._pinned(self._outputs, slot, tuple(decoded.shape), torch.float32)
                host.copy_(decoded, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
            return Launched(start, host, event, len(patches))
        except BaseException as exc:
            if _is_oom(exc):
                if self.is_cuda:
                    torch.cuda.synchronize(self.torch_device)
                    torch.cuda.empty_cache()
                raise OutOfDeviceMemory(str(exc)) from exc
            raise

    def _graph(self, network: Any, card: Any, count: int, shape: tuple[int, ...]) -> "_CapturedForward | None":
        """The captured forward for this network and batch size (captured on first use).

        Replaying a CUDA graph launches the whole network at once, so the device thread needs the
        interpreter lock once per batch instead of once per kernel, and the GPU stays fed while
        reader and post-processing threads run Python. A capture failure falls back to eager.
        """
        sizes = self.COMPILED_GRAPH_SIZES if self.compile else self.GRAPH_SIZES
        size = next((n for n in sizes if n >= count), count)
        key = (id(network), network.dtype, size, shape)
        graph = self._graphs.get(key)
        if graph is not None and graph.network is network:
            return graph
        if len(self._graphs) >= 16:  # bounded: captured graphs hold their own activation memory
            self._graphs.clear()
        try:
            graph = _CapturedForward(self, network, card, size, shape)
        except BaseException as exc:
            if _is_oom(exc):
                raise
            log.warning("CUDA graph capture failed (%s); running eagerly", exc)
            self.use_graphs = False
            return None
        self._graphs[key] = graph
        return graph

    def _forward(self, network: Any) -> Any:
        """The network's forward, compiled with torch.compile when asked (GPU only).

        Compilation fuses the elementwise work around the convolutions (bias, leaky ReLU), which
        roughly doubles the rate of the SDC1 network on a Hopper GPU; each batch size compiles
        once, on first use, which takes a while.
        """
        if not self.compile:
            return network.forward_tensor
        entry = self._compiled.get(id(network))
        if entry is None or entry[0] is not network:
            entry = (network, torch.compile(network.forward_tensor, dynamic=False))
            if len(self._compiled) > 8:
                self._compiled.clear()
            self._compiled[id(network)] = entry
        return entry[1]

    def _run(self, network: Any, card: Any, x: torch.Tensor) -> torch.Tensor:
        x = normalise_tensor(x, card.normalisation).to(network.dtype)
        decoded = network.decode(self._forward(network)(x))  # float32 box corners
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
        return self.collect(self.launch(network, card, [_Raw(pixels) for pixels in batch]))

    def memory_bytes(self) -> int | None:
        if not self.is_cuda:
            return None
        return int(torch.cuda.memory_allocated(self.torch_device))
