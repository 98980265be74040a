"""The HTTP interface: thin tornado handlers over `JobService` and the model registry.

Handlers are written once as mixins and combined with a hosting-specific base class: the
standalone server's token-checking handler, or Jupyter's authenticated `JupyterHandler`. The
base supplies ``self.context`` (a `ServiceContext`) and ``self.owner`` (the user name).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tornado import web

from ..errors import UnknownModelError, UserInputError
from ..jobs._outcomes import without_server_paths
from ..jobs._request import is_image_url
from ..provenance import FORMATS as PROVENANCE_FORMATS
from ..provenance import convert as convert_provenance
from ..provenance import response_format as provenance_format
from ..uws import (
    ALL_OWNERS,
    PermissionDeniedError,
    InvalidRequestError,
    PayloadTooLargeError,
    Phase,
    UnknownResourceError,
    Upload,
    UWSError,
    error_votable,
    format_time,
    job_document,
    job_list_document,
    parameters_document,
    results_document,
)
from ._form import FORM_MEDIA_TYPES, StreamingForm, UnsupportedMediaTypeError
from ._query import job_filter, wait_request

log = logging.getLogger(__name__)

XML = "application/xml; charset=UTF-8"
TEXT = "text/plain; charset=UTF-8"
FORM_OVERHEAD = 1024 * 1024  # multipart boundaries and the other form fields
FILE_BLOCK = 1024 * 1024  # bytes of a file sent at a time
VOTABLE = "application/x-votable+xml"


class ServiceHandlerMixin:
    """Shared helpers: form parameters, error rendering, XML and redirects."""

    context: Any  # ServiceContext, supplied by the base
    owner: str | None  # the authenticated user, supplied by the base
    endpoint = "other"

    # provided by tornado.web.RequestHandler
    request: Any
    set_status: Any
    set_header: Any
    finish: Any
    write: Any
    redirect: Any

    @property
    def service(self):
        return self.context.service

    @property
    def reach(self) -> str | None:
        """Whose jobs this request may see and change: its user's, or every owner's for an administrator.

        Jobs are always created in the user's own name (`owner`); a service administrator (on a
        JupyterHub, a token with the service's admin scope) lists, reads, aborts and deletes
        anyone's, so that a platform's operators can clear a runaway survey.
        """
        return ALL_OWNERS if getattr(self, "admin", False) else self.owner

    # -- request bodies: streamed, so an oversized upload is refused (413) before it is read ----
    def start_body(self) -> None:
        """Check the declared size and prepare to parse the body as it arrives; called by the base's prepare."""
        limit = self.context.config.max_upload_bytes + FORM_OVERHEAD
        self._body_size = 0
        self._uploads: list[Upload] = []
        declared = self.request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            self.set_header("Connection", "close")
            raise web.HTTPError(413, "the request body is %d bytes; uploads are limited to %d bytes",
                                int(declared), self.context.config.max_upload_bytes)
        connection = getattr(self.request, "connection", None)
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(limit)
        self._form = StreamingForm(self.request.headers.get("Content-Type", ""), self.context.data_dir / "tmp")

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size <= self.context.config.max_upload_bytes + FORM_OVERHEAD:
            self._form.write(chunk)  # uploaded files go to disk as they arrive

    def parse_body(self) -> None:
        """Finish the streamed form body (urlencoded or multipart): its fields become arguments."""
        form = getattr(self, "_form", None)
        if form is None:
            return
        if self._body_size > self.context.config.max_upload_bytes + FORM_OVERHEAD:
            raise PayloadTooLargeError(
                f"the request body is {self._body_size} bytes; uploads are limited to "
                f"{self.context.config.max_upload_bytes} bytes")
        form.finish()
        for name, value in form.fields:
            self.request.body_arguments.setdefault(name, []).append(value)
            self.request.arguments.setdefault(name, []).append(value)
        self._uploads = list(form.uploads)

    def on_finish(self) -> None:
        form = getattr(self, "_form", None)
        if form is not None:  # what no job kept
            form.cleanup()
        self.context.metrics.http_requests.labels(self.endpoint, str(self.get_status())).inc()
        started = getattr(self, "_started", None)
        if started is not None:
            self.context.metrics.request_seconds.labels(self.endpoint).observe(time.perf_counter() - started)

    def form_parameters(self) -> list[tuple[str, str]]:
        """Every query and body parameter as (name, value), in order, names as sent."""
        pairs: list[tuple[str, str]] = []
        for name, values in self.request.arguments.items():
            for value in values:
                try:
                    pairs.append((name, value.decode("utf-8")))
                except UnicodeDecodeError:
                    raise InvalidRequestError(f"parameter {name!r} is not valid UTF-8") from None
        return pairs

    def parameter(self, name: str) -> str | None:
        """The last value of a parameter, matched case-insensitively (UWS parameter names)."""
        found = None
        for key, value in self.form_parameters():
            if key.upper() == name.upper():
                found = value
        return found

    def uploads(self) -> list[Upload]:
        """The files of the request's multipart body, received into the scratch folder."""
        return list(getattr(self, "_uploads", []))

    def send_xml(self, body: bytes) -> None:
        self.set_header("Content-Type", XML)
        self.finish(body)

    async def send_file(self, path: Path, media_type: str) -> None:
        """A file as the response body, a block at a time (a 4 GB uploaded image never sits in memory)."""
        self.set_header("Content-Type", media_type)
        self.set_header("Content-Length", str(path.stat().st_size))
        with path.open("rb") as handle:
            while block := handle.read(FILE_BLOCK):
                self.write(block)
                await self.flush()
        self.finish()

    def send_text(self, text: str) -> None:
        self.set_header("Content-Type", TEXT)
        self.finish(text)

    def see_other(self, url: str) -> None:
        self.redirect(url, status=303)

    def job_url(self, job_id: str) -> str:
        return self.context.href(job_id)

    def job_list_url(self) -> str:
        return f"{self.context.root_path}async"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Plain-text errors a person can read; never a stack trace."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = "internal server error; the service log has the details"
        else:
            message = self._reason
        if status_code == 401:  # RFC 9110: a 401 names the scheme (send_error cleared the base's header)
            self.set_header("WWW-Authenticate", 'Bearer realm="cianna-otf"')
        if status_code == 503 and getattr(exc, "retry_after", None):  # a refusal that says when to retry
            self.set_header("Retry-After", str(exc.retry_after))
        self.set_header("Content-Type", TEXT)
        self.finish(f"{message}\n")

    def handle(self, exc: Exception) -> None:
        """Turn a service error into its status code and message."""
        if isinstance(exc, UWSError):
            status = exc.status
            if exc.retry_after:
                self.set_header("Retry-After", str(exc.retry_after))
            if isinstance(exc, UnsupportedMediaTypeError):  # RFC 9110 15.5.16: say what is accepted
                self.set_header("Accept-Post", ", ".join(FORM_MEDIA_TYPES))
        elif isinstance(exc, UserInputError):
            status = 400
        else:
            raise exc
        self.set_status(status)
        self.set_header("Content-Type", TEXT)
        self.finish(f"{self.client_message(exc)}\n")

    def client_message(self, exc: Exception) -> str:
        """An error's text for the client: data-root paths shown under their root, other server paths by name."""
        roots = getattr(self.context.policy, "data_roots", ())
        return without_server_paths(str(exc), roots)


