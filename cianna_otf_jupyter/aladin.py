"""An ipyaladin view that works offline and keeps its state to itself.

ipyaladin 0.8.1 has two habits that the notebook front end cannot live with:

- its browser module imports Aladin Lite from a CDN (esm.sh), so with no network the view never
  renders and every call made on it waits forever in the pending-call store;
- it keeps the event listeners and that pending-call store on the *class*, so two views share
  callbacks, and the calls queued for one view are replayed (again) when any later view loads.

``OfflineAladin`` fixes both without forking ipyaladin: its module is ipyaladin's own, with the
one import rewritten to load the copy served by our server extension (see ``static_files.py``),
and each instance gets its own listener dict and call store. Its background sky is an empty
HiPS served by the extension (``BLANK_SKY``) rather than DSS from CDS, and Aladin Lite's
start-up report is off, so an offline view asks nothing of the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipyaladin
from ipyaladin.utils.call_store import CallStore

from .static_files import ALADIN_LITE_ROUTE, BLANK_SKY_ROUTE, CDN_IMPORT, ipyaladin_esm_path

SERVICE_PATH = "cianna-otf/"
"""The service root below the Jupyter base URL (as in ``extension.py``)."""

LOCAL_ALADIN_LITE_PATH = SERVICE_PATH + ALADIN_LITE_ROUTE
"""Aladin Lite's path below the page's Jupyter base URL."""

BLANK_SKY = "cianna-otf:blank-sky"
"""The ``survey`` of an offline view: an empty all-sky HiPS served by the extension
(``static/blank-sky``), so that Aladin Lite fetches no background from CDS. Pass
``survey="P/DSS2/color"`` (or any HiPS) for a real background where the network allows."""

_LOADER = """\
// CIANNA On-The-Fly: load Aladin Lite from this Jupyter server, the CDN only as a fallback.
// The module runs from a blob: URL, so relative imports cannot work, and only the page knows
// the server's base URL (JupyterLab and Notebook 7: #jupyter-config-data; Notebook 6:
// <body data-base-url>); the kernel does not.
const __ciannaOtfLocalPath = %(local)s;
const __ciannaOtfVersion = %(version)s;
const __ciannaOtfCdnUrl = %(cdn)s;
const __ciannaOtfBlankSky = %(blank_marker)s;
const __ciannaOtfBlankSkyPath = %(blank_path)s;
function __ciannaOtfLocalUrl(path = __ciannaOtfLocalPath, query = "?v=" + encodeURIComponent(__ciannaOtfVersion)) {
  let base = null;
  try {
    const config = globalThis.document?.getElementById("jupyter-config-data");
    if (config) base = JSON.parse(config.textContent || "{}").baseUrl ?? null;
    if (base === null) base = globalThis.document?.body?.dataset?.baseUrl ?? null;
    if (typeof base !== "string" || base === "") return null;
    if (!base.endsWith("/")) base += "/";
    const page = new URL(base, globalThis.location.href);
    return new URL(path + query, page).href;
  } catch (error) {
    return null;
  }
}
// Each Aladin Lite view made through the library is kept on its div, so that code added after
// ipyaladin's module (the detection widget's region drawing) can reach the view it renders.
const __ciannaOtfViewKey = "__ciannaOtfAladin";
// The blank sky (an empty HiPS served by the extension) stands for the background survey, so a
// view asks nothing of the network; where the page is not a Jupyter page, Aladin's default.
function __ciannaOtfSurvey(survey) {
  if (survey !== __ciannaOtfBlankSky) return survey;
  return __ciannaOtfLocalUrl(__ciannaOtfBlankSkyPath, "") ?? "P/DSS2/color";
}
function __ciannaOtfTrackViews(library) {
  const create = library.aladin;
  const aladin = function (div, options) {
    if (options && options.survey !== undefined) options = { ...options, survey: __ciannaOtfSurvey(options.survey) };
    const view = create(div, options);
    const setImageSurvey = view.setImageSurvey.bind(view);
    view.setImageSurvey = (survey, ...rest) => setImageSurvey(__ciannaOtfSurvey(survey), ...rest);
    if (div !== null && typeof div === "object") div[__ciannaOtfViewKey] = view;
    return view;
  };
  return new Proxy(library, {
    get(target, property) {
      return property === "aladin" ? aladin : Reflect.get(target, property, target);
    },
  });
}
async function __ciannaOtfImportAladin() {
  const local = __ciannaOtfLocalUrl();
  if (local !== null) {
    try {
      return (await import(local)).default;
    } catch (error) {
      console.warn(`cianna-otf: Aladin Lite not served at ${local}; using ${__ciannaOtfCdnUrl}`, error);
    }
  }
  return (await import(__ciannaOtfCdnUrl)).default;
}
"""


def offline_esm(source: str, local_path: str = LOCAL_ALADIN_LITE_PATH) -> str:
    """ipyaladin's module `source` with its CDN import replaced by the local-first loader.

    The static ``import X from "https://esm.sh/aladin-lite@V"`` becomes a top-level
    ``var X = await ...`` (anywidget imports the module dynamically, so top-level await is
    fine), and the loader goes in front. Raises ValueError if the import is not found exactly
    once: a new ipyaladin release must be looked at, not silently served from the CDN.
    """
    matches = list(CDN_IMPORT.finditer(source))
    if len(matches) != 1:
        raise ValueError(f"expected one esm.sh import of aladin-lite in ipyaladin's module, found {len(matches)}")
    (match,) = matches
    loader = _LOADER % {
        "local": json.dumps(local_path),
        "version": json.dumps(match["version"]),
        "cdn": json.dumps(match["url"]),
        "blank_marker": json.dumps(BLANK_SKY),
        "blank_path": json.dumps(SERVICE_PATH + BLANK_SKY_ROUTE),
    }
    # a multi-line string: anywidget would take a one-line string ending in ".js" for a file name
    body = source[: match.start()] + f"var {match['name']} = __ciannaOtfTrackViews(await __ciannaOtfImportAladin());" + source[match.end():]
    return loader + "\n" + body


DEFAULT_EXPORT = re.compile(r"export\s*\{\s*(?P<name>[A-Za-z_$][\w$]*)\s+as\s+default\s*\}\s*;?")
"""The (minified) default export of ipyaladin's module, e.g. ``export{$ as default};``."""

