"""Provenance of detection jobs: the W3C PROV document (IVOA ProvDM shape), served and unit-built."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import platform
from datetime import datetime, timezone

import pytest
from lxml import etree
from prov.constants import PROV
from prov.model import (
    ProvActivity,
    ProvAgent,
    ProvAssociation,
    ProvDerivation,
    ProvDocument,
    ProvEntity,
    ProvGeneration,
    ProvUsage,
)

from cianna_otf_server import __version__
from cianna_otf_server.models import ModelRegistry
from cianna_otf_server.provenance import PARAMETER_NS, ProvenanceRecord, build_document, convert, serialise

import pyvo_scenarios

PROV_XML_NS = "http://www.w3.org/ns/prov#"


def attributes(record) -> dict[str, object]:
    """A record's attributes keyed by local name (``prov:type`` -> ``type``), single values."""
    out: dict[str, object] = {}
    for key, value in record.attributes:
        out[key.localpart] = value
    return out


def parameters_of(activity) -> dict[str, str]:
    return {str(key.localpart): str(value) for key, value in activity.attributes
            if key.namespace.uri == PARAMETER_NS}


def one(document: ProvDocument, cls, **where):
    found = [r for r in document.get_records(cls)
             if all(str(attributes(r).get(k)) == str(v) for k, v in where.items())]
    assert len(found) == 1, (cls.__name__, where, found)
    return found[0]


def relation(document: ProvDocument, cls, *ends) -> list:
    """Relations of `cls` whose first formal attributes point at `ends` (identifiers)."""
    matches = []
    for record in document.get_records(cls):
        values = [value for _, value in record.formal_attributes][: len(ends)]
        if [str(v) for v in values] == [str(e) for e in ends]:
            matches.append(record)
    return matches


def check_job_document(document: ProvDocument, *, job_url: str, owner: str, image_sha: str,
                       parameters: dict[str, str], hdu: str | None, region: str | None, card) -> None:
    """Everything a job's PROV document must record, in ProvDM terms."""
    activity = one(document, ProvActivity)
    assert activity.get_startTime() is not None and activity.get_endTime() is not None
    assert activity.get_startTime() <= activity.get_endTime()
    assert str(attributes(activity)["jobUrl"]) == job_url
    recorded = parameters_of(activity)
    assert recorded == parameters, (recorded, parameters)

    model = one(document, ProvEntity, type="otf:Model")
    model_attrs = attributes(model)
    assert str(model_attrs["version"]) == card.version and card.name in str(model_attrs["label"])
    if card.sha256:
        assert str(model_attrs["sha256"]) == card.sha256
    else:
        assert "sha256" not in model_attrs

    image = one(document, ProvEntity, type="otf:Image")
    image_attrs = attributes(image)
    assert str(image_attrs["sha256"]) == image_sha
    assert (str(image_attrs["hdu"]) if "hdu" in image_attrs else None) == hdu
    assert (str(image_attrs["region"]) if "region" in image_attrs else None) == region

    catalogue = one(document, ProvEntity, type="otf:Catalogue")
    assert relation(document, ProvGeneration, catalogue.identifier, activity.identifier)
    assert relation(document, ProvDerivation, catalogue.identifier, image.identifier)
    assert relation(document, ProvUsage, activity.identifier, model.identifier)
    assert relation(document, ProvUsage, activity.identifier, image.identifier)

    service = one(document, ProvAgent, type=PROV["SoftwareAgent"])
    service_attrs = attributes(service)
    assert str(service_attrs["version"]) == __version__
    assert str(service_attrs["python"]) == platform.python_version()
    import torch

    assert str(service_attrs["torch"]) == torch.__version__
    person = one(document, ProvAgent, type=PROV["Person"])
    assert str(attributes(person)["label"]) == owner
    associated = {str(r.formal_attributes[1][1]) for r in relation(document, ProvAssociation, activity.identifier)}
    assert {str(service.identifier), str(person.identifier)} <= associated