def _guard(method):
    """Run a handler method, rendering service errors as plain-text responses."""

    async def wrapper(self, *args, **kwargs):
        self._started = time.perf_counter()
        try:
            self.parse_body()
            result = method(self, *args, **kwargs)
            if hasattr(result, "__await__"):
                await result
        except (UWSError, UserInputError) as exc:
            self.handle(exc)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class ServiceRootHandler(ServiceHandlerMixin):
    endpoint = "root"

    @_guard
    def get(self) -> None:
        root = self.context.root_path
        from .. import __version__

        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "service": "CIANNA On-The-Fly",
            "version": __version__,
            "uws": f"{root}async",
            "sync": f"{root}sync",
            "models": f"{root}models",
            "models_match": f"{root}models/match",
            "metrics": f"{root}metrics",
            "user": self.owner,
        }))


class ModelsHandler(ServiceHandlerMixin):
    """``GET /models``: the model cards; ``GET /models?image=REF``: the same, ranked for that image.

    With ``image`` (an http(s) URL, where the service fetches images, or a path under a data
    root, checked as the job parameter IMAGE is) and optionally ``hdu``, ``unit`` and ``beam``
    (as the job parameters), the cards come best fit first, each with ``fit`` (0-1),
    ``reason`` (one sentence on the fit; for an unavailable model, why it cannot run),
    ``warnings``, ``convention``, ``zoom`` and ``notes``, and the answer adds ``image`` (the
    traits the ranking used) and ``warnings`` (the image reader's). Without ``image`` the
    answer is the plain card list.
    """

    endpoint = "models"

    def _wants_xml(self) -> bool:
        accept = self.request.headers.get("Accept", "")
        return "xml" in accept and "json" not in accept

    def send_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    @_guard
    async def get(self, name: str | None = None) -> None:
        registry = self.context.registry
        if name is None:
            entries = registry.list() if hasattr(registry, "list") else []
            cards = [_entry_dict(entry) for entry in entries]
            for card in cards:  # clients preselect it (the notebook widget's model picker)
                card["default"] = card.get("name") == self.context.config.default_model
            if self.parameter("IMAGE") is not None:
                match = await self.run_match()
                self._send_ranked_cards(cards, match)
                return
            if self._wants_xml():
                self.send_xml(_models_xml(cards))
            else:
                self.send_json({"models": cards})
            return
        try:
            card = registry.get(name)
        except UnknownModelError as exc:  # an unknown resource, not a bad request
            raise UnknownResourceError(str(exc)) from None
        data = card.to_dict()
        if self._wants_xml():
            self.send_xml(_models_xml([data]))
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(data, default=str))


    # -- ranking the models for an image -------------------------------------------------------
    def match_request(self) -> tuple[Upload | None, str | None, dict[str, Any]]:
        """The image (an upload, or a checked reference) and the HDU/UNIT/BEAM options; 400 when wrong."""
        from ..jobs._parameters import check_beam, check_hdu, check_unit

        values: dict[str, str] = {}
        for key, value in self.form_parameters():
            upper = key.upper()
            upper = "UNIT" if upper == "BUNIT" else upper
            if upper == "_XSRF":  # Jupyter's XSRF form field
                continue
            if upper not in MATCH_PARAMETERS:
                raise InvalidRequestError(f"unknown parameter {key!r}; the models are matched to IMAGE, "
                                          "with HDU, UNIT and BEAM optional")
            values[upper] = value.strip()
        uploads = self.uploads()
        for upload in uploads:
            if upload.name.upper() != "IMAGE":
                raise InvalidRequestError(f"only IMAGE can be uploaded as a file, not {upload.name}")
        if len(uploads) > 1:
            raise InvalidRequestError("upload one IMAGE")
        upload = uploads[0] if uploads else None
        reference = None
        if upload is not None:
            if "IMAGE" in values:
                raise InvalidRequestError("give IMAGE once: as an upload or as a URL or path, not both")
            limit = self.context.config.max_upload_bytes
            if upload.size > limit:
                raise PayloadTooLargeError(f"upload {upload.name!r} is {upload.size} bytes; the limit is {limit}")
        elif "IMAGE" in values:
            reference = self.context.policy.check_image_reference(values["IMAGE"])
        else:
            raise InvalidRequestError("IMAGE is missing: upload a FITS file (or only its header) as IMAGE, "
                                      "or give its http(s) URL or its path under a data directory")
        options: dict[str, Any] = {"hdu": check_hdu(values["HDU"]) if "HDU" in values else None}
        if values.get("UNIT"):
            check_unit(values["UNIT"])
        if values.get("BEAM"):
            check_beam(values["BEAM"])
        options["unit"] = values.get("UNIT") or None
        options["beam"] = values.get("BEAM") or None
        return upload, reference, options

    async def run_match(self):
        """Rank the models for the request's image, opening and measuring it in a worker thread."""
        upload, reference, options = self.match_request()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.context.blocking, _match_image, self.context, upload,
                                          reference, options)

    def _send_ranked_cards(self, cards: list[dict[str, Any]], match: Any) -> None:
        by_name = {card.get("name"): card for card in cards}
        ranked: list[dict[str, Any]] = []
        for plan in match.model_dicts():
            card = by_name.pop(plan["model"], None)
            if card is None:
                continue
            usable = card.get("status", "available") == "available"
            card.update({key: plan[key] for key in ("fit", "warnings", "convention", "zoom", "notes", "checked")})
            if usable or not card.get("reason"):
                card["reason"] = plan["reason"]
            ranked.append(card)
        ranked.extend(by_name.values())  # broken cards: nothing to rank
        if self._wants_xml():
            self.send_xml(_models_xml(ranked, image=match.image_dict(), warnings=match.warnings))
        else:
            self.send_json({"image": match.image_dict(), "models": ranked, "warnings": match.warnings})


