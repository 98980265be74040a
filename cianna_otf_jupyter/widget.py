"""The detection widget: an Aladin view with model picker, region tools, Detect, progress and results.

``DetectionWidget`` is the Python side of the notebook front end. It is a client of the
UWS job service like any other (it uses ``cianna_otf_server.client.Client``), so it behaves the
same against the Jupyter server extension and against a standalone shared server.

Messages between the browser and the kernel
-------------------------------------------
The view is an ``OfflineAladin``; Aladin Lite's own ``select(mode, callback)`` gives drawn shapes
in view pixels, which the front-end code converts with ``aladin.pix2world`` and sends to Python
with ``model.send(message)``. The protocol, version 1 (all coordinates ICRS degrees):

Front end -> kernel (custom messages on the view; a message with an ``"event"`` key is ours,
anything else goes to ipyaladin as before)::

    {"event": "hello", "protocol": 1}
        The front-end code is present: from now on the kernel asks it to draw (see below).
    {"event": "region", "shape": "rect", "ra_dec": [[ra, dec], [ra, dec], [ra, dec], [ra, dec]]}
        The four corners of a drawn rectangle, in order around it (two opposite corners are
        accepted too and make an RA/Dec box). Becomes ``POLYGON ra1 dec1 ...``.
    {"event": "region", "shape": "polygon", "ra_dec": [[ra, dec], ...]}
        At least three vertices, in drawing order. Becomes ``POLYGON ra1 dec1 ...``.
    {"event": "region", "shape": "circle", "ra": ra, "dec": dec, "radius": r}
        Centre and radius (degrees). Becomes ``CIRCLE ra dec r``.
    {"event": "click", "ra": ra, "dec": dec}
        Click-to-identify: a small circle around the point is submitted at once.

A vertex that ``pix2world`` could not place (outside the projection) must be sent as ``null``;
the region is then refused with a message in the widget, not guessed. ipyaladin's own ``click``
event (``{"event_type": "click", "content": {"ra", "dec"}}``), which works without our front-end
code, also triggers click-to-identify while the region mode is ``click``.

Kernel -> front end (sent only after ``hello``, because ipyaladin's module throws on event
names it does not know)::

    {"event_name": "cianna_otf_select", "shape": "rect" | "circle" | "polygon" | "click"}
        Start Aladin Lite's selection tool for that shape (``click``: stop drawing, clicks identify).
    {"event_name": "cianna_otf_goto", "ra": ra, "dec": dec}
        Centre the view on a position (a source chosen in the list).
    {"event_name": "cianna_otf_image_options", "name": layer, "options": {"minCut", "maxCut", "stretch", "colormap"}}
        New display settings for the image layer (the Stretch, Limits and Colours pickers); without
        the front end the image is sent again with them (``add_fits`` with the same layer name).

Everything else the widget shows on the view goes through ipyaladin's public calls
(``add_fits`` for the image, ``add_table`` for the detected sources).

Desktop viewers over SAMP
-------------------------
The SAMP button (`DetectionWidget.send_to_viewers`) joins the running SAMP hub as
``cianna-otf notebook`` (once, on first use) and sends the image (``image.load.fits``) and the
catalogue (``table.load.votable``) to Aladin Desktop, DS9, TOPCAT...; while connected, an image a
viewer sends to the notebook opens in the widget. See `cianna_otf_jupyter._samp_link.SampLink`.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from cianna_otf_server.client import URL_ENV, Client, ClientError, Job, has_configured_token

from ._view_image import (
    COLORMAPS,
    DEFAULT_COLORMAP,
    DEFAULT_LIMITS,
    DEFAULT_STRETCH,
    LIMITS,
    STRETCHES,
    display_options,
    view_image,
)
from ._source_table import SourceTable
from .aladin import FRONTEND_DIR, SERVICE_PATH, OfflineAladin, extend_esm

if TYPE_CHECKING:
    from astropy.io.fits import HDUList
    from astropy.table import Table
    from regions import Regions

    from ._samp_link import Broadcast, SampLink

__all__ = ["DEFAULT_CLICK_RADIUS_ARCSEC", "DetectionAladin", "DetectionWidget", "PROTOCOL_VERSION",
           "RegionMessageError", "default_client", "region_from_message", "running_jupyter_server",
           "stcs_from_soda"]

PROTOCOL_VERSION = 1
SELECT_EVENT = "cianna_otf_select"
GOTO_EVENT = "cianna_otf_goto"
IMAGE_OPTIONS_EVENT = "cianna_otf_image_options"
#: The name of the image layer in the view (one image at a time: a new one replaces it).
IMAGE_LAYER = "CIANNA image"
#: Radius of the click-to-identify circle where neither the model card nor the image say better.
DEFAULT_CLICK_RADIUS_ARCSEC = 20.0
#: Rows shown in the result list (the full table is always in ``widget.table``).
MAX_LISTED_ROWS = 500
#: How the listed columns are written (degrees to about 0.04", fluxes to 4 digits); others ``.6g``.
_CELL_FORMATS = {"id": "d", "ra": ".5f", "dec": ".5f", "flux": ".4g", "snr": ".1f", "score": ".3f"}
REGION_MODES = (("Rectangle", "rect"), ("Circle", "circle"), ("Polygon", "polygon"), ("Click a source", "click"))
REGION_OVERLAY = "Region of interest"
REGION_COLOUR = "#2f80ed"
RESULT_COLOUR = "#ff3b30"
PRECISIONS = (("model default", None), ("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16"))
#: Longest reason shown in a model picker label (the whole sentence is under the picker).
LABEL_REASON_CHARS = 60
#: The warning banner: the colours of a Bootstrap/JupyterLab "warning" alert, readable in light and dark themes.
BANNER_STYLE = ("background: #fff3cd; color: #664d03; border: 1px solid #ffda6a; border-radius: 4px; "
                "padding: 4px 8px; margin: 4px 0")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 source``, ``0 sources``, ``12 sources``."""
    return f"{count} {noun if count == 1 else plural_form or noun + 's'}"


