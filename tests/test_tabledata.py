"""The column-wise TABLEDATA writer writes exactly the bytes astropy's cell-by-cell writer writes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io.votable import parse_single_table
from astropy.table import MaskedColumn, Table
from hypothesis import given, settings
from hypothesis import strategies as st

from cianna_otf_server.catalogue._tabledata import votable_to_bytes
from cianna_otf_server.catalogue._votable import catalogue_to_votable_bytes, table_to_votable


def _astropy_bytes(table: Table) -> bytes:
    buffer = io.BytesIO()
    table_to_votable(table).to_xml(buffer, tabledata_format="tabledata")
    return buffer.getvalue()


def _mixed_table() -> Table:
    table = Table()
    table["id"] = MaskedColumn(np.arange(6, dtype=np.int64), mask=[0, 1, 0, 0, 0, 1])
    table["small"] = np.array([1, -2, 3, 0, 32767, -32768], dtype=np.int16)
    table["count"] = np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)
    table["ra"] = [0.0, 359.99999999999994, 1e16, 1e-5, 123.456, -0.0]
    table["flux"] = MaskedColumn([1.5, np.nan, np.inf, -np.inf, 2.0, 3.25], mask=[0, 0, 0, 0, 1, 0])
    table["f32"] = np.array([0.1, np.nan, 3.0, 1e20, -1e-20, 7.5], dtype=np.float32)
    table["name"] = ["a<&b>", "é", "", "plain", 'q"uote', "x"]
    table["flag"] = [True, False, True, True, False, False]
    table["vector"] = np.arange(12, dtype=np.float64).reshape(6, 2)
    table["flux"].unit = "Jy"
    table["flux"].meta["ucd"] = "phot.flux"
    table.meta["model"] = "classic"
    return table


def test_same_bytes_as_astropy_for_every_column_kind() -> None:
    table = _mixed_table()
    assert catalogue_to_votable_bytes(table) == _astropy_bytes(table)


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_short_tables(rows: int) -> None:
    table = _mixed_table()[:rows]
    assert catalogue_to_votable_bytes(table) == _astropy_bytes(table)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=2, max_size=40),
       st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=2, max_size=40))
def test_any_float_and_integer(floats: list[float], integers: list[int]) -> None:
    size = min(len(floats), len(integers))
    with np.errstate(over="ignore"):
        narrow = np.array(floats[:size]).astype(np.float32)
    table = Table({"f": np.array(floats[:size]), "f32": narrow,
                   "i": np.array(integers[:size], dtype=np.int64)})
    table["m"] = MaskedColumn(np.array(floats[:size]), mask=[index % 3 == 0 for index in range(size)])
    assert catalogue_to_votable_bytes(table) == _astropy_bytes(table)


def test_reads_back_with_the_values_and_masks() -> None:
    table = _mixed_table()
    back = parse_single_table(io.BytesIO(catalogue_to_votable_bytes(table))).to_table()
    assert list(back["id"].mask) == [False, True, False, False, False, True]
    assert back["ra"][2] == 1e16 and back["flux"].mask[4]
    assert list(back["name"]) == list(table["name"])
    assert back["vector"].shape == (6, 2)


def test_the_table_keeps_its_rows_after_writing() -> None:
    table = _mixed_table()
    votable = table_to_votable(table)
    votable_to_bytes(votable)
    assert len(votable.resources[0].tables[0].array) == len(table)