class ModelMatchHandler(ModelsHandler):
    """``POST /models/match``: which model fits this image? No job is made.

    Parameters (names case-insensitive, form or query): ``IMAGE``, a multipart upload of a FITS
    file (within the upload limit; a file of FITS header records alone, without data, is
    accepted and then the noise is not measured and the noise checks are skipped), or a
    reference, an http(s) URL (where the service fetches images) or a path under a data root,
    checked as the job parameter is; ``HDU``, ``UNIT`` (or ``BUNIT``) and ``BEAM``, as the job
    parameters. Answers ``{"image": {...}, "models": [...], "warnings": [...]}``: the traits
    the ranking used (beam in pixels, pixel scale in arcsec, unit, noise in Jy/beam, size,
    HDU), every model's plan best fit first (``model``, ``fit`` 0-1, ``reason``,
    ``warnings``, ``notes``, ``convention``, ``zoom``, ``status``, ``default``), and the
    image reader's warnings; XML with ``Accept: application/xml``. An unreadable FITS file, an
    unknown HDU or a bad UNIT or BEAM is a 400 with the reason. ``GET /models/match`` with
    ``IMAGE`` does the same for a reference; without it, it is the card of a model named
    "match" (404 when there is none).
    """

    endpoint = "models_match"

    @_guard
    async def get(self) -> None:  # type: ignore[override]
        if self.parameter("IMAGE") is None:
            await ModelsHandler.get(self, "match")
            return
        await self._send_match()

    @_guard
    async def post(self) -> None:
        await self._send_match()

    async def _send_match(self) -> None:
        match = await self.run_match()
        data = match.to_dict()
        if self._wants_xml():
            self.send_xml(_match_xml(data))
        else:
            self.send_json(data)