# -- finding the service ---------------------------------------------------------------------
def running_jupyter_server() -> dict[str, Any] | None:
    """The info of the Jupyter server that started this kernel, or None outside such a kernel.

    Why this way: Jupyter gives a kernel no server URL or token in its environment
    (``JUPYTER_SERVER_URL`` and friends are set by some hosting platforms, not by Jupyter;
    ``JPY_SESSION_NAME`` is only the notebook path). What Jupyter does document is that every
    running server writes ``jpserver-<pid>.json`` (URL with its base URL, token, pid) to the
    runtime directory, listed by ``jupyter_server.serverapp.list_running_servers()``, and
    jupyter_client puts the launching process's pid in the kernel's ``JPY_PARENT_PID``. The
    server whose pid matches is ours, however many servers the user runs. Where no pid matches
    (a kernel started by a remote provisioner) but a kernel environment is present and exactly
    one server runs, that one is taken; anything more ambiguous returns None rather than guess.
    """
    if not (os.environ.get("JPY_PARENT_PID") or os.environ.get("JPY_SESSION_NAME")):
        return None
    try:
        from jupyter_server.serverapp import list_running_servers

        servers = [info for info in list_running_servers() if info.get("url") and not info.get("sock")]
    except Exception:  # an unreadable runtime dir must not break the widget: fall back to config
        return None
    parents = {os.getppid()}
    if (os.environ.get("JPY_PARENT_PID") or "").isdigit():
        parents.add(int(os.environ["JPY_PARENT_PID"]))
    for info in servers:
        if info.get("pid") in parents:
            return info
    return servers[0] if len(servers) == 1 else None


def default_client() -> Client:
    """The client a widget made without one uses; see the order below.

    1. ``$CIANNA_OTF_URL`` (with ``$CIANNA_OTF_TOKEN``): an explicit choice, e.g. a shared GPU
       server, wins over discovery (inside Jupyter discovery always succeeds, so otherwise the
       variable could never be used from a notebook).
    2. The Jupyter server running this kernel (`running_jupyter_server`): the service of its
       server extension at ``{url}cianna-otf``, with the server's token; under JupyterHub the
       server has no token of its own and the kernel inherits ``JUPYTERHUB_API_TOKEN``
       (``JPY_API_TOKEN`` in old hubs), which the single-user server accepts.
    3. ``Client()``: the client config file, or a `ConfigurationError` that says what to set.

    With ``$CIANNA_OTF_URL`` and no token of its own (``$CIANNA_OTF_TOKEN`` or the config file),
    a kernel of a JupyterHub user server sends the user's Hub token (``$JUPYTERHUB_API_TOKEN``,
    which the Hub gives every spawned server): a platform points its users' notebooks at the
    shared service (``c.Spawner.environment``) and each job is the user's own.
    """
    if os.environ.get(URL_ENV):
        hub_token = os.environ.get("JUPYTERHUB_API_TOKEN")
        if hub_token and not has_configured_token():
            return Client(token=hub_token, auth_scheme="token")
        return Client()
    info = running_jupyter_server()
    if info is not None:
        url = str(info["url"]).rstrip("/") + "/" + SERVICE_PATH
        token = info.get("token") or os.environ.get("JUPYTERHUB_API_TOKEN") or os.environ.get("JPY_API_TOKEN")
        return Client(url, token=token or None, auth_scheme="token")
    return Client()


def notebook_directory() -> Path:
    """Where saved files go: the notebook's folder (``JPY_SESSION_NAME``), else the working directory.

    The kernel usually runs in the notebook's folder anyway; the session name covers kernels
    whose working directory was configured elsewhere.
    """
    session = os.environ.get("JPY_SESSION_NAME")
    if session and os.path.isabs(session) and Path(session).parent.is_dir():
        return Path(session).parent
    return Path.cwd()


# -- regions ---------------------------------------------------------------------------------
class RegionMessageError(ValueError):
    """A region message from the front end that cannot be turned into a SODA region."""


