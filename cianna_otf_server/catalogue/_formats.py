"""The catalogue formats, once: their names, media types, file names and the words that select them.

Every place that turns a user's word into a format reads this table: the writers, the job
parameter ``RESPONSEFORMAT``, the service's result files, and the command line's ``--format``
and output suffixes. A new format is one entry here (and a writer in `_writers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

__all__ = ["CatalogueFormat", "CATALOGUE_FORMATS", "FORMAT_NAMES", "catalogue_format", "format_for_suffix",
           "format_for_media_type"]


@dataclass(frozen=True)
class CatalogueFormat:
    """One output format of a catalogue."""

    name: str
    #: The media type a result in this format is served with.
    media_type: str
    #: The suffix of the job's result file (``result.xml``) and of a user's file by default.
    result_suffix: str
    #: The suffix the command line gives a file it names itself.
    file_suffix: str
    #: Other words accepted for it (RESPONSEFORMAT values, media types, short names).
    aliases: tuple[str, ...] = ()
    #: File suffixes that imply this format when no format is named.
    suffixes: tuple[str, ...] = ()
    #: The suffix of a file in a folder of catalogues, where ``file_suffix`` could be taken for an image.
    folder_suffix: str | None = None


CATALOGUE_FORMATS: dict[str, CatalogueFormat] = {
    fmt.name: fmt
    for fmt in (
        CatalogueFormat("votable", "application/x-votable+xml", ".xml", ".vot",
                        aliases=("vot", "xml", "application/x-votable+xml", "text/xml"),
                        suffixes=(".vot", ".votable", ".xml")),
        CatalogueFormat("csv", "text/csv", ".csv", ".csv", aliases=("text/csv",), suffixes=(".csv",)),
        CatalogueFormat("fits", "application/fits", ".fits", ".fits", aliases=("fit", "application/fits"),
                        suffixes=(".fits", ".fit", ".fts"), folder_suffix=".cat.fits"),
        CatalogueFormat("ds9", "text/plain", ".reg", ".reg",
                        aliases=("reg", "region", "regions", "text/x-ds9"), suffixes=(".reg",)),
    )
}
#: The format names, in the order the command line and the errors list them.
FORMAT_NAMES: tuple[str, ...] = tuple(CATALOGUE_FORMATS)

_BY_WORD: dict[str, str] = {
    word: fmt.name for fmt in CATALOGUE_FORMATS.values() for word in (fmt.name, *fmt.aliases)
}


def catalogue_format(word: str) -> CatalogueFormat:
    """The format a name, alias or media type selects (media-type parameters such as ``;content=`` ignored).

    Raises
    ------
    ValueError
        No format answers to `word`; the message lists the names.
    """
    key = str(word).split(";", 1)[0].strip().lower()
    if key in _BY_WORD:
        return CATALOGUE_FORMATS[_BY_WORD[key]]
    raise ValueError(f"unknown catalogue format {word!r}; choose one of {', '.join(FORMAT_NAMES)} "
                     "(or their media types)")


def format_for_suffix(path: str | PurePath) -> str | None:
    """The format a file's suffix implies (``sources.vot`` -> ``votable``), None when it implies none."""
    suffix = PurePath(path).suffix.lower()
    for fmt in CATALOGUE_FORMATS.values():
        if suffix in fmt.suffixes:
            return fmt.name
    return None


def format_for_media_type(media_type: str | None) -> str | None:
    """The format of a result served as `media_type` (or a RESPONSEFORMAT value), None when unknown."""
    try:
        return catalogue_format(media_type or "").name
    except ValueError:
        return None
