"""Run a model on an image (or a region of it) and return the catalogue.

`detect` chains the steps; each step is also a public function so that a scheduler can cut
many jobs into patches, run one large forward batch for all of them, then decode and merge
each job separately:

    plan = plan_tiles(box, card.tiling)                   # geometry
    for tiles, batch in iter_batches(image, plan, ...):   # cut + normalise (bounded memory)
        outputs = run_network(net, batch)                 # forward (the expensive, batchable part)
        per_tile += decode_batch(outputs, ...)            # thresholds + first NMS per patch
    boxes = merge_tiles(per_tile, plan, box, ...)         # second NMS, edges, region
    table = yolo_catalogue(boxes, card, image, box, ...)  # physical columns + metadata
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import ModelCardError, ModelFileError, UserInputError
from ..models._card import PRECISIONS, ModelCard
from ._boxes import Boxes
from ._catalogue import classic_catalogue, yolo_catalogue
from ._decode import decode_batch, decode_settings
from ._image import SkyImage, open_image
from ._merge import merge_tiles
from ._region import PixelBox, parse_region
from ._tiling import iter_batches, plan_tiles

__all__ = ["YoloDetection", "detect", "resolve_precision", "prepare_network", "check_network", "run_network"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def resolve_precision(precision: str | None, card: ModelCard, device: Any = "cpu") -> str:
    """The precision to run with: the request, else the card default; fp16 on CPU falls back to fp32.

    PyTorch's CPU kernels for fp16 convolutions are very slow or missing, so fp16 on a CPU is
    replaced by fp32 with a logged warning; bf16 on a CPU runs but is logged as slow.
    """
    chosen = (precision or card.default_precision or "fp32").lower()
    if chosen not in PRECISIONS:
        raise UserInputError(f"PRECISION must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    on_cpu = str(device).startswith("cpu")
    if on_cpu and chosen == "fp16":
        log.warning("fp16 is not practical on a CPU; running %s in fp32 instead.", card.name)
        return "fp32"
    if on_cpu and chosen == "bf16":
        log.warning("bf16 on a CPU is slow and less accurate than fp32; running %s in bf16 as asked.", card.name)
    return chosen


def prepare_network(card: ModelCard, device: Any = "cpu", precision: str = "fp32") -> Any:
    """Load the card's weights with the CIANNA runtime and check them against the card."""
    from ..cianna import load_network

    if card.weights_file is None:
        raise ModelCardError(f"model {card.name!r} has no weights file.")
    if not Path(card.weights_file).exists():
        raise ModelFileError(f"{card.weights_file}: the weights file of model {card.name!r} is missing.")
    net = load_network(card.weights_file, device=device, precision=precision, input_bias=card.input_bias)
    check_network(net, card)
    return net


def check_network(net: Any, card: ModelCard) -> None:
    """Raise `ModelCardError` when the network's input size or YOLO head disagrees with the card."""
    where = str(card.card_path or card.name)
    in_dims = tuple(getattr(net, "in_dims", ()) or ())
    if card.tiling is not None and len(in_dims) >= 2 and tuple(in_dims[:2]) != tuple(card.tiling.patch_size):
        raise ModelCardError(
            f"{where}: [tiling] patch_size {list(card.tiling.patch_size)} differs from the network input {list(in_dims[:2])}."
        )
    if len(in_dims) >= 4 and int(in_dims[3]) != int(card.channels):
        raise ModelCardError(f"{where}: [input] channels {card.channels} differs from the network's {in_dims[3]}.")
    head = getattr(net, "yolo", None)
    if card.yolo is not None and head is not None:
        for key in ("nb_box", "nb_class", "nb_param"):
            if int(getattr(head, key)) != int(getattr(card.yolo, key)):
                raise ModelCardError(
                    f"{where}: [yolo] {key} = {getattr(card.yolo, key)} differs from the network's {getattr(head, key)}."
                )


def run_network(net: Any, batch: np.ndarray) -> np.ndarray:
    """Forward one batch ``[N, C, H, W]`` float32; returns the decoded YOLO output ``[N, C_out, gh, gw]``."""
    out = np.asarray(net.forward(batch, raw_output=False))
    if out.ndim == 5 and out.shape[2] == 1:  # [N, C, D=1, H, W]
        out = out[:, :, 0]
    return out


