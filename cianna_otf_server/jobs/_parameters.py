"""Detection job parameters: names, syntax and ranges, checked when a job is created.

Everything that can be checked without opening the image is checked here, so a typo gets a
400 at once instead of a job that fails later; what needs the image (does the region overlap
it?) is checked when the job runs and ends in ERROR with a clear summary.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlparse

from ..catalogue import FORMAT_NAMES, catalogue_format, format_for_media_type
from ..errors import UnknownModelError
from ..models import DEFAULT_MODEL
from ..uws import InvalidRequestError, Job, JobParameter, ValidatedParameters
from ._url_policy import UrlPolicy, UrlRefused
from ._request import (REGION_KEYS, DetectionRequest, ImagePath, ImageSource, ImageUrl,
                       UploadedImage)

PRECISIONS = ("fp32", "fp16", "bf16")
#: Overrides of what the image header says (or fails to say): its brightness unit and restoring beam.
HEADER_OVERRIDES = ("UNIT", "BEAM")
KNOWN = {"MODEL", "PRECISION", "IMAGE", "HDU", "THRESHOLD", "NMS", "MIN_SIZE", "RESPONSEFORMAT", *REGION_KEYS,
         *HEADER_OVERRIDES, "BUNIT"}


def _number(name: str, value: str, low: float | None = None, high: float | None = None) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number, not {shown(value)!r}") from None
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidRequestError(f"{name} must be {bounds}, not {value}")
    return number


def _numbers(name: str, text: str, count: int | None = None, minimum: int | None = None) -> list[float]:
    values = []
    for token in text.replace(",", " ").split():
        try:
            values.append(float(token))
        except ValueError:
            raise InvalidRequestError(f"{name}: {token!r} is not a number") from None
    if count is not None and len(values) != count:
        raise InvalidRequestError(f"{name} takes {count} numbers, got {len(values)}")
    if minimum is not None and len(values) < minimum:
        raise InvalidRequestError(f"{name} takes at least {minimum} numbers, got {len(values)}")
    return values


def check_region_syntax(key: str, value: str) -> str:
    """Check a SODA region parameter's shape (numbers and counts) without an image."""
    text = value.strip()
    if key == "CIRCLE":
        ra, dec, radius = _numbers("CIRCLE", text, 3)
        if not (-90 <= dec <= 90) or radius <= 0 or radius > 180:
            raise InvalidRequestError("CIRCLE takes 'ra dec radius' in degrees with -90 <= dec <= 90 and radius > 0")
        return f"CIRCLE {text}"
    if key == "POLYGON":
        values = _numbers("POLYGON", text, minimum=6)
        if len(values) % 2:
            raise InvalidRequestError("POLYGON takes pairs 'ra dec' of at least 3 vertices")
        return f"POLYGON {text}"
    if key == "POS":
        words = text.split(None, 1)
        shape = words[0].upper() if words else ""
        rest = words[1] if len(words) > 1 else ""
        if shape == "RANGE":
            tokens = rest.replace(",", " ").split()
            if len(tokens) != 4:
                raise InvalidRequestError("POS=RANGE takes 'ra1 ra2 dec1 dec2'")
            for token in tokens:
                if token.lower() not in ("-inf", "+inf", "inf"):
                    _numbers("POS=RANGE", token, 1)
            return f"RANGE {rest}"
        if shape in ("CIRCLE", "POLYGON"):
            return check_region_syntax(shape, rest)
        raise InvalidRequestError("POS must start with CIRCLE, POLYGON or RANGE")
    if key == "PIXELS":
        x1, x2, y1, y2 = _numbers("PIXELS", text, 4)
        if x2 < x1 or y2 < y1 or min(x1, y1) < 1:
            raise InvalidRequestError("PIXELS takes 'x1 x2 y1 y2' (FITS 1-based, inclusive) with x1 <= x2 and y1 <= y2")
        return text
    raise InvalidRequestError(f"unknown region parameter {key}")


def shown(value: str, limit: int = 80) -> str:
    """A user's value as quoted back in an error: cut short, so an error never echoes a long input."""
    return value if len(value) <= limit else value[:limit] + "..."