def _fmt(value: float) -> str:
    """Degrees with 1e-8 precision (0.04 mas), no trailing zeros: short, exact enough, stable."""
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _point(value: Any) -> tuple[float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2 or None in value:
        raise RegionMessageError("a vertex lies outside the sky projection (or is not [ra, dec])")
    ra, dec = (float(v) for v in value)
    if not (math.isfinite(ra) and math.isfinite(dec)) or abs(dec) > 90:
        raise RegionMessageError(f"vertex ({ra}, {dec}) is not a sky position")
    return ra % 360.0, dec


def region_from_message(message: Mapping[str, Any]) -> str:
    """The SODA text (ICRS degrees) of a ``{"event": "region", ...}`` message (see the module doc)."""
    shape = str(message.get("shape", "")).lower()
    if shape == "circle":
        circle = message.get("circle") if isinstance(message.get("circle"), Mapping) else message
        try:
            ra, dec = _point([circle.get("ra"), circle.get("dec")])
            radius = float(circle["radius"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegionMessageError(f"circle region needs ra, dec and radius: {exc}") from None
        if not (math.isfinite(radius) and 0 < radius <= 180):
            raise RegionMessageError(f"circle radius {radius} deg is not usable")
        return f"CIRCLE {_fmt(ra)} {_fmt(dec)} {_fmt(radius)}"
    if shape not in ("rect", "rectangle", "polygon"):
        raise RegionMessageError(f"unknown region shape {shape!r} (rect, circle or polygon)")
    points = [_point(p) for p in (message.get("ra_dec") or [])]
    if shape != "polygon" and len(points) == 2:  # two opposite corners: an RA/Dec box
        (ra1, dec1), (ra2, dec2) = points
        points = [(ra1, dec1), (ra2, dec1), (ra2, dec2), (ra1, dec2)]
    if len(points) < 3:
        raise RegionMessageError(f"a {shape} needs at least 3 vertices, got {len(points)}")
    return "POLYGON " + " ".join(f"{_fmt(ra)} {_fmt(dec)}" for ra, dec in points)


# -- the view --------------------------------------------------------------------------------
class DetectionAladin(OfflineAladin):
    """An ``OfflineAladin`` that passes our ``{"event": ...}`` messages to `on_event`.

    ipyaladin's message handler reads ``message["event_type"]`` unconditionally, so a message
    of ours would raise KeyError inside the comm callback (a traceback in the notebook); here
    ours are routed before it, and ipyaladin still gets all of its own. Its browser module is
    ``OfflineAladin``'s plus ``frontend/detection_view.js``, the region drawing.
    """

    _esm = extend_esm(OfflineAladin._esm, (FRONTEND_DIR / "detection_view.js").read_text(encoding="utf-8"))  # type: ignore[misc]

    #: Aladin Lite's own widgets the detection view does without: the status bar (a white band
    #: across the top and a "You entered the selection mode" toast at every Draw) and the
    #: Simbad pointer (a control, and a tooltip after start, for a service the offline view
    #: cannot reach). The widget's status line and table say what they would.
    QUIET_OPTIONS: dict[str, object] = {"show_status_bar": False, "show_simbad_pointer_control": False}

    def __init__(self, on_event: Callable[[dict[str, Any]], None] | None = None, **init_options: object) -> None:
        self.on_event = on_event
        super().__init__(**{**self.QUIET_OPTIONS, **init_options})

    def _handle_custom_message(self, widget: Any, message: dict, buffers: Any) -> None:
        if isinstance(message, dict) and "event" in message and "event_type" not in message:
            if self.on_event is not None:
                self.on_event(message)
            return
        super()._handle_custom_message(widget, message, buffers)


def stcs_from_soda(region: str) -> str | None:
    """The STC-S of a SODA ``CIRCLE``/``POLYGON`` (ICRS degrees), for drawing it; None for others.

    Aladin Lite draws STC-S; SODA's shapes are STC-S without the frame, which is ICRS.
    """
    words = region.split()
    if len(words) > 1 and words[0].upper() in ("CIRCLE", "POLYGON"):
        return " ".join([words[0].upper(), "ICRS", *words[1:]])
    return None


# -- models and warnings ---------------------------------------------------------------------
def _model_label(name: str, card: Mapping[str, Any], plan: Mapping[str, Any] | None) -> str:
    """A picker label: the name, and once ranked its fit and a short reason, e.g.
    ``snr-net — fits (reads signal-to-noise, so any unit and noise level)``."""
    usable = card.get("status", "available") == "available"
    if plan is None:
        return name if usable else f"{name} (unavailable)"
    if not usable:
        verdict = "unavailable"
    elif plan.get("warnings") or float(plan.get("fit", 0)) < 0.5:
        verdict = "poor fit"
    else:
        verdict = "fits"
    clauses = [c.strip() for c in str(plan.get("reason", "")).split("; ") if c.strip()] or [""]
    if verdict == "poor fit":  # the clause saying what is wrong, rather than what is in range
        clauses = [c for c in clauses if " within " not in c] or clauses
    reason = clauses[0]
    if len(reason) > LABEL_REASON_CHARS:
        reason = reason[:LABEL_REASON_CHARS - 1].rstrip(" ,;:") + "\u2026"
    return f"{name} \u2014 {verdict} ({reason})" if reason else f"{name} \u2014 {verdict}"


# -- the widget ------------------------------------------------------------------------------
class DetectionWidget(widgets.VBox):
    """Draw a region on an image, detect sources with a service model, see and keep the result.

    Parameters
    ----------
    client : Client, optional
        The service client; `default_client()` when None (the Jupyter server running this
        kernel, or ``$CIANNA_OTF_URL``). A failure to build it shows in the status line.
    image : path or HDUList, optional
        The image to show at once (`show_image`).
    model : str, optional
        The model to preselect (else the service's default model).
    save_dir : path, optional
        Where the Save buttons write; the notebook's folder by default.
    height : int
        Height of the Aladin view, pixels.
    samp_hub : path, URL, mapping, optional
        The SAMP hub the SAMP button joins: its lockfile (path, ``file://`` URL or
        ``std-lockurl:URL``) or parameters; None: ``$SAMP_HUB``, else ``~/.samp`` (the hub
        TOPCAT, Aladin Desktop or DS9 started).

    Attributes
    ----------
    table : astropy Table or None
        The catalogue of the last detection.
    regions : regions.Regions or None
        The same detections as sky regions.
    job : Job or None
        The last completed job (parameters, URL, results); a failed one is in ``error.job``.
    region : str or None
        The current region of interest, SODA text (None: the whole image).
    error : Exception or None
        The last error, also shown in the status line.
    ranking : list of dict or None
        The service's models ranked for the shown image, best first (``Client.match_models``:
        ``model``, ``fit``, ``reason``, ``warnings``, ...); None until ranked (or where the
        service cannot rank). The model picker follows this order, each model labelled with its
        fit ("fits", "poor fit", "unavailable") and reason; the selection itself is never changed
        by the ranking, so the model a notebook asks for (or the service's default) stays chosen.
    warnings : list of str
        The warnings of the last detection's catalogue (an image outside the model's domain, an
        unknown unit or beam), also shown in the warning banner; cleared by the next run.
    samp_link : SampLink or None
        The notebook's SAMP client once connected (`connect_samp`, or the first press of the
        SAMP button); None before, and after `disconnect_samp`.
    """

    def __init__(self, client: Client | None = None, image: str | os.PathLike | HDUList | None = None, *,
                 model: str | None = None, save_dir: str | os.PathLike | None = None, height: int = 500,
                 samp_hub: str | os.PathLike | Mapping[str, Any] | None = None) -> None:
        self.table: Table | None = None
        self.regions: Regions | None = None
        self.job: Job | None = None
        self.region: str | None = None
        self.error: Exception | None = None
        self.image_path: Path | None = None
        self._image_bytes: bytes | None = None
        self.pixel_scale_deg: float | None = None
        self.save_dir = Path(save_dir) if save_dir is not None else notebook_directory()
        self._frontend_protocol: int | None = None
        self._worker: threading.Thread | None = None
        self._busy = threading.Lock()
        self._cards: dict[str, dict[str, Any]] = {}
        self._following: Job | None = None  # the job being waited for (self.job: the last finished one)
        self._result_overlay: str | None = None
        self.ranking: list[dict[str, Any]] | None = None
        self.image_traits: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self._ranker: threading.Thread | None = None
        self._rank_generation = 0
        self._rank_lock = threading.Lock()
        self._picker_lock = threading.RLock()
        self._filling_picker = False
        self._selected_model: str | None = None  # the picker's choice, steady while its options are rebuilt
        self.samp_hub = samp_hub
        self.samp_link: SampLink | None = None
        self._samp_lock = threading.Lock()
        self._job_table: Table | None = None  # the table read from self.job (its VOTable is the service's)
        self._shown_hdu: Any = None  # the HDU in the view (its pixels set the display limits)
        #: The display settings last sent to the view (Aladin Lite image options), None before an image.
        self.display: dict[str, Any] | None = None

        self.view = DetectionAladin(on_event=self.handle_message, height=height)
        self.view.set_listener("click", self._on_native_click)
        self.view.set_listener("object_clicked", self._on_object_clicked)

        self.model_picker = widgets.Dropdown(description="Model", options=[])
        self.model_note = widgets.HTML("")  # how the chosen model fits the image, once ranked
        self.model_note.add_class("cianna-otf-model-note")
        self.precision = widgets.Dropdown(description="Precision", options=PRECISIONS, value=None)
        self.threshold = widgets.Text(description="Threshold", placeholder="model default")
        self.nms = widgets.Text(description="NMS", placeholder="model default")
        self.expert = widgets.Accordion(children=[widgets.VBox([self.precision, self.threshold, self.nms])])
        self.expert.set_title(0, "Expert settings")
        self.expert.selected_index = None
        self.region_mode = widgets.Dropdown(description="Region", options=REGION_MODES, value="rect")
        self.region_label = widgets.Label("Region: whole image", tooltip="Region: whole image",
                                          layout={"flex": "1 1 auto", "width": "auto", "min_width": "0"})
        self.region_label.add_class("cianna-otf-wrap")  # a polygon's SODA text wraps over a few lines
        self.stretch = widgets.Dropdown(description="Stretch", options=STRETCHES, value=DEFAULT_STRETCH,
                                        tooltip="How pixel values between the limits map to grey levels",
                                        layout={"width": "100%"})
        self.limits = widgets.Dropdown(description="Limits", options=LIMITS, value=DEFAULT_LIMITS,
                                       tooltip="Display limits: the upper percentile over the background "
                                               "(median - 1 sigma), the full range, or zscale",
                                       layout={"width": "100%"})
        self.colormap = widgets.Dropdown(description="Colours", options=COLORMAPS, value=DEFAULT_COLORMAP,
                                         layout={"width": "100%"})
        self.draw_button = widgets.Button(
            description="Draw", icon="pencil",
            tooltip="Draw the region on the image: drag a rectangle or circle; a polygon: click its "
                    "vertices and close it on the first one")
        self.clear_region_button = widgets.Button(description="Whole image", tooltip="Forget the drawn region",
                                                  layout={"width": "auto", "flex": "0 0 auto"})
        self.detect_button = widgets.Button(description="Detect", button_style="primary", icon="search")
        self.phase = widgets.Label("")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", layout={"width": "200px"})
        self.status = widgets.Label("", layout={"width": "100%"})
        self.status.add_class("cianna-otf-wrap")  # long paths and errors wrap; the whole text is the tooltip
        self.status.observe(lambda change: setattr(self.status, "tooltip", change["new"] or None), names="value")
        # what makes the last catalogue doubtful (Job.warnings), shown only when there is something
        self.warnings_banner = widgets.HTML("", layout={"display": "none"})
        self.warnings_banner.add_class("cianna-otf-warnings")
        self.sources = SourceTable(layout={"width": "100%"})
        self.sources.add_class("cianna-otf-sources")
        self.sources_header = widgets.HTML("")
        self._style = widgets.HTML("<style>"
                                   ".cianna-otf-wrap {white-space: normal !important; overflow-wrap: anywhere; height: auto !important; "
                                   "line-height: 1.3; min-height: var(--jp-widgets-inline-height, 28px);}"
                                   "</style>")
        self.save_catalogue_button = widgets.Button(description="Save catalogue", disabled=True)
        self.save_regions_button = widgets.Button(description="Save regions", disabled=True)
        self.save_provenance_button = widgets.Button(description="Save provenance", disabled=True)
        self.samp_button = widgets.Button(
            description="SAMP", icon="share-alt",
            tooltip="Send the image and the sources to desktop viewers over SAMP; images they send open here")

        self.detect_button.on_click(self.detect)
        self.clear_region_button.on_click(lambda _: self.set_region(None))
        self.draw_button.on_click(lambda _: self._request_selection())
        self.save_catalogue_button.on_click(lambda _: self._guarded(self.save_catalogue))
        self.save_regions_button.on_click(lambda _: self._guarded(self.save_regions))
        self.save_provenance_button.on_click(lambda _: self._guarded(self.save_provenance))
        self.samp_button.on_click(lambda _: self._guarded(self.send_to_viewers))
        self.region_mode.observe(lambda change: self._request_selection(), names="value")
        self.sources.observe(self._on_row_selected, names="value")
        self.model_picker.observe(self._on_model_picked, names="value")
        for picker in (self.stretch, self.limits, self.colormap):
            picker.observe(lambda change: self._guarded(self.apply_display), names="value")

        controls = widgets.VBox([
            self.model_picker, self.model_note, self.expert, widgets.HBox([self.region_mode, self.draw_button]),
            widgets.HBox([self.region_label, self.clear_region_button], layout={"width": "100%"}),
            self.detect_button, widgets.HBox([self.phase, self.progress]), self.status, self.warnings_banner,
            self.stretch, self.limits, self.colormap,
        ], layout={"width": "340px"})
        results = widgets.VBox([
            self._style, self.sources_header, self.sources,
            widgets.HBox([self.save_catalogue_button, self.save_regions_button, self.save_provenance_button,
                          self.samp_button]),
        ])
        # the view takes the room the controls leave (without a flex size it collapses to nothing)
        self.view.layout = widgets.Layout(flex="1 1 0%", min_width="320px", height=f"{height}px")
        controls.layout.flex = "0 0 340px"
        super().__init__([widgets.HBox([self.view, controls], layout={"width": "100%"}), results])

        try:
            self.client: Client | None = client if client is not None else default_client()
        except Exception as exc:  # shown, not raised: the widget still displays the image
            self.client = None
            self._fail(exc)
        self.refresh_models(select=model)
        if image is not None:
            self.show_image(image)

    # -- status -------------------------------------------------------------------------------
    def _fail(self, exc: BaseException, context: str = "") -> None:
        self.error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
        self.status.value = f"Error{' ' + context if context else ''}: {exc}"

    def _guarded(self, action: Callable[[], Any]) -> Any:
        """Run a button action; errors go to the status line, never into the comm callback."""
        try:
            return action()
        except Exception as exc:
            self._fail(exc)
            return None

    # -- models -------------------------------------------------------------------------------
    def refresh_models(self, select: str | None = None) -> None:
        """Fill the model picker from the service's model cards (unavailable ones are marked)."""
        if self.client is None:
            return
        try:
            cards = self.client.models()
        except Exception as exc:
            self._fail(exc, "listing the models")
            return
        self._cards = {card["name"]: card for card in cards}
        available = [n for n, c in self._cards.items() if c.get("status", "available") == "available"]
        if select not in self._cards:  # the service's default model, else the first one that can run
            default = [n for n in available if self._cards[n].get("default")]
            select = (default or available or list(self._cards) or [None])[0]
        self._fill_picker(select)

    def _fill_picker(self, select: str | None) -> None:
        """Model picker options: in the ranking's order and labelled with the fit once ranked; keep `select`."""
        ranking = {plan["model"]: plan for plan in self.ranking or ()}
        names = [name for name in ranking if name in self._cards]
        names += [name for name in self._cards if name not in ranking]
        options = [(_model_label(name, self._cards[name], ranking.get(name)), name) for name in names]
        if select not in self._cards:
            select = options[0][1] if options else None
        # new options select the first one for a moment: `selected_model` keeps the choice meanwhile
        with self._picker_lock:
            self._filling_picker = True
            try:
                self.model_picker.options = options
                self.model_picker.value = select
            finally:
                self._filling_picker = False
            self._selected_model = self.model_picker.value
        self._show_model_note()

    @property
    def selected_model(self) -> str | None:
        """The model the next detection uses (the picker's value)."""
        with self._picker_lock:
            return self._selected_model

    def _on_model_picked(self, change: Mapping[str, Any]) -> None:
        if not self._filling_picker:
            self._selected_model = change.get("new")
            self._show_model_note()

    def _show_model_note(self) -> None:
        """Under the picker: the chosen model's fit to the shown image and its warnings (once ranked)."""
        plan = next((p for p in self.ranking or () if p.get("model") == self.selected_model), None)
        if plan is None:
            self.model_note.value = ""
            return
        text = f"fit {float(plan.get('fit', 0)):.2f}: {plan.get('reason', '')}"
        lines = [html.escape(text)] + [f"&#9888; {html.escape(str(w))}" for w in plan.get("warnings", ())]
        self.model_note.value = '<div style="font-size: 0.85em; line-height: 1.3">' + "<br>".join(lines) + "</div>"

    # -- which model fits the image --------------------------------------------------------
    def rank_models(self) -> threading.Thread | None:
        """Ask the service which models fit the shown image (``/models/match``), in a thread.

        The model picker is then reordered best fit first and each model labelled with its fit
        and reason (`ranking`); the chosen model is kept. Called by `show_image`; returns the
        thread (or None without a service or an image). A service that cannot rank images (an
        older one) leaves the picker as it was; other failures are noted in the status line.
        """
        with self._rank_lock:  # the last image's ranking says nothing of this one
            self._rank_generation += 1
            generation = self._rank_generation
            had_ranking, self.ranking, self.image_traits = self.ranking is not None, None, None
        if had_ranking:
            self._fill_picker(self.selected_model)
        if self.client is None or (self.image_path is None and self._image_bytes is None):
            return None
        image: Any = self.image_path if self.image_path is not None else self._image_bytes
        self._ranker = threading.Thread(target=self._rank, args=(generation, image), daemon=True,
                                        name="cianna-otf-rank")
        self._ranker.start()
        return self._ranker

    def _rank(self, generation: int, image: Any) -> None:
        try:
            answer = self.client.match(image, upload=True if isinstance(image, Path) else None)
        except ClientError as exc:
            if exc.status not in (404, 405) and self.error is None and generation == self._rank_generation:
                self.status.value = f"The models could not be ranked for this image: {exc}"
            return
        except Exception as exc:  # a thread: an escaping error would only reach stderr
            if self.error is None and generation == self._rank_generation:
                self.status.value = f"The models could not be ranked for this image: {exc}"
            return
        with self._rank_lock:
            if generation != self._rank_generation:  # another image was shown meanwhile
                return
            self.ranking = list(answer.get("models", []))
            self.image_traits = answer.get("image")
            self._fill_picker(self.selected_model)

    # -- image --------------------------------------------------------------------------------
    def show_image(self, image: str | os.PathLike | HDUList) -> bool:
        """Show a FITS image (path or HDUList) in the view and use it for the next jobs.

        The service is then asked which models fit it (`rank_models`, in a thread), and the
        model picker follows its ranking.

        The view gets one HDU (ipyaladin sends the whole HDUList as one message; a multi-HDU
        file would be sent in full and only its first HDU shown): the first HDU holding a 2-D
        image, degenerate axes (radio cubes' 1-channel, 1-Stokes axes) dropped. A path is
        uploaded as is when a job is submitted (the server picks the same HDU); an HDUList is
        uploaded as that single HDU. Errors show in the status line; returns success.
        """
        from astropy.io import fits

        try:
            source = image if isinstance(image, fits.HDUList) else Path(image).expanduser()
            shown = view_image(source)
            if isinstance(source, Path):
                self.image_path, self._image_bytes = source, None
            else:
                buffer = io.BytesIO()
                shown.hdu.writeto(buffer)
                self.image_path, self._image_bytes = None, buffer.getvalue()
            self.pixel_scale_deg = shown.pixel_scale_deg
            self._shown_hdu = shown.hdu
            self.display = self._display_options()
            self.view.add_fits(shown.hdu, name=IMAGE_LAYER, **self.display)
            if shown.centre is not None:  # the whole image on screen
                self.view.target, self.view.fov = shown.centre, shown.fov_deg
        except Exception as exc:
            self._fail(exc, "showing the image")
            return False
        if self.error is None:  # an earlier error (no service, say) stays readable
            self.status.value = f"Image: {self.image_path.name if self.image_path else 'in memory'}"
        self.rank_models()
        return True

    def _display_options(self) -> dict[str, Any]:
        return display_options(self._shown_hdu.data, stretch=self.stretch.value, limits=self.limits.value,
                               colormap=self.colormap.value)

    def apply_display(self) -> dict[str, Any] | None:
        """Send the Stretch, Limits and Colours pickers' settings to the view; returns them (None: no image).

        With the front end present only the settings travel (``cianna_otf_image_options``);
        without it the image is sent again with them, replacing its layer.
        """
        if self._shown_hdu is None:
            return None
        self.display = self._display_options()
        if self._frontend_protocol is not None:
            self.view._send_or_queue({"event_name": IMAGE_OPTIONS_EVENT, "name": IMAGE_LAYER,
                                      "options": dict(self.display)})
        else:
            self.view.add_fits(self._shown_hdu, name=IMAGE_LAYER, **self.display)
        return self.display

    # -- regions ------------------------------------------------------------------------------
    def set_region(self, region: str | None) -> None:
        """Use `region` (SODA text, ICRS degrees; None for the whole image) for the next jobs."""
        self.region = region
        self.region_label.value = f"Region: {region}" if region else "Region: whole image"
        self.region_label.tooltip = self.region_label.value
        self._remove_overlay(REGION_OVERLAY)
        stcs = stcs_from_soda(region) if region else None
        if stcs is not None:
            self.view.add_graphic_overlay_from_stcs(stcs, name=REGION_OVERLAY, color=REGION_COLOUR, line_width=2)

    def _remove_overlay(self, name: str | None) -> None:
        """Drop the overlay `name` from the view if it is there (the view keeps one region and one result)."""
        if name is not None and name in self.view._overlay_manager:
            self.view.remove_overlay(name)

    def click_radius_deg(self) -> float:
        """Radius of the click-to-identify circle: half a network patch of the chosen model, in
        the image's pixels, else DEFAULT_CLICK_RADIUS_ARCSEC (the classic finder has no patch)."""
        card = self._cards.get(self.selected_model or "", {})
        patch = (card.get("tiling") or {}).get("patch_size")
        if isinstance(patch, Sequence) and not isinstance(patch, str):
            patch = min(patch) if patch else None
        if patch and self.pixel_scale_deg:
            return float(patch) * self.pixel_scale_deg / 2
        return DEFAULT_CLICK_RADIUS_ARCSEC / 3600.0

    def handle_message(self, message: Mapping[str, Any]) -> None:
        """Handle a front-end message (the protocol in the module doc); errors go to the status line."""
        event = message.get("event")
        try:
            if event == "hello":
                self._frontend_protocol = int(message.get("protocol", 1))
                self._request_selection()
            elif event == "region":
                self.set_region(region_from_message(message))
            elif event == "click":
                self.identify(float(message["ra"]), float(message["dec"]))
            else:
                raise RegionMessageError(f"unknown front-end event {event!r}")
        except Exception as exc:
            self._fail(exc, f"in the {event} message")

    def identify(self, ra: float, dec: float) -> threading.Thread | None:
        """Click-to-identify: detect in a small circle around (ra, dec), at once."""
        ra, dec = _point([ra, dec])
        self.set_region(f"CIRCLE {_fmt(ra)} {_fmt(dec)} {_fmt(self.click_radius_deg())}")
        return self.detect()

    def _on_native_click(self, content: Mapping[str, Any]) -> None:
        if self.region_mode.value == "click" and not content.get("isDragging"):
            self.handle_message({"event": "click", "ra": content.get("ra"), "dec": content.get("dec")})

    def _request_selection(self) -> None:
        if self._frontend_protocol is not None:  # ipyaladin's module alone throws on our event name
            self.view._send_or_queue({"event_name": SELECT_EVENT, "shape": self.region_mode.value})

    # -- detection ----------------------------------------------------------------------------
    def _knob(self, field: widgets.Text) -> float | None:
        text = field.value.strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{field.description} {text!r} is not a number") from None

    def detect(self, *_: object) -> threading.Thread | None:
        """Submit a job for the current image, model and region, and follow it in a thread.

        The kernel stays free while the job runs (the thread blocks on the service's WAIT, not
        on the kernel), the phase and progress widgets follow it, and the results land in
        `table`, `regions` and on the view. Returns the thread (join it, or call `wait`), or
        None when nothing was submitted; every error ends in the status line.
        """
        if not self._busy.acquire(blocking=False):
            self.status.value = "A detection is already running"
            return None
        try:
            if self.client is None:
                raise RuntimeError("no service: pass client=Client(url, token) or set $CIANNA_OTF_URL")
            if self.image_path is None and self._image_bytes is None:
                raise RuntimeError("no image: call show_image(path) first")
            request = {"model": self.selected_model or None, "precision": self.precision.value,
                       "region": self.region, "threshold": self._knob(self.threshold), "nms": self._knob(self.nms)}
        except Exception as exc:
            self._busy.release()
            self._fail(exc)
            return None
        self.error = None
        self.status.value = ""
        self.show_warnings([])
        self.phase.value = "Submitting"
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, ""
        self.detect_button.disabled = True
        self._worker = threading.Thread(target=self._run, args=(request,), daemon=True, name="cianna-otf-detect")
        self._worker.start()
        return self._worker

    def wait(self, timeout: float | None = None) -> DetectionWidget:
        """Block until the running detection and model ranking (if any) have finished; returns self."""
        for thread in (self._ranker, self._worker):
            if thread is not None:
                thread.join(timeout)
        return self

    def show_warnings(self, warnings: Sequence[str]) -> None:
        """Show `warnings` in the banner of the panel (hidden when there are none)."""
        self.warnings = [str(w) for w in warnings]
        if not self.warnings:
            self.warnings_banner.value = ""
            self.warnings_banner.layout.display = "none"
            return
        items = "".join(f"<li>{html.escape(w)}</li>" for w in self.warnings)
        title = "Warning" if len(self.warnings) == 1 else f"{len(self.warnings)} warnings"
        self.warnings_banner.value = (f'<div class="cianna-otf-warning-banner" role="alert" style="{BANNER_STYLE}">'
                                      f'&#9888; <b>{title}</b> about this catalogue'
                                      f'<ul style="margin: 2px 0 0 1.2em; padding: 0">{items}</ul></div>')
        self.warnings_banner.layout.display = None

    def _run(self, request: dict[str, Any]) -> None:
        job: Job | None = None
        try:
            image: Any = self.image_path if self.image_path is not None else self._image_bytes
            job = self.client.submit(image, upload=True if self.image_path is not None else None,
                                     run_id="notebook", **request)
            self.phase.value = job.phase
            self._following = job
            job.wait(progress=self._on_progress)
            self.phase.value = job.phase
            table, regions = job.table(), job.regions()
            self.job, self.table, self.regions = job, table, regions
            self._job_table = table
            self.show_warnings(job.warnings)  # the jobInfo's copy of the catalogue's INFO name="warning"
            self._remove_overlay(self._result_overlay)
            self._result_overlay = f"CIANNA {job.job_id}"
            self.view.add_table(table, name=self._result_overlay, color=RESULT_COLOUR, shape="circle")
            self._show_table(table)
            for button in (self.save_catalogue_button, self.save_regions_button, self.save_provenance_button):
                button.disabled = False
            self.progress.bar_style = "success"
            self.status.value = f"{plural(len(table), 'source')} ({request['model'] or 'default model'}, job {job.job_id})"
        except Exception as exc:  # a thread: an escaping error would only reach stderr
            self.phase.value = job.phase if job is not None else "Not submitted"
            self.progress.bar_style = "danger"
            self._fail(exc)
        finally:
            self.detect_button.disabled = False
            self._busy.release()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(total, 1)
        self.progress.value = min(done, self.progress.max)
        job = self._following
        if job is not None:
            self.phase.value = f"{job.phase} {done}/{total}" if total else job.phase

    # -- results ------------------------------------------------------------------------------
    _LISTED = ("id", "ra", "dec", "flux", "snr", "score")

    def _show_table(self, table: Table) -> None:
        """List the sources in the table (sortable by any column); choosing a row centres the view on it."""
        columns = [c for c in self._LISTED if c in table.colnames]
        self.sources_header.value = (f"<b>{plural(len(table), 'source')}</b> (first {MAX_LISTED_ROWS} listed)"
                                     if len(table) > MAX_LISTED_ROWS else f"<b>{plural(len(table), 'source')}</b>")
        listed = table[:MAX_LISTED_ROWS]
        keys, texts = {}, []
        for name in columns:
            column = listed[name]
            mask = np.ma.getmaskarray(column) if hasattr(column, "mask") else np.zeros(len(column), dtype=bool)
            values = np.ma.getdata(column)
            numeric = values.dtype.kind in "fiu"
            keys[name] = np.where(mask, np.nan, values.astype(np.float64)) if numeric else values.astype(str)
            form = _CELL_FORMATS.get(name, ".6g")
            texts.append(["--" if masked else (format(value, form) if numeric else str(value))
                          for value, masked in zip(values.tolist(), mask.tolist())])
        units = [str(table[name].unit) if getattr(table[name], "unit", None) is not None else "" for name in columns]
        cells = [list(row) for row in zip(*texts)] if texts else []
        self.sources.show(list(zip(columns, units)), cells, keys)

    def _on_row_selected(self, change: Mapping[str, Any]) -> None:
        index = change.get("new")
        if index is None or self.table is None:
            return
        try:
            from astropy.coordinates import SkyCoord

            ra, dec = float(self.table["ra"][index]), float(self.table["dec"][index])
            if self._frontend_protocol is not None:
                # ipyaladin's target trait can miss a change (its echo guard stays set after a
                # view event that moved nothing); our front end moves the view itself
                self.view._send_or_queue({"event_name": GOTO_EVENT, "ra": ra, "dec": dec})
            else:
                self.view.target = SkyCoord(ra, dec, unit="deg")
        except Exception as exc:
            self._fail(exc, "centring on the source")

    def _on_object_clicked(self, content: Mapping[str, Any]) -> None:
        """A source clicked in the view: select its row (nearest position among the listed rows)."""
        if self.table is None or not self.sources.options:
            return
        try:
            ra, dec = float(content["ra"]), float(content["dec"])
            rows = range(min(len(self.table), MAX_LISTED_ROWS))
            cos_dec = math.cos(math.radians(dec))

            def distance(i: int) -> float:
                dra = (float(self.table["ra"][i]) - ra + 180.0) % 360.0 - 180.0
                return (dra * cos_dec) ** 2 + (float(self.table["dec"][i]) - dec) ** 2

            self.sources.value = min(rows, key=distance)
        except Exception as exc:
            self._fail(exc, "selecting the clicked source")

    def _result_path(self, suffix: str) -> Path:
        if self.job is None:
            raise RuntimeError("nothing to save: run a detection first")
        stem = self.image_path.stem if self.image_path is not None else "image"
        self.save_dir.mkdir(parents=True, exist_ok=True)
        return self.save_dir / f"{stem}-{self.job.job_id}-{suffix}"

    def _save(self, suffix: str, content: bytes) -> Path:
        path = self._result_path(suffix)
        path.write_bytes(content)
        self.status.value = f"Saved {path}"  # wraps in the panel; the tooltip has it too
        return path

    def save_catalogue(self) -> Path:
        """Write the catalogue as the service made it (VOTable) next to the notebook."""
        return self._save("catalogue.vot", self._require_job().votable())

    def save_regions(self) -> Path:
        """Write the detections as DS9 regions next to the notebook."""
        return self._save("regions.reg", self._require_job().fetch("regions"))

    def save_provenance(self) -> Path:
        """Write the W3C PROV-JSON record of the job next to the notebook."""
        record = self._require_job().provenance("json")
        return self._save("provenance.json", json.dumps(record, indent=2).encode("utf-8"))

    def _require_job(self) -> Job:
        if self.job is None:
            raise RuntimeError("nothing to save: run a detection first")
        return self.job

    # -- desktop viewers over SAMP ----------------------------------------------------------
    def connect_samp(self) -> SampLink | None:
        """Join the SAMP hub as ``cianna-otf notebook`` (once: later calls return the same link).

        From then on an image a viewer sends to the notebook (``image.load.fits``: a ``file://``
        URL, or Aladin Desktop's own ``http://127.0.0.1`` one) is shown here (`show_image`),
        the status line naming the viewer. The hub is `samp_hub`, else ``$SAMP_HUB``, else
        ``~/.samp``. A link whose hub has stopped is replaced by a new one. Returns the link,
        or None with the reason in the status line (``no SAMP hub is running: start TOPCAT,
        Aladin Desktop or DS9``).
        """
        try:
            return self._require_samp()
        except Exception as exc:
            self._fail(exc)
            return None

    def _require_samp(self) -> SampLink:
        from ._samp_link import SampLink

        with self._samp_lock:
            link = self.samp_link
            if link is not None and link.connected:
                return link
            if link is not None:  # its hub stopped: a new hub (or the same, restarted) is a new link
                self.samp_link = None
                link.close(timeout=2.0)
            self.samp_link = SampLink(self._samp_image_received, self._samp_error, on_hub_gone=self._samp_hub_gone,
                                      hub=self.samp_hub)
            return self.samp_link

    def send_to_viewers(self, *_: object) -> Broadcast | None:
        """Send the image and the catalogue to the desktop viewers over SAMP (the SAMP button).

        Connects first where needed (`connect_samp`). The image goes out as ``image.load.fits``
        (its file, or, for an image given in memory, the HDU shown written to a temporary FITS
        file); the last catalogue, if there is one, as ``table.load.votable`` (the service's
        VOTable, written to `save_dir` like `save_catalogue`, or to a temporary folder where
        that cannot be written). The status line says how many viewers got them.

        Returns
        -------
        Broadcast or None
            The recipients and URLs sent; None on failure, the reason in the status line.
        """
        try:
            link = self._require_samp()
            image: Any = self.image_path if self.image_path is not None else self._image_bytes
            table = self.table
            if image is None and table is None:
                self._samp_ok(f"Connected to SAMP as {link.public_id}: nothing to send yet (show an image); "
                              "images viewers send open here")
                return None
            votable = self._samp_catalogue() if table is not None else None
            title = self.image_path.name if self.image_path is not None else "cianna-otf image"
            job_id = self.job.job_id if self.job is not None and table is self._job_table else None
            sent = link.send(image, votable, image_name=title if image is not None else None,
                             table_name=f"CIANNA {job_id or 'sources'} {title}",
                             table_id=f"cianna-otf-{job_id}" if job_id else None)
        except Exception as exc:
            self._fail(exc)
            return None
        sources = plural(len(table), "source") if table is not None else ""
        what = " and ".join(part for part in ("Image" if sent.image_url else "", sources if sent.table_url else "")
                            if part)
        self._samp_ok(f"{what} {sent.viewers_text()}")
        return sent

    def _samp_catalogue(self) -> Path | bytes:
        """The catalogue as a VOTable file: the service's own when the table is the job's."""
        content = None
        if self.job is not None and self.table is self._job_table:
            try:
                content = self.job.votable()
                stem = f"{self.job.job_id}-catalogue.vot"
            except ClientError:  # the service is gone (or the job deleted): the table as read
                content = None
        if content is None:  # a table set or filtered by hand
            buffer = io.BytesIO()
            self.table.write(buffer, format="votable")
            content = buffer.getvalue()
            stem = "catalogue.vot"
        from cianna_otf_server.samp._output import save_bytes

        name = f"{self.image_path.stem if self.image_path is not None else 'image'}-{stem}"
        try:
            return save_bytes(self.save_dir / name, content)
        except OSError:  # a read-only notebook folder: the link's temporary folder
            return content

    def disconnect_samp(self) -> None:
        """Leave the SAMP hub (images sent by viewers are no longer received); the button reconnects."""
        with self._samp_lock:
            link, self.samp_link = self.samp_link, None
        if link is None:
            return
        try:
            link.close()
        except Exception as exc:  # noqa: BLE001 - the hub may be gone already
            self._fail(exc, "leaving the SAMP hub")
            return
        self.status.value = "Disconnected from SAMP"

    def close(self) -> None:
        """Close the widget (and its SAMP link)."""
        link, self.samp_link = getattr(self, "samp_link", None), None
        if link is not None:
            try:
                link.close(timeout=2.0)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        super().close()

    def _samp_ok(self, text: str) -> None:
        from cianna_otf_server.samp import SampBridgeError

        if isinstance(self.error, SampBridgeError):  # an earlier SAMP failure is over
            self.error = None
        self.status.value = text

    def _samp_image_received(self, path: Path, sender: str) -> None:
        """A viewer sent an image (the link's worker thread): show it; a failure goes back to the viewer."""
        from ._samp_link import SampLinkError

        if not self.show_image(path):
            raise SampLinkError(str(self.error))
        self._samp_ok(f"Image {path.name} from {sender}")

    def _samp_error(self, message: str, sender: str) -> None:
        from ._samp_link import SampLinkError

        self._fail(SampLinkError(message), f"with the image from {sender}")

    def _samp_hub_gone(self) -> None:
        self.status.value = "The SAMP hub stopped: press SAMP to connect to a new one"