MATCH_PARAMETERS = {"IMAGE", "HDU", "UNIT", "BEAM"}


def _match_image(context: Any, upload: Upload | None, reference: str | None, options: dict[str, Any]) -> Any:
    """Open the image (an upload written to a temporary file, a download, or a data-root path) and rank."""
    from ..model_match import match_file

    scratch = context.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="match-") as folder:
        if upload is not None:
            name = _safe_name(upload.filename)
            path = Path(folder) / name
            os.replace(upload.path, path)
        elif reference is not None and is_image_url(reference):
            name = _safe_name(Path(urlparse(reference).path).name)
            path = context.runner.preparer.fetcher.download(reference, Path(folder) / "image.fits")
        else:
            path = Path(str(reference))
            name = path.name
        return match_file(path, context.registry, default_model=context.config.default_model, name=name, **options)


def _safe_name(filename: str | None) -> str:
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(filename or "").name).lstrip(".")
    return name[:200] or "image.fits"


def _entry_dict(entry: Any) -> dict[str, Any]:
    if hasattr(entry, "to_dict"):
        return entry.to_dict()
    card = getattr(entry, "card", None)
    data = card.to_dict() if card is not None else {"name": getattr(entry, "name", str(entry))}
    for key in ("available", "reason", "status"):
        if hasattr(entry, key):
            data[key] = getattr(entry, key)
    return data