class DetectionParameterPolicy:
    """Validates detection parameters against the model registry and the configured data roots.

    Parameters
    ----------
    registry : the model registry (``get(name)`` raises `UnknownModelError`).
    data_roots : directories from which images may be referenced by path.
    allow_http : whether IMAGE may be an http(s) URL that the server downloads.
    default_model : model used when MODEL is absent.
    """

    def __init__(self, registry, data_roots: list[Path] | None = None, allow_http: bool = True,
                 default_model: str = DEFAULT_MODEL, url_policy: UrlPolicy | None = None) -> None:
        self.registry = registry
        self.data_roots = [Path(p).resolve() for p in (data_roots or [])]
        self.url_policy = url_policy or UrlPolicy(enabled=allow_http)
        self.allow_http = self.url_policy.enabled
        self.default_model = default_model

    def validate(self, parameters: list[JobParameter]) -> ValidatedParameters:
        """The canonical parameters and the typed request (`DetectionRequest.to_spec`, None without IMAGE).

        Raises `InvalidRequestError` (400) with a clear message for anything wrong.
        """
        out: dict[str, JobParameter] = {}
        for parameter in parameters:
            key = parameter.name.upper()
            key = "UNIT" if key == "BUNIT" else key  # the FITS keyword's name, as users write it
            value = parameter.value.strip()
            if key not in KNOWN:
                known = ", ".join(sorted(KNOWN | {"RUNID", "EXECUTIONDURATION", "DESTRUCTION", "PHASE"}))
                raise InvalidRequestError(f"unknown parameter {parameter.name!r}; known parameters: {known}")
            if parameter.by_reference and key != "IMAGE":
                raise InvalidRequestError(f"only IMAGE can be uploaded as a file, not {parameter.name}")
            if key == "MODEL":
                try:
                    value = self.registry.get(value).name
                except UnknownModelError as exc:
                    raise InvalidRequestError(str(exc).replace(value, shown(value, 40))) from None
            elif key == "PRECISION":
                value = value.lower()
                if value not in PRECISIONS:
                    raise InvalidRequestError(f"PRECISION must be one of {', '.join(PRECISIONS)}, not {parameter.value!r}")
            elif key == "IMAGE" and not parameter.by_reference:
                value = self.check_image_reference(value)
            elif key == "HDU":
                check_hdu(value)
            elif key in ("THRESHOLD", "NMS"):
                _number(key, value, 0.0, 1e6 if key == "THRESHOLD" else 1.0)
            elif key == "MIN_SIZE":
                _number(key, value, 0.0)
            elif key == "RESPONSEFORMAT":
                if format_for_media_type(value) is None:
                    raise InvalidRequestError(
                        f"RESPONSEFORMAT must be one of {', '.join(FORMAT_NAMES)} (or their MIME types), not {shown(value)!r}")
            elif key in REGION_KEYS:
                check_region_syntax(key, value)
            elif key == "UNIT":
                check_unit(value)
            elif key == "BEAM":
                check_beam(value)
            out[key] = JobParameter(key, value, parameter.by_reference, parameter.is_post)
        regions = [k for k in REGION_KEYS if k in out]
        if len(regions) > 1:
            raise InvalidRequestError(f"give one region of interest, not {' and '.join(regions)}")
        if "MODEL" not in out:
            out["MODEL"] = JobParameter("MODEL", self.registry.get(self.default_model).name)
        canonical = list(out.values())
        request = request_from_parameters(canonical)
        return ValidatedParameters(canonical, request.to_spec() if request is not None else None)

    def check_image_reference(self, value: str) -> str:
        """Accept an http(s) URL (if allowed) or a path inside a data root; nothing else."""
        if not value:
            raise InvalidRequestError("IMAGE is empty; upload a FITS file or give an http(s) URL or a path")
        if "\x00" in value:
            raise InvalidRequestError("IMAGE must not contain NUL characters")
        try:
            parsed = urlparse(value)
        except ValueError as exc:  # e.g. an unbalanced '[' in the host
            raise InvalidRequestError(f"IMAGE {shown(value)!r} is not a valid URL: {exc}") from None
        if parsed.scheme in ("http", "https"):
            try:
                self.url_policy.check_url(value)
            except UrlRefused as exc:
                raise InvalidRequestError(f"IMAGE URL: {exc}") from None
            return value
        if parsed.scheme and parsed.scheme != "file" and len(parsed.scheme) > 1:
            raise InvalidRequestError(f"IMAGE URLs must be http or https, not {parsed.scheme}:")
        path_text = parsed.path if parsed.scheme == "file" else value
        if not self.data_roots:
            raise InvalidRequestError("this service has no data directories; upload the image or give an http(s) URL")
        candidate = Path(path_text)
        if ".." in candidate.parts:
            raise InvalidRequestError("IMAGE paths must not contain '..'")
        for root in self.data_roots:
            try:  # resolve() follows symbolic links, so a link out of the root is refused below
                full = (candidate if candidate.is_absolute() else root / candidate).resolve()
                inside = full.is_relative_to(root)
                exists = inside and full.is_file()
            except (OSError, ValueError, RuntimeError):  # name too long, symlink loop, ...
                raise InvalidRequestError(f"IMAGE {path_text!r} is not a usable path") from None
            if inside:
                if not exists:
                    raise InvalidRequestError(f"IMAGE {path_text!r} does not exist in the data directory")
                return str(full)
        raise InvalidRequestError(f"IMAGE {path_text!r} is not inside a configured data directory")


