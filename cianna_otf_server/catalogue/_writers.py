"""Write (and read back) a catalogue in each output format: VOTable, CSV, FITS, DS9 regions."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ._formats import CATALOGUE_FORMATS, catalogue_format
from ._votable import _text, catalogue_to_votable_bytes, flat_meta

__all__ = ["FORMATS", "write_catalogue", "catalogue_to_bytes", "read_catalogue"]

#: name: (media type, result-file suffix), read from the one format table.
FORMATS: dict[str, tuple[str, str]] = {
    name: (fmt.media_type, fmt.result_suffix) for name, fmt in CATALOGUE_FORMATS.items()
}


def _format(name: str) -> str:
    return catalogue_format(name).name


def catalogue_to_bytes(table: Table, format: str = "votable", **options: Any) -> bytes:
    """The catalogue serialised in ``format`` (see `FORMATS`)."""
    fmt = _format(format)
    if fmt == "votable":
        return catalogue_to_votable_bytes(table)
    if fmt == "csv":
        return _csv_bytes(table)
    if fmt == "fits":
        return _fits_bytes(table)
    return _ds9_text(table, **options).encode("utf-8")


def write_catalogue(table: Table, target: str | os.PathLike | IO[Any], format: str = "votable", **options: Any) -> None:
    """Write the catalogue to a path or a binary file object.

    Parameters
    ----------
    table : Table
        A catalogue from `cianna_otf_server.pipeline.detect`.
    target : path or binary file object
    format : str
        "votable" (VOTable 1.4, default), "csv", "fits" (binary table), "ds9" (region file).
    options
        For "ds9": ``shape`` = "auto" (ellipses where sizes are known, else boxes),
        "ellipse" or "box"; ``color``.
    """
    data = catalogue_to_bytes(table, format, **options)
    if hasattr(target, "write"):
        try:
            target.write(data)  # type: ignore[union-attr]
        except TypeError:
            target.write(data.decode("utf-8"))  # type: ignore[union-attr]
        return
    Path(target).write_bytes(data)


def read_catalogue(source: str | os.PathLike | bytes | IO[Any], format: str | None = None) -> Table:
    """Read a catalogue written by `write_catalogue` (votable, csv or fits) back as a Table."""
    if format is None:
        if isinstance(source, (str, os.PathLike)):
            suffix = Path(source).suffix.lower().lstrip(".")
            format = {"xml": "votable", "vot": "votable", "csv": "csv", "fits": "fits", "fit": "fits"}.get(suffix, "votable")
        else:
            format = "votable"
    fmt = _format(format)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if fmt == "votable":
        return Table.read(source, format="votable")
    if fmt == "csv":
        if hasattr(source, "read"):
            text = source.read()  # type: ignore[union-attr]
            source = io.StringIO(text.decode("utf-8") if isinstance(text, bytes) else text)
        return Table.read(source, format="ascii.csv")
    if fmt == "fits":
        return Table.read(source, format="fits", hdu="CATALOGUE")
    raise ValueError("DS9 region files cannot be read back as a catalogue")


# ---------------------------------------------------------------- CSV


def _csv_bytes(table: Table) -> bytes:
    """Plain CSV, one header row of column names (units and provenance are in the VOTable)."""
    plain = Table(table, copy=False)
    plain.meta = {}
    buffer = io.StringIO()
    plain.write(buffer, format="ascii.csv", overwrite=True)
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------- FITS

_FITS_KEYS = {
    "model": "MODEL",
    "model_version": "MODELVER",
    "model_family": "MODELFAM",
    "precision": "PRECISN",
    "image": "IMAGE",
    "hdu": "IMAGEHDU",
    "region": "REGION",
    "software": "SOFTWARE",
    "software_version": "SWVERS",
    "date": "DATE",
}


def _fits_bytes(table: Table) -> bytes:
    """A binary table HDU named CATALOGUE; descriptions in TCOMMn, UCDs in TUCDn, provenance keys."""
    plain = Table(table, copy=True)
    plain.meta = {}
    hdu = fits.table_to_hdu(plain)
    hdu.name = "CATALOGUE"
    header = hdu.header
    for index, name in enumerate(table.colnames, start=1):
        column = table[name]
        if column.description:
            header[f"TCOMM{index}"] = column.description[:68]
        if column.meta.get("ucd"):
            header[f"TUCD{index}"] = column.meta["ucd"]
    for key, value in flat_meta(dict(table.meta)):
        if key == "warning":  # several, and long: COMMENT cards keep every one whole
            header.add_comment(f"warning: {value}")
            continue
        keyword = _FITS_KEYS.get(key)
        if keyword is None:
            keyword = f"HIERARCH {key.upper()}"
            if len(keyword) + len(value) > 70:  # HIERARCH cards cannot CONTINUE
                header.add_comment(f"{key} = {value}")
                continue
        header[keyword] = value
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    return buffer.getvalue()


# ---------------------------------------------------------------- DS9


def _ds9_text(table: Table, shape: str = "auto", color: str = "green") -> str:
    """DS9 regions (ICRS where the catalogue has sky positions, image pixels otherwise)."""
    import astropy.units as u
    from astropy.coordinates import Angle, SkyCoord
    from regions import (
        EllipsePixelRegion,
        EllipseSkyRegion,
        PixCoord,
        RectanglePixelRegion,
        RectangleSkyRegion,
        Regions,
    )

    if shape not in ("auto", "ellipse", "box"):
        raise ValueError("shape must be 'auto', 'ellipse' or 'box'")
    scale = _pixel_scale(table)
    items = []
    for row in table:
        ra, dec = float(row["ra"]), float(row["dec"])
        bmaj, bmin, pa = (_float(row, k) for k in ("bmaj", "bmin", "pa"))
        width, height = _float(row, "width"), _float(row, "height")
        use_ellipse = shape == "ellipse" or (shape == "auto" and all(math.isfinite(v) and v > 0 for v in (bmaj, bmin)))
        pa = pa if math.isfinite(pa) else 0.0
        meta = {"text": str(row["id"])} if "id" in table.colnames else {}
        visual = {"color": color}
        sky = math.isfinite(ra) and math.isfinite(dec)
        if sky:
            center = SkyCoord(ra * u.deg, dec * u.deg, frame="icrs")
            if use_ellipse and math.isfinite(bmaj) and math.isfinite(bmin):
                # regions' angle runs anticlockwise from the RA axis; PA runs east of north
                region = EllipseSkyRegion(center, bmaj * u.arcsec, bmin * u.arcsec, Angle(pa + 90.0, "deg"), meta=meta, visual=visual)
            else:
                side = scale if scale else 1.0
                w = (width if math.isfinite(width) else 1.0) * side
                h = (height if math.isfinite(height) else 1.0) * side
                region = RectangleSkyRegion(center, w * u.arcsec, h * u.arcsec, Angle(0.0, "deg"), meta=meta, visual=visual)
        else:
            center = PixCoord(float(row["x"]) - 1.0, float(row["y"]) - 1.0)
            if use_ellipse and scale and math.isfinite(bmaj) and math.isfinite(bmin):
                region = EllipsePixelRegion(center, bmaj / scale, bmin / scale, Angle(pa + 90.0, "deg"), meta=meta, visual=visual)
            else:
                region = RectanglePixelRegion(
                    center, width if math.isfinite(width) else 1.0, height if math.isfinite(height) else 1.0, meta=meta, visual=visual
                )
        items.append(region)
    header = f"# Region file: {len(items)} sources from cianna-otf, model {_text(table.meta.get('model', ''))}\n"
    # ';' separates commands in DS9 files, even after '#': warnings keep to commas
    header += "".join(f"# warning: {_text(w).replace(';', ',')}\n" for w in table.meta.get("warnings", ()) or ())
    if not items:
        return header + "global color=" + color + "\nicrs\n"
    return header + Regions(items).serialize(format="ds9")


def _float(row: Any, name: str) -> float:
    try:
        item = row[name]
        if np.ma.is_masked(item):  # a column left empty for this image (unknown unit or beam)
            return math.nan
        value = float(item)
    except (KeyError, TypeError, ValueError):
        return math.nan
    return value if np.isfinite(value) else math.nan


def _pixel_scale(table: Table) -> float | None:
    try:
        value = float(table.meta.get("pixel_scale", math.nan))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None
