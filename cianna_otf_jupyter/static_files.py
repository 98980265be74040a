"""The route that serves the notebook view's Aladin Lite and blank-sky HiPS from the package.

ipyaladin imports Aladin Lite from a CDN (esm.sh) in the browser, so without a network the view
never loads. The same ES module, taken from the npm package ``aladin-lite`` when the wheel is
built (``setup.py`` runs ``fetch_aladin.py``), sits in ``static/aladin-lite/`` of this package and
is served by the server extension at ``{base_url}cianna-otf/static/aladin-lite/aladin.js``;
``aladin.py`` points the widget at that URL. The paths and version facts are in ``_assets.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import FileFindHandler

from ._assets import (  # noqa: F401  (re-exported: the paths, routes and version facts)
    ALADIN_LITE_DIR,
    ALADIN_LITE_FILE,
    ALADIN_LITE_ROUTE,
    ALADIN_LITE_STAMP,
    BLANK_SKY_ROUTE,
    CDN_IMPORT,
    DEFAULT_ALADIN_LITE_VERSION,
    STATIC_DIR,
    STATIC_ROUTE,
    ipyaladin_esm_path,
    pinned_aladin_lite_version,
)


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
