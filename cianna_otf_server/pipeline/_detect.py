"""Run a model on an image (or a region of it) and return the catalogue.

`detect` chains the steps; each step is also a public function so that a scheduler can cut
many jobs into patches, run one large forward batch for all of them, then decode and merge
each job separately:

    detection = YoloDetection(image, card, box, ...)        # domain plan + view, tiling (geometry)
    for tiles, batch in iter_batches(detection.view, detection.plan, ...):  # cut + normalise
        detection.add_outputs(tiles, run_network(net, batch))   # forward (the batchable part), decode
    table = detection.catalogue()     # second NMS, back to image pixels, region, blanks, columns
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ..errors import ModelCardError, ModelFileError, UserInputError
from ..models._card import PRECISIONS, ModelCard
from ._boxes import Boxes
from ._catalogue import classic_catalogue, yolo_catalogue
from ._components import PEAK_DISTANCE_BEAMS, BeamMetric, component_boxes, one_per_peak, rescued
from ._resampling import resampling_bias
from ._decode import decode_batch, decode_settings
from ._device_decode import decode_batch_tensor, device_decode_problem, tensor_outputs
from ._device_tiling import DeviceTiler, device_tiling_problem
from ._domain import DomainPlan, DomainView, drop_blank_boxes, plan_domain
from ._image import SkyImage, open_image
from ._measure import Measurement, measure_sources
from ._merge import keep_in_region, merge_tiles
from ._noise import NoiseMap, measure_noise
from ._region import PixelBox, parse_region
from ._tiling import cut_patch, iter_batches, plan_tiles

__all__ = ["YoloDetection", "detect", "resolve_precision", "prepare_network", "check_network", "run_network",
           "run_detection", "patch_batches"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

#: Most threads `detect` cuts patches with (the reads and scaling of a batch are a few large
#: array operations: beyond a few threads the memory bus, not the cores, bounds them).
MAX_CUT_WORKERS = 4

#: Fewest patches per forward call when the patches are made on the GPU (a row of patches of a
#: survey image is one strip; small batches would leave the device waiting on launches).
DEVICE_BATCH = 64


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
    """Load the card's weights with the CIANNA runtime, at the card's patch size, and check them."""
    from ..cianna import load_network

    if card.weights_file is None:
        raise ModelCardError(f"model {card.name!r} has no weights file.")
    if not Path(card.weights_file).exists():
        raise ModelFileError(f"{card.weights_file}: the weights file of model {card.name!r} is missing.")
    size = tuple(card.tiling.patch_size) if card.tiling is not None else None
    net = load_network(card.weights_file, device=device, precision=precision, input_bias=card.input_bias,
                       input_size=size)
    return check_network(net, card)


def check_network(net: Any, card: ModelCard) -> Any:
    """The network to run for `card`: `net` itself, or `net` at the card's patch size.

    A fully convolutional network runs on patches of another size than the one stored in its
    file, as CIANNA runs it (the published SDC1 network is trained on 256 px and run on 512 px);
    one with a dense layer, or strides that do not tile the patch, is refused with the reason.

    Raises
    ------
    ModelCardError
        The patch size, channels or YOLO head disagree with the network.
    """
    where = str(card.card_path or card.name)
    in_dims = tuple(getattr(net, "in_dims", ()) or ())
    if card.tiling is not None and len(in_dims) >= 2 and tuple(in_dims[:2]) != tuple(card.tiling.patch_size):
        problem = net.input_size_problem(tuple(card.tiling.patch_size)) if hasattr(net, "input_size_problem") \
            else f"the network input is {list(in_dims[:2])}"
        if problem:
            raise ModelCardError(f"{where}: [tiling] patch_size {list(card.tiling.patch_size)}: {problem}.")
        net = net.with_input_size(tuple(card.tiling.patch_size))
    if len(in_dims) >= 4 and int(in_dims[3]) != int(card.channels):
        raise ModelCardError(f"{where}: [input] channels {card.channels} differs from the network's {in_dims[3]}.")
    head = getattr(net, "yolo", None)
    if card.yolo is not None and head is not None:
        for key in ("nb_box", "nb_class", "nb_param"):
            if int(getattr(head, key)) != int(getattr(card.yolo, key)):
                raise ModelCardError(
                    f"{where}: [yolo] {key} = {getattr(card.yolo, key)} differs from the network's {getattr(head, key)}."
                )
    return net


def run_network(net: Any, batch: Any) -> Any:
    """Forward one batch ``[N, C, H, W]`` float32; returns the decoded YOLO output ``[N, C_out, gh, gw]``.

    A numpy batch gives numpy; a batch made on the network's device (`patch_batches`) gives
    a tensor left there, for `YoloDetection.add_outputs` to decode where it is.
    """
    if not isinstance(batch, np.ndarray):
        on_device = tensor_outputs(net, batch)
        if on_device is not None:
            return on_device
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
    unit: str | None = None,
    beam: str | None = None,
    cut_workers: int | None = None,
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
    unit, beam : str, optional
        Replace the header's brightness unit (``"mJy/beam"``) and restoring beam
        (``"bmaj bmin pa"``, arcsec, arcsec, deg) when the image is opened here.
    cut_workers : int, optional
        Threads cutting and scaling the next patches while the network runs (YOLO only); by
        default up to 4, one per CPU core (on a GPU host this host work bounds a whole image).

    Returns
    -------
    astropy.table.Table
        See `yolo_catalogue` / `classic_catalogue` for the columns.
    """
    opened = not isinstance(image_or_path, SkyImage)
    if not opened and (unit is not None or beam is not None):
        raise UserInputError("unit and beam overrides apply when the image is opened: give a path or an HDUList")
    image = open_image(image_or_path, hdu=hdu, unit=unit, beam=beam) if opened else image_or_path
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
            network = check_network(network, card)
            precision = getattr(network, "precision", None) or resolve_precision(precision, card, device)
        return _detect_yolo(
            image, card, box, network,
            precision=str(precision), threshold=threshold, nms=nms, min_size=min_size,
            batch_size=batch_size, progress=progress, cut_workers=cut_workers,
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
    cut_workers: int | None = None,
) -> Table:
    detection = YoloDetection(image, card, box, precision=precision, threshold=threshold, nms=nms,
                              min_size=min_size, device=device_of(network))
    workers = cut_workers if cut_workers is not None else min(MAX_CUT_WORKERS, os.cpu_count() or 1)
    return run_detection(detection, network, batch_size=batch_size, progress=progress, cut_workers=workers)


