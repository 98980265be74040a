"""Where the notebook widget's Aladin Lite lives, and the route that serves it.

ipyaladin imports Aladin Lite from a CDN (esm.sh) in the browser, so without a network the view
never loads. The same ES module, taken from the npm package ``aladin-lite`` at build time by
``fetch_aladin.py``, sits in ``static/aladin-lite/`` of this package and is served by the server
extension at ``{base_url}cianna-otf/static/aladin-lite/aladin.js``; ``aladin.py`` points the
widget at that URL. The facts shared by the three (paths, the CDN import's shape, the version
ipyaladin pins) live here so that they cannot drift apart.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import FileFindHandler

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


class StaticFilesHandler(FileFindHandler):
    """jupyter_server's static file handler, without its process-wide lookup cache.

    FileFindHandler remembers where it found each relative path in a dict shared by every
    instance of the class (Jupyter's own /static/ included) and keyed by the relative path only,
    so a file first looked up under another root, or first missing, would be answered from that
    memory. One ``isfile`` per request is cheap; a file fetched while the server runs is then
    served at once.
    """

    @classmethod
    def get_absolute_path(cls, roots: Sequence[str], path: str) -> str:
        """The first file named `path` under `roots`, or "" (a 404) where there is none."""
        for root in roots:
            candidate = os.path.abspath(os.path.join(root, path))
            if candidate.startswith(root) and os.path.isfile(candidate):
                return candidate
        return ""


def static_handlers(service_path: str = "/cianna-otf/", path: Path | str = STATIC_DIR) -> list[tuple[str, type, dict[str, Any]]]:
    """URL spec serving `path` at ``{service_path}static/...`` (the ExtensionApp adds base_url).

    jupyter_server's own static handler class (see StaticFilesHandler) is used because it is
    marked as allowed without authentication (a browser fetches module imports with cookies only, and Aladin Lite is a
    public library) and so raises no JupyterServerAuthWarning; it also refuses paths outside
    `path`. The file is served even before it exists on disk: a 404 is what makes the widget
    fall back to the CDN.
    """
    if not service_path.endswith("/"):
        service_path += "/"
    return [(service_path + STATIC_ROUTE + "(.*)", StaticFilesHandler, {"path": [str(path)]})]
