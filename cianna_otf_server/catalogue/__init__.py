"""Catalogue writers: VOTable (the service's result), CSV, FITS binary table and DS9 regions."""

from ._votable import VOTABLE_VERSION, catalogue_to_votable_bytes, table_to_votable
from ._writers import FORMATS, catalogue_to_bytes, read_catalogue, write_catalogue

__all__ = [
    "FORMATS",
    "VOTABLE_VERSION",
    "catalogue_to_bytes",
    "catalogue_to_votable_bytes",
    "read_catalogue",
    "table_to_votable",
    "write_catalogue",
]
