"""Patches cut, scaled and normalised on the network's device, from strips of the image read once.

On a GPU host, cutting a survey image into patches on the CPU (a read, a byte swap, a noise
window and a normalisation for every patch) takes many times what the network takes. Here each
row of patches is made from one strip of image rows:

1. its raw bytes are copied from the (memory-mapped) image into pinned host memory, by a few
   threads, while the device works on the strip before it;
2. the strip goes to the device in one asynchronous transfer and is byte-swapped there (FITS
   stores big-endian numbers);
3. it is brought to the model's scale where it is: for signal-to-noise models the background
   and rms of the noise map are two matrix products per strip (`NoiseMap.factors`: the
   columns of the whole width are sent once), for absolute models a unit factor;
4. normalised (`normalise_tensor`) and unfolded into the row's patches, which are views of
   the strip until a batch is gathered.

The patches equal `iter_batches`' to float32 rounding (a test holds them together), pixels
beyond the image and NaN blanks included. Views that resample (a zoom other than 1), images
whose pixels are not a plain array, and noise maps too large for per-axis tables are not
handled here (`device_tiling_problem` says why) and keep the host path.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..models._card import NormalisationSpec
from ._normalise import normalise_tensor
from ._tiling import Tile, TilePlan

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceTiler", "device_tiling_problem"]


def device_tiling_problem(view: Any, device: Any) -> str | None:
    """Why the patches of `view` cannot be made on `device` (None when they can)."""
    if not str(device).startswith("cuda"):
        return "the network runs on the CPU, where the host path is the tuned one"
    data = getattr(view.image, "data", None)
    if getattr(view, "zoom", 1.0) != 1.0:
        return "the image is resampled to the model's beam"
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        return "the image's pixels are not a plain array (a compressed or scaled HDU)"
    if data.dtype.kind != "f" or data.dtype.itemsize not in (4, 8):
        return f"the image's pixels are {data.dtype}, not float32 or float64"
    if view.plan.convention == "snr" and view.noise is None:
        return "a signal-to-noise view without a noise map"
    return None


class DeviceTiler:
    """The patches of a `TilePlan` over a `DomainView`, made on a torch device row by row.

    Parameters
    ----------
    view : DomainView
        The image as the model sees it (zoom 1); its ``image.data`` is read.
    plan : TilePlan
        The patches (model pixels = image pixels at zoom 1).
    spec : NormalisationSpec
        The card's normalisation.
    device : torch device or str
        Where the patches are made (and the network runs). A CPU device works too (no pinned
        memory), which is how the tests compare this path with the host one.
    channels : int
        Channels of each patch (the plane repeated).
    workers : int
        Threads copying the next strip's bytes while the device works on the current one.
    """

    def __init__(self, view: Any, plan: TilePlan, spec: NormalisationSpec, device: Any, *,
                 channels: int = 1, workers: int = 4) -> None:
        import torch

        self.view, self.plan, self.spec, self.channels = view, plan, spec, int(channels)
        self.device = torch.device(device)
        self.workers = max(1, int(workers))
        self.data: np.ndarray = view.image.data
        ny, nx = self.data.shape
        self.ny, self.nx = int(ny), int(nx)
        (pw, ph), (sw, _) = plan.patch_size, plan.shift
        self.first_x = plan.tile(0, 0).x0  # image column of the strips' first column
        self.width = (plan.nx_tiles - 1) * sw + pw  # every patch of a row within one strip
        self.cx0, self.cx1 = max(self.first_x, 0), min(self.first_x + self.width, self.nx)
        dtype = self.data.dtype
        self.itemsize = dtype.itemsize
        self.swapped = not dtype.isnative
        self.pinned = self.device.type == "cuda"
        self.snr = view.plan.convention == "snr"
        self.scale = getattr(view, "scale", None)
        self._columns: torch.Tensor | None = None
        if self.snr:
            _, _, columns = view.noise.factors(self.first_x, self.first_x + self.width, 0, 1)
            self._columns = torch.as_tensor(np.ascontiguousarray(columns, dtype=np.float32)).to(self.device)
            self.floor = float(view.noise.floor)
        self._buffers = [self._host_buffer(ph) for _ in range(2)]
        self._uploaded: list[Any] = [None, None]  # the event after which a buffer may be refilled

    def _host_buffer(self, rows: int) -> "torch.Tensor":
        import torch

        columns = max(0, self.cx1 - self.cx0) * self.itemsize
        return torch.empty((rows, max(columns, 1)), dtype=torch.uint8, pin_memory=self.pinned)

    # ------------------------------------------------------------------ host side
    def _rows_of(self, j: int) -> tuple[int, int, int]:
        """``(top, y0, y1)``: strip ``j``'s first image row and the image rows it holds."""
        top = self.plan.tile(0, j).y0
        return top, max(top, 0), min(top + self.plan.patch_size[1], self.ny)

    def _fill(self, j: int, slot: int, pool: ThreadPoolExecutor) -> list[Future]:
        """Start copying strip ``j``'s raw bytes into host buffer ``slot`` (threads, rows split)."""
        _, y0, y1 = self._rows_of(j)
        if y0 >= y1 or self.cx0 >= self.cx1:
            return []
        event = self._uploaded[slot]
        if event is not None:  # the buffer's previous strip must have reached the device
            event.synchronize()
        target = self._buffers[slot].numpy()
        source = self.data[y0:y1, self.cx0:self.cx1]
        raw = source.view(np.uint8)  # the bytes as stored: a plain copy, the swap is done on the device
        rows = y1 - y0
        step = -(-rows // self.workers)

        def copy(a: int, b: int) -> None:
            np.copyto(target[a:b, :raw.shape[1]], raw[a:b])

        return [pool.submit(copy, a, min(rows, a + step)) for a in range(0, rows, step)]

    # ---------------------------------------------------------------- device side
    def _strip(self, j: int, slot: int) -> "torch.Tensor":
        """Strip ``j`` on the device, normalised: ``[patch height, width]`` float32."""
        import torch

        top, y0, y1 = self._rows_of(j)
        ph = self.plan.patch_size[1]
        strip = torch.full((ph, self.width), float("nan"), dtype=torch.float32, device=self.device)
        if y0 < y1 and self.cx0 < self.cx1:
            rows, cols = y1 - y0, self.cx1 - self.cx0
            host = self._buffers[slot][:rows, :cols * self.itemsize]
            raw = host.to(self.device, non_blocking=True)
            if self.pinned:
                event = torch.cuda.Event()
                event.record()
                self._uploaded[slot] = event
            raw = raw.view(rows, cols, self.itemsize)
            if self.swapped:
                raw = raw.flip(-1)
            values = raw.contiguous().view(torch.float32 if self.itemsize == 4 else torch.float64)
            values = values.view(rows, cols).float()
            strip[y0 - top:y1 - top, self.cx0 - self.first_x:self.cx1 - self.first_x] = values
        if self.snr:
            background, rms = self._noise_rows(top)
            strip = (strip - background) / rms
        elif self.scale is not None:
            strip = strip * float(self.scale)
        return normalise_tensor(strip, self.spec)

    def _noise_rows(self, top: int) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        ph = self.plan.patch_size[1]
        back_rows, rms_rows, _ = self.view.noise.factors(self.first_x, self.first_x + 1, top, top + ph)
        pair = torch.as_tensor(np.stack([back_rows, rms_rows]).astype(np.float32)).to(self.device)
        assert self._columns is not None
        maps = torch.matmul(pair, self._columns.T)  # [2, ph, width]
        return maps[0], maps[1].clamp_min(self.floor)

    def batches(self, batch_size: int) -> Iterator[tuple[list[Tile], "torch.Tensor"]]:
        """Yield ``(tiles, batch)`` in plan order, ``batch`` ``[n, channels, H, W]`` float32 on the device.

        A batch holds at most `batch_size` patches and never spans two rows of patches (a row
        is one strip). Stopping early (an abort) leaves no thread behind.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        plan = self.plan
        pw, sw = plan.patch_size[0], plan.shift[0]
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cianna-otf-strip") as pool:
            pending = self._fill(0, 0, pool)
            for j in range(plan.ny_tiles):
                slot = j % 2
                for future in pending:
                    future.result()
                strip = self._strip(j, slot)
                pending = self._fill(j + 1, 1 - slot, pool) if j + 1 < plan.ny_tiles else []
                patches = strip.unfold(1, pw, sw).permute(1, 0, 2)  # [nx_tiles, ph, pw] views
                for start in range(0, plan.nx_tiles, batch_size):
                    stop = min(plan.nx_tiles, start + batch_size)
                    batch = patches[start:stop].unsqueeze(1)
                    if self.channels > 1:
                        batch = batch.expand(-1, self.channels, -1, -1)
                    yield [plan.tile(i, j) for i in range(start, stop)], batch.contiguous()
