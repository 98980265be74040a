"""W3C PROV documents for detection jobs, shaped after the IVOA Provenance Data Model.

A job is a ProvDM Activity; the model weights and the input image are used Entities; the
catalogue is the generated Entity, derived from the image; the service is a SoftwareAgent and
the job owner a Person. Every job parameter is recorded as an attribute of the activity in the
``param:`` namespace (``param:MODEL``, ``param:THRESHOLD``, ...), so the catalogue can be
reproduced from its provenance alone. Types and roles are qualified names (``prov:SoftwareAgent``,
``otf:Model``), as PROV expects, so they survive PROV-JSON, PROV-N and PROV-XML alike.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prov.constants import PROV
from prov.model import ProvDocument

from .errors import UserInputError

from . import __version__
from .uws import utc_now

IVOA_PROV = "http://www.ivoa.net/documents/ProvenanceDM/ns/"
SERVICE_NS = "urn:cianna-otf:"
PARAMETER_NS = "urn:cianna-otf:parameter:"
FORMATS = {"json": "application/json", "provn": "text/provenance-notation", "xml": "application/xml"}


@dataclass
class ProvenanceRecord:
    """What happened in one job, in plain values (no PROV objects), so it is easy to test."""

    job_id: str
    job_url: str
    owner: str | None
    started: datetime | None
    ended: datetime | None
    card: Any  # ModelCard
    image_name: str
    image_sha256: str
    hdu: int | str | None
    region: str | None
    parameters: dict[str, str] = field(default_factory=dict)
    device: str = "cpu"
    precision: str | None = None
    n_sources: int = 0
    catalogue_file: str = "result.xml"
    #: The software that ran the job (`software_versions`; filled in where the job ran, so a
    #: document built in another process names the service's PyTorch and GPU, not its own).
    software: dict[str, str] | None = None


@functools.lru_cache(maxsize=1)
def _software() -> dict[str, str]:
    """Python, PyTorch, GPU and platform of this process, read once (they do not change)."""
    info = {"python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    info["platform"] = platform.platform()
    return info


def software_versions() -> dict[str, str]:
    """A copy of this process's software description, for `ProvenanceRecord.software`."""
    return dict(_software())


def build_document(record: ProvenanceRecord) -> ProvDocument:
    """The PROV document of one job."""
    doc = ProvDocument()
    doc.add_namespace("ivoa", IVOA_PROV)
    otf = doc.add_namespace("otf", SERVICE_NS)
    param = doc.add_namespace("param", PARAMETER_NS)
    doc.add_namespace("job", record.job_url.rstrip("/") + "/")
    ended = record.ended or utc_now()

    card = record.card
    agent = doc.agent(
        "otf:service",
        {
            "prov:type": PROV["SoftwareAgent"],
            "prov:label": "CIANNA On-The-Fly",
            "otf:version": __version__,
            **{f"otf:{key}": value for key, value in (record.software or _software()).items()},
        },
    )
    owner = record.owner or "anonymous"
    person = doc.agent(otf["user/" + quote(owner, safe="")], {"prov:type": PROV["Person"], "prov:label": owner})

    activity_attributes: dict[str, Any] = {
        "prov:label": f"source detection with {card.name} {card.version}",
        "ivoa:activityDescription": "cianna-otf detection",
        "otf:jobUrl": record.job_url,
        "otf:device": record.device,
    }
    if record.precision:
        activity_attributes["otf:precision"] = record.precision
    for name, value in sorted(record.parameters.items()):
        activity_attributes[param[name.upper()]] = value
    activity = doc.activity(f"job:{record.job_id}", record.started, ended, activity_attributes)

    model_attributes: dict[str, Any] = {
        "prov:type": otf["Model"],
        "prov:label": f"{card.name} {card.version}",
        "otf:family": card.family,
        "otf:version": card.version,
    }
    if card.sha256:
        model_attributes["otf:sha256"] = card.sha256
    if card.source_url:
        model_attributes["prov:location"] = card.source_url
    if card.weights_file:
        model_attributes["otf:file"] = Path(card.weights_file).name
    model = doc.entity(f"otf:model/{card.name}/{card.version}", model_attributes)

    image_attributes: dict[str, Any] = {
        "prov:type": otf["Image"],
        "prov:label": record.image_name,
        "otf:sha256": record.image_sha256,
        "ivoa:content_type": "application/fits",
    }
    if record.hdu is not None:
        image_attributes["otf:hdu"] = str(record.hdu)
    if record.region:
        image_attributes["otf:region"] = record.region
    image = doc.entity(f"otf:image/{record.image_sha256[:16]}", image_attributes)

    catalogue = doc.entity(
        f"job:results/{record.catalogue_file}",
        {
            "prov:type": otf["Catalogue"],
            "prov:label": "source catalogue",
            "otf:rows": record.n_sources,
            "prov:location": record.job_url.rstrip("/") + "/results/result",
        },
    )

    doc.wasAssociatedWith(activity, agent)
    doc.wasAssociatedWith(activity, person, other_attributes={"prov:role": otf["owner"]})
    doc.actedOnBehalfOf(agent, person)
    doc.used(activity, model, record.started, other_attributes={"prov:role": otf["model"]})
    doc.used(activity, image, record.started, other_attributes={"prov:role": otf["image"]})
    doc.wasGeneratedBy(catalogue, activity, ended, other_attributes={"prov:role": otf["catalogue"]})
    doc.wasDerivedFrom(catalogue, image, activity)
    doc.wasAttributedTo(catalogue, agent)
    return doc


def serialise(doc: ProvDocument, fmt: str = "json") -> bytes:
    """PROV-JSON (default), PROV-N (``provn``) or PROV-XML (``xml``)."""
    if fmt == "json":
        return doc.serialize(format="json", indent=2).encode()
    if fmt == "provn":
        return doc.get_provn().encode()
    if fmt == "xml":
        return doc.serialize(format="xml").encode()
    raise ValueError(f"unknown provenance format {fmt!r}; choose json, provn or xml")


def write_provenance(record: ProvenanceRecord, path: str | Path, fmt: str = "json") -> Path:
    path = Path(path)
    path.write_bytes(serialise(build_document(record), fmt))
    return path


#: What clients write for each format (RESPONSEFORMAT values), as well as the formats' own names.
FORMAT_ALIASES = {"application/json": "json", "prov-json": "json", "prov-n": "provn",
                  "text/provenance-notation": "provn", "prov-xml": "xml", "application/xml": "xml"}


def response_format(text: str) -> str:
    """The provenance format a RESPONSEFORMAT value names (json, provn or xml).

    Raises
    ------
    UserInputError
        For any other value (HTTP 400).
    """
    fmt = FORMAT_ALIASES.get(text.strip().lower(), text.strip().lower())
    if fmt not in FORMATS:
        raise UserInputError("provenance RESPONSEFORMAT must be json, provn or xml")
    return fmt


def convert(json_bytes: bytes, fmt: str) -> bytes:
    """Re-serialise a stored PROV-JSON document in another format (for RESPONSEFORMAT)."""
    if fmt == "json":
        return json_bytes
    return serialise(ProvDocument.deserialize(content=json_bytes.decode(), format="json"), fmt)


__all__ = ["FORMATS", "FORMAT_ALIASES", "ProvenanceRecord", "build_document", "convert", "response_format", "software_versions",
           "serialise", "write_provenance"]
