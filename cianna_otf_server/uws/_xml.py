"""UWS 1.1 XML documents built with lxml, in the element order UWS.xsd fixes.

The namespace stays ``http://www.ivoa.net/xml/UWS/v1.0`` with ``version="1.1"`` on root
elements; required-but-unknown values are ``xsi:nil="true"``, never empty elements.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from lxml import etree

from ._models import Job, format_time

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"uws": UWS_NS, "xlink": XLINK_NS, "xsi": XSI_NS}
UWS_VERSION = "1.1"
#: The service's own jobInfo content: ``<progress done= total=/>`` and ``<warning>`` sentences.
JOBINFO_NS = "urn:cianna-otf:jobinfo"

#: Builds an absolute (root-relative) URL path for a job resource: href(job_id, "results/result").
HrefBuilder = Callable[[str, str], str]

#: Characters XML 1.0 cannot carry (lxml refuses them): C0 controls but tab/newline/return, surrogates, FFFE/FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(value: str) -> str:
    """`value` with characters XML cannot carry replaced by U+FFFD, so a document is always built."""
    return _NOT_XML.sub("\ufffd", value)


def has_non_xml_characters(value: str) -> bool:
    """True if `value` holds characters that no XML document (job, VOTable) can carry."""
    return _NOT_XML.search(value) is not None


def _q(name: str) -> str:
    return f"{{{UWS_NS}}}{name}"


def _text(parent: etree._Element, name: str, value: str | None, nillable: bool = False) -> None:
    element = etree.SubElement(parent, _q(name))
    if value is None:
        if not nillable:
            raise ValueError(f"{name} may not be nil")
        element.set(f"{{{XSI_NS}}}nil", "true")
    else:
        element.text = xml_safe(value)


def _serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def parameters_element(job: Job, href: HrefBuilder, parent: etree._Element | None = None) -> etree._Element:
    """The ``uws:parameters`` element; uploaded parameters point at their served content."""
    if parent is None:
        element = etree.Element(_q("parameters"), nsmap=NSMAP)
    else:
        element = etree.SubElement(parent, _q("parameters"))
    for parameter in job.parameters:
        item = etree.SubElement(element, _q("parameter"), id=parameter.name)
        if parameter.by_reference:
            item.set("byReference", "true")
        if parameter.is_post:
            item.set("isPost", "true")
        item.text = xml_safe(parameter.value)
    return element


def results_element(job: Job, href: HrefBuilder, parent: etree._Element | None = None) -> etree._Element:
    """The ``uws:results`` element with root-relative xlink hrefs (correct under any base URL)."""
    if parent is None:
        element = etree.Element(_q("results"), nsmap=NSMAP)
    else:
        element = etree.SubElement(parent, _q("results"))
    for result in job.results:
        item = etree.SubElement(element, _q("result"), id=result.result_id)
        item.set(f"{{{XLINK_NS}}}type", "simple")
        item.set(f"{{{XLINK_NS}}}href", href(job.job_id, f"results/{result.result_id}"))
        if result.size is not None:
            item.set("size", str(result.size))
        item.set("mime-type", result.mime_type)
    return element


def job_document(job: Job, href: HrefBuilder) -> bytes:
    """The full ``uws:job`` representation."""
    root = etree.Element(_q("job"), nsmap=NSMAP, version=UWS_VERSION)
    _text(root, "jobId", job.job_id)
    if job.run_id is not None:
        _text(root, "runId", job.run_id)
    _text(root, "ownerId", job.owner, nillable=True)
    _text(root, "phase", job.phase.value)
    _text(root, "quote", format_time(job.quote) if job.quote else None, nillable=True)
    _text(root, "creationTime", format_time(job.creation_time))
    _text(root, "startTime", format_time(job.start_time) if job.start_time else None, nillable=True)
    _text(root, "endTime", format_time(job.end_time) if job.end_time else None, nillable=True)
    _text(root, "executionDuration", str(job.execution_duration))
    _text(root, "destruction", format_time(job.destruction) if job.destruction else None, nillable=True)
    parameters_element(job, href, root)
    results_element(job, href, root)
    if job.error is not None:
        summary = etree.SubElement(root, _q("errorSummary"), type=job.error.error_type, hasDetail="true")
        _text(summary, "message", job.error.message)
    info = etree.SubElement(root, _q("jobInfo"))
    progress = etree.SubElement(info, f"{{{JOBINFO_NS}}}progress", nsmap={None: JOBINFO_NS})
    progress.set("done", str(job.progress_done))
    progress.set("total", str(job.progress_total))
    for warning in job.warnings:
        etree.SubElement(info, f"{{{JOBINFO_NS}}}warning", nsmap={None: JOBINFO_NS}).text = xml_safe(warning)
    return _serialise(root)


def job_list_document(jobs: list[Job], href: HrefBuilder) -> bytes:
    """The ``uws:jobs`` list; each jobref carries phase, runId, ownerId and creationTime."""
    root = etree.Element(_q("jobs"), nsmap=NSMAP, version=UWS_VERSION)
    for job in jobs:
        ref = etree.SubElement(root, _q("jobref"), id=job.job_id)
        ref.set(f"{{{XLINK_NS}}}type", "simple")
        ref.set(f"{{{XLINK_NS}}}href", href(job.job_id, ""))
        _text(ref, "phase", job.phase.value)
        if job.run_id is not None:
            _text(ref, "runId", job.run_id)
        _text(ref, "ownerId", job.owner, nillable=True)
        _text(ref, "creationTime", format_time(job.creation_time))
    return _serialise(root)


def results_document(job: Job, href: HrefBuilder) -> bytes:
    return _serialise(results_element(job, href))


def parameters_document(job: Job, href: HrefBuilder) -> bytes:
    return _serialise(parameters_element(job, href))


def error_votable(message: str) -> bytes:
    """A DALI error document: a VOTable whose RESOURCE holds ``INFO name="QUERY_STATUS" value="ERROR"``."""
    ns = "http://www.ivoa.net/xml/VOTable/v1.3"
    root = etree.Element(f"{{{ns}}}VOTABLE", nsmap={None: ns}, version="1.4")
    resource = etree.SubElement(root, f"{{{ns}}}RESOURCE", type="results")
    info = etree.SubElement(resource, f"{{{ns}}}INFO", name="QUERY_STATUS", value="ERROR")
    info.text = xml_safe(message)
    return _serialise(root)


def safe_parser() -> etree.XMLParser:
    """An XML parser that never expands entities or fetches anything (for client-sent XML)."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