def run_detection(detection: "YoloDetection", network: Any, *, batch_size: int = 16,
                  progress: Progress | None = None, cut_workers: int = 1) -> Table:
    """Feed every patch of a planned detection through `network`, batch by batch; the catalogue.

    The one-job path (`detect`, the worker pool); the batching scheduler feeds a `YoloDetection`
    from batches shared with other jobs instead. ``cut_workers`` threads cut the next batches
    while this one runs (`iter_batches`; on a GPU the patches are made there, `patch_batches`);
    the worker pool keeps one, its jobs being the threads.
    """
    total, done = len(detection.plan), 0
    if progress:
        progress(0, total)
    for tiles, batch in patch_batches(detection, batch_size, cut_workers):
        detection.add_outputs(tiles, run_network(network, batch), inputs=batch)
        done += len(tiles)
        if progress:
            progress(done, total)
    return detection.catalogue()


def patch_batches(detection: "YoloDetection", batch_size: int, cut_workers: int = 1) -> Iterator[tuple[list, Any]]:
    """The detection's patches in batches: made on the network's GPU where they can be, else on the host.

    On a GPU host the host-side cutting bounds a whole image (`DeviceTiler` makes a row of
    patches from one strip of the image where the network runs); elsewhere, or when the view
    cannot be cut there (`device_tiling_problem`: a resampled view, a compressed HDU), the
    host path cuts them in ``cut_workers`` threads. Either way the batches come in plan order.
    """
    card = detection.card
    problem = device_tiling_problem(detection.view, detection.device)
    if problem is None:
        tiler = DeviceTiler(detection.view, detection.plan, card.normalisation, detection.device,
                            channels=card.channels, workers=max(1, cut_workers))
        return tiler.batches(max(batch_size, DEVICE_BATCH))
    log.debug("patches cut on the host: %s", problem)
    return iter_batches(detection.view, detection.plan, card.normalisation, batch_size,
                        channels=card.channels, workers=cut_workers)


