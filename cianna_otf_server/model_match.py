"""Which model fits this image? Rank the installed models for one FITS image.

The pipeline plans, for every model, how an image is brought into the model's domain (its
brightness convention and the number of pixels across the beam the network was trained on) and
scores the fit (`cianna_otf_server.pipeline._domain.rank_models`). This module does it for a
file as a user hands it over: a whole FITS image, or only its header (then nothing is measured
from the pixels and the noise checks are skipped), with the same HDU choice and the same
``UNIT`` and ``BEAM`` overrides as a detection job. It is what ``POST /models/match``,
``GET /models?image=...``, ``cianna-otf models --for IMAGE`` and the notebook widget's model
picker use.

Examples
--------
>>> from cianna_otf_server.model_match import match_file
>>> from cianna_otf_server.models import ModelRegistry
>>> result = match_file("sky.fits", ModelRegistry())            # doctest: +SKIP
>>> [(m["model"], m["fit"]) for m in result.to_dict()["models"]]  # doctest: +SKIP
[('classic', 0.6), ...]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError

__all__ = ["HEADER_ONLY_WARNING", "ModelMatch", "match_file", "read_header_only"]

#: FITS records are 2880 bytes; a header is a whole number of them, ended by an END card.
BLOCK = 2880
#: A file this large is never taken for headers alone (a header is a few blocks).
MAX_HEADER_ONLY_BYTES = 1000 * BLOCK
#: Said when only a header was given: what could not be checked.
HEADER_ONLY_WARNING = ("only the FITS header was given (no pixel data): the noise level was not measured, "
                       "so the noise checks were skipped")
_NOISE_NOT_CHECKED = "noise check skipped: the image's noise was not measured (only its header was given)"


@dataclass
class ModelMatch:
    """The models ranked for one image, best fit first.

    Attributes
    ----------
    name : str
        The image's file name (as uploaded, or the referenced file's).
    plans : list of DomainPlan
        One per model with a readable card: usable models first, then by decreasing fit (ties
        keep the service's default model first, then the names in order).
    traits : ImageTraits
        What the ranking was based on (beam in pixels, pixel scale, unit, noise).
    warnings : list of str
        The image reader's warnings (unknown unit, no beam, estimated beam), and
        `HEADER_ONLY_WARNING` for a header without data.
    header_only : bool
        Only a header was given: nothing was measured from the pixels.
    hdu : int
        Index of the HDU that was read.
    hdu_name : str
        Its EXTNAME ('' for an unnamed primary).
    size : (int, int)
        ``(nx, ny)`` in pixels.
    status : dict of str to str
        ``"available"`` or ``"unavailable"`` for each ranked model.
    default_model : str or None
        The service's default model (flagged with ``"default": true``).
    noise_windows : frozenset of str
        The models that declare the noise level they were trained on (checked when measured).
    """

    name: str
    plans: list[Any]
    traits: Any
    warnings: list[str]
    header_only: bool
    hdu: int
    hdu_name: str
    size: tuple[int, int]
    status: dict[str, str] = field(default_factory=dict)
    default_model: str | None = None
    noise_windows: frozenset[str] = frozenset()

    def image_dict(self) -> dict[str, Any]:
        """The image's traits as JSON-ready data (units: pixels, arcsec, Jy/beam)."""
        data = self.traits.to_dict()
        data.update(name=self.name, hdu=self.hdu, hdu_name=self.hdu_name, size=list(self.size),
                    header_only=self.header_only, noise_measured=self.traits.noise is not None)
        return data

    def model_dicts(self) -> list[dict[str, Any]]:
        """Each plan's ``to_dict()``, best first, with the model's ``status`` and ``default`` flag."""
        out = []
        for plan in self.plans:
            data = plan.to_dict()
            data["status"] = self.status.get(plan.model, "available")
            data["default"] = plan.model == self.default_model
            if self.traits.noise is None and plan.model in self.noise_windows:
                data["notes"] = [*data["notes"], _NOISE_NOT_CHECKED]
            out.append(data)
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"image": {...}, "models": [...], "warnings": [...]}``, the ``/models/match`` answer."""
        return {"image": self.image_dict(), "models": self.model_dicts(), "warnings": list(self.warnings)}


def match_file(path: str | Path, registry: Any, *, hdu: int | str | None = None, unit: str | None = None,
               beam: str | None = None, default_model: str | None = None, name: str | None = None) -> ModelMatch:
    """Rank the models of `registry` for the FITS file at `path`.

    Parameters
    ----------
    path : path-like
        A FITS image, or a file of FITS headers alone (2880-byte records without data; the
        image's size is taken from NAXISn and the noise checks are skipped).
    registry : ModelRegistry
        Where the models come from (every model with a readable card is ranked).
    hdu : int or str, optional
        HDU index or EXTNAME (default: the first 2-D image, as for a job).
    unit : str, optional
        Brightness unit replacing BUNIT (``"mJy/beam"``, ``"Jy/pixel"``, ...).
    beam : str, optional
        Restoring beam replacing the header's: ``"bmaj bmin pa"`` (arcsec, arcsec, degrees).
    default_model : str, optional
        The service's default model: first among equally fitting models, and flagged.
    name : str, optional
        The name the image is known by in messages (default: the file's name).

    Raises
    ------
    ImageError
        The file is not a readable FITS image, or the HDU does not exist or holds no image.
    UserInputError
        `unit` or `beam` is malformed.
    """
    from .pipeline import open_image
    from .pipeline._domain import image_traits, plan_for_traits, rank_models

    path = Path(path)
    name = name or path.name
    stand_in = read_header_only(path)
    header_only = stand_in is not None
    try:
        if header_only:
            image = open_image(stand_in, hdu=hdu, unit=unit, beam=beam, estimate=False)
        else:
            image = open_image(path, hdu=hdu, unit=unit, beam=beam)
    except ImageError as exc:  # in-memory stand-ins are named "the in-memory FITS image"
        raise ImageError(_renamed(str(exc), path.name, name)) from None
    try:
        entries = [entry for entry in registry.list() if entry.card is not None]
        entries.sort(key=lambda entry: entry.name != default_model)  # stable: the default wins ties
        cards = [entry.card for entry in entries]
        pixels = image.shape[0] * image.shape[1]
        if header_only:
            traits = image_traits(image, None)
            plans = sorted((plan_for_traits(traits, card, image_pixels=pixels) for card in cards),
                           key=lambda plan: -plan.fit)
        else:
            plans = rank_models(image, cards)
            traits = plans[0].traits if plans else image_traits(image, None)
        status = {entry.name: entry.status for entry in entries}
        noise_windows = frozenset(card.name for card in cards if card.is_network and card.domain.declared
                                  and card.domain.input == "absolute" and card.domain.noise_range is not None)
        plans.sort(key=lambda plan: status.get(plan.model) != "available")  # usable models first
        found = list(image.warnings)
        if header_only:
            found.append(HEADER_ONLY_WARNING)
        return ModelMatch(name=name, plans=plans, traits=traits, warnings=found, header_only=header_only,
                          hdu=int(image.hdu), hdu_name=image.hdu_name, size=image.size, status=status,
                          default_model=default_model, noise_windows=noise_windows)
    finally:
        image.close()


def _renamed(message: str, file_name: str, name: str) -> str:
    for old in ("the in-memory FITS image", file_name):
        if message.startswith(old):
            return name + message[len(old):]
    return message


# -- FITS headers without data ---------------------------------------------------------------
def read_header_only(path: str | Path) -> Any:
    """An in-memory stand-in for a file holding FITS headers without their data, else None.

    A file is taken for headers alone when it is a whole number of 2880-byte records starting
    with ``SIMPLE``, and every header is followed directly by the next header or the end of the
    file although at least one announces data (NAXISn > 0). The stand-in's image HDUs hold a
    zero-memory NaN array of the announced shape, so the image reader sees the real size, WCS,
    unit and beam, and nothing is measured from the pixels. Anything else (a complete FITS
    file, a truncated one, garbage) returns None and is left to the image reader, which says
    what is wrong with it.
    """
    from astropy.io import fits

    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0 or size % BLOCK or size > MAX_HEADER_ONLY_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if not raw.startswith(b"SIMPLE"):
        return None
    headers = []
    announced = False
    offset = 0
    while offset < len(raw):
        end = _header_end(raw, offset)
        if end is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = fits.Header.fromstring(raw[offset:end].decode("ascii", errors="replace"))
        except Exception:
            return None
        data_bytes = _data_bytes(header)
        if data_bytes is None:
            return None
        announced = announced or data_bytes > 0
        headers.append(header)
        offset = end
        if offset < len(raw) and not raw[offset:offset + 8] == b"XTENSION":
            return None  # data follows this header: a real FITS file, for the image reader
    if not announced:
        return None
    hdus = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, header in enumerate(headers):
            hdus.append(_stand_in_hdu(header, primary=index == 0))
        return fits.HDUList(hdus)


def _header_end(raw: bytes, offset: int) -> int | None:
    """The offset just after the record holding the END card of the header starting at `offset`."""
    for block in range(offset, len(raw), BLOCK):
        for card in range(block, block + BLOCK, 80):
            if raw[card:card + 3] == b"END" and not raw[card + 3:card + 80].strip():
                return block + BLOCK
    return None


def _data_bytes(header: Any) -> int | None:
    """Bytes of data the header announces (FITS standard 4.4.1), None for a header that makes no sense."""
    try:
        bitpix = int(header.get("BITPIX", 8))
        naxis = int(header.get("NAXIS", 0))
        axes = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
        pcount, gcount = int(header.get("PCOUNT", 0)), int(header.get("GCOUNT", 1))
    except (TypeError, ValueError):
        return None
    if naxis < 0 or any(n < 0 for n in axes):
        return None
    if naxis == 0:
        return 0
    return abs(bitpix) // 8 * gcount * (pcount + math.prod(axes))


def _stand_in_hdu(header: Any, primary: bool) -> Any:
    """An HDU with the header's keywords and, for an image, a NaN array of its shape that costs no memory."""
    from astropy.io import fits

    header = header.copy()
    is_image = primary or str(header.get("XTENSION", "")).strip().upper() == "IMAGE"
    naxis = int(header.get("NAXIS", 0))
    shape = tuple(int(header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))
    if is_image and naxis >= 2 and all(n > 0 for n in shape):
        data = np.broadcast_to(np.float32(np.nan), shape)
        for key in ("BSCALE", "BZERO", "BLANK"):  # the stand-in holds floats already
            header.remove(key, ignore_missing=True)
        return fits.PrimaryHDU(data=data, header=header) if primary else fits.ImageHDU(data=data, header=header)
    # a table, or an image without pixels: kept in its place (HDU indices stay those of the file)
    stand_in = fits.PrimaryHDU() if primary else fits.ImageHDU()
    if "EXTNAME" in header:
        stand_in.header["EXTNAME"] = header["EXTNAME"]
    return stand_in