def _models_xml(cards: list[dict[str, Any]], image: dict[str, Any] | None = None,
                warnings: list[str] | None = None) -> bytes:
    """``<models>`` with one ``<model name=...>`` per card (nested values as JSON text); for a
    ranking, also the ``<image>`` traits and the reader's ``<warnings>``."""
    from lxml import etree

    root = etree.Element("models")
    for card in cards:
        model = etree.SubElement(root, "model", name=str(card.get("name")))
        for key, value in card.items():
            if key == "name" or value is None:
                continue
            child = etree.SubElement(model, key)
            child.text = json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)
    if image is not None:
        _xml_fields(etree.SubElement(root, "image"), image)
    if warnings is not None:
        _xml_list(root, "warnings", "warning", warnings)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _match_xml(data: dict[str, Any]) -> bytes:
    """The ``/models/match`` answer as XML: ``<match>`` holding ``<image>``, ``<models>`` (one
    ``<model name=...>`` each, best first, lists as ``<warning>``/``<note>`` elements) and ``<warnings>``."""
    from lxml import etree

    root = etree.Element("match")
    _xml_fields(etree.SubElement(root, "image"), data["image"])
    models = etree.SubElement(root, "models")
    for plan in data["models"]:
        model = etree.SubElement(models, "model", name=str(plan["model"]))
        _xml_fields(model, {k: v for k, v in plan.items() if k not in ("model", "image")})
    _xml_list(root, "warnings", "warning", data["warnings"])
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _xml_fields(parent: Any, values: dict[str, Any]) -> None:
    from lxml import etree

    singular = {"warnings": "warning", "notes": "note"}
    for key, value in values.items():
        if value is None:
            continue
        if key in singular and isinstance(value, (list, tuple)):
            _xml_list(parent, key, singular[key], value)
            continue
        child = etree.SubElement(parent, key)
        if isinstance(value, bool):
            child.text = "true" if value else "false"
        elif isinstance(value, (dict, list, tuple)):
            child.text = json.dumps(value, default=str)
        else:
            child.text = str(value)


def _xml_list(parent: Any, name: str, item: str, values: Any) -> None:
    from lxml import etree

    holder = etree.SubElement(parent, name)
    for value in values:
        etree.SubElement(holder, item).text = str(value)


class JobListHandler(ServiceHandlerMixin):
    endpoint = "jobs"

    @_guard
    def get(self) -> None:
        jobs = self.service.list_jobs(self.reach, job_filter(self.form_parameters()))
        self.send_xml(job_list_document(jobs, self.context.href))

    @_guard
    def post(self) -> None:
        job = self.service.create(self.owner, self.form_parameters(), self.uploads())
        self.context.metrics.jobs_created.labels(job.parameter("MODEL") or "").inc()
        self.see_other(self.job_url(job.job_id))


class JobHandler(ServiceHandlerMixin):
    endpoint = "job"

    @_guard
    async def get(self, job_id: str) -> None:
        wait = wait_request(self.form_parameters())
        if wait is None:
            job = self.service.get(self.reach, job_id)
        else:
            job = await self.service.wait(self.reach, job_id, *wait)
        self.send_xml(job_document(job, self.context.href))

    @_guard
    def post(self, job_id: str) -> None:
        action = (self.parameter("ACTION") or "").upper()
        if action == "DELETE":
            self.service.delete(self.reach, job_id)
            self.see_other(self.job_list_url())
            return
        if action:
            raise InvalidRequestError(f"ACTION={action} is not supported; only ACTION=DELETE")
        self.service.update_parameters(self.reach, job_id, self.form_parameters(), self.uploads())
        self.see_other(self.job_url(job_id))

    @_guard
    def delete(self, job_id: str) -> None:
        self.service.delete(self.reach, job_id)
        self.see_other(self.job_list_url())