class YoloDetection:
    """One image's YOLO detection, fed patch outputs in any order and batch composition.

    `detect` feeds it batch by batch; the batching scheduler feeds it slices of batches shared
    with other jobs. It holds the domain plan and the image as the model sees it (`view`: its
    ``data`` is what patches are cut from), the tiling plan (in model pixels), the decode
    settings and each tile's boxes, and builds the catalogue (second NMS, back to image pixels,
    region, blanks, physical columns) once every tile has reported.
    """

    def __init__(self, image: SkyImage, card: ModelCard, box: PixelBox, *, precision: str,
                 threshold: float | None = None, nms: float | None = None, min_size: float | None = None,
                 device: str = "cpu", noise: NoiseMap | None = None) -> None:
        if card.tiling is None or card.yolo is None:
            raise ModelCardError(f"model {card.name!r}: a yolo-cianna card needs [tiling] and [yolo].")
        self.image, self.card, self.box = image, card, box
        note_blank_area(image, box)
        self.yolo = card.yolo
        self.precision, self.device = precision, device
        sampling = plan_domain(image, card)  # the resampling does not depend on the noise
        if noise is None and needs_noise(card):
            noise = measure_noise(image.data, window=noise_window(box, image, card, sampling.zoom))
        self.noise = noise
        self.domain: DomainPlan = plan_domain(image, card, noise) if noise is not None else sampling
        self.view = DomainView(image, self.domain, noise)
        self.model_box = self.view.model_box(box)
        self.plan = plan_tiles(self.model_box, card.tiling)
        self.settings = decode_settings(
            self.yolo, threshold=threshold, nms=nms, min_size=min_size, nms_tiers=self.yolo.nms_tiers,
            min_box_size=self.yolo.min_box_size, edge_penalty=self.yolo.edge_penalty,
        )
        self.second_nms = float(nms) if nms is not None else float(self.yolo.second_nms_threshold)
        self.per_tile: list[Boxes | None] = [None] * len(self.plan)
        self.received = 0
        self._bias: tuple[Any, ...] | None = None  # the view's resampling bias, measured once

    @property
    def complete(self) -> bool:
        return self.received == len(self.plan)

    def add_outputs(self, tiles: list, outputs: np.ndarray, inputs: Any = None) -> None:
        """Decode the network's decoded-box outputs ``[n, C, gh, gw]`` of `tiles` (first NMS included).

        Outputs left on the network's device are decoded there (`decode_batch_tensor`; only
        the kept boxes are copied back), numpy outputs on the host; both give the same boxes.

        ``inputs`` (the normalised batch ``[n, C, H, W]``, numpy or a device tensor) is read by
        the SDC1 extended-source filter when the card turns it on; without it the patches are
        cut again from the view.
        """
        patches = None
        if self.settings.extended_filter is not None:
            if inputs is not None and not isinstance(inputs, np.ndarray):  # a batch made on the device
                inputs = inputs[:, :1].float().cpu().numpy()
            if inputs is not None:
                patches = [inputs[k, 0] for k in range(len(tiles))]
            else:
                patches = [cut_patch(self.view, tile, self.plan.patch_size, self.card.normalisation) for tile in tiles]
        indices = [t.index for t in tiles]
        decoded = None
        if not isinstance(outputs, np.ndarray):  # left on the device by `run_network`
            if patches is None and device_decode_problem(self.settings) is None:
                decoded = decode_batch_tensor(outputs, indices, self.yolo, self.settings)
            if decoded is None:
                outputs = outputs.float().cpu().numpy()
        if decoded is None:
            decoded = decode_batch(outputs, indices, self.yolo, self.settings, patches)
        for tile, boxes in zip(tiles, decoded):
            if self.per_tile[tile.index] is None:
                self.received += 1
            self.per_tile[tile.index] = boxes

    def boxes(self) -> tuple[Boxes, np.ndarray | None, Measurement | None]:
        """The merged detections in image pixels, their peak SNR and their measurement.

        Second NMS, back to image pixels, region; for declared domains also blanks; with a
        card that measures (``[yolo] measure``), a Gaussian fit around each detection on the
        image as the model sees it; then the card's ``min_peak_snr`` (on the fitted peak when
        measured). The peak SNR is None without a noise map, the measurement None when the
        card does not measure or the beam is unknown.

        With the card's significance rescue (``[yolo] rescue_threshold``), the boxes decoded
        below their prior's threshold are set aside before any of this (the standing detections
        are exactly those of the card without it) and added last where `_rescue` keeps them.
        """
        if not self.complete:
            raise RuntimeError(f"{len(self.plan) - self.received} patches have not been processed yet")
        empty = Boxes.empty(self.yolo.nb_class, self.yolo.nb_param)
        per_tile = [b if b is not None else empty for b in self.per_tile]
        merged = merge_tiles(per_tile, self.plan, self.model_box, second_nms_threshold=self.second_nms,
                             edge_margin=self.yolo.edge_margin)
        boxes = keep_in_region(self.view.to_image(merged), self.box)
        if self.card.domain.declared:
            boxes = drop_blank_boxes(boxes, self.image)
        candidates = None
        if self.settings.rescue_threshold > 0:
            standing = self.settings.standing(boxes)
            candidates = boxes.take(~standing & (boxes.objectness >= self.settings.rescue_threshold))
            boxes = boxes.take(standing)
        measurement = self._measure(boxes) if self.yolo.measure else None
        if measurement is not None and self.yolo.deblend and self.domain.convention == "snr" \
                and self.yolo.min_peak_snr > 0:
            boxes, measurement = self._deblend(boxes, measurement)
        if self.noise is None:
            return boxes, None, measurement
        if measurement is not None and self.domain.convention == "snr":  # the fitted peaks, in sigmas
            snr = np.asarray(measurement.peak, dtype=np.float64).copy()
            missing = ~np.isfinite(snr)
            if missing.any():
                snr[missing] = self.view.snr_peak(boxes.take(missing))
        else:
            snr = self.view.snr_peak(boxes)
        if self.yolo.min_peak_snr > 0:
            keep = np.nan_to_num(snr, nan=-np.inf) >= self.yolo.min_peak_snr
            boxes, snr = boxes.take(keep), snr[keep]
            measurement = measurement.take(keep) if measurement is not None else None
        if candidates is not None and len(candidates) and measurement is not None \
                and self.domain.convention == "snr":
            boxes, snr, measurement = self._rescue(candidates, boxes, snr, measurement)
        return boxes, snr, measurement

    def _rescue(self, candidates: Boxes, boxes: Boxes, snr: np.ndarray,
                measurement: Measurement) -> tuple[Boxes, np.ndarray, Measurement]:
        """The standing detections and the candidates that `rescued` keeps for their measured significance.

        Candidates are measured like every detection (their measured peak is what
        ``min_peak_snr`` reads) and tested against the standing detections after the cut,
        deblended components included; the kept ones are appended.
        """
        beam = self._beam_in_model_pixels()
        if beam is None:
            return boxes, snr, measurement
        measured = self._measured(self.view.to_model(candidates), beam)
        keep = rescued(measured, candidates.objectness, measurement, snr, self.yolo.rescue_snr, *beam)
        if not keep.any():
            return boxes, snr, measurement
        found = measured.take(keep)
        return (Boxes.concat([boxes, candidates.take(keep)]),
                np.concatenate([snr, np.asarray(found.peak, dtype=np.float64)]), measurement.concat(found))

    def _beam_in_model_pixels(self) -> tuple[float, float, float] | None:
        """The beam's axes (pixels) and major-axis angle (degrees from +y towards -x) in the view."""
        beam = getattr(self.image, "beam", None)
        if beam is None or self.image.wcs is None:
            return None
        major, minor, angle = beam.in_pixels(self.image.wcs)
        return major * self.view.zoom, minor * self.view.zoom, angle

    def _measure(self, boxes: Boxes) -> Measurement | None:
        """Fit the detections on the view (model pixels), where the beam spans enough pixels."""
        beam = self._beam_in_model_pixels()
        if beam is None:
            return None
        return self._measured(self.view.to_model(boxes), beam)

    def _measured(self, model_boxes: Boxes, beam: tuple[float, float, float]) -> Measurement:
        """`measure_sources` on the view, without what its resampling does to a source (`resampling_bias`)."""
        measurement = measure_sources(self.view.data, model_boxes, beam[0], beam[1],
                                      snr=self.domain.convention == "snr", beam_angle=beam[2])
        if self.view.zoom == 1.0:
            return measurement
        if self._bias is None:
            self._bias = (resampling_bias(self.view.zoom, *beam),)
        bias = self._bias[0]
        return bias.correct(measurement) if bias is not None else measurement

    def _deblend(self, boxes: Boxes, measurement: Measurement) -> tuple[Boxes, Measurement]:
        """Add the sources around the detections that no measured detection accounts for.

        A box the network put between two sources measures as noise, and one on the brighter
        of two neighbours hides the other (`component_boxes`): the significant peaks around the
        detections become detections of their own, measured like the others. Then one
        detection per measured peak (the best scored) is kept: two boxes the NMS let through
        may fit the same source. Failed boxes are left for the ``min_peak_snr`` cut to drop.
        """
        beam = self._beam_in_model_pixels()
        if beam is None:
            return boxes, measurement
        major, minor, angle = beam
        found = component_boxes(self.view.data, self.view.to_model(boxes), measurement,
                                self.yolo.min_peak_snr, major, minor, angle)
        if len(found):
            measured = self._measured(found, beam)
            boxes = Boxes.concat([boxes, self.view.to_image(found)])
            measurement = measurement.concat(measured)
        keep = one_per_peak(measurement.x, measurement.y, boxes.objectness, PEAK_DISTANCE_BEAMS,
                            BeamMetric.of(major, minor, angle))
        return boxes.take(keep), measurement.take(keep)

    def catalogue(self) -> Table:
        """Merge the tiles and build the catalogue table."""
        boxes, snr, measurement = self.boxes()
        plan, settings = self.plan, self.settings
        parameters = {
            "threshold": list(settings.thresholds),
            "nms": _tiers_text(settings.nms_tiers),
            "second_nms": self.second_nms,
            "min_size": settings.min_size,
            "min_peak_snr": self.yolo.min_peak_snr or None,
            "edge_margin": self.yolo.edge_margin,
            "patch_size": list(plan.patch_size),
            "shift": list(plan.shift),
            "offset": list(plan.offset),
            "patches": len(plan),
            "device": self.device,
        }
        if settings.rescue_threshold > 0:
            parameters["rescue"] = [settings.rescue_threshold, self.yolo.rescue_snr]
        return yolo_catalogue(boxes, self.card, self.image, self.box, precision=self.precision,
                              parameters=parameters, view=self.view, peak_snr=snr, measurement=measurement)


