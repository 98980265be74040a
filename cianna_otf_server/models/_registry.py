"""The model registry: which models this installation can run, found from their cards.

A model is a TOML card (and, for a network, a CIANNA weights file beside it) dropped into a
models directory. The registry scans, in order of precedence (the first card of a name wins):

1. the directories given to the constructor,
2. the directories listed in the ``CIANNA_OTF_MODELS`` environment variable
   (separated by ``os.pathsep``),
3. ``$XDG_DATA_HOME/cianna-otf/models`` (``~/.local/share/cianna-otf/models``) if it exists,
4. the built-in cards shipped with the package.

Listing never fails because of one broken card: the card is reported as unavailable with the
reason. Checking the weights (sha256, consistency of the card with the file's network layout) is
done lazily by `ModelRegistry.verify`, and cached by file path, size and modification time, so a
long-running server pays the cost once per weights version. The registry rescans its directories
when their content changes (a cheap ``stat`` of the cards), so new or updated models are picked up
without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import ModelCardError, ModelFileError, UnknownModelError
from ..hashing import file_sha256 as _file_sha256
from ._card import ModelCard, load_card

__all__ = ["ModelEntry", "ModelRegistry", "default_registry", "user_models_dir", "BUILTIN_DIR", "ENV_VAR"]

log = logging.getLogger(__name__)

ENV_VAR = "CIANNA_OTF_MODELS"
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"

_PRIOR_RTOL = 1e-5  # relative tolerance when comparing card priors to the float32 priors of the file


def user_models_dir() -> Path:
    """The per-user models directory: ``$XDG_DATA_HOME/cianna-otf/models``.

    ``XDG_DATA_HOME`` defaults to ``~/.local/share``, the usual place on Linux and on
    JupyterHub home directories.
    """
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cianna-otf" / "models"


@dataclass(frozen=True)
class ModelEntry:
    """One model as the registry sees it: its card if it could be read, else why not.

    Attributes
    ----------
    name : str
        The model name (from the card; the file stem when the card cannot be read).
    card_path : Path
        Where the card lives.
    origin : str
        ``"builtin"`` or ``"user"``.
    card : ModelCard or None
        The parsed card, None when the card is broken.
    reason : str
        Empty when the model can be used; otherwise one sentence saying why not.
    """

    name: str
    card_path: Path
    origin: str
    card: ModelCard | None = None
    reason: str = ""

    @property
    def available(self) -> bool:
        """True when the card is valid and its weights file (if any) is present."""
        return self.card is not None and not self.reason

    @property
    def status(self) -> str:
        """``"available"`` or ``"unavailable"`` (see `reason`)."""
        return "available" if self.available else "unavailable"

    def to_dict(self) -> dict:
        """A JSON-ready view: the card's fields plus ``status``, ``reason`` and ``origin``."""
        data = self.card.to_dict() if self.card is not None else {"name": self.name}
        data["card_path"] = str(self.card_path)
        data.update(status=self.status, reason=self.reason, origin=self.origin)
        return data


