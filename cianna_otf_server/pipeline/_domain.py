"""Bring an image into a model's domain, and say so when it cannot be brought there.

A network only works on images like the ones it was trained on: the same brightness scale and
the same number of pixels across the restoring beam. A model card's ``[domain]`` table
(`DomainSpec`) declares both; this module compares them with what the image reader learnt from
the header (units, beam, pixel scale) and the noise map, and plans the adaptation:

- brightness: absolute models read Jy/beam (the image's unit converted once), signal-to-noise
  models read (image - background) / rms, whatever the unit;
- sampling: when the beam spans a number of pixels outside the model's range, the image is
  resampled so that it spans the model's trained number (`DomainView`), and boxes, positions
  and sizes are mapped back to the image's pixels afterwards;
- honesty: what cannot be adapted (unknown units, no beam, a noise level far from an absolute
  model's window, a beam far outside the range) becomes a warning carried to the catalogue,
  the job and every client, instead of a plausible-looking wrong number.

`plan_domain` also scores how well an image fits a model, which is how models are ranked for
an image (`rank_models`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
from scipy import ndimage

from ..models._card import ModelCard
from ._boxes import Boxes
from ._noise import NoiseMap, measure_noise
from ._region import PixelBox
from ._windows import read_windows, window_groups

__all__ = ["ImageTraits", "DomainPlan", "DomainView", "image_traits", "plan_domain", "rank_models",
           "drop_blank_boxes", "MAX_UPSAMPLE", "MAX_DOWNSAMPLE"]

#: Largest resampling factors applied (model pixels per image pixel): beyond them the image is
#: resampled only this far and the run is flagged, since 16x more pixels (or 1/256 of them)
#: would be a different image rather than an adapted one.
MAX_UPSAMPLE = 4.0
MAX_DOWNSAMPLE = 1.0 / 16.0
#: An absolute model is flagged when the image's noise lies this far outside its training range.
NOISE_TOLERANCE = 10.0
#: Detections whose box is more than this fraction blank (NaN or beyond the image) are dropped.
MAX_BLANK_FRACTION = 0.5


@dataclass(frozen=True)
class ImageTraits:
    """What is known of an image's brightness scale and sampling.

    Attributes
    ----------
    beam_pixels : float or None
        Restoring beam FWHM in pixels (geometric mean of the axes); None when unknown.
    beam_origin : str or None
        Where the beam came from (header keywords, AIPS history, CASA table, override, estimate).
    beam_estimated : bool
        The beam was estimated from the image (no header or override gave it).
    pixel_scale : float or None
        Pixel side, arcsec.
    unit : str
        The brightness unit as written ('' when absent).
    to_jy_per_beam : float or None
        Factor from image units to Jy/beam; None when the unit (or, for Jy/pixel, the beam) is unknown.
    unit_problem : str or None
        Why the unit is unknown.
    noise : float or None
        Median rms of the image, image units (None when not measured).
    """

    beam_pixels: float | None
    beam_origin: str | None
    beam_estimated: bool
    pixel_scale: float | None
    unit: str
    to_jy_per_beam: float | None
    unit_problem: str | None
    noise: float | None

    @property
    def noise_jy_per_beam(self) -> float | None:
        """The median rms in Jy/beam, when both the noise and the unit are known."""
        if self.noise is None or self.to_jy_per_beam is None:
            return None
        return self.noise * self.to_jy_per_beam

    def to_dict(self) -> dict[str, Any]:
        return {
            "beam_pixels": self.beam_pixels, "beam_origin": self.beam_origin,
            "beam_estimated": self.beam_estimated, "pixel_scale_arcsec": self.pixel_scale,
            "unit": self.unit, "to_jy_per_beam": self.to_jy_per_beam,
            "noise_jy_per_beam": self.noise_jy_per_beam,
        }


def image_traits(image: Any, noise: NoiseMap | None = None) -> ImageTraits:
    """Collect the traits of an opened `SkyImage` (and its noise map, when measured)."""
    beam = getattr(image, "beam", None)
    beam_pixels = None
    if beam is not None and getattr(image, "wcs", None) is not None:
        try:
            major, minor, _ = beam.in_pixels(image.wcs)
            beam_pixels = float(math.sqrt(major * minor))
        except Exception:  # a WCS the beam cannot be projected on: treat the beam as unknown
            beam_pixels = None
    brightness = getattr(image, "brightness", None)
    return ImageTraits(
        beam_pixels=beam_pixels if beam_pixels and math.isfinite(beam_pixels) else None,
        beam_origin=getattr(beam, "origin", None),
        beam_estimated=bool(getattr(beam, "estimated", False)),
        pixel_scale=getattr(image, "pixel_scale_arcsec", None),
        unit=str(getattr(brightness, "text", "") or ""),
        to_jy_per_beam=getattr(image, "to_jy_per_beam", None),
        unit_problem=getattr(brightness, "problem", None),
        noise=noise.median_rms if noise is not None and noise.valid_fraction > 0 else None,
    )


@dataclass(frozen=True)
class DomainPlan:
    """How one image is brought into one model's domain.

    Attributes
    ----------
    model : str
        The card's name.
    convention : str
        "absolute" (Jy/beam), "snr" (signal-to-noise) or "native" (the classic finder, which
        reads any image as it is).
    zoom : float
        Model pixels per image pixel (1: the image is used at its own sampling).
    fit : float
        0-1: how well the image fits the model (1 in its domain; used to rank models).
    reason : str
        One sentence on the fit, for people choosing a model.
    warnings : tuple of str
        What makes this model's result on this image doubtful or incomplete.
    notes : tuple of str
        What was done to the image (resampling), for the record.
    traits : ImageTraits
        What the plan was based on.
    checked : bool
        False for a card that declares no domain: nothing could be checked or adapted.
    """

    model: str
    convention: str
    zoom: float
    fit: float
    reason: str
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    traits: ImageTraits
    checked: bool = True

    @property
    def in_domain(self) -> bool:
        """True when no warning was raised for the model itself (image-reader warnings aside)."""
        return self.fit >= 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "convention": self.convention, "zoom": self.zoom, "fit": round(self.fit, 3),
                "reason": self.reason, "warnings": list(self.warnings), "notes": list(self.notes),
                "checked": self.checked, "image": self.traits.to_dict()}


def plan_domain(image: Any, card: ModelCard, noise: NoiseMap | None = None) -> DomainPlan:
    """Plan how `image` is brought into `card`'s domain (no pixels are changed here).

    Parameters
    ----------
    image : SkyImage
        The opened image (units, beam and WCS read from its header).
    card : ModelCard
        The model.
    noise : NoiseMap, optional
        The image's noise map; needed to check an absolute model's noise window (without it
        that check is skipped).
    """
    return plan_for_traits(image_traits(image, noise), card, image_pixels=_pixels(image))


def _pixels(image: Any) -> int:
    try:
        return int(image.shape[0]) * int(image.shape[1])
    except Exception:
        return 0


def plan_for_traits(traits: ImageTraits, card: ModelCard, image_pixels: int = 0,
                    max_pixels: int = 32768 * 32768) -> DomainPlan:
    """`plan_domain` from the image's traits alone (what model ranking needs)."""
    warnings: list[str] = []
    notes: list[str] = []
    if card.family == "classic":
        if traits.to_jy_per_beam is None:
            warnings.append(_unit_warning(traits, "flux and peak columns are left empty"))
        return DomainPlan(card.name, "native", 1.0, 0.6,
                          "a classical finder: works on any image, in its own noise units",
                          tuple(warnings), (), traits)

    domain = card.domain
    fit = 1.0
    reasons: list[str] = []
    zoom = 1.0
    if not domain.declared:
        notes.append(f"model {card.name} does not declare the images it was trained on; "
                     "the image is searched as it is, without any domain check")
        fit = 0.4
        reasons.append("its card declares no domain, so the fit cannot be checked")
        return DomainPlan(card.name, "absolute", 1.0, fit, "; ".join(reasons), tuple(warnings), tuple(notes), traits,
                          checked=False)

    # sampling: the beam must span a number of pixels the network was trained on
    low_high = domain.beam_pixels_range
    if traits.beam_pixels is None:
        if low_high is not None:
            warnings.append(f"the restoring beam is unknown: the image is searched at its own sampling, which "
                            f"may lie outside the {low_high[0]:g}-{low_high[1]:g} pixels per beam "
                            f"model {card.name} was trained on")
            fit *= 0.6
            reasons.append("the beam is unknown")
    elif low_high is not None and domain.beam_pixels is not None:
        beam = traits.beam_pixels
        if not low_high[0] <= beam <= low_high[1]:
            wanted = domain.beam_pixels / beam
            zoom = float(min(MAX_UPSAMPLE, max(MAX_DOWNSAMPLE, wanted)))
            if image_pixels and image_pixels * zoom * zoom > max_pixels:
                zoom = float(math.sqrt(max_pixels / image_pixels))
            notes.append(f"the beam spans {beam:.3g} pixels, outside the {low_high[0]:g}-{low_high[1]:g} of "
                         f"model {card.name}: the image was resampled by {zoom:.4g} so that it spans "
                         f"{beam * zoom:.3g} pixels")
            fit *= 0.85
            reasons.append(f"resampled by {zoom:.3g} (beam {beam:.3g} px)")
            if not low_high[0] <= beam * zoom <= low_high[1]:
                warnings.append(f"the beam spans {beam:.3g} pixels, too far outside the {low_high[0]:g}-"
                                f"{low_high[1]:g} pixels model {card.name} supports to be resampled into it "
                                f"(resampled by {zoom:.3g} only): detections may be unreliable")
                fit *= 0.3
        else:
            reasons.append(f"beam {beam:.3g} px within {low_high[0]:g}-{low_high[1]:g}")
    if traits.beam_estimated:
        fit *= 0.9

    # brightness scale
    if domain.input == "absolute":
        if traits.to_jy_per_beam is None:
            warnings.append(_unit_warning(traits, f"model {card.name} reads Jy/beam, so the image is passed "
                                                  "as if it were in Jy/beam and fluxes are left empty"))
            fit *= 0.3
            reasons.append("unknown units for a model that reads Jy/beam")
        noise = traits.noise_jy_per_beam
        if domain.noise_range is not None and noise is not None:
            low, high = domain.noise_range
            if noise < low / NOISE_TOLERANCE or noise > high * NOISE_TOLERANCE:
                factor = low / noise if noise < low else noise / high
                warnings.append(f"the image noise ({noise:.3g} Jy/beam) is {factor:.3g} times away from the "
                                f"{low:.3g}-{high:.3g} Jy/beam model {card.name} was trained on: it reads "
                                "absolute brightness, so its detections on this image are unreliable "
                                "(use a signal-to-noise model or the classic finder)")
                fit *= 0.1
                reasons.append(f"noise {noise:.3g} Jy/beam, far from its {low:.3g}-{high:.3g}")
            elif noise < low or noise > high:
                factor = low / noise if noise < low else noise / high
                warnings.append(f"the image noise ({noise:.3g} Jy/beam) is {factor:.3g} times outside the "
                                f"{low:.3g}-{high:.3g} Jy/beam model {card.name} was trained on: it reads absolute "
                                "brightness, so its detections on this image may be degraded")
                fit *= 0.5
                reasons.append(f"noise {noise:.3g} Jy/beam, {factor:.3g}x outside its {low:.3g}-{high:.3g}")
            else:
                reasons.append(f"noise {noise:.3g} Jy/beam within its training range")
        convention = "absolute"
    else:
        if traits.to_jy_per_beam is None:
            warnings.append(_unit_warning(traits, "fluxes are left empty (detection, in signal-to-noise "
                                                  "units, is not affected)"))
            fit *= 0.9
        convention = "snr"
        reasons.insert(0, "reads signal-to-noise, so any unit and noise level")
    reason = "; ".join(reasons) if reasons else "in its domain"
    return DomainPlan(card.name, convention, zoom, float(fit), reason, tuple(warnings), tuple(notes), traits)


