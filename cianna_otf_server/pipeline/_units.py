"""Read the brightness unit of a radio image (BUNIT) as a flux-density scale.

Detection works on signal-to-noise, but the physical columns of a catalogue (peak and
integrated flux densities) need the pixel values in Jy/beam or Jy/pixel. Headers spell the unit
in many ways (``JY/BEAM``, ``Jy/beam``, ``Jy beam-1``, ``mJy/beam``, ``JY/PIXEL``, ...), so the
text is normalised token by token and then parsed by `astropy.units`, which does the arithmetic
(prefixes, powers, products) exactly.

Decisions
---------
* Upper-case text follows the FITS convention of upper-case headers, in which case carries no
  meaning: ``MJY/BEAM`` is millijansky per beam (AIPS writes it so), never megajansky, which no
  radio image uses. Mixed-case text is read as written, so ``MJy/beam`` (megajansky) is refused
  with a reason rather than silently scaled by 1e9.
* ``Jy`` alone is *unknown*: tasks write it both for restored images (meaning Jy/beam) and for
  model or component images (meaning Jy/pixel); the two differ by the beam area (typically 10 to
  30), so guessing would silently scale every flux density by that factor.
* Brightness temperatures (``K``) and per-steradian intensities (``MJy/sr``) are *unknown* for
  this purpose: converting them needs the frequency and the beam, which the detection does not
  assume.
"""

from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass

from astropy import units as u

__all__ = ["BrightnessUnit", "parse_brightness_unit"]

PER_BEAM = "beam"
PER_PIXEL = "pixel"

_JY_PER_BEAM = u.Jy / u.beam
_JY_PER_PIXEL = u.Jy / u.pix

_TOKEN = re.compile(r"[^\W\d_]+")  # runs of letters (µ and μ included)
_SIMPLE_TOKENS = {
    "beam": "beam", "beams": "beam", "bm": "beam",
    "pixel": "pix", "pixels": "pix", "pix": "pix", "pxl": "pix",
    "jy": "Jy", "jansky": "Jy", "janskys": "Jy",
    "kelvin": "K", "kelvins": "K",
    "per": "/",
}
_PREFIXED = re.compile(r"^(micro|milli|nano|kilo|mega|µ|μ|u|m|n|k)(jy|jansky|janskys|k|kelvin)$", re.IGNORECASE)
_PREFIX_SYMBOLS = {"micro": "u", "µ": "u", "μ": "u", "u": "u", "milli": "m", "nano": "n", "n": "n",
                   "kilo": "k", "k": "k", "mega": "M"}


@dataclass(frozen=True)
class BrightnessUnit:
    """What an image's pixel values mean, as far as flux densities go.

    Attributes
    ----------
    text : str
        The unit as written (header BUNIT or a user's override); "" when absent.
    per : str or None
        ``"beam"`` (surface brightness per restoring beam) or ``"pixel"``; None when unknown.
    to_jy : float or None
        Factor turning pixel values into Jy/beam (``per == "beam"``) or Jy/pixel
        (``per == "pixel"``), e.g. 1e-3 for mJy/beam; None when unknown.
    problem : str or None
        None when the unit is known; otherwise one sentence saying why it is not, fit for a
        warning shown to the user.
    """

    text: str
    per: str | None
    to_jy: float | None
    problem: str | None

    @property
    def known(self) -> bool:
        """True when pixel values can be turned into Jy/beam or Jy/pixel."""
        return self.problem is None and self.per is not None and self.to_jy is not None


@functools.lru_cache(maxsize=256)
def parse_brightness_unit(text: str | None, *, label: str = "BUNIT") -> BrightnessUnit:
    """Interpret a brightness unit such as ``JY/BEAM``, ``mJy/beam`` or ``Jy/pixel``.

    Cached (the answer is immutable): astropy's unit parser costs about half a millisecond, paid
    by every job on its image's BUNIT.

    Parameters
    ----------
    text : str or None
        The unit text; None or blank means the header has no BUNIT.
    label : str
        How the text is named in the problem sentence ("BUNIT" for a header, "unit" for a
        user's choice).

    Returns
    -------
    BrightnessUnit
        Never raises: an unusable unit comes back with ``known`` False and the reason in
        ``problem`` (the caller decides whether that is an error or a warning).
    """
    written = "" if text is None else str(text).strip()
    if not written:
        if label == "BUNIT":
            reason = "the image has no BUNIT keyword: its brightness unit is unknown"
        else:
            reason = f"the {label} is empty: the brightness unit is unknown"
        return BrightnessUnit("", None, None, reason)
    shown = f"{label} {written!r}"
    try:
        with warnings.catch_warnings():  # e.g. "several slashes are discouraged": the verdict below says more
            warnings.simplefilter("ignore", u.UnitsWarning)
            unit = u.Unit(_normalise(written), format="generic", parse_strict="raise")
    except (ValueError, TypeError):
        return BrightnessUnit(written, None, None, f"{shown} is not a unit this reader understands")
    for per, reference in ((PER_BEAM, _JY_PER_BEAM), (PER_PIXEL, _JY_PER_PIXEL)):
        if unit.is_equivalent(reference):
            factor = _exact(unit.to(reference))
            if factor > 1.0:
                return BrightnessUnit(written, None, None, (
                    f"{shown} reads as {factor:g} Jy per {per}, brighter than any radio image; "
                    f"write mJy/{per} if millijansky is meant"))
            return BrightnessUnit(written, per, factor, None)
    return BrightnessUnit(written, None, None, _why_not(unit, shown))


def _normalise(text: str) -> str:
    """Rewrite header spellings into astropy's generic unit syntax (``JY/BEAM`` -> ``Jy/beam``)."""
    upper = text == text.upper()

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        low = token.lower()
        if low in _SIMPLE_TOKENS:
            return _SIMPLE_TOKENS[low]
        if low == "k":
            return "K"
        prefixed = _PREFIXED.match(token)
        if prefixed:
            prefix, base = prefixed.group(1), prefixed.group(2).lower()
            if prefix == "M" and not upper:
                symbol = "M"  # mixed case: a deliberate capital means mega
            else:
                symbol = _PREFIX_SYMBOLS.get(prefix.lower(), "m")  # "m"/"M" in upper-case text: milli
            return symbol + ("Jy" if base.startswith("j") else "K")
        return low if upper else token  # "SR", "DEG" in upper-case headers

    return _TOKEN.sub(replace, text.replace("**", "^"))


def _why_not(unit: u.UnitBase, shown: str) -> str:
    """One sentence on why a parsed unit is not a flux density per beam or per pixel."""
    if unit.is_equivalent(u.K):
        return f"{shown} is a brightness temperature, not a flux density per beam"
    if unit.is_equivalent(u.Jy):
        return (f"{shown} is a flux density without 'per beam' or 'per pixel': the pixel values may be "
                "Jy/beam or Jy/pixel, which differ by the beam area, so give the unit explicitly")
    if unit.is_equivalent(u.Jy / u.sr):
        return f"{shown} is an intensity per steradian, not a flux density per beam or per pixel"
    return f"{shown} is not a flux density per beam or per pixel"


def _exact(value: float) -> float:
    """Drop floating-point dust from unit arithmetic (mJy/beam gives exactly 1e-3)."""
    return float(f"{float(value):.15g}")