class ModelRegistry:
    """Model cards found in a list of directories, looked up by name.

    Parameters
    ----------
    directories : iterable of path-like, optional
        User model directories, highest precedence first.
    use_environment : bool
        Also scan ``CIANNA_OTF_MODELS`` and the per-user directory (`user_models_dir`).
    include_builtin : bool
        Also scan the cards shipped with the package.
    """

    def __init__(
        self,
        directories: Iterable[str | os.PathLike] | None = None,
        *,
        use_environment: bool = True,
        include_builtin: bool = True,
    ) -> None:
        self._explicit = [Path(d).expanduser() for d in (directories or ())]
        self._use_environment = use_environment
        self._include_builtin = include_builtin
        self._lock = threading.RLock()
        self._entries: dict[str, ModelEntry] = {}
        self._signature: tuple | None = None
        self._quick: tuple | None = None
        self._verified: dict[tuple, ModelCard] = {}

    # -- discovery -------------------------------------------------------------------------
    def directories(self) -> list[tuple[Path, str]]:
        """The directories scanned, highest precedence first, each with its origin."""
        dirs: list[tuple[Path, str]] = [(d, "user") for d in self._explicit]
        if self._use_environment:
            for item in os.environ.get(ENV_VAR, "").split(os.pathsep):
                if item.strip():
                    dirs.append((Path(item.strip()).expanduser(), "user"))
            home = user_models_dir()
            if home.is_dir():
                dirs.append((home, "user"))
        if self._include_builtin:
            dirs.append((BUILTIN_DIR, "builtin"))
        seen: set[Path] = set()
        unique = []
        for path, origin in dirs:
            key = path.resolve() if path.exists() else path
            if key not in seen:
                seen.add(key)
                unique.append((path, origin))
        return unique

    def _card_files(self, warn: bool = False) -> Iterator[tuple[Path, str, os.stat_result]]:
        for directory, origin in self.directories():
            if not directory.is_dir():
                if warn and origin == "user":
                    log.warning("models directory %s does not exist", directory)
                continue
            for path in sorted(directory.glob("*.toml")):
                try:
                    yield path, origin, path.stat()
                except OSError:  # removed while scanning
                    continue

    def _current_signature(self) -> tuple:
        files = tuple((str(p), o, s.st_mtime_ns, s.st_size) for p, o, s in self._card_files())
        return (tuple(str(d) for d, _ in self.directories()), files)

    def refresh(self, force: bool = True) -> None:
        """Rescan the model directories.

        Parameters
        ----------
        force : bool
            Rescan even if no card file changed since the last scan (cards are cheap to read).
        """
        with self._lock:
            signature = self._current_signature()
            if not force and signature == self._signature:
                return
            self._entries = self._scan()
            self._signature = signature

    def _quick_signature(self) -> tuple:
        """What changes when a directory is named, gains, loses or renames a file, or a known card changes.

        A few ``stat`` calls, no path resolution and no directory listing: adding, removing or
        renaming a card (an atomic replace included) changes its directory's modification time,
        and an edit in place changes the card file's own.
        """
        candidates = [*self._explicit]
        if self._use_environment:
            candidates += [Path(item.strip()).expanduser()
                           for item in os.environ.get(ENV_VAR, "").split(os.pathsep) if item.strip()]
            candidates.append(user_models_dir())
        if self._include_builtin:
            candidates.append(BUILTIN_DIR)
        known = [name for name, *_ in self._signature[1]] if self._signature else []
        stamps = []
        for path in [*map(str, candidates), *known]:
            try:
                stat = os.stat(path)
                stamps.append((path, stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamps.append((path, None, None))
        return tuple(stamps)

    def _ensure_fresh(self) -> None:
        """Rescan only when a directory or a known card changed.

        Every job creation and every job start reads the registry: the full signature (resolving
        each directory, listing it and stating every card) on each was a measurable share of a
        small job's host time; the quick one costs a few ``stat`` calls.
        """
        quick = self._quick_signature()
        if quick == self._quick:
            return
        self.refresh(force=False)
        self._quick = self._quick_signature()

    def _scan(self) -> dict[str, ModelEntry]:
        """Valid cards keyed by model name, broken ones keyed by their file (never hiding a model)."""
        entries: dict[str, ModelEntry] = {}
        broken: dict[str, ModelEntry] = {}
        for path, origin, _ in self._card_files(warn=True):
            try:
                card = load_card(path)
            except Exception as exc:  # one bad card must never break the listing
                reason = str(exc) if isinstance(exc, ModelCardError) else f"{path}: {exc}"
                log.warning("model card %s is broken: %s", path, reason)
                broken.setdefault(str(path), ModelEntry(name=path.stem, card_path=path, origin=origin,
                                                        reason=reason))
                continue
            winner = entries.get(card.name)
            if winner is not None:
                log.warning("model %r of %s is shadowed by %s", card.name, path, winner.card_path)
                continue
            entries[card.name] = ModelEntry(name=card.name, card_path=path, origin=origin, card=card)
        for entry in broken.values():
            if entry.name in entries:  # same stem as a valid model: list it under its file name
                entry = replace(entry, name=entry.card_path.name)
            entries.setdefault(entry.name, entry)
        return entries

    # -- lookups ---------------------------------------------------------------------------
    def list(self) -> list[ModelEntry]:
        """Every model found, sorted by name; broken ones included (``available`` False)."""
        with self._lock:
            self._ensure_fresh()
            return [_current(self._entries[name]) for name in sorted(self._entries)]

    def names(self, available_only: bool = True) -> list[str]:
        """Sorted model names (only the usable ones by default)."""
        return [e.name for e in self.list() if e.available or not available_only]

    def entry(self, name: str) -> ModelEntry:
        """The registry entry of a model, usable or not; `UnknownModelError` if none."""
        with self._lock:
            self._ensure_fresh()
            found = self._entries.get(name)
            if found is None:
                names = ", ".join(self.names()) or "none"
                raise UnknownModelError(f"unknown model {name!r}; available models: {names}")
            return _current(found)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in {e.name for e in self.list()}

    def get(self, name: str) -> ModelCard:
        """The card of a model.

        Raises
        ------
        UnknownModelError
            No card of that name; the message lists the available models.
        ModelCardError
            The card exists but cannot be read.
        """
        found = self.entry(name)
        if found.card is None:
            raise ModelCardError(found.reason)
        return found.card

    def verify(self, name: str) -> ModelCard:
        """The card of a model whose weights are present, intact and match the card.

        Checks, for a network: the weights file exists; its sha256 equals the card's (when the
        card gives one); the file's input size and channels, and its YOLO layout (boxes,
        classes, extra parameters, priors) equal the card's. Results are cached by the
        weights file's path, size and modification time.

        Raises
        ------
        UnknownModelError, ModelCardError, ModelFileError
        """
        card = self.get(name)
        if not card.is_network or card.weights_file is None:
            return card
        path = card.weights_file
        try:
            stat = path.stat()
        except OSError as exc:
            raise ModelFileError(
                f"model {card.name!r}: weights file {path} not found ({exc.strerror}); "
                "download it and put it beside the card"
            ) from exc
        key = (str(path), stat.st_mtime_ns, stat.st_size, str(card.card_path), card.sha256,
               card.channels, repr(card.tiling), repr(card.yolo))
        with self._lock:
            if key in self._verified:
                return self._verified[key]
        if card.sha256 is None:
            log.warning("model %r has no sha256 in its card; the weights are not checked", card.name)
        else:
            digest = file_sha256(path)
            if digest != card.sha256:
                raise ModelCardError(
                    f"model {card.name!r}: weights file {path.name} has sha256 {digest}, "
                    f"but the card {card.card_path} expects {card.sha256}; the file is corrupt "
                    "or is another version"
                )
        check_consistency(card)
        with self._lock:
            self._verified[key] = card
        return card


def _current(entry: ModelEntry) -> ModelEntry:
    """The entry with its weights availability checked now (weights may be added after the card)."""
    if entry.card is None:
        return entry
    return replace(entry, reason=_weights_problem(entry.card))


def _weights_problem(card: ModelCard) -> str:
    """Why a valid card cannot be used right now (the weights file is missing), or ''."""
    if card.is_network and card.weights_file is not None and not card.weights_file.is_file():
        return f"weights file {card.weights_file.name} not found beside the card"
    return ""


# -- checksums ---------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a weights file (cached, see `cianna_otf_server.hashing`)."""
    try:
        return _file_sha256(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read weights file ({exc.strerror or exc})") from exc


# -- card / weights consistency ------------------------------------------------------------------
def check_consistency(card: ModelCard) -> None:
    """Refuse a card that does not describe its weights file.

    Compares the network stored in the file (input size and channels, YOLO head) with the
    card's ``[input]``, ``[tiling] patch_size`` and ``[yolo]`` tables, so that a card copied
    from another model fails here, with the field named, and not later as wrong detections.

    Raises
    ------
    ModelCardError
        A field of the card disagrees with the file.
    ModelFileError
        The weights file cannot be parsed.
    """
    if not card.is_network or card.weights_file is None:
        return
    try:
        from ..cianna import read_model_file
    except ImportError:  # pragma: no cover - the runtime ships with the package
        log.warning("cannot check model %r against its weights: CIANNA reader unavailable", card.name)
        return
    spec = read_model_file(card.weights_file)
    problems = _layout_differences(card, spec)
    if problems:
        raise ModelCardError(
            f"model {card.name!r}: the card {card.card_path} does not match its weights file "
            f"{card.weights_file.name}: " + "; ".join(problems)
        )


def _layout_differences(card: ModelCard, spec: object) -> list[str]:
    problems: list[str] = []
    in_dims = tuple(int(v) for v in getattr(spec, "in_dims"))
    width, height, _depth, channels = in_dims
    if card.channels != channels:
        problems.append(f"[input] channels is {card.channels}, the network takes {channels}")
    if card.input_size is not None and tuple(card.input_size) != (width, height):
        problems.append(f"[weights] input_size is {list(card.input_size)}, the file stores [{width}, {height}]")
    if card.tiling is not None and tuple(card.tiling.patch_size) != (width, height):
        # a fully convolutional network runs at other sizes, as CIANNA runs it; a dense head cannot
        from ..cianna import input_size_problem

        problem = input_size_problem(spec, tuple(card.tiling.patch_size))
        if problem:
            problems.append(f"[tiling] patch_size is {list(card.tiling.patch_size)}: {problem}")
    layers = list(getattr(spec, "layers", []) or [])
    head = getattr(layers[-1], "yolo", None) if layers else None
    if card.yolo is None:
        return problems
    if head is None:
        problems.append("[yolo] is given but the network's last layer is not a YOLO head")
        return problems
    for field_name in ("nb_box", "nb_class", "nb_param"):
        mine, theirs = getattr(card.yolo, field_name), int(getattr(head, field_name))
        if mine != theirs:
            problems.append(f"[yolo] {field_name} is {mine}, the network has {theirs}")
    priors = np.asarray(head.priors, dtype=np.float64)
    if priors.ndim == 2 and priors.shape[1] == card.yolo.nb_box == int(head.nb_box):
        for row, key in ((0, "priors_w"), (1, "priors_h")):
            wanted = np.asarray(getattr(card.yolo, key), dtype=np.float64)
            if not np.allclose(wanted, priors[row], rtol=_PRIOR_RTOL, atol=1e-6):
                problems.append(f"[yolo] {key} is {_fmt(wanted)}, the network has {_fmt(priors[row])}")
    return problems


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


# -- the process-wide registry ------------------------------------------------------------------
_default: ModelRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> ModelRegistry:
    """The registry of this process: environment and per-user directories plus the built-ins."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ModelRegistry()
        return _default