def _unit_warning(traits: ImageTraits, consequence: str) -> str:
    problem = traits.unit_problem or (f"the brightness unit {traits.unit!r} cannot be converted to Jy/beam"
                                      if traits.unit else "the image has no brightness unit (BUNIT)")
    return f"{problem.rstrip('.')}: {consequence}"


def rank_models(image: Any, cards: Iterable[ModelCard], noise: NoiseMap | None = None) -> list[DomainPlan]:
    """Every model's plan for an image, best fit first (ties keep the given order)."""
    if noise is None:
        noise = measure_noise(_central_window(image))
    traits = image_traits(image, noise)
    plans = [plan_for_traits(traits, card, image_pixels=_pixels(image)) for card in cards]
    return sorted(plans, key=lambda plan: -plan.fit)


def _central_window(image: Any, size: int = 2048) -> np.ndarray:
    """At most ``size`` x ``size`` central pixels: enough for the typical noise, cheap on any image."""
    ny, nx = image.shape
    y0, x0 = max(0, (ny - size) // 2), max(0, (nx - size) // 2)
    return np.asarray(image.data[y0:y0 + min(ny, size), x0:x0 + min(nx, size)], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# the image as the model sees it


class DomainView:
    """An image as a model sees it: converted to the model's brightness scale and resampled.

    ``view.data`` is a lazy 2-D array: slicing it (``view.data[y0:y1, x0:x1]``, model pixels)
    reads only the image pixels needed, so a memory-mapped survey image streams through. When
    the plan neither converts nor resamples, the slices are the image's own pixels, unchanged.

    Model pixel ``K`` spans ``[K, K+1]`` in model corner coordinates, i.e. ``[K/zoom,
    (K+1)/zoom]`` in image corner coordinates.
    """

    def __init__(self, image: Any, plan: DomainPlan, noise: NoiseMap | None = None) -> None:
        if plan.convention == "snr" and noise is None:
            raise ValueError("a signal-to-noise view needs the image's noise map")
        self.image, self.plan, self.noise = image, plan, noise
        self.zoom = float(plan.zoom)
        ny, nx = image.shape
        if self.zoom == 1.0:
            self.shape = (int(ny), int(nx))
        else:
            self.shape = (max(1, int(round(ny * self.zoom))), max(1, int(round(nx * self.zoom))))
        scale = plan.traits.to_jy_per_beam if plan.convention == "absolute" else None
        self.scale = float(scale) if scale not in (None, 1.0) else None
        self.data = _DomainPixels(self)

    @property
    def wcs(self) -> Any:
        return getattr(self.image, "wcs", None)

    def model_box(self, box: PixelBox) -> PixelBox:
        """The searched box in model pixels (a plain rectangle; the region's shape is applied later)."""
        if self.zoom == 1.0:
            return box
        ny, nx = self.shape
        z = self.zoom
        return PixelBox(x0=max(0, int(math.floor(box.x0 * z))), x1=min(nx, int(math.ceil(box.x1 * z))),
                        y0=max(0, int(math.floor(box.y0 * z))), y1=min(ny, int(math.ceil(box.y1 * z))),
                        kind="pixels", text=box.text)

    def to_image(self, boxes: Boxes) -> Boxes:
        """Boxes in model pixels to image pixels (corners scale by 1/zoom)."""
        if self.zoom == 1.0 or len(boxes) == 0:
            return boxes
        f = 1.0 / self.zoom
        return replace(boxes, x_min=boxes.x_min * f, y_min=boxes.y_min * f, x_max=boxes.x_max * f,
                       y_max=boxes.y_max * f)

    def to_model(self, boxes: Boxes) -> Boxes:
        """Boxes in image pixels to model pixels (the inverse of `to_image`)."""
        if self.zoom == 1.0 or len(boxes) == 0:
            return boxes
        z = self.zoom
        return replace(boxes, x_min=boxes.x_min * z, y_min=boxes.y_min * z, x_max=boxes.x_max * z,
                       y_max=boxes.y_max * z)

    def image_values(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Image pixels ``[y0:y1, x0:x1]`` (inside the image) on the model's brightness scale, float32."""
        raw = np.asarray(self.image.data[y0:y1, x0:x1], dtype=np.float32)
        if self.plan.convention == "snr":
            assert self.noise is not None
            background, rms = self.noise.window(x0, x1, y0, y1)
            out = raw - background
            out /= rms
            return out
        if self.scale is not None:
            return raw * np.float32(self.scale)
        return raw

    def image_windows(self, y0: np.ndarray, x0: np.ndarray, height: int, width: int) -> np.ndarray:
        """Many image windows on the model's brightness scale: ``[n, height, width]`` float32.

        Window ``k`` holds image pixels ``[y0[k]:y0[k]+height, x0[k]:x0[k]+width]``, NaN beyond
        the image; inside it the values are `image_values`' (to the rounding of the noise
        map's interpolation), read and converted for the whole stack at once.
        """
        raw = read_windows(self.image.data, y0, x0, height, width, np.float32)
        if self.plan.convention == "snr":
            assert self.noise is not None
            background, rms = self.noise.windows(x0, y0, height, width)
            raw -= background
            raw /= rms
            return raw
        if self.scale is not None:
            raw *= np.float32(self.scale)
        return raw

    def snr_peak(self, boxes: Boxes) -> np.ndarray:
        """Peak signal-to-noise within the inner half of each box (image coordinates); NaN without a noise map."""
        out = np.full(len(boxes), np.nan)
        if self.noise is None or len(boxes) == 0:
            return out
        ny, nx = self.image.shape
        cx, cy = boxes.x_center, boxes.y_center
        hw = np.maximum(1.0, 0.25 * boxes.width)
        hh = np.maximum(1.0, 0.25 * boxes.height)
        xa = np.maximum(0, np.floor(cx - hw).astype(np.int64))
        xb = np.minimum(nx, np.ceil(cx + hw).astype(np.int64) + 1)
        ya = np.maximum(0, np.floor(cy - hh).astype(np.int64))
        yb = np.minimum(ny, np.ceil(cy + hh).astype(np.int64) + 1)
        use = (xa < xb) & (ya < yb)
        for height, width, index in window_groups(yb - ya, xb - xa, use):
            sizes = (yb[index] - ya[index], xb[index] - xa[index])
            raw = read_windows(self.image.data, ya[index], xa[index], height, width, np.float32, sizes)
            background, rms = self.noise.windows(xa[index], ya[index], height, width)
            snr = (raw - background) / rms
            flat = snr.reshape(len(index), -1)
            seen = np.isfinite(flat).any(axis=1)
            peak = np.where(np.isnan(flat), -np.inf, flat).max(axis=1)
            out[index[seen]] = peak[seen]
        return out


@dataclass
class _DomainPixels:
    """The lazy ``data`` array of a `DomainView` (basic 2-D slices only)."""

    view: DomainView
    dtype: Any = field(default=np.dtype(np.float32))

    @property
    def shape(self) -> tuple[int, int]:
        return self.view.shape

    @property
    def ndim(self) -> int:
        return 2

    def windows(self, y0: np.ndarray, x0: np.ndarray, height: int, width: int) -> np.ndarray | None:
        """``[n, height, width]`` model pixels of many windows at once (NaN beyond the view), float32.

        None for a resampled view: its windows are interpolated one at a time (`_resampled`),
        each from the image pixels around it, so that a window reads the same values however
        many are read.
        """
        if self.view.zoom != 1.0:
            return None
        return self.view.image_windows(y0, x0, height, width)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, slice) for k in key)):
            raise TypeError("a domain view is read with two slices: data[y0:y1, x0:x1]")
        ny, nx = self.shape
        y0, y1, ystep = key[0].indices(ny)
        x0, x1, xstep = key[1].indices(nx)
        if ystep != 1 or xstep != 1:
            raise TypeError("a domain view is read without steps")
        view = self.view
        if y0 >= y1 or x0 >= x1:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)), dtype=np.float32)
        if view.zoom == 1.0:
            return view.image_values(y0, y1, x0, x1)
        return _resampled(view, y0, y1, x0, x1)


