"""A detection job's request, typed once when its parameters are validated.

`DetectionParameterPolicy.validate` builds it; the job service stores it beside the parameters
(as plain data, the job's ``spec``) and the runner reads it back as such: the image is an `UploadedImage`, an `ImageUrl` or an
`ImagePath` (already checked against the data roots), the region is the normalised SODA text
(already syntax-checked), numbers are numbers, and nothing downstream parses strings again.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union


__all__ = ["UploadedImage", "ImageUrl", "ImagePath", "ImageSource", "DetectionRequest", "REGION_KEYS",
           "is_image_url"]

REGION_KEYS = ("CIRCLE", "POLYGON", "POS", "PIXELS")

_URL = re.compile(r"\s*https?://", re.IGNORECASE)


def is_image_url(reference: str) -> bool:
    """Whether an IMAGE reference is an http(s) URL, whatever the case of its scheme.

    URL schemes are case-insensitive (RFC 3986): ``HTTP://`` and ``Https://`` are URLs, fetched
    under the service's URL policy, never paths to look for under a data root. Every place that
    tells a URL from a path asks this function.
    """
    return bool(_URL.match(reference or ""))


@dataclass(frozen=True)
class UploadedImage:
    """An image uploaded with the job, stored in its folder under the parameter's name."""

    parameter: str = "IMAGE"

    @property
    def name(self) -> str:
        return self.parameter


@dataclass(frozen=True)
class ImageUrl:
    """An http(s) image the server fetches when the job runs."""

    url: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or self.url


@dataclass(frozen=True)
class ImagePath:
    """A file inside a configured data root (resolved when the job was created)."""

    path: str

    @property
    def name(self) -> str:
        return Path(self.path).name


ImageSource = Union[UploadedImage, ImageUrl, ImagePath]
_SOURCES = {"upload": UploadedImage, "url": ImageUrl, "path": ImagePath}


@dataclass(frozen=True)
class DetectionRequest:
    """A validated detection job: what the runner needs, in typed form."""

    model: str
    image: ImageSource
    precision: str | None = None
    hdu: int | str | None = None
    region: str | None = None  # normalised SODA text, e.g. "CIRCLE 10 -30 0.1"
    pixels: str | None = None  # "x1 x2 y1 y2", FITS 1-based inclusive
    threshold: float | None = None
    nms: float | None = None
    min_size: float | None = None
    response_format: str = "votable"
    unit: str | None = None  # brightness unit replacing the header's BUNIT, e.g. "mJy/beam"
    beam: str | None = None  # restoring beam replacing the header's: "bmaj bmin pa" (arcsec, arcsec, deg)

    def to_spec(self) -> dict[str, Any]:
        """Plain data for the job store (JSON)."""
        data = asdict(self)
        kind = next(key for key, cls in _SOURCES.items() if isinstance(self.image, cls))
        data["image"] = {"kind": kind, **asdict(self.image)}
        return data

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "DetectionRequest":
        """The request stored by `to_spec`."""
        data = dict(spec)
        image = dict(data.pop("image"))
        source = _SOURCES[image.pop("kind")](**image)
        return cls(image=source, **data)