class PhaseHandler(ServiceHandlerMixin):
    endpoint = "phase"

    @_guard
    def get(self, job_id: str) -> None:
        self.send_text(self.service.get(self.reach, job_id).phase.value)

    @_guard
    def post(self, job_id: str) -> None:
        phase = (self.parameter("PHASE") or "").upper()
        if phase == "RUN":
            self.service.start(self.reach, job_id)
        elif phase == "ABORT":
            self.service.abort(self.reach, job_id)
        else:
            raise InvalidRequestError("PHASE must be RUN or ABORT")
        self.see_other(self.job_url(job_id))


class ExecutionDurationHandler(ServiceHandlerMixin):
    endpoint = "executionduration"

    @_guard
    def get(self, job_id: str) -> None:
        self.send_text(str(self.service.get(self.reach, job_id).execution_duration))

    @_guard
    def post(self, job_id: str) -> None:
        value = self.parameter("EXECUTIONDURATION")
        if value is None:
            raise InvalidRequestError("give EXECUTIONDURATION=seconds")
        self.service.update_execution_duration(self.reach, job_id, value)
        self.see_other(self.job_url(job_id))


class DestructionHandler(ServiceHandlerMixin):
    endpoint = "destruction"

    @_guard
    def get(self, job_id: str) -> None:
        job = self.service.get(self.reach, job_id)
        self.send_text(format_time(job.destruction) if job.destruction else "")

    @_guard
    def post(self, job_id: str) -> None:
        value = self.parameter("DESTRUCTION")
        if value is None:
            raise InvalidRequestError("give DESTRUCTION=ISO 8601 instant")
        self.service.update_destruction(self.reach, job_id, value)
        self.see_other(self.job_url(job_id))


class QuoteHandler(ServiceHandlerMixin):
    endpoint = "quote"

    @_guard
    def get(self, job_id: str) -> None:
        job = self.service.get(self.reach, job_id)
        self.send_text(format_time(job.quote) if job.quote else "")


class OwnerHandler(ServiceHandlerMixin):
    endpoint = "owner"

    @_guard
    def get(self, job_id: str) -> None:
        self.send_text(self.service.get(self.reach, job_id).owner or "")


class ErrorHandler(ServiceHandlerMixin):
    endpoint = "error"

    @_guard
    def get(self, job_id: str) -> None:
        job = self.service.get(self.reach, job_id)
        if job.error is None:
            raise UnknownResourceError(f"job {job_id} is {job.phase.value} and has no error")
        self.set_header("Content-Type", VOTABLE)
        self.finish(error_votable(job.error.message))


class ResultsHandler(ServiceHandlerMixin):
    endpoint = "results"

    @_guard
    def get(self, job_id: str) -> None:
        self.send_xml(results_document(self.service.get(self.reach, job_id), self.context.href))


class ResultHandler(ServiceHandlerMixin):
    endpoint = "result"

    @_guard
    async def get(self, job_id: str, result_id: str) -> None:
        path, result = self.service.result_path(self.reach, job_id, result_id)
        if not path.is_file():
            raise UnknownResourceError(f"the file of result {result_id!r} is missing")
        requested = self.parameter("RESPONSEFORMAT")
        disposition = f'inline; filename="{job_id}-{result_id}{path.suffix}"'
        if result_id == "provenance" and requested:
            fmt = provenance_format(requested)
            self.set_header("Content-Type", PROVENANCE_FORMATS[fmt])
            self.set_header("Content-Disposition", disposition)
            self.finish(convert_provenance(path.read_bytes(), fmt))
            return
        self.set_header("Content-Disposition", disposition)
        await self.send_file(path, result.mime_type)


class ParametersHandler(ServiceHandlerMixin):
    endpoint = "parameters"

    @_guard
    def get(self, job_id: str) -> None:
        self.send_xml(parameters_document(self.service.get(self.reach, job_id), self.context.href))

    @_guard
    def post(self, job_id: str) -> None:
        self.service.update_parameters(self.reach, job_id, self.form_parameters(), self.uploads())
        self.see_other(self.job_url(job_id))


