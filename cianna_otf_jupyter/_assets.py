"""The facts about the notebook view's front-end assets, with no dependency beyond the standard library.

Where Aladin Lite and the blank-sky HiPS live in the package, the routes that serve them, the
version ipyaladin imports and the shape of its CDN import. The server extension
(``static_files.py``), the widget (``aladin.py``), the fetcher (``fetch_aladin.py``) and the
build hook (``setup.py``, which runs in an isolated build environment without Jupyter) all read
them from here, so they cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The folder served under ``{service}/static/``: Aladin Lite (fetched at install, not committed)
and the blank-sky HiPS (committed)."""

ALADIN_LITE_DIR = STATIC_DIR / "aladin-lite"
ALADIN_LITE_FILE = ALADIN_LITE_DIR / "aladin.js"
ALADIN_LITE_STAMP = ALADIN_LITE_DIR / "VERSION"
"""Holds the npm version of the fetched file, so fetching again is a no-op."""

STATIC_ROUTE = "static/"
"""Sub-path of the service root (``{base_url}cianna-otf/``) under which STATIC_DIR is served."""

ALADIN_LITE_ROUTE = STATIC_ROUTE + "aladin-lite/aladin.js"
"""Aladin Lite's path relative to the service root; the browser prefixes the page's base URL."""

BLANK_SKY_ROUTE = STATIC_ROUTE + "blank-sky"
"""An empty all-sky HiPS (12 black order-0 tiles), the offline view's background survey."""

DEFAULT_ALADIN_LITE_VERSION = "3.9.2-beta"
"""What ipyaladin 0.8.1 imports; used only when ipyaladin is not installed to ask."""

CDN_IMPORT = re.compile(
    r"""import\s*(?P<name>[A-Za-z_$][\w$]*)\s*from\s*(?P<quote>["'])"""
    r"""(?P<url>https://esm\.sh/aladin-lite@(?P<version>[^"'?/]+)[^"']*)(?P=quote)\s*;?"""
)
"""ipyaladin's (minified) static import of Aladin Lite, e.g. ``import C from"https://esm.sh/aladin-lite@3.9.2-beta";``."""


def ipyaladin_esm_path() -> Path | None:
    """ipyaladin's front-end module, found without importing ipyaladin (it pulls in astropy).

    Returns None where ipyaladin is not installed.
    """
    spec = importlib.util.find_spec("ipyaladin")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static" / "widget.js"
    return path if path.is_file() else None


def pinned_aladin_lite_version() -> str:
    """The Aladin Lite version that the installed ipyaladin imports (its CDN URL says it).

    Falls back to DEFAULT_ALADIN_LITE_VERSION where ipyaladin is absent; raises ValueError where
    ipyaladin is present but its module no longer has the expected import (a new ipyaladin
    release: check the rewrite in ``aladin.py`` before trusting it).
    """
    path = ipyaladin_esm_path()
    if path is None:
        return DEFAULT_ALADIN_LITE_VERSION
    match = CDN_IMPORT.search(path.read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"no esm.sh import of aladin-lite found in {path}")
    return match["version"]
