"""Detections to a catalogue table with physical units, UCDs and provenance metadata.

Both model families give the same core columns, so that clients and writers never branch on
the model:

``id, ra, dec, x, y, width, height, score, flux, bmaj, bmin, pa`` + family-specific extras.

What the size and flux columns mean depends on the model: a YOLO-CIANNA model returns what
it was trained to predict (for the SDC1 recipe: the integrated flux density as it appears in
the image, i.e. primary-beam attenuated, and the *intrinsic* source size, deconvolved from the
restoring beam, as in the SDC1 truth catalogue); the classical finder measures the *apparent*
(beam-convolved) shape of the emission above the threshold. The column descriptions say so.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from astropy import units as u
from astropy.table import Column, MaskedColumn, Table

from .. import __version__
from ..errors import ModelCardError
from ..models._card import ModelCard, ParameterSpec
from ._boxes import Boxes
from ._region import PixelBox

__all__ = ["CORE_COLUMNS", "parameter_values", "yolo_catalogue", "classic_catalogue", "make_catalogue"]

# name: (unit, ucd, description)
CORE_COLUMNS: dict[str, tuple[str, str, str]] = {
    "id": ("", "meta.id;meta.main", "Source number in this catalogue, by decreasing score"),
    "ra": ("deg", "pos.eq.ra;meta.main", "Right ascension (ICRS) of the source centre"),
    "dec": ("deg", "pos.eq.dec;meta.main", "Declination (ICRS) of the source centre"),
    "x": ("pix", "pos.cartesian.x;instr.pixel", "Image x of the source centre, FITS convention (first pixel centre is 1)"),
    "y": ("pix", "pos.cartesian.y;instr.pixel", "Image y of the source centre, FITS convention (first pixel centre is 1)"),
    "width": ("pix", "phys.angSize;instr.pixel", "Width (along x) of the detection box"),
    "height": ("pix", "phys.angSize;instr.pixel", "Height (along y) of the detection box"),
    "score": ("", "stat.probability", "Detection score"),
    "flux": ("Jy", "phot.flux.density;em.radio", "Integrated flux density"),
    "bmaj": ("arcsec", "phys.angSize.smajAxis", "Major axis FWHM"),
    "bmin": ("arcsec", "phys.angSize.sminAxis", "Minor axis FWHM"),
    "pa": ("deg", "pos.posAng", "Position angle of the major axis"),
}

_YOLO_DESCRIPTIONS = {
    "score": "Objectness predicted by the network (0-1): confidence that the box holds a source",
    "flux": "Integrated flux density predicted by the network, as the source appears in the image "
    "(no primary-beam correction)",
    "bmaj": "Major axis predicted by the network, in the convention of its training catalogue "
    "(SDC1 recipe: intrinsic FWHM, not convolved with the restoring beam)",
    "bmin": "Minor axis predicted by the network, in the convention of its training catalogue "
    "(SDC1 recipe: intrinsic FWHM, not convolved with the restoring beam)",
    "pa": "Position angle of the major axis predicted by the network, in [-90, 90] deg, in the "
    "convention of its training catalogue",
}

_CLASSIC_DESCRIPTIONS = {
    "score": "Signal-to-noise ratio of the peak (peak / local rms)",
    "flux": "Integrated flux density of the pixels above the threshold, divided by the beam area "
    "(the raw pixel sum when the image has no beam)",
    "bmaj": "Apparent (beam-convolved) major axis FWHM from the second moments of the emission",
    "bmin": "Apparent (beam-convolved) minor axis FWHM from the second moments of the emission",
    "pa": "Position angle of the apparent major axis, east of north",
}

_STANDARD_PARAMETERS = ("flux", "bmaj", "bmin", "pa")


def parameter_values(params: np.ndarray, specs: tuple[ParameterSpec, ...]) -> dict[str, np.ndarray]:
    """Turn the head's normalised extra outputs ``[n, nb_param]`` into physical values per card column.

    Transforms (see `ParameterSpec`): linear ``min + p*(max-min)``; exp ``exp(...)``;
    log10 ``10**(...)``; pa_cos_sin ``degrees(atan2(2*clip(s,0,1)-1, clip(c,0,1)))`` in [-90, 90].
    """
    params = np.asarray(params, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.transform == "pa_cos_sin":
            c = np.clip(params[:, spec.channels[0]], 0.0, 1.0)
            s = np.clip(params[:, spec.channels[1]], 0.0, 1.0)
            out[spec.name] = np.clip(np.degrees(np.arctan2(2.0 * s - 1.0, c)), -90.0, 90.0)
            continue
        scaled = spec.min + params[:, spec.channels[0]] * (spec.max - spec.min)
        if spec.transform == "exp":
            scaled = np.exp(scaled)
        elif spec.transform == "log10":
            scaled = np.power(10.0, scaled)
        out[spec.name] = scaled
    return out


def _image_name(image: Any) -> str:
    """The image as its user knows it: the name it was opened under, else its file's last part."""
    name = getattr(image, "name", "") or ""
    if name:
        return str(name)
    path = getattr(image, "path", None)
    return Path(str(path)).name if path else "in-memory image"


