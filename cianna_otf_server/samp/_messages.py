"""The SAMP messages the bridge handles and sends, and the checks of their parameters.

SAMP carries every value as a string, and viewers are written by others: a parameter may be
missing, empty or not a number. Each is checked here, before any job is made, so that the
reply to a bad message says which parameter is wrong rather than what the service made of it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._api import SampBridgeError

__all__ = [
    "DETECT",
    "DS9_SET",
    "HANDLED_MTYPES",
    "IMAGE_LOAD",
    "POINT_AT",
    "Request",
    "TABLE_LOAD",
    "degrees",
    "parse_region",
]

IMAGE_LOAD = "image.load.fits"
POINT_AT = "coord.pointAt.sky"
#: The bridge's own MType: params ``image-id`` or ``url`` (optional), ``region`` (SODA text,
#: optional: the whole image), ``model`` (optional).
DETECT = "cianna-otf.detect"
TABLE_LOAD = "table.load.votable"
DS9_SET = "ds9.set"
HUB_SHUTDOWN = ("samp.hub.event.shutdown", "samp.hub.disconnect")
HANDLED_MTYPES = (IMAGE_LOAD, POINT_AT, DETECT)

_NUMBERS = {"CIRCLE": "3 numbers (ra dec radius)", "RANGE": "4 numbers (ra1 ra2 dec1 dec2)"}


@dataclass
class Request:
    """One message received, waiting for the worker.

    Attributes
    ----------
    mtype : str
    params : dict
        ``samp.params`` as received.
    sender_id : str
        The public id of the client that sent it.
    msg_id : str or None
        The id to reply to for a call; None for a notification (nothing is replied).
    """

    mtype: str
    params: dict[str, Any] = field(default_factory=dict)
    sender_id: str = ""
    msg_id: str | None = None

    @property
    def is_call(self) -> bool:
        return self.msg_id is not None

    def text(self, name: str) -> str | None:
        """A string parameter, stripped; None when absent or empty."""
        value = self.params.get(name)
        if value is None:
            return None
        value = str(value).strip()
        return value or None


def degrees(params: Mapping[str, Any], name: str, low: float, high: float) -> float:
    """The angle parameter `name` in degrees, checked to lie within [low, high]."""
    value = params.get(name)
    if value is None or not str(value).strip():
        raise SampBridgeError(f"parameter {name} is missing (degrees)")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SampBridgeError(f"parameter {name}={value!r} is not a number of degrees") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise SampBridgeError(f"parameter {name}={value} is outside {low:g}..{high:g} degrees")
    return number


def parse_region(text: str) -> tuple[str, list[float]]:
    """Check SODA text (``CIRCLE ra dec r``, ``POLYGON ra1 dec1 ...``, ``RANGE ra1 ra2 dec1 dec2``).

    Returns
    -------
    str, list of float
        The shape, upper-case, and its numbers.

    Raises
    ------
    SampBridgeError
        ``bad region ...`` with what is wrong: the service would refuse it too, after the image
        had been uploaded for nothing.
    """
    words = str(text).replace(",", " ").split()
    if not words:
        raise SampBridgeError("bad region: it is empty")
    shape = words[0].upper()
    if shape == "POS" and len(words) > 1:  # "POS=RANGE ..." as SODA's POS parameter writes it
        shape, words = words[1].upper(), words[1:]
    if shape not in ("CIRCLE", "POLYGON", "RANGE"):
        raise SampBridgeError(f"bad region {text!r}: use 'CIRCLE ra dec radius', 'POLYGON ra1 dec1 ra2 dec2 "
                              "ra3 dec3 ...' or 'RANGE ra1 ra2 dec1 dec2' (ICRS degrees)")
    try:
        numbers = [float(word) for word in words[1:]]
    except ValueError:
        raise SampBridgeError(f"bad region {text!r}: its coordinates must be numbers of degrees") from None
    wanted = {"CIRCLE": 3, "RANGE": 4}.get(shape)
    if wanted is not None and len(numbers) != wanted:
        raise SampBridgeError(f"bad region {text!r}: {shape} takes {_NUMBERS[shape]}, got {len(numbers)}")
    if shape == "POLYGON" and (len(numbers) < 6 or len(numbers) % 2):
        raise SampBridgeError(f"bad region {text!r}: POLYGON takes 3 or more ra dec pairs, got "
                              f"{len(numbers)} numbers")
    if not all(math.isfinite(n) for n in numbers):
        raise SampBridgeError(f"bad region {text!r}: its numbers must be finite")
    if shape == "CIRCLE" and not 0 < numbers[2] <= 180:
        raise SampBridgeError(f"bad region {text!r}: the radius must be between 0 and 180 degrees")
    decs = {"CIRCLE": numbers[1:2], "RANGE": numbers[2:]}.get(shape, numbers[1::2])
    if any(abs(d) > 90 for d in decs):
        raise SampBridgeError(f"bad region {text!r}: a declination lies outside -90..90 degrees")
    return shape, numbers


def region_point(shape: str, numbers: list[float]) -> tuple[float, float]:
    """A position inside or on the region, to find the image it lies on."""
    if shape == "RANGE":
        ra1, ra2, dec1, dec2 = numbers
        return (ra1 + ((ra2 - ra1) % 360) / 2) % 360, (dec1 + dec2) / 2
    return numbers[0] % 360, numbers[1]


def region_text(shape: str, numbers: list[float]) -> str:
    """The region as the client's ``region=`` takes it."""
    return " ".join([shape, *(repr(float(n)) for n in numbers)])