# -- the served document of a real job ---------------------------------------------------------
def test_served_provenance_of_a_completed_job(standalone, sky_fits):
    """Run a job with a region, an HDU and detection knobs; check its PROV in every format."""
    session = standalone.session("alice")
    standalone.settings.public_url = f"http://127.0.0.1:{standalone.port}"  # job URLs in results are absolute
    # a region of interest inside the simulated image (its centre, in pixels: FITS 1-based, inclusive)
    job = pyvo_scenarios.create_job(standalone.url, session, sky_fits, HDU="0", PIXELS="1 200 1 180",
                                    RESPONSEFORMAT="votable")
    job.wait(timeout=60)
    job.raise_if_error()
    assert job.phase == "COMPLETED"
    url = pyvo_scenarios.result_url(job, "provenance")

    default = session.get(url)
    assert default.status_code == 200 and default.headers["Content-Type"].startswith("application/json")
    document = ProvDocument.deserialize(content=default.text, format="json")
    stored = session.get(f"{job.url}/parameters")
    tree = etree.fromstring(stored.content)
    parameters = {p.get("id"): (p.text or "") for p in tree.iter("{http://www.ivoa.net/xml/UWS/v1.0}parameter")}
    assert {"MODEL", "IMAGE", "HDU", "PIXELS", "RESPONSEFORMAT"} <= set(parameters)
    card = ModelRegistry([]).get("classic")
    check_job_document(
        document, job_url=job.url, owner="alice", parameters=parameters, hdu="0", region="PIXELS 1 200 1 180",
        image_sha=hashlib.sha256(sky_fits.read_bytes()).hexdigest(), card=card,
    )
    rows = attributes(one(document, ProvEntity, type="otf:Catalogue"))["rows"]
    assert int(rows) == len(job.fetch_result().to_table()) > 0

    provn = session.get(url, params={"RESPONSEFORMAT": "provn"})
    assert provn.status_code == 200 and provn.headers["Content-Type"].startswith("text/provenance-notation")
    assert provn.text.lstrip().startswith("document") and "activity(" in provn.text
    assert "wasGeneratedBy(" in provn.text and "wasDerivedFrom(" in provn.text
    assert "param:PIXELS" in provn.text

    xml = session.get(url, params={"RESPONSEFORMAT": "xml"})
    assert xml.status_code == 200 and xml.headers["Content-Type"].startswith("application/xml")
    root = etree.fromstring(xml.content)
    assert root.tag == f"{{{PROV_XML_NS}}}document"
    assert len(root.findall(f"{{{PROV_XML_NS}}}activity")) == 1
    assert root.find(f"{{{PROV_XML_NS}}}wasDerivedFrom") is not None
    reparsed = ProvDocument.deserialize(content=xml.content, format="xml")
    assert reparsed == document, "PROV-XML carries the same document as PROV-JSON"

    for alias in ("prov-n", "text/provenance-notation"):
        assert "activity(" in session.get(url, params={"RESPONSEFORMAT": alias}).text
    bad = session.get(url, params={"RESPONSEFORMAT": "pdf"})
    assert bad.status_code == 400 and "json, provn or xml" in bad.text
    # RESPONSEFORMAT only converts provenance; the catalogue is served as written
    assert session.get(job.result_uri, params={"RESPONSEFORMAT": "provn"}).status_code == 200

    other = standalone.session("bob").get(url)
    assert other.status_code in (403, 404) and b"sha256" not in other.content


# -- build_document from a ProvenanceRecord -----------------------------------------------------
@pytest.fixture
def record() -> ProvenanceRecord:
    card = dataclasses.replace(ModelRegistry([]).get("classic"), name="yolo-test", version="2.1", sha256="c0ffee" * 10 + "abcd",
                               family="yolo-cianna", weights_file=None, source_url="https://example.org/yolo.dat")
    return ProvenanceRecord(
        job_id="0123456789abcdef", job_url="https://hub.example.org/user/alice/cianna-otf/async/0123456789abcdef",
        owner="alice@example.org", started=datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc),
        ended=datetime(2026, 11, 21, 10, 0, 5, tzinfo=timezone.utc), card=card, image_name="field.fits",
        image_sha256="ab" * 32, hdu=1, region="CIRCLE 10.5 -30 0.2",
        parameters={"MODEL": "yolo-test", "IMAGE": "https://data.example.org/field.fits", "HDU": "1",
                    "CIRCLE": "10.5 -30 0.2", "PRECISION": "fp16", "THRESHOLD": "0.4"},
        device="cuda:0", precision="fp16", n_sources=42, catalogue_file="result.xml",
    )