def detect(
    image_or_path: str | Path | fits.HDUList | SkyImage,
    card: ModelCard,
    *,
    region: str | None = None,
    pixels: str | None = None,
    precision: str | None = None,
    device: Any = "cpu",
    threshold: float | None = None,
    nms: float | None = None,
    min_size: float | None = None,
    hdu: int | str | None = None,
    network: Any = None,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Table:
    """Detect sources in a FITS image with a model and return the catalogue.

    Parameters
    ----------
    image_or_path : path, HDUList or SkyImage
        The image; a path is opened memory-mapped.
    card : ModelCard
        The model ("yolo-cianna" or "classic" family).
    region : str, optional
        SODA region in ICRS degrees (``CIRCLE ...``, ``POLYGON ...``, ``POS=RANGE ...``).
    pixels : str, optional
        ``x1 x2 y1 y2``, FITS 1-based inclusive pixel range.
    precision : str, optional
        fp32, fp16 or bf16 (card default; fp16 on CPU runs in fp32).
    device : str
        Torch device for the network ("cpu", "cuda", "cuda:1", ...).
    threshold : float, optional
        Objectness threshold for every prior (YOLO) or detection threshold in sigmas (classic).
    nms : float, optional
        DIoU-style overlap threshold of both NMS passes (YOLO only).
    min_size : float, optional
        Boxes narrower or shorter than this many pixels are dropped.
    hdu : int or str, optional
        HDU index or EXTNAME.
    network : optional
        An already loaded network for this card (skips loading).
    batch_size : int
        Patches per forward call.
    progress : callable, optional
        Called as ``progress(done_patches, total_patches)``.

    Returns
    -------
    astropy.table.Table
        See `yolo_catalogue` / `classic_catalogue` for the columns.
    """
    opened = not isinstance(image_or_path, SkyImage)
    image = open_image(image_or_path, hdu=hdu) if opened else image_or_path
    try:
        box = parse_region(region, pixels, image)
        if card.family == "classic":
            return _detect_classic(image, card, box, threshold=threshold, min_size=min_size, progress=progress)
        if card.family != "yolo-cianna":
            raise ModelCardError(f"model {card.name!r}: unknown family {card.family!r}.")
        if card.tiling is None or card.yolo is None:
            raise ModelCardError(f"model {card.name!r}: a yolo-cianna card needs [tiling] and [yolo].")
        if network is None:
            precision = resolve_precision(precision, card, device)
            network = prepare_network(card, device=device, precision=precision)
        else:
            check_network(network, card)
            precision = getattr(network, "precision", None) or resolve_precision(precision, card, device)
        return _detect_yolo(
            image, card, box, network,
            precision=str(precision), threshold=threshold, nms=nms, min_size=min_size,
            batch_size=batch_size, progress=progress,
        )
    finally:
        if opened:
            image.close()


def _detect_yolo(
    image: SkyImage,
    card: ModelCard,
    box: PixelBox,
    network: Any,
    *,
    precision: str,
    threshold: float | None,
    nms: float | None,
    min_size: float | None,
    batch_size: int,
    progress: Progress | None,
) -> Table:
    detection = YoloDetection(image, card, box, precision=precision, threshold=threshold, nms=nms,
                              min_size=min_size, device=device_of(network))
    total, done = len(detection.plan), 0
    if progress:
        progress(0, total)
    for tiles, batch in iter_batches(image, detection.plan, card.normalisation, batch_size, channels=card.channels):
        detection.add_outputs(tiles, run_network(network, batch))
        done += len(tiles)
        if progress:
            progress(done, total)
    return detection.catalogue()


class YoloDetection:
    """One image's YOLO detection, fed patch outputs in any order and batch composition.

    `detect` feeds it batch by batch; the batching scheduler feeds it slices of batches shared
    with other jobs. It holds the tiling plan, the decode settings and each tile's boxes, and
    builds the catalogue (second NMS, region, physical columns) once every tile has reported.
    """

    def __init__(self, image: SkyImage, card: ModelCard, box: PixelBox, *, precision: str,
                 threshold: float | None = None, nms: float | None = None, min_size: float | None = None,
                 device: str = "cpu") -> None:
        if card.tiling is None or card.yolo is None:
            raise ModelCardError(f"model {card.name!r}: a yolo-cianna card needs [tiling] and [yolo].")
        self.image, self.card, self.box = image, card, box
        self.yolo = card.yolo
        self.precision, self.device = precision, device
        self.plan = plan_tiles(box, card.tiling)
        self.settings = decode_settings(
            self.yolo, threshold=threshold, nms=nms, min_size=min_size, nms_tiers=self.yolo.nms_tiers,
            min_box_size=self.yolo.min_box_size, edge_penalty=self.yolo.edge_penalty,
        )
        self.second_nms = float(nms) if nms is not None else float(self.yolo.second_nms_threshold)
        self.per_tile: list[Boxes | None] = [None] * len(self.plan)
        self.received = 0

    @property
    def complete(self) -> bool:
        return self.received == len(self.plan)

    def add_outputs(self, tiles: list, outputs: np.ndarray) -> None:
        """Decode the network's decoded-box outputs ``[n, C, gh, gw]`` of `tiles` (first NMS included)."""
        for tile, boxes in zip(tiles, decode_batch(outputs, [t.index for t in tiles], self.yolo, self.settings)):
            if self.per_tile[tile.index] is None:
                self.received += 1
            self.per_tile[tile.index] = boxes

    def catalogue(self) -> Table:
        """Merge the tiles (second NMS, edges, region) and build the catalogue table."""
        if not self.complete:
            raise RuntimeError(f"{len(self.plan) - self.received} patches have not been processed yet")
        empty = Boxes.empty(self.yolo.nb_class, self.yolo.nb_param)
        per_tile = [b if b is not None else empty for b in self.per_tile]
        merged = merge_tiles(per_tile, self.plan, self.box, second_nms_threshold=self.second_nms,
                             edge_margin=self.yolo.edge_margin)
        plan, settings = self.plan, self.settings
        parameters = {
            "threshold": list(settings.thresholds),
            "nms": _tiers_text(settings.nms_tiers),
            "second_nms": self.second_nms,
            "min_size": settings.min_size,
            "edge_margin": self.yolo.edge_margin,
            "patch_size": list(plan.patch_size),
            "shift": list(plan.shift),
            "offset": list(plan.offset),
            "patches": len(plan),
            "device": self.device,
        }
        return yolo_catalogue(merged, self.card, self.image, self.box, precision=self.precision,
                              parameters=parameters)


def _tiers_text(tiers: tuple[tuple[float, float], ...]) -> float | list[list[float]]:
    """NMS settings for metadata: the plain threshold, or the (overlap, objectness) tiers."""
    if len(tiers) == 1 and tiers[0][1] == float("inf"):
        return float(tiers[0][0])
    return [[float(a), float(b)] for a, b in tiers]


def device_of(network: Any) -> str:
    """The device a network runs on, as text ("cpu" when unknown)."""
    try:
        return str(network.device)
    except Exception:
        return "cpu"


def _detect_classic(
    image: SkyImage,
    card: ModelCard,
    box: PixelBox,
    *,
    threshold: float | None,
    min_size: float | None,
    progress: Progress | None,
) -> Table:
    from ._classic import find_sources_classic

    if card.classic is None:
        raise ModelCardError(f"model {card.name!r}: a classic card needs a [classic] table.")
    spec = card.classic
    if threshold is not None:
        spec = dataclasses.replace(spec, threshold_sigma=float(threshold))
    if progress:
        progress(0, 1)
    cut = image.data[box.slices]
    sources = find_sources_classic(
        cut, spec, pixel_mask=box.mask, origin=(box.x0, box.y0), beam_area_pix=image.beam_area_pix
    )
    if min_size is not None and min_size > 0 and len(sources):
        keep = (np.asarray(sources["width"]) >= min_size) & (np.asarray(sources["height"]) >= min_size)
        sources = sources[keep]
    if len(sources):
        sources = sources[box.contains(np.asarray(sources["x"]), np.asarray(sources["y"]))]
    if progress:
        progress(1, 1)
    parameters = {
        "threshold": spec.threshold_sigma,
        "min_area": spec.min_area,
        "min_size": min_size,
        "background_box": spec.background_box,
        "background_filter": spec.background_filter,
        "deblend_nthresh": spec.deblend_nthresh,
        "deblend_cont": spec.deblend_cont,
    }
    return classic_catalogue(sources, card, image, box, parameters=parameters)
