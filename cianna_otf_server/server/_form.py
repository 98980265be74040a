"""Request bodies parsed as they arrive: uploaded files go to disk, never whole into memory.

A 4 GB survey image posted as multipart form data is written chunk by chunk into a file in the
service's scratch folder (`python_multipart`'s streaming parser); the handler sees the form
fields as usual and each uploaded file as an `Upload` with its path and size, which the job
store then moves into the job's folder. URL-encoded forms, which hold no file, are kept in
memory up to `MAX_FIELDS_BYTES` and decoded at the end. Any other body (XML, JSON, text...)
carries parameters the service cannot read: it is refused (415) rather than taken for an empty
form, which would make a job without any of the parameters meant for it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

from python_multipart import FormParser
from python_multipart.exceptions import FormParserError

from ..uws import InvalidRequestError, PayloadTooLargeError, Upload, UWSError, file_error

__all__ = ["StreamingForm", "UnsupportedMediaTypeError", "FORM_MEDIA_TYPES"]

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"
#: The request bodies the service reads parameters from.
FORM_MEDIA_TYPES = (URLENCODED, MULTIPART)
#: Largest URL-encoded body (form fields only: files come as multipart).
MAX_FIELDS_BYTES = 1024 * 1024


class UnsupportedMediaTypeError(UWSError):
    """A request body in a media type the service does not read (415); the message lists those it does."""

    status = 415


class StreamingForm:
    """Parses one request body fed in chunks; `finish` gives the fields and the uploaded files.

    Parameters
    ----------
    content_type : str
        The request's Content-Type (with the multipart boundary).
    scratch : Path
        Folder for the uploaded files while the request is handled (on the same file system as
        the job folders, so that keeping an upload is a rename).
    """

    def __init__(self, content_type: str, scratch: Path) -> None:
        self.fields: list[tuple[str, bytes]] = []
        self.uploads: list[Upload] = []
        self._parser: FormParser | None = None
        self._folder: Path | None = None
        self._encoded: bytearray | None = None
        self._error: Exception | None = None  # kept until `finish`: raising while data arrives drops the connection
        self._unsupported: str | None = None
        kind = content_type.split(";", 1)[0].strip().lower()
        if kind == URLENCODED:
            self._encoded = bytearray()
            return
        if kind != MULTIPART:
            # no form: fine without a body (query parameters only); a body is refused when it arrives
            self._unsupported = kind or "a body without a Content-Type"
            return
        try:
            scratch.mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
        except OSError as exc:
            self._error = _disk_failure(exc)
            return
        config = {"UPLOAD_DIR": str(self._folder), "MAX_MEMORY_FILE_SIZE": 0, "UPLOAD_DELETE_TMP": False}
        try:
            self._parser = FormParser(MULTIPART, self._on_field, self._on_file,
                                      boundary=_boundary(content_type), config=config)
        except (FormParserError, ValueError) as exc:
            # kept for `finish`, like every body error: raised here it would escape the handler's
            # error answers (a 500 and a dropped connection instead of the 400)
            self._error = InvalidRequestError(f"the request body is not a valid form: {exc}")
            self.cleanup()

    def write(self, chunk: bytes) -> None:
        """Feed the next part of the body (a malformed body is reported by `finish`)."""
        if self._error is not None:
            return
        if self._unsupported is not None:
            if chunk:
                self._error = UnsupportedMediaTypeError(
                    f"the request body is {self._unsupported}; send the parameters as "
                    f"{' or '.join(FORM_MEDIA_TYPES)}")
            return
        if self._encoded is not None:
            if len(self._encoded) + len(chunk) > MAX_FIELDS_BYTES:
                self._error = PayloadTooLargeError(f"a form without files is limited to {MAX_FIELDS_BYTES} bytes")
                self._encoded = bytearray()
                return
            self._encoded.extend(chunk)
            return
        if self._parser is None:
            return
        try:
            self._parser.write(chunk)
        except OSError as exc:  # the scratch folder's disk (full, read-only): the service's failure
            self._error = _disk_failure(exc)
        except FormParserError as exc:
            self._error = InvalidRequestError(f"the request body is not a valid form: {exc}")

    def finish(self) -> None:
        """The body is complete: flush the last part; raise what went wrong while it arrived."""
        if self._error is not None:
            raise self._error
        if self._encoded is not None:
            try:
                text = bytes(self._encoded).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequestError("the form is not valid UTF-8") from None
            self.fields.extend((k, v.encode("utf-8")) for k, v in parse_qsl(text, keep_blank_values=True))
            self._encoded = None
            return
        if self._parser is None:
            return
        try:
            self._parser.finalize()
        except OSError as exc:
            failure = _disk_failure(exc)
            if failure is exc:
                raise
            raise failure from exc
        except FormParserError as exc:
            raise InvalidRequestError(f"the request body is not a valid form: {exc}") from None

    def cleanup(self) -> None:
        """Delete what was received and not kept (a job's upload has been moved away by then)."""
        if self._folder is None:
            return
        for path in self._folder.iterdir():
            try:  # the space comes back now, even while the parser still holds a part it failed to write
                os.truncate(path, 0)
            except OSError:
                pass
            path.unlink(missing_ok=True)
        self._folder.rmdir()
        self._folder = None

    def _on_field(self, field) -> None:
        name = field.field_name.decode("latin-1") if isinstance(field.field_name, bytes) else str(field.field_name)
        self.fields.append((name, field.value or b""))

    def _on_file(self, file) -> None:
        if file.in_memory:  # with no in-memory size allowed, parts are on disk already
            file.flush_to_disk()
        file.close()
        name = file.field_name.decode("latin-1") if isinstance(file.field_name, bytes) else str(file.field_name)
        filename = file.file_name.decode("utf-8", "replace") if isinstance(file.file_name, bytes) else file.file_name
        path = Path(os.fsdecode(file.actual_file_name)) if file.actual_file_name else None
        if path is None:  # an empty part: keep an empty file so the job sees what was sent
            assert self._folder is not None
            path = Path(tempfile.mkstemp(dir=self._folder)[1])
        self.uploads.append(Upload(name, filename or "", path, int(file.size)))


def _disk_failure(exc: OSError) -> Exception:
    """What a failed write of an upload tells the client: a full disk is 507, not a bad form."""
    context = exc.__context__  # python_multipart's FileError wraps the OSError it met
    cause = context if exc.errno is None and isinstance(context, OSError) else exc
    return file_error(cause, "receive the upload") or exc


def _boundary(content_type: str) -> bytes | None:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"').encode("latin-1")
    return None
