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
from typing import Any, Mapping

import numpy as np
from astropy import units as u
from astropy.table import Column, Table

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
        Table metadata (model, parameters, image, region, ...).
    """
    n = len(x)
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
        table.add_column(_column(name, values[name], unit, ucd, descriptions.get(name, description)))
    for name, (column, unit, ucd, description) in (extras or {}).items():
        table.add_column(_column(name, np.asarray(column)[order], unit, ucd, description))
    return table


def _column(name: str, data: np.ndarray, unit: str, ucd: str, description: str) -> Column:
    if data.dtype.kind == "f":
        data = data.astype(np.float64)
    col = Column(data, name=name, unit=u.Unit(unit) if unit else None, description=description)
    if ucd:
        col.meta["ucd"] = ucd
    return col


def base_meta(card: ModelCard, image: Any, region: PixelBox | None, precision: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Table metadata shared by both families: model, run parameters, image, region, software."""
    meta: dict[str, Any] = {
        "model": card.name,
        "model_version": card.version,
        "model_family": card.family,
        "precision": precision,
        "parameters": {k: v for k, v in parameters.items() if v is not None},
        "image": str(getattr(image, "path", None) or "in-memory image"),
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
    if card.citation:
        meta["citation"] = card.citation
    if card.sha256:
        meta["model_sha256"] = card.sha256
    return meta


def yolo_catalogue(
    boxes: Boxes,
    card: ModelCard,
    image: Any,
    region: PixelBox | None = None,
    *,
    precision: str = "fp32",
    parameters: Mapping[str, Any] | None = None,
) -> Table:
    """Catalogue of merged YOLO boxes (image coordinates) using the card's parameter transforms.

    Card parameters named flux, bmaj, bmin, pa fill the core columns (converted to Jy, arcsec,
    deg from the card's unit; 'pix' sizes through the image pixel scale); others become extra
    columns with the card's unit and UCD. Extras always present: ``probability`` and ``prior``;
    with classes, ``class_<k>`` probabilities.
    """
    physical = parameter_values(boxes.params, card.parameters)
    pixel_scale = getattr(image, "pixel_scale_arcsec", None) if image is not None else None
    core: dict[str, np.ndarray] = {}
    extras: dict[str, tuple[np.ndarray, str, str, str]] = {
        "probability": (boxes.probability, "", "stat.probability", "Probability channel of the YOLO head (0-1)"),
        "prior": (boxes.prior.astype(np.int16), "", "meta.code", "Index of the YOLO prior (anchor box) that made the detection"),
    }
    for k in range(boxes.classes.shape[1]):
        extras[f"class_{k}"] = (boxes.classes[:, k], "", "src.class", f"Network score of class {k}")
    descriptions = dict(_YOLO_DESCRIPTIONS)
    for spec in card.parameters:
        values = physical[spec.name]
        if spec.name in _STANDARD_PARAMETERS:
            target = CORE_COLUMNS[spec.name][0]
            core[spec.name] = _convert(values, spec.unit, target, pixel_scale, spec.name)
            if spec.description:
                descriptions[spec.name] = spec.description
        else:
            extras[spec.name] = (values, spec.unit, spec.ucd, spec.description or f"Model output {spec.name}")
    meta = base_meta(card, image, region, precision, parameters or {})
    return make_catalogue(
        boxes.x_center,
        boxes.y_center,
        boxes.width,
        boxes.height,
        boxes.objectness,
        core,
        image=image,
        descriptions=descriptions,
        score_ucd="stat.probability",
        extras=extras,
        meta=meta,
    )


def classic_catalogue(
    sources: Table,
    card: ModelCard,
    image: Any,
    region: PixelBox | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
) -> Table:
    """Catalogue from `find_sources_classic` output (0-based x, y; bmaj/bmin in px FWHM; flux Jy)."""
    pixel_scale = getattr(image, "pixel_scale_arcsec", None) if image is not None else None
    scale = pixel_scale if pixel_scale else math.nan

    def col(name: str) -> np.ndarray:
        if name in sources.colnames:
            return np.asarray(sources[name], dtype=np.float64)
        return np.full(len(sources), np.nan)

    physical = {"flux": col("flux"), "bmaj": col("bmaj") * scale, "bmin": col("bmin") * scale, "pa": col("pa")}
    extras = {
        "peak": (col("peak"), "Jy/beam", "phot.flux.density;stat.max;em.radio", "Peak surface brightness"),
        "snr": (col("snr"), "", "stat.snr", "Peak signal-to-noise ratio"),
    }
    meta = base_meta(card, image, region, "fp32", parameters or {})
    return make_catalogue(
        col("x"),
        col("y"),
        col("width"),
        col("height"),
        col("score"),
        physical,
        image=image,
        descriptions=_CLASSIC_DESCRIPTIONS,
        score_ucd="stat.snr",
        extras=extras,
        meta=meta,
    )
