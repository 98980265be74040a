"""`SampBridge`: a SAMP client that turns viewers' messages into detection jobs and sends back catalogues.

The SAMP callbacks run in the XML-RPC server thread of the SAMP client, and a hub waits on
them, so they only queue the message; one worker thread does the work (reading the image header,
the job, saving and sending the results) one message after another, in the order received.
Every failure of a message ends as a log line and, for a call, a ``samp.error`` reply: neither
a bad message nor an unreachable service stops the bridge.

The service is reached only through `cianna_otf_server.client.Client` (the public UWS API), so
the bridge works with the standalone server and the Jupyter-hosted one alike.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._api import SAMP_OK, SampBridgeError, hub_params
from ._connection import SampConnection, error_response
from ._images import ImageMemory, RememberedImage, resolve_image
from ._messages import (
    DETECT,
    DS9_SET,
    IMAGE_LOAD,
    POINT_AT,
    TABLE_LOAD,
    Request,
    degrees,
    parse_region,
    region_point,
    region_text,
)
from ._output import Detection, count_rows, default_out_dir, ds9_path, save_bytes, stem_for

if TYPE_CHECKING:
    from ..client import Client, Job

__all__ = ["ON_IMAGE_CHOICES", "SampBridge"]

log = logging.getLogger(__name__)

ON_IMAGE_CHOICES = ("detect", "remember")
#: Seconds between checks, while a job runs, that the bridge is not being stopped.
_POLL = 1.0


class SampBridge(SampConnection):
    """Detections on demand for desktop viewers (Aladin Desktop, DS9, TOPCAT) over SAMP.

    Parameters
    ----------
    client : Client
        The detection service's client (its URL and token).
    model : str, optional
        Model of the jobs whose message names none; None: the service's default.
    radius : float
        Radius in degrees of the circle detected around a ``coord.pointAt.sky`` position.
    on_image : {"detect", "remember"}
        What ``image.load.fits`` does: detect on the whole image, or only remember it for later
        ``coord.pointAt.sky`` and ``cianna-otf.detect`` messages.
    out_dir : path, optional
        Where catalogues and region files are saved (default `default_out_dir`).
    job_timeout : float
        Seconds a job may take before the bridge gives up on it (it goes on on the service).
    addr : str
        Address of the bridge's own SAMP endpoint; loopback, since the viewers are on this machine.
    on_detection, on_error : callable, optional
        Called from the worker with each `Detection`, and with each failed `Request` and its
        message (the command line prints them). By default they are logged.
    """

    name = "cianna-otf"
    description = "CIANNA On-The-Fly: deep-learning source detection on the images you send or point at"
    role = "bridge"

    def __init__(self, client: Client, *, model: str | None = None, radius: float = 0.05,
                 on_image: str = "detect", out_dir: str | Path | None = None, job_timeout: float = 900.0,
                 addr: str = "127.0.0.1", on_detection: Callable[[Detection], Any] | None = None,
                 on_error: Callable[[Request, str], Any] | None = None) -> None:
        if not 0 < radius <= 90:
            raise SampBridgeError(f"the radius must be between 0 and 90 degrees, not {radius:g}")
        if on_image not in ON_IMAGE_CHOICES:
            raise SampBridgeError(f"on_image must be one of {', '.join(ON_IMAGE_CHOICES)}, not {on_image!r}")
        if job_timeout <= 0:
            raise SampBridgeError("the job timeout must be positive")
        super().__init__(addr)
        self.client = client
        self.model = model
        self.radius = float(radius)
        self.on_image = on_image
        self.out_dir = Path(out_dir).expanduser() if out_dir is not None else default_out_dir()
        self.job_timeout = float(job_timeout)
        self.on_detection = on_detection
        self.on_error = on_error
        self.images = ImageMemory()
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<SampBridge {self.public_id or 'not connected'} -> {self.client.url}>"

    def _leave(self) -> None:
        self.stop()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, hub: str | Path | Mapping[str, Any] | None = None) -> None:
        """Register with the hub and subscribe to the messages handled.

        Parameters
        ----------
        hub : path, URL, mapping or None
            The hub's lockfile (a path, ``file://`` URL or ``std-lockurl:URL``), or its
            parameters; None: ``$SAMP_HUB``, else ``~/.samp``.

        Raises
        ------
        SampBridgeError
            No hub, a hub that does not answer, an output folder that cannot be made.
        """
        if self._samp is not None:
            raise SampBridgeError("the bridge is already started")
        params = hub_params(hub)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SampBridgeError(f"cannot create the output folder {self.out_dir}: {exc.strerror or exc}") from None
        connection = self._register(params, {"cianna-otf.service": self.client.url}, lambda exc: SampBridgeError(
            f"cannot register with the SAMP hub at {params.get('samp.hub.xmlrpc.url')}: {exc}"))
        self._samp = connection
        self._stopping.clear()
        self.hub_gone.clear()
        self._worker = threading.Thread(target=self._work, name="cianna-otf-samp-worker", daemon=True)
        self._worker.start()
        try:
            self._subscribe(connection, (IMAGE_LOAD, POINT_AT, DETECT))
        except Exception:
            self.stop()
            raise
        log.info("registered with the SAMP hub as %s", self.public_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Unregister from the hub; answer the calls still queued; end the worker (aborting its job)."""
        if self._samp is None:
            return
        self._stopping.set()
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            if pending is not None:
                self._reply_error(pending, "cianna-otf is shutting down; the message was not handled")
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None
        connection, self._samp = self._samp, None
        self._unregister(connection)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the hub goes away (True) or `timeout` passes (False)."""
        return self.hub_gone.wait(timeout)

    # -- SAMP callbacks (XML-RPC thread: queue and return) ------------------------------------
    def _receive(self, private_key: str, sender_id: str, msg_id: str | None, mtype: str,
                 params: dict[str, Any], extra: dict[str, Any]) -> None:
        request = Request(mtype, dict(params or {}), sender_id, msg_id)
        if self._stopping.is_set():
            self._reply_error(request, "cianna-otf is shutting down; the message was not handled")
            return
        log.debug("received %s from %s: %s", mtype, sender_id, params)
        self._queue.put(request)

    def submit(self, request: Request) -> None:
        """Queue a request as if it had come from the hub (for scripts and tests)."""
        self._queue.put(request)

    # -- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None or self._stopping.is_set():
                if request is not None:
                    self._reply_error(request, "cianna-otf is shutting down; the message was not handled")
                if request is None:
                    return
                continue
            try:
                self.handle(request)
            except Exception:  # noqa: BLE001 - never let one message end the worker
                log.exception("unexpected failure handling %s", request.mtype)

    def handle(self, request: Request) -> Detection | RememberedImage | None:
        """Do what `request` asks, reply to it if it is a call; never raises for a bad message."""
        try:
            outcome = self._dispatch(request)
        except Exception as exc:  # noqa: BLE001 - each failure becomes a reply and a log line
            message = self._error_text(exc)
            if not isinstance(exc, SampBridgeError) and not _is_client_error(exc):
                log.exception("%s failed", request.mtype)
            self._report_error(request, message)
            self._reply_error(request, message)
            return None
        if isinstance(outcome, Detection):
            self._reply(request, {"samp.status": SAMP_OK, "samp.result": outcome.result()})
            if self.on_detection is not None:
                self.on_detection(outcome)
            else:
                log.warning("%s", outcome.summary())
        elif isinstance(outcome, RememberedImage):
            self._reply(request, {"samp.status": SAMP_OK, "samp.result": {"image-id": outcome.key,
                                                                           "name": outcome.name}})
        return outcome

    def _dispatch(self, request: Request) -> Detection | RememberedImage:
        if request.mtype == IMAGE_LOAD:
            image = self._remember(request.text("url"), request.text("image-id"), request.text("name"))
            if self.on_image == "remember":
                return image
            return self.detect(image)
        if request.mtype == POINT_AT:
            ra = degrees(request.params, "ra", -360, 360) % 360
            dec = degrees(request.params, "dec", -90, 90)
            image = self.images.containing(ra, dec)
            if image is None:
                raise SampBridgeError(f"no image sent to cianna-otf covers RA {ra:.5f}, Dec {dec:.5f} "
                                      f"({len(self.images)} known; send one with {IMAGE_LOAD} first)")
            return self.detect(image, region=f"CIRCLE {ra!r} {dec!r} {self.radius!r}")
        if request.mtype == DETECT:
            return self._explicit(request)
        raise SampBridgeError(f"cianna-otf does not handle {request.mtype}")

    def _remember(self, url: str | None, image_id: str | None, name: str | None) -> RememberedImage:
        image = resolve_image(url or "", image_id, name, download_dir=self.out_dir / "images")
        self.images.add(image)
        if image.footprint is None:
            log.info("remembered %s (%s), without a sky footprint", image.name, image.key)
        else:
            centre = image.footprint.centre
            log.info("remembered %s (%s) at RA %.4f, Dec %.4f", image.name, image.key, centre.ra.deg, centre.dec.deg)
        return image

    def _explicit(self, request: Request) -> Detection:
        """``cianna-otf.detect``: the named image (else the one under the region, else the latest)."""
        region_param = request.text("region")
        region = parse_region(region_param) if region_param else None
        image_id, url = request.text("image-id"), request.text("url")
        image = None
        if image_id:
            image = self.images.get(image_id)
            if image is None and not url:
                raise SampBridgeError(f"unknown image-id {image_id!r}: send the image with {IMAGE_LOAD} "
                                      "first, or give its url")
        if image is None and url:
            image = self.images.get(url) or self._remember(url, image_id, request.text("name"))
        if image is None and region is not None:
            image = self.images.containing(*region_point(*region))
        if image is None:
            image = self.images.latest()
        if image is None:
            raise SampBridgeError(f"no image to detect on: give url, or send one with {IMAGE_LOAD} first")
        return self.detect(image, region=region_text(*region) if region else None, model=request.text("model"))

    # -- one detection ------------------------------------------------------------------------
    def detect(self, image: RememberedImage, region: str | None = None, model: str | None = None) -> Detection:
        """Run one job on `image`, save its catalogue, send it to the viewers; the outcome.

        Raises
        ------
        SampBridgeError, ClientError
            The job could not be made or failed (the caller replies with the message).
        """
        try:
            job = self.client.submit(image.source, model=model or self.model, region=region, run_id="samp")
        except FileNotFoundError as exc:
            raise SampBridgeError(f"image not readable: {exc}") from None
        except ValueError as exc:  # the client's own region check
            raise SampBridgeError(f"bad region: {exc}") from None
        log.info("job %s: %s%s", job.job_id, image.name, f" in {region}" if region else "")
        self._wait(job)
        votable = job.votable()
        used_model = job.parameters.get("MODEL") or model or self.model or "default"
        stem = f"{stem_for(image.name)}-{job.job_id}"
        table_path = save_bytes(self.out_dir / f"{stem}.vot", votable)
        detection = Detection(job_id=job.job_id, job_url=job.url, model=used_model, image=image.name,
                              sources=count_rows(votable), table_path=table_path, table_url=table_path.as_uri(),
                              table_id=f"cianna-otf-{job.job_id}", warnings=list(job.warnings))
        self._send(job, detection, stem)
        return detection

    def _wait(self, job: Job) -> None:
        """Wait for the job in short steps, so that `stop` is not held up by a long job."""
        from ..client import WaitTimeoutError

        deadline = time.monotonic() + self.job_timeout
        while True:
            try:
                job.wait(timeout=_POLL, wait_step=_POLL)
                return
            except WaitTimeoutError:
                pass
            if self._stopping.is_set():
                _quietly(job.abort)
                raise SampBridgeError(f"cianna-otf stopped before job {job.job_id} finished (it was aborted)")
            if time.monotonic() > deadline:
                raise SampBridgeError(f"job {job.job_id} is still {job.phase} after {self.job_timeout:g} s; "
                                      f"it goes on at {job.url}")

    def _send(self, job: Job, detection: Detection, stem: str) -> None:
        """Broadcast the table; send the regions to the clients that take DS9 commands."""
        name = f"cianna-otf {detection.model} {detection.image}"
        message = {"samp.mtype": TABLE_LOAD,
                   "samp.params": {"url": detection.table_url, "table-id": detection.table_id, "name": name}}
        connection = self._samp
        if connection is None:
            return
        detection.table_recipients = list(connection.notify_all(message) or [])
        ds9_clients = [c for c in (connection.get_subscribed_clients(DS9_SET) or {}) if c != self.public_id]
        if ds9_clients and "regions" in job.results:
            path = save_bytes(self.out_dir / f"{stem}.reg", job.fetch("regions"))
            detection.regions_path = path
            command = {"samp.mtype": DS9_SET, "samp.params": {"cmd": f"regions load {ds9_path(path)}"}}
            for client_id in ds9_clients:
                try:
                    connection.notify(client_id, command)
                    detection.ds9_recipients.append(client_id)
                except Exception as exc:  # noqa: BLE001 - one viewer gone must not stop the others
                    log.warning("cannot send the regions to %s: %s", client_id, exc)

    # -- replies ------------------------------------------------------------------------------
    def _reply(self, request: Request, response: dict[str, Any]) -> None:
        self._reply_on(self._samp, request, response)

    def _reply_error(self, request: Request, message: str) -> None:
        self._reply(request, error_response(message))

    def _report_error(self, request: Request, message: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(request, message)
                return
            except Exception:  # noqa: BLE001
                log.exception("on_error failed")
        log.warning("%s from %s: %s", request.mtype, self.sender_name(request.sender_id), message)

    def sender_name(self, client_id: str) -> str:
        """A client's ``samp.name`` (e.g. ``Aladin``), else its id."""
        if client_id not in self._names:
            name = self._client_name(client_id)
            self._names[client_id] = str(name) if name else client_id
        return self._names[client_id]

    def _error_text(self, exc: Exception) -> str:
        from ..client import AuthenticationError, ClientError, JobFailedError, NotFoundError

        if isinstance(exc, SampBridgeError):
            return str(exc)
        if isinstance(exc, JobFailedError):
            return str(exc)
        if isinstance(exc, AuthenticationError):
            return f"the service at {self.client.url} refused the token: {exc}"
        if isinstance(exc, NotFoundError):
            return f"the service at {self.client.url} has no such thing: {exc}"
        if isinstance(exc, ClientError):
            if exc.status is not None and 400 <= exc.status < 500:
                return f"the service refused the job: {exc}"
            if exc.status is None:
                return f"service unreachable: {exc}" if "reach" in str(exc) or "answer" in str(exc) else str(exc)
            return f"the service failed: {exc}"
        return f"internal error: {type(exc).__name__}: {exc}"


def _is_client_error(exc: Exception) -> bool:
    from ..client import ClientError

    return isinstance(exc, ClientError)


def _quietly(action: Callable[[], Any]) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001
        log.debug("ignored: %s", exc)
