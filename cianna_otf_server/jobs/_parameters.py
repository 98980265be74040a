"""Detection job parameters: names, syntax and ranges, checked when a job is created.

Everything that can be checked without opening the image is checked here, so a typo gets a
400 at once instead of a job that fails later; what needs the image (does the region overlap
it?) is checked when the job runs and ends in ERROR with a clear summary. The command line
checks its options with the same functions (`check_options`), so ``cianna-otf detect`` refuses
what the service refuses, with the same sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from ..catalogue import FORMAT_NAMES, catalogue_format, format_for_media_type
from ..errors import UnknownModelError
from ..models import DEFAULT_MODEL
from ..uws import InvalidRequestError, Job, JobParameter, ValidatedParameters
from ._url_policy import UrlPolicy, UrlRefused
from ._request import (REGION_KEYS, DetectionRequest, ImagePath, ImageSource, ImageUrl,
                       UploadedImage, is_image_url)

PRECISIONS = ("fp32", "fp16", "bf16")
#: Overrides of what the image header says (or fails to say): its brightness unit and restoring beam.
HEADER_OVERRIDES = ("UNIT", "BEAM")
KNOWN = {"MODEL", "PRECISION", "IMAGE", "HDU", "THRESHOLD", "NMS", "MIN_SIZE", "RESPONSEFORMAT", *REGION_KEYS,
         *HEADER_OVERRIDES, "BUNIT"}


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _number(name: str, value: str, low: float | None = None, high: float | None = None) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequestError(f"{name} must be a number, not {shown(value)!r}") from None
    if not math.isfinite(number) or (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {_bound(low)} and {_bound(high)}" if high is not None else f"at least {_bound(low)}"
        raise InvalidRequestError(f"{name} must be {bounds}, not {shown(value)}")
    return number


def _numbers(name: str, text: str, count: int | None = None, minimum: int | None = None) -> list[float]:
    values = []
    for token in text.replace(",", " ").split():
        try:
            number = float(token)
        except ValueError:
            number = math.nan
        if math.isnan(number):
            raise InvalidRequestError(f"{name}: {shown(token, 40)!r} is not a number") from None
        values.append(number)
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
        if not math.isfinite(ra) or not (-90 <= dec <= 90) or not 0 < radius <= 180:
            raise InvalidRequestError("CIRCLE takes 'ra dec radius' in degrees with -90 <= dec <= 90 and radius > 0")
        return f"CIRCLE {text}"
    if key == "POLYGON":
        values = _numbers("POLYGON", text, minimum=6)
        if len(values) % 2:
            raise InvalidRequestError("POLYGON takes pairs 'ra dec' of at least 3 vertices")
        if not all(math.isfinite(v) for v in values) or not all(-90 <= dec <= 90 for dec in values[1::2]):
            raise InvalidRequestError("POLYGON takes pairs 'ra dec' in degrees with -90 <= dec <= 90")
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
        whole = all(not math.isfinite(v) or v == math.floor(v) for v in (x1, x2, y1, y2))
        # FITS pixels start at 1; -Inf and +Inf stand for the image's first and last pixel
        firsts_ok = all(v == -math.inf or (math.isfinite(v) and v >= 1) for v in (x1, y1))
        lasts_ok = all(v == math.inf or (math.isfinite(v) and v >= 1) for v in (x2, y2))
        if not (whole and firsts_ok and lasts_ok) or x2 < x1 or y2 < y1:
            raise InvalidRequestError("PIXELS takes 'x1 x2 y1 y2', whole FITS pixel numbers (1-based, inclusive; "
                                      "-Inf and +Inf for the image's edges) with 1 <= x1 <= x2 and 1 <= y1 <= y2")
        return text
    raise InvalidRequestError(f"unknown region parameter {key}")


def check_regions(keys: Iterable[str]) -> None:
    """Refuse more than one region of interest: a sky shape or a pixel range, not both.

    In SODA several regions mean several cutouts, not the intersection of the shapes, so a
    request that gives two could mean either; it is refused rather than guessed.
    """
    regions = sorted((key for key in keys if key in REGION_KEYS), key=REGION_KEYS.index)
    if len(regions) > 1:
        raise InvalidRequestError(
            f"give one region of interest, not {' and '.join(regions)}: a sky shape (CIRCLE, POLYGON or "
            "POS=RANGE) or a pixel range (PIXELS)")


def region_parameter(text: str) -> tuple[str, str]:
    """SODA region text (``CIRCLE ra dec r``, ``POS=RANGE ...``, ``PIXELS=x1 x2 y1 y2``...) as (parameter, value)."""
    match = re.match(r"^\s*(?:POS\s*=\s*)?(CIRCLE|POLYGON|RANGE|PIXELS)\b\s*=?\s*(.*)$", text or "",
                     re.IGNORECASE | re.DOTALL)
    if match is None:
        raise InvalidRequestError(
            f"cannot read the region {shown(text or '', 40)!r}: expected CIRCLE ra dec radius, POLYGON ra1 dec1 ..., "
            "POS=RANGE ra1 ra2 dec1 dec2 (ICRS degrees) or PIXELS=x1 x2 y1 y2")
    shape, value = match.group(1).upper(), match.group(2).strip()
    if shape == "RANGE":
        return "POS", f"RANGE {value}"
    return shape, value


def check_value(key: str, value: str) -> str:
    """Check one detection parameter that needs neither the model registry nor the data roots.

    Returns the value as stored (e.g. PRECISION in lower case); raises `InvalidRequestError` with
    the sentence the service answers with (HTTP 400) and the command line prints (exit code 2).
    """
    if key == "PRECISION":
        value = value.lower()
        if value not in PRECISIONS:
            raise InvalidRequestError(f"PRECISION must be one of {', '.join(PRECISIONS)}, not {shown(value)!r}")
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
    return value


def check_options(options: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Check detection settings given outside a job (the command line's options) as job parameters are.

    `options` are (parameter name, text) pairs, None for an option not given. Returns the checked
    values by name; raises `InvalidRequestError` as `DetectionParameterPolicy.validate` would.
    """
    given = [(key.upper(), str(value).strip()) for key, value in options if value is not None]
    checked = {key: check_value(key, value) for key, value in given}
    check_regions(key for key, _ in given)
    return checked


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
            elif key == "IMAGE" and not parameter.by_reference:
                value = self.check_image_reference(value)
            elif key != "IMAGE":
                value = check_value(key, value)
            out[key] = JobParameter(key, value, parameter.by_reference, parameter.is_post)
        check_regions(k for k in REGION_KEYS if k in out)
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
        if is_image_url(value):  # HTTP://, Https://: a URL whatever the case of its scheme
            value = value[:value.index(":")].lower() + value[value.index(":"):]
            try:
                self.url_policy.check_url(value)
            except UrlRefused as exc:
                raise InvalidRequestError(f"IMAGE URL: {exc}") from None
            return value
        try:
            parsed = urlparse(value)
        except ValueError as exc:  # e.g. an unbalanced '[' in the host
            raise InvalidRequestError(f"IMAGE {shown(value)!r} is not a valid URL: {exc}") from None
        if parsed.scheme in ("http", "https"):  # 'http:x' without '//': the policy says why it is no URL to fetch
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
    elif is_image_url(image_parameter.value):
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
