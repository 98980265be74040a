"""The catalogue as an IVOA VOTable: the service's main result (what pyvo fetches).

Every FIELD carries its unit, UCD and description; ra/dec reference an ICRS COOSYS; the run's
provenance (model, version, precision, thresholds, image, region, software, date) is given as
INFO elements of the RESOURCE, after a ``QUERY_STATUS = OK`` INFO as DALI services do.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Iterable

from astropy.io.votable.tree import CooSys, Info, Resource, VOTableFile
from astropy.table import Table

from ._tabledata import votable_to_bytes

__all__ = ["table_to_votable", "catalogue_to_votable_bytes", "flat_meta"]

VOTABLE_VERSION = "1.4"
_COOSYS_ID = "icrs"


def flat_meta(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """Table metadata as (name, text) pairs; ``parameters`` becomes ``param_<name>`` entries.

    Each of ``warnings`` becomes its own ``warning`` entry (one INFO that clients can show as it
    is); lists and other structures are written as JSON so they can be read back unambiguously.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in meta.items():
        if key == "parameters" and isinstance(value, dict):
            for name, item in value.items():
                pairs.append((f"param_{name}", _text(item)))
        elif key == "warnings" and isinstance(value, (list, tuple)):
            pairs.extend(("warning", _text(item)) for item in value)
        else:
            pairs.append((str(key), _text(value)))
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


def table_to_votable(table: Table, *, table_id: str = "result", name: str = "catalogue") -> VOTableFile:
    """Build the VOTable document (version 1.4) for a catalogue table."""
    plain = Table(table, copy=False)
    plain.meta = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        votable = VOTableFile.from_table(plain)
    votable.version = VOTABLE_VERSION
    resource: Resource = votable.resources[0]
    resource.type = "results"
    resource.coordinate_systems.append(CooSys(ID=_COOSYS_ID, system="ICRS"))
    infos: Iterable[tuple[str, str]] = [("QUERY_STATUS", "OK")] + flat_meta(dict(table.meta))
    for key, value in infos:
        resource.infos.append(Info(name=key, value=value))
    vot_table = resource.tables[0]
    vot_table.ID = table_id
    vot_table.name = name
    model = table.meta.get("model")
    if model:
        vot_table.description = (
            f"Sources detected by model {model} {table.meta.get('model_version', '')} "
            f"({table.meta.get('model_family', '')}) with cianna-otf"
        ).replace("  ", " ")
    for field in vot_table.fields:
        column = table[field.name]
        ucd = column.meta.get("ucd")
        if ucd:
            field.ucd = ucd
        if column.description:
            field.description = column.description
        if field.name in ("ra", "dec"):
            field.ref = _COOSYS_ID
    return votable


def catalogue_to_votable_bytes(table: Table) -> bytes:
    """The catalogue as VOTable 1.4 XML (tabledata serialisation, UTF-8), rows written by column."""
    return votable_to_bytes(table_to_votable(table))