def _resampled(view: DomainView, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Model pixels ``[y0:y1, x0:x1]`` interpolated from the image (cubic up, linear down).

    NaN pixels of the image stay NaN where they are the nearest pixel; elsewhere they are read
    as 0 (the background level of a signal-to-noise image) by the interpolation. The image
    window read is padded by 8 pixels, so the cubic spline's prefilter (whose boundary effect
    decays as 0.27 per pixel) makes any two windows agree to ~1e-5 of the local values.
    """
    z = view.zoom
    iny, inx = view.image.shape
    ys = (np.arange(y0, y1, dtype=np.float64) + 0.5) / z - 0.5  # image 0-based centres
    xs = (np.arange(x0, x1, dtype=np.float64) + 0.5) / z - 0.5
    pad = 8
    ya, yb = max(0, int(math.floor(ys[0])) - pad), min(iny, int(math.ceil(ys[-1])) + pad + 1)
    xa, xb = max(0, int(math.floor(xs[0])) - pad), min(inx, int(math.ceil(xs[-1])) + pad + 1)
    out = np.full((y1 - y0, x1 - x0), np.nan, dtype=np.float32)
    if ya >= yb or xa >= xb:
        return out
    values = view.image_values(ya, yb, xa, xb)
    blank = ~np.isfinite(values)
    if blank.any():
        values = np.where(blank, np.float32(0.0), values)
    order = 3 if z > 1.0 else 1
    grid_y, grid_x = np.meshgrid(ys - ya, xs - xa, indexing="ij")
    sampled = ndimage.map_coordinates(values, [grid_y, grid_x], order=order, mode="nearest", prefilter=True)
    inside = ((grid_y >= -0.5) & (grid_y <= yb - ya - 0.5) & (grid_x >= -0.5) & (grid_x <= xb - xa - 0.5)
              & (ys[:, None] >= -0.5) & (ys[:, None] <= iny - 0.5) & (xs[None, :] >= -0.5) & (xs[None, :] <= inx - 0.5))
    if blank.any():
        nearest = ndimage.map_coordinates(blank.astype(np.float32), [grid_y, grid_x], order=0, mode="nearest")
        inside &= nearest < 0.5
    out[inside] = sampled[inside].astype(np.float32)
    return out


def drop_blank_boxes(boxes: Boxes, image: Any, max_blank: float = MAX_BLANK_FRACTION) -> Boxes:
    """Drop boxes (image coordinates) centred on a blank pixel or more than `max_blank` blank.

    Blank: NaN in the image, or beyond its edge. A network sees a blank as flat background, and
    the step from noise to flat at a mosaic edge or a primary-beam cut is where a detector that
    never saw one would report sources.
    """
    if len(boxes) == 0:
        return boxes
    ny, nx = image.shape
    xa, xb = np.floor(boxes.x_min).astype(np.int64), np.ceil(boxes.x_max).astype(np.int64)
    ya, yb = np.floor(boxes.y_min).astype(np.int64), np.ceil(boxes.y_max).astype(np.int64)
    area = np.maximum(1, (xb - xa) * (yb - ya))  # beyond the image counts as blank
    cxa, cxb = np.maximum(0, xa), np.minimum(nx, xb)
    cya, cyb = np.maximum(0, ya), np.minimum(ny, yb)
    ix = np.clip(np.floor(boxes.x_center + 0.5).astype(np.int64), cxa, cxb - 1) - cxa  # the centre pixel
    iy = np.clip(np.floor(boxes.y_center + 0.5).astype(np.int64), cya, cyb - 1) - cya
    keep = np.zeros(len(boxes), dtype=bool)
    # a survey image's catalogue holds 10^5 boxes: read them as stacks of windows, not one by one
    for height, width, index in window_groups(cyb - cya, cxb - cxa, (cxa < cxb) & (cya < cyb)):
        sizes = (cyb[index] - cya[index], cxb[index] - cxa[index])
        finite = np.isfinite(read_windows(image.data, cya[index], cxa[index], height, width, np.float64, sizes))
        count = finite.reshape(len(index), -1).sum(axis=1)
        mostly_data = ~(1.0 - count / area[index] > max_blank)
        keep[index] = mostly_data & finite[np.arange(len(index)), iy[index], ix[index]]
    return boxes.take(keep)