def test_build_document(record):
    document = build_document(record)
    check_job_document(document, job_url=record.job_url, owner="alice@example.org", image_sha="ab" * 32,
                       parameters=record.parameters, hdu="1", region="CIRCLE 10.5 -30 0.2", card=record.card)
    activity = one(document, ProvActivity)
    assert activity.get_startTime() == record.started and activity.get_endTime() == record.ended
    assert str(attributes(activity)["precision"]) == "fp16" and str(attributes(activity)["device"]) == "cuda:0"
    model = attributes(one(document, ProvEntity, type="otf:Model"))
    assert str(model["location"]) == "https://example.org/yolo.dat" and str(model["family"]) == "yolo-cianna"
    assert int(attributes(one(document, ProvEntity, type="otf:Catalogue"))["rows"]) == 42
    assert str(attributes(one(document, ProvEntity, type="otf:Image"))["label"]) == "field.fits"


def test_build_document_defaults(record):
    """No owner, no end time, no HDU or region: still a valid document, in every format."""
    bare = dataclasses.replace(record, owner=None, ended=None, hdu=None, region=None, precision=None,
                               card=ModelRegistry([]).get("classic"))
    document = build_document(bare)
    assert str(attributes(one(document, ProvAgent, type=PROV["Person"]))["label"]) == "anonymous"
    assert one(document, ProvActivity).get_endTime() is not None  # "now" when the job has not recorded one
    image = attributes(one(document, ProvEntity, type="otf:Image"))
    assert "hdu" not in image and "region" not in image
    assert "precision" not in attributes(one(document, ProvActivity))


@pytest.mark.parametrize("fmt", ["json", "provn", "xml"])
def test_serialisations_round_trip(record, fmt):
    document = build_document(record)
    body = serialise(document, fmt)
    if fmt == "provn":
        text = body.decode()
        assert "activity(" in text and "param:THRESHOLD" in text and "prov:SoftwareAgent" in text
        return
    if fmt == "xml":
        etree.fromstring(body)  # well-formed XML: attribute names are valid element names
    again = ProvDocument.deserialize(content=body.decode(), format=fmt)
    assert again == document
    assert convert(serialise(document, "json"), fmt) == body


def test_unknown_format_is_refused(record):
    with pytest.raises(ValueError, match="json, provn or xml"):
        serialise(build_document(record), "ttl")


def test_a_request_host_header_never_reaches_results(standalone, sky_fits):
    """Without a configured public URL, results carry the job's path; a forged Host is not kept."""
    session = standalone.session("alice")
    forged = {"Host": "evil.example.org", "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example.org"}
    with open(sky_fits, "rb") as handle:
        made = session.post(f"{standalone.url}/async", data={"MODEL": "classic", "PHASE": "RUN"}, headers=forged,
                            files={"IMAGE": ("sky.fits", handle, "application/fits")}, allow_redirects=False)
    assert made.status_code == 303
    job = f"{standalone.url}{made.headers['Location']}"
    bob_job = pyvo_scenarios.create_job(standalone.url, standalone.session("bob"), sky_fits)
    bob_job.wait(timeout=60)
    for url, owner_session in ((job, session), (bob_job.url, standalone.session("bob"))):
        for _ in range(120):
            if owner_session.get(f"{url}/phase").text.strip() in ("COMPLETED", "ERROR"):
                break
            time.sleep(0.5)
        for result in ("provenance", "result"):
            body = owner_session.get(f"{url}/results/{result}").text
            assert "evil.example.org" not in body and "gopher" not in body
        assert "/async/" in owner_session.get(f"{url}/results/provenance").text