FRONTEND_DIR = Path(__file__).resolve().parent / "frontend"
"""Browser code added to ipyaladin's module by views that need more than ipyaladin does."""


def extend_esm(esm: str, extension: str) -> str:
    """`esm` (an ipyaladin module) followed by `extension`, which wraps its default export.

    ipyaladin's ``export{X as default}`` becomes ``const __ciannaOtfIpyaladin = X;``, and
    `extension` must end with its own ``export default``, built from that constant: the new
    widget can run code around ipyaladin's ``render`` (it finds the Aladin Lite view that the
    loader keeps on its div) without editing ipyaladin's minified code. Raises ValueError if the
    export is not found exactly once, like `offline_esm` for the import.
    """
    matches = list(DEFAULT_EXPORT.finditer(esm))
    if len(matches) != 1:
        raise ValueError(f"expected one default export in ipyaladin's module, found {len(matches)}")
    (match,) = matches
    renamed = esm[: match.start()] + f"const __ciannaOtfIpyaladin = {match['name']};" + esm[match.end():]
    return renamed + "\n" + extension


def _ipyaladin_source() -> str:
    path = ipyaladin_esm_path()
    if path is None:  # pragma: no cover - ipyaladin is imported above, so its module is there
        raise ImportError("ipyaladin's static/widget.js not found")
    return path.read_text(encoding="utf-8")


class _DrainingCallStore(CallStore):
    """A CallStore that forgets calls once run.

    ipyaladin's store replays everything each time *a* view loads; one store per widget that
    empties itself runs each queued call exactly once, on the widget it was made on.
    """

    def run_all(self) -> None:
        """Run the queued calls in order, each once (calls queued meanwhile run too)."""
        while self.calls:
            func, args, kwargs = self.calls.pop(0)
            func(*args, **kwargs)


class OfflineAladin(ipyaladin.Aladin):
    """``ipyaladin.Aladin`` loading Aladin Lite from the Jupyter server, with per-view state.

    Use it exactly as ``ipyaladin.Aladin``. Where the server extension has no local copy of
    Aladin Lite (``python -m cianna_otf_jupyter.fetch_aladin`` was not run), or the page is not
    a Jupyter page (VS Code, for instance), the browser falls back to ipyaladin's CDN.
    """

    _esm = offline_esm(_ipyaladin_source())  # type: ignore[misc]  # ipyaladin marks it Final

    def __init__(self, **init_options: object) -> None:
        # before ipyaladin's __init__, which already queues calls (and whose load observer reads
        # self._call_store): instance attributes shadow ipyaladin's class-level ones
        self.listener_callback: dict[str, Callable[[Any], Any]] = {}
        self._call_store = _DrainingCallStore()
        # Aladin Lite reports every start-up (with the page URL) to a CDS logging service
        # unless told not to; an offline-first view does not phone home
        init_options.setdefault("log", False)
        init_options.setdefault("survey", BLANK_SKY)
        super().__init__(**init_options)

    def set_listener(self, listener_type: str, callback: Callable[[Any], Any]) -> None:
        """Register `callback` for `listener_type` events of this view only, at once.

        ipyaladin queues listener registration until the view has loaded; listeners live in
        Python and need no front end, so they take effect immediately (and can be tested
        without a browser). Types: 'object_hovered', 'object_clicked', 'click', 'select'.
        """
        # ipyaladin's own body (unwrapped from its wait-until-loaded decorator) validates the
        # type and writes into self.listener_callback, which is now this instance's dict
        ipyaladin.Aladin.set_listener.__wrapped__(self, listener_type, callback)
