"""Catalogues: the format table, and the writers (VOTable, the service's result; CSV; FITS; DS9 regions).

The format table is imported at once (the command line reads it at start-up); the writers, which
pull in astropy, only when first used.
"""

from __future__ import annotations

from typing import Any

from ._formats import (
    CATALOGUE_FORMATS,
    FORMAT_NAMES,
    CatalogueFormat,
    catalogue_format,
    format_for_media_type,
    format_for_suffix,
)

__all__ = [
    "CATALOGUE_FORMATS",
    "FORMAT_NAMES",
    "FORMATS",
    "VOTABLE_VERSION",
    "CatalogueFormat",
    "catalogue_format",
    "catalogue_to_bytes",
    "catalogue_to_votable_bytes",
    "format_for_media_type",
    "format_for_suffix",
    "read_catalogue",
    "table_to_votable",
    "write_catalogue",
]

_LAZY = {
    "VOTABLE_VERSION": "._votable",
    "catalogue_to_votable_bytes": "._votable",
    "table_to_votable": "._votable",
    "FORMATS": "._writers",
    "catalogue_to_bytes": "._writers",
    "read_catalogue": "._writers",
    "write_catalogue": "._writers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