class ParameterHandler(ServiceHandlerMixin):
    endpoint = "parameter"

    @_guard
    async def get(self, job_id: str, name: str) -> None:
        job = self.service.get(self.reach, job_id)
        for parameter in job.parameters:
            if parameter.name.upper() == name.upper():
                if parameter.by_reference:
                    path = self.service.upload_path(self.reach, job_id, parameter.name)
                    await self.send_file(path, "application/octet-stream")
                else:
                    self.send_text(parameter.value)
                return
        raise UnknownResourceError(f"job {job_id} has no parameter {name!r}")


class SyncHandler(ServiceHandlerMixin):
    """Synchronous detection: run a small job and redirect to its catalogue."""

    endpoint = "sync"

    @_guard
    async def get(self) -> None:
        await self._run()

    @_guard
    async def post(self) -> None:
        await self._run()

    async def _run(self) -> None:
        job = await self.service.run_sync(self.owner, self.form_parameters(), self.uploads(),
                                          self.context.config.sync_timeout_seconds)
        if job.phase == Phase.COMPLETED:
            self.see_other(self.context.href(job.job_id, "results/result"))
        elif job.phase == Phase.ERROR:
            self.set_status(400)
            self.set_header("Content-Type", VOTABLE)
            self.finish(error_votable(job.error.message if job.error else "the job failed"))
        else:  # still running: continue as an asynchronous job
            self.see_other(self.job_url(job.job_id))


class MetricsHandler(ServiceHandlerMixin):
    endpoint = "metrics"

    @_guard
    def get(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST

        if getattr(self, "admins_only_metrics", False) and not getattr(self, "admin", False):
            # a shared service's figures (every user's jobs and queues) are its operators'
            raise PermissionDeniedError("the service's metrics are for its administrators")

        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.context.metrics.exposition())


ROUTES: list[tuple[str, type]] = [
    (r"", ServiceRootHandler),
    (r"models", ModelsHandler),
    (r"models/match", ModelMatchHandler),  # before models/NAME, which it would otherwise be
    (r"models/([^/]+)", ModelsHandler),
    (r"async", JobListHandler),
    (r"async/([^/]+)", JobHandler),
    (r"async/([^/]+)/phase", PhaseHandler),
    (r"async/([^/]+)/executionduration", ExecutionDurationHandler),
    (r"async/([^/]+)/destruction", DestructionHandler),
    (r"async/([^/]+)/quote", QuoteHandler),
    (r"async/([^/]+)/owner", OwnerHandler),
    (r"async/([^/]+)/error", ErrorHandler),
    (r"async/([^/]+)/results", ResultsHandler),
    (r"async/([^/]+)/results/([^/]+)", ResultHandler),
    (r"async/([^/]+)/parameters", ParametersHandler),
    (r"async/([^/]+)/parameters/([^/]+)", ParameterHandler),
    (r"sync", SyncHandler),
    (r"metrics", MetricsHandler),
]


def make_handlers(root_pattern: str, base: type, init: dict[str, Any]) -> list[tuple[str, type, dict[str, Any]]]:
    """URL specs for every route, each mixin combined with the hosting mode's `base` handler.

    `root_pattern` is the regex of the service root (ends in "/"); `init` is passed to each
    handler's ``initialize``.
    """
    specs = []
    cache: dict[type, type] = {}
    for suffix, mixin in ROUTES:
        handler = cache.get(mixin)
        if handler is None:
            handler = web.stream_request_body(type(mixin.__name__, (mixin, base), {"__doc__": mixin.__doc__}))
            cache[mixin] = handler
        # "/*": tolerate a doubled slash, as pyvo makes from a service URL that ends in "/"
        pattern = root_pattern + "/*" + suffix if suffix else root_pattern + "?"
        specs.append((pattern + "/?$" if suffix else pattern + "$", handler, init))
    return specs