def check_hdu(value: str) -> int | str:
    """Refuse an empty or negative HDU; return it as an index (digits) or an extension name."""
    value = value.strip()
    if not value:
        raise InvalidRequestError("HDU must be an index or an extension name")
    if value.lstrip("-").isdigit() and int(value) < 0:
        raise InvalidRequestError("HDU index must not be negative")
    return int(value) if value.isdigit() else value


def check_unit(value: str) -> None:
    """Refuse a UNIT override that is not a flux density per beam or per pixel (400, with the reason)."""
    from ..pipeline._units import parse_brightness_unit

    unit = parse_brightness_unit(value, label="UNIT")
    if not unit.known:
        raise InvalidRequestError(f"{unit.problem}; UNIT takes e.g. Jy/beam, mJy/beam, uJy/beam or Jy/pixel")


def check_beam(value: str) -> None:
    """Refuse a BEAM override that is not 'bmaj bmin pa' (arcsec, arcsec, degrees)."""
    from ..errors import UserInputError
    from ..pipeline._beam import parse_beam

    try:
        parse_beam(value)
    except UserInputError as exc:
        raise InvalidRequestError(str(exc)) from None


def request_from_parameters(parameters: list[JobParameter]) -> DetectionRequest | None:
    """The typed request of validated parameters; None while the job has no IMAGE yet."""
    params = {p.name.upper(): p.value for p in parameters}
    image_parameter = next((p for p in parameters if p.name.upper() == "IMAGE"), None)
    if image_parameter is None:
        return None
    image: ImageSource
    if image_parameter.by_reference:
        image = UploadedImage(image_parameter.name.upper())
    elif image_parameter.value.lower().startswith(("http://", "https://")):
        image = ImageUrl(image_parameter.value)
    else:
        image = ImagePath(image_parameter.value)
    region = None
    for key in ("CIRCLE", "POLYGON", "POS"):
        if key in params:
            region = check_region_syntax(key, params[key])
    hdu_text = params.get("HDU")
    hdu: int | str | None = int(hdu_text) if hdu_text and hdu_text.isdigit() else hdu_text
    return DetectionRequest(
        model=params["MODEL"],
        image=image,
        precision=params.get("PRECISION"),
        hdu=hdu,
        region=region,
        pixels=params.get("PIXELS"),
        threshold=float(params["THRESHOLD"]) if "THRESHOLD" in params else None,
        nms=float(params["NMS"]) if "NMS" in params else None,
        min_size=float(params["MIN_SIZE"]) if "MIN_SIZE" in params else None,
        response_format=catalogue_format(params.get("RESPONSEFORMAT", "votable")).name,
        unit=params.get("UNIT"),
        beam=params.get("BEAM"),
    )


def request_from_job(job: Job) -> DetectionRequest:
    """The typed request of a stored job: its spec, or (jobs stored before specs) its parameters."""
    if job.spec:
        return DetectionRequest.from_spec(job.spec)
    request = request_from_parameters(job.parameters)
    if request is None:
        raise InvalidRequestError("the job has no IMAGE parameter: upload a FITS file or give its URL or path")
    return request