def _convert(values: np.ndarray, unit: str, target: str, pixel_scale: float | None, name: str) -> np.ndarray:
    """Convert a card column to the standard unit; 'pix' sizes use the image pixel scale (arcsec)."""
    unit = (unit or "").strip()
    if not unit or unit == target:
        return values
    if unit.lower() in ("pix", "pixel", "pixels"):
        if target != "arcsec":
            raise ModelCardError(f"parameter {name!r}: unit 'pix' cannot become {target}")
        return values * (pixel_scale if pixel_scale else np.nan)
    try:
        return (values * u.Unit(unit)).to_value(u.Unit(target))
    except (ValueError, u.UnitsError) as exc:
        raise ModelCardError(f"parameter {name!r}: unit {unit!r} cannot be converted to {target}") from exc


def _sky(image: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (ra, dec) in degrees of 0-based pixel positions; NaN without a WCS."""
    if image is None or getattr(image, "wcs", None) is None or x.size == 0:
        return np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    from astropy.wcs.utils import pixel_to_skycoord

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = pixel_to_skycoord(x, y, image.wcs, origin=0, mode="all").icrs
    return coords.ra.deg, coords.dec.deg


def make_catalogue(
    x: np.ndarray,
    y: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    score: np.ndarray,
    physical: Mapping[str, np.ndarray],
    *,
    image: Any = None,
    descriptions: Mapping[str, str] | None = None,
    score_ucd: str = "stat.probability",
    extras: Mapping[str, tuple[np.ndarray, str, str, str]] | None = None,
    meta: Mapping[str, Any] | None = None,
    masked: Iterable[str] = (),
) -> Table:
    """Build the catalogue table from 0-based pixel centres and physical values.

    Parameters
    ----------
    x, y : ndarray
        0-based image pixel centres (written 1-based).
    width, height : ndarray
        Box sizes in pixels.
    score : ndarray
        Detection score (rows are sorted by it, decreasing).
    physical : mapping
        ``flux`` (Jy), ``bmaj``, ``bmin`` (arcsec), ``pa`` (deg); missing ones are NaN.
    extras : mapping name -> (values, unit, ucd, description)
        Model-specific columns appended after the core ones.
    meta : mapping
        Table metadata (model, parameters, image, region, warnings, ...).
    masked : iterable of str
        Columns whose values cannot be trusted for this image (unknown unit, no beam): they
        are written empty (masked; null in a VOTable), never as a plausible-looking number.
        An image whose header WCS is broken (``image.wcs_problem``, reported in its warnings)
        has its ``ra``, ``dec`` and ``pa`` (a pixel-frame angle, without a sky) masked too.
    """
    n = len(x)
    masked = set(masked)
    if getattr(image, "wcs_problem", None):
        masked |= {"ra", "dec", "pa"}
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    ra, dec = _sky(image, x, y)
    values: dict[str, np.ndarray] = {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "ra": ra,
        "dec": dec,
        "x": x + 1.0,
        "y": y + 1.0,
        "width": np.asarray(width, float)[order],
        "height": np.asarray(height, float)[order],
        "score": np.asarray(score, float)[order],
    }
    for name in _STANDARD_PARAMETERS:
        column = physical.get(name)
        values[name] = np.full(n, np.nan) if column is None else np.asarray(column, float)[order]
    descriptions = dict(descriptions or {})
    table = Table(meta=dict(meta or {}))
    for name, (unit, ucd, description) in CORE_COLUMNS.items():
        ucd = score_ucd if name == "score" else ucd
        table.add_column(_column(name, values[name], unit, ucd, descriptions.get(name, description),
                                 masked=name in masked))
    for name, (column, unit, ucd, description) in (extras or {}).items():
        table.add_column(_column(name, np.asarray(column)[order], unit, ucd, description, masked=name in masked))
    return table


def _column(name: str, data: np.ndarray, unit: str, ucd: str, description: str, masked: bool = False) -> Column:
    if data.dtype.kind == "f":
        data = data.astype(np.float64)
    kind = MaskedColumn if masked else Column
    extra = {"mask": np.ones(len(data), dtype=bool)} if masked else {}
    col = kind(data, name=name, unit=u.Unit(unit) if unit else None, description=description, **extra)
    if ucd:
        col.meta["ucd"] = ucd
    return col


def base_meta(card: ModelCard, image: Any, region: PixelBox | None, precision: str, parameters: Mapping[str, Any],
              plan: Any = None) -> dict[str, Any]:
    """Table metadata shared by both families: model, run parameters, image, region, software.

    With a domain `plan`, also ``warnings`` (what makes the result doubtful or incomplete: the
    image reader's and the plan's, each once) and ``domain`` (the plan: convention, zoom, fit,
    notes, and what is known of the image).
    """
    meta: dict[str, Any] = {
        "model": card.name,
        "model_version": card.version,
        "model_family": card.family,
        "precision": precision,
        "parameters": {k: v for k, v in parameters.items() if v is not None},
        "image": _image_name(image),
        "hdu": int(getattr(image, "hdu", 0) or 0),
        "region": (region.text or f"PIXELS={region.x0 + 1} {region.x1} {region.y0 + 1} {region.y1}") if region else "",
        "region_pixels": [region.x0, region.x1, region.y0, region.y1] if region else [],
        "software": "cianna-otf",
        "software_version": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    scale = getattr(image, "pixel_scale_arcsec", None) if image is not None else None
    if scale:
        meta["pixel_scale"] = float(scale)  # arcsec per pixel, for writers that draw boxes on the sky
    warnings = _merged_warnings(image, plan)
    if warnings:
        meta["warnings"] = warnings
    if plan is not None:
        meta["domain"] = plan.to_dict()
    if card.citation:
        meta["citation"] = card.citation
    if card.sha256:
        meta["model_sha256"] = card.sha256
    return meta


def _merged_warnings(image: Any, plan: Any) -> list[str]:
    """The reader's and the plan's warnings, each once; the plan's say what a problem does to this model.

    A unit problem is reported by both (the reader knows the unit is unknown, the plan what that
    means for the model's input and columns): the plan's sentence replaces the reader's.
    """
    planned = list(plan.warnings) if plan is not None else []
    problem = getattr(getattr(image, "brightness", None), "problem", None)
    reader = list(getattr(image, "warnings", ()) or ())
    if problem and any(problem.lower().rstrip(".") in w.lower() for w in planned):
        reader = [w for w in reader if problem.lower().rstrip(".") not in w.lower()]
    return list(dict.fromkeys([*reader, *planned]))


def yolo_catalogue(
    boxes: Boxes,
    card: ModelCard,
    image: Any,
    region: PixelBox | None = None,
    *,
    precision: str = "fp32",
    parameters: Mapping[str, Any] | None = None,
    view: Any = None,
    peak_snr: np.ndarray | None = None,
    measurement: Any = None,
) -> Table:
    """Catalogue of merged YOLO boxes (image coordinates) using the card's parameter transforms.

    Card parameters named flux, bmaj, bmin, pa fill the core columns (converted to Jy, arcsec,
    deg from the card's unit; 'pix' sizes through the pixel scale the network saw, i.e. the
    image's divided by the domain view's zoom; 'beam' fluxes, the integrated flux in units of
    the local rms times the beam that signal-to-noise models predict, through the noise map
    and the image's unit; position angles in the pixel frame through the WCS); others become
    extra columns with the card's unit and UCD. Extras always present: ``probability`` and
    ``prior``; with classes, ``class_<k>`` probabilities; with a noise map, ``snr``.

    Parameters
    ----------
    view : DomainView, optional
        The image as the network saw it (zoom, noise map, domain plan and its warnings).
    peak_snr : ndarray, optional
        Each box's peak signal-to-noise, when already measured (else measured here with a view
        that has a noise map).
    measurement : Measurement, optional
        Gaussian fits of the detections on the view (`pipeline._measure`, model pixels): they
        replace the network's position, flux and shape (cards with ``[yolo] measure``), and add
        ``peak`` and ``fitted`` columns.
    """
    physical = parameter_values(boxes.params, card.parameters)
    image_scale = getattr(image, "pixel_scale_arcsec", None) if image is not None else None
    zoom = float(getattr(view, "zoom", 1.0) or 1.0)
    pixel_scale = image_scale / zoom if image_scale else None
    x, y = boxes.x_center, boxes.y_center
    if measurement is not None:  # the fitted centres, mapped from model to image pixels
        mx, my = (measurement.x + 0.5) / zoom - 0.5, (measurement.y + 0.5) / zoom - 0.5
        x = np.where(np.isfinite(mx), mx, x)
        y = np.where(np.isfinite(my), my, y)
    core: dict[str, np.ndarray] = {}
    extras: dict[str, tuple[np.ndarray, str, str, str]] = {
        "probability": (boxes.probability, "", "stat.probability", "Probability channel of the YOLO head (0-1)"),
        "prior": (boxes.prior.astype(np.int16), "", "meta.code", "Index of the YOLO prior (anchor box) that made the detection"),
    }
    for k in range(boxes.classes.shape[1]):
        extras[f"class_{k}"] = (boxes.classes[:, k], "", "src.class", f"Network score of class {k}")
    descriptions = dict(_YOLO_DESCRIPTIONS)
    for spec in card.parameters:
        values, unit = physical[spec.name], spec.unit
        if unit == "beam":  # integrated flux / local rms -> Jy
            values, unit = _beam_units_to_jy(values, x, y, image, view), "Jy"
        if spec.name == "pa" and card.domain.angles == "pixel":
            values = _sky_angles(values, x, y, image)
        if spec.name in _STANDARD_PARAMETERS:
            target = CORE_COLUMNS[spec.name][0]
            core[spec.name] = _convert(values, unit, target, pixel_scale, spec.name)
            if spec.description:
                descriptions[spec.name] = spec.description
        else:
            extras[spec.name] = (values, unit, spec.ucd, spec.description or f"Model output {spec.name}")
    if measurement is not None:
        _use_measurement(measurement, x, y, image, view, pixel_scale, core, extras, descriptions)
    if peak_snr is None and view is not None and getattr(view, "noise", None) is not None:
        peak_snr = view.snr_peak(boxes)
    if peak_snr is not None:
        extras["snr"] = (peak_snr, "", "stat.snr",
                         "Peak signal-to-noise ratio inside the box (image over the local rms of the noise map)")
    plan = getattr(view, "plan", None)
    meta = base_meta(card, image, region, precision, parameters or {}, plan=plan)
    return make_catalogue(
        x,
        y,
        boxes.width,
        boxes.height,
        boxes.objectness,
        core,
        image=image,
        descriptions=descriptions,
        score_ucd="stat.probability",
        extras=extras,
        meta=meta,
        masked=untrusted_columns(image, plan),
    )


_MEASURED_DESCRIPTIONS = {
    "flux": "Integrated flux density measured in the image: the fitted Gaussian's peak times its area over "
            "the beam's, or for a source the Gaussian does not describe (doubles, extended emission) the sum "
            "of its pixels above 2 sigma in the box over the beam area (no primary-beam correction)",
    "bmaj": "Apparent (beam-convolved) major axis FWHM of the Gaussian fitted around the detection",
    "bmin": "Apparent (beam-convolved) minor axis FWHM of the Gaussian fitted around the detection",
    "pa": "Position angle of the fitted Gaussian's major axis, east of north, in [-90, 90) deg",
}


def _use_measurement(measurement: Any, x: np.ndarray, y: np.ndarray, image: Any, view: Any,
                     pixel_scale: float | None, core: dict[str, np.ndarray],
                     extras: dict[str, tuple[np.ndarray, str, str, str]], descriptions: dict[str, str]) -> None:
    """Replace the network's flux and shape by the measured ones (fits in model pixels)."""
    plan = getattr(view, "plan", None)
    if plan is not None and plan.convention == "snr":  # pixels in local sigmas: back to Jy/beam
        noise, scale = getattr(view, "noise", None), getattr(image, "to_jy_per_beam", None)
        sigma = noise.at(x, y) * float(scale) if noise is not None and scale is not None else np.full(len(x), np.nan)
    else:
        sigma = np.ones(len(x))
    core["flux"] = np.asarray(measurement.integral, np.float64) * sigma
    core["bmaj"] = np.asarray(measurement.major, np.float64) * (pixel_scale if pixel_scale else np.nan)
    core["bmin"] = np.asarray(measurement.minor, np.float64) * (pixel_scale if pixel_scale else np.nan)
    core["pa"] = _sky_angles(np.asarray(measurement.angle, np.float64), x, y, image)
    descriptions.update(_MEASURED_DESCRIPTIONS)
    extras["peak"] = (np.asarray(measurement.peak, np.float64) * sigma, "Jy/beam",
                      "phot.flux.density;stat.max;em.radio", "Peak surface brightness of the fitted Gaussian")
    extras["fitted"] = (np.asarray(measurement.fitted, np.int16), "", "meta.code.qual",
                        "1: position, flux and shape from a Gaussian fit to the image; 0: position of the "
                        "brightest pixel, flux from the sum of significant pixels")


def untrusted_columns(image: Any, plan: Any) -> set[str]:
    """Columns left empty for this image: fluxes without a known unit, fluxes and sizes without a beam.

    A declared domain (or the classic finder) knows what it needs; the catalogue of a model
    whose card declares no domain keeps the behaviour of earlier releases.
    """
    if plan is None or not plan.checked:
        return set()
    masked: set[str] = set()
    if plan.traits.to_jy_per_beam is None:
        masked |= {"flux", "peak"}
    beam = getattr(image, "beam", None)
    if beam is None or getattr(beam, "estimated", False):
        masked |= {"flux", "bmaj", "bmin", "pa"}
    return masked


def _beam_units_to_jy(values: np.ndarray, x: np.ndarray, y: np.ndarray, image: Any, view: Any) -> np.ndarray:
    """Integrated fluxes in units of the local rms x beam (signal-to-noise models) to Jy; NaN when unknown."""
    noise = getattr(view, "noise", None)
    scale = getattr(image, "to_jy_per_beam", None)
    if noise is None or scale is None or len(values) == 0:
        return np.full(len(values), np.nan)
    return np.asarray(values, np.float64) * noise.at(x, y) * float(scale)


def _sky_angles(values: np.ndarray, x: np.ndarray, y: np.ndarray, image: Any) -> np.ndarray:
    """Position angles in the pixel frame (from +y towards -x) to east of ICRS north."""
    wcs = getattr(image, "wcs", None)
    if wcs is None or len(values) == 0:
        return np.asarray(values, np.float64)
    from ._orientation import sky_position_angle

    return np.asarray(sky_position_angle(values, wcs, x, y), np.float64)


def classic_catalogue(
    sources: Table,
    card: ModelCard,
    image: Any,
    region: PixelBox | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    plan: Any = None,
) -> Table:
    """Catalogue from `find_sources_classic` output (0-based x, y; bmaj/bmin in px FWHM; flux Jy).

    Position angles, measured in the pixel frame, are turned east of ICRS north through the
    image's WCS (any orientation, frame or projection). With a domain `plan`, columns the image
    cannot support (fluxes without a unit, fluxes and sizes without a beam) are left empty.
    """
    pixel_scale = getattr(image, "pixel_scale_arcsec", None) if image is not None else None
    scale = pixel_scale if pixel_scale else math.nan

    def col(name: str) -> np.ndarray:
        if name in sources.colnames:
            return np.asarray(sources[name], dtype=np.float64)
        return np.full(len(sources), np.nan)

    x, y = col("x"), col("y")
    physical = {"flux": col("flux"), "bmaj": col("bmaj") * scale, "bmin": col("bmin") * scale,
                "pa": _sky_angles(col("pa"), x, y, image)}
    extras = {
        "peak": (col("peak"), "Jy/beam", "phot.flux.density;stat.max;em.radio", "Peak surface brightness"),
        "snr": (col("snr"), "", "stat.snr", "Peak signal-to-noise ratio"),
    }
    meta = base_meta(card, image, region, "fp32", parameters or {}, plan=plan)
    return make_catalogue(
        x,
        y,
        col("width"),
        col("height"),
        col("score"),
        physical,
        image=image,
        descriptions=_CLASSIC_DESCRIPTIONS,
        score_ucd="stat.snr",
        extras=extras,
        meta=meta,
        masked=untrusted_columns(image, plan),
    )
