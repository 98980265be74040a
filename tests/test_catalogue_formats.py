"""The one catalogue format table: every word a user writes selects the same format everywhere."""

import pytest

from cianna_otf_server.catalogue import (
    CATALOGUE_FORMATS,
    FORMATS,
    catalogue_format,
    format_for_media_type,
    format_for_suffix,
)


@pytest.mark.parametrize("word, name", [
    ("votable", "votable"), ("VOT", "votable"), ("application/x-votable+xml;content=datalink", "votable"),
    ("text/xml", "votable"), ("csv", "csv"), ("text/csv", "csv"), ("FITS", "fits"), ("application/fits", "fits"),
    ("ds9", "ds9"), ("regions", "ds9"), ("text/x-ds9", "ds9"),
])
def test_words_select_one_format(word, name):
    assert catalogue_format(word).name == name
    assert format_for_media_type(word) == name


def test_an_unknown_format_names_the_choices():
    with pytest.raises(ValueError, match="votable, csv, fits, ds9"):
        catalogue_format("pdf")
    assert format_for_media_type("application/pdf") is None
    assert format_for_media_type(None) is None


@pytest.mark.parametrize("path, name", [
    ("out/sources.vot", "votable"), ("a.XML", "votable"), ("a.csv", "csv"), ("a.fts", "fits"), ("a.reg", "ds9"),
    ("a.txt", None), ("noext", None),
])
def test_suffixes_imply_formats(path, name):
    assert format_for_suffix(path) == name


def test_the_writers_table_is_derived_from_the_format_table():
    assert FORMATS == {name: (fmt.media_type, fmt.result_suffix) for name, fmt in CATALOGUE_FORMATS.items()}
    # a FITS catalogue in a folder of images must not look like an image
    assert CATALOGUE_FORMATS["fits"].folder_suffix == ".cat.fits"