def needs_noise(card: ModelCard) -> bool:
    """Whether a model's run needs the image's noise map (signal-to-noise input, a noise check, measuring)."""
    domain = card.domain
    measures = card.yolo is not None and (card.yolo.measure or card.yolo.min_peak_snr > 0)
    return domain.declared and (domain.input == "snr" or domain.noise_range is not None or measures)


def noise_window(box: PixelBox, image: SkyImage, card: ModelCard, zoom: float = 1.0) -> tuple[int, int, int, int]:
    """The image pixels whose noise a search of `box` needs: the box, every patch around it, and a margin.

    Patches reach up to a patch beyond the box (in model pixels, ``zoom`` per image pixel) and
    read real pixels there; two mesh cells more keep the interpolated map measured rather
    than extrapolated at the patch edges.
    """
    ny, nx = image.shape
    reach = 0
    if card.tiling is not None:
        reach = int(math.ceil((max(card.tiling.patch_size) + max(card.tiling.offset)) / zoom))
    reach += 128
    return (max(0, box.x0 - reach), min(nx, box.x1 + reach), max(0, box.y0 - reach), min(ny, box.y1 + reach))


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


#: Pixels looked at first when checking whether a searched area holds any signal.
_BLANK_SAMPLE = 2048


def blank_area_problem(data: Any, box: PixelBox) -> str | None:
    """Why the searched area holds nothing to detect (every pixel NaN, or all one value), or None.

    An empty catalogue from such an image is right but says nothing; the result says why. A
    strided sample of the area is looked at first (cheap on any image); only a sample that looks
    blank is confirmed by reading the whole area, strip by strip.
    """
    ny, nx = box.y1 - box.y0, box.x1 - box.x0
    step_y, step_x = max(1, ny // _BLANK_SAMPLE), max(1, nx // _BLANK_SAMPLE)
    sample = np.asarray(data[box.y0:box.y1:step_y, box.x0:box.x1:step_x], dtype=np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size and finite.min() != finite.max():
        return None
    low, high, seen = math.inf, -math.inf, False
    for y in range(box.y0, box.y1, 1024):
        strip = np.asarray(data[y:min(box.y1, y + 1024), box.x0:box.x1], dtype=np.float64)
        good = strip[np.isfinite(strip)]
        if good.size:
            seen = True
            low, high = min(low, float(good.min())), max(high, float(good.max()))
            if low != high:
                return None
    if not seen:
        return "every pixel of the searched area is NaN (blank): there is nothing to detect"
    return f"every pixel of the searched area is {low:g}: the image holds no signal to detect"


def note_blank_area(image: SkyImage, box: PixelBox) -> None:
    """Add `blank_area_problem`'s sentence to the image's warnings (once)."""
    problem = blank_area_problem(image.data, box)
    if problem and problem not in image.warnings:
        image.warnings.append(problem)


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
    note_blank_area(image, box)
    cut = image.data[box.slices]
    # an estimated beam finds sources but must not scale their fluxes (see SkyImage.flux_beam_area_pix)
    sources = find_sources_classic(
        cut, spec, pixel_mask=box.mask, origin=(box.x0, box.y0), beam_area_pix=image.flux_beam_area_pix
    )
    scale = image.to_jy_per_beam  # e.g. 1e-3 for mJy/beam; None (values kept) when the unit is unknown
    if scale is not None and scale != 1.0 and len(sources):
        for name in ("peak", "flux"):
            sources[name][:] = np.asarray(sources[name], dtype=np.float64) * scale  # keeps unit and meta
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
    return classic_catalogue(sources, card, image, box, parameters=parameters, plan=plan_domain(image, card))
