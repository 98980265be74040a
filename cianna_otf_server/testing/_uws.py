"""Checks of UWS 1.1 documents: valid against the schema, their fields, a job's phase over time."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from lxml import etree

__all__ = ["FINAL_PHASES", "UWS_NAMESPACES", "UWS_TIME", "assert_uws_valid", "is_nil", "job_phase",
           "load_uws_schema", "parse_xml", "uws_text", "wait_for_phase"]

_UWS = "http://www.ivoa.net/xml/UWS/v1.0"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
#: The prefixes the checks use: ``uws``, ``xlink``, ``xsi``.
UWS_NAMESPACES = {"uws": _UWS, "xlink": "http://www.w3.org/1999/xlink", "xsi": _XSI}
#: Phases a job never leaves.
FINAL_PHASES = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED"})
#: A UWS instant: ISO 8601 in UTC with ``Z`` (never ``+00:00``).
UWS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def parse_xml(body: bytes) -> etree._Element:
    """A document's root, parsed without entities or network access."""
    return etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))


def load_uws_schema(path: str | Path) -> etree.XMLSchema:
    """The UWS 1.1 schema (``UWS-1.1.xsd`` from the IVOA, with its ``xlink.xsd`` beside it)."""
    return etree.XMLSchema(etree.parse(str(path)))


def assert_uws_valid(schema: etree.XMLSchema, body: bytes) -> etree._Element:
    """Parse `body`, check it against the UWS schema and return the root; the error log on failure."""
    root = parse_xml(body)
    if not schema.validate(root):
        raise AssertionError(f"invalid against UWS.xsd: {schema.error_log}\n{body.decode(errors='replace')}")
    return root


def uws_text(root: etree._Element, name: str) -> str | None:
    """The text of the job document's ``uws:NAME`` child (which must exist)."""
    element = root.find(f"uws:{name}", UWS_NAMESPACES)
    assert element is not None, f"no uws:{name}"
    return element.text


def is_nil(root: etree._Element, name: str) -> bool:
    """True when ``uws:NAME`` is present, empty and ``xsi:nil="true"`` (as UWS asks of unset times)."""
    element = root.find(f"uws:{name}", UWS_NAMESPACES)
    return element is not None and element.get(f"{{{_XSI}}}nil") == "true" and not (element.text or "").strip()


def job_phase(session: Any, job_url: str) -> str:
    """The job's phase, read from ``{job}/phase`` with a `requests.Session`."""
    response = session.get(f"{job_url}/phase")
    assert response.status_code == 200, response.text
    return response.text.strip()


def wait_for_phase(session: Any, job_url: str, phases: set[str] | frozenset[str] = FINAL_PHASES,
                   timeout: float = 30.0) -> etree._Element:
    """Poll with short blocking WAITs until the job reaches one of `phases`; return its document."""
    deadline = time.monotonic() + timeout
    while True:
        response = session.get(job_url, params={"WAIT": "1"})
        assert response.status_code == 200, response.text
        root = parse_xml(response.content)
        if uws_text(root, "phase") in phases:
            return root
        if time.monotonic() > deadline:
            raise AssertionError(f"job stayed {uws_text(root, 'phase')}, wanted {sorted(phases)}")
