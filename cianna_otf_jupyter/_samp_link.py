"""`SampLink`: the notebook kernel as a SAMP client, so the widget talks to desktop viewers.

The widget's SAMP button sends the shown image (``image.load.fits``) and the last catalogue
(``table.load.votable``) to every viewer on the hub (Aladin Desktop, DS9, TOPCAT), and an image a
viewer sends to the notebook (``image.load.fits``) is opened in the widget.

What is shared with the command line's bridge (`cianna_otf_server.samp`): the choice of SAMP
library (``pyvo.samp``, else ``astropy.samp``), how the hub is found (a lockfile named, else
``$SAMP_HUB`` as ``std-lockurl:...``, else ``~/.samp``), the internet probe turned off, and the
reading of ``file://`` URLs and of the loopback ``http://`` URLs Aladin Desktop serves its images
from. The link is a different client (``cianna-otf notebook``): it makes no jobs itself, the
widget does.

SAMP passes files by URL and the viewers run on this machine, so what is sent is a local file and
its ``file://`` URL: the image file as given, or, for an image given in memory (an HDUList), a
FITS file written to the link's temporary folder; the catalogue wherever the caller wrote it.
The temporary folder (also where loopback images are downloaded to) lives until the kernel
exits, not just until `close`: the widget may go on using an image received there.

The SAMP callbacks run in the XML-RPC server thread of the SAMP client, which the hub (and for a
call, the sending viewer) waits on, so they only queue the message; one worker thread reads it,
calls the callback and replies. Every failure becomes a `SampLinkError` with a message meant for
the user (the widget puts it in its status line; a viewer's call gets it as ``samp.errortxt``).
Registering, noticing the hub go away and unregistering are the bridge's too (`SampConnection`).
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import logging
import os
import queue
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cianna_otf_server.samp._api import SAMP_OK, SampBridgeError, hub_lockfile, hub_params
from cianna_otf_server.samp._connection import SampConnection, error_response
from cianna_otf_server.samp._images import _download, _is_loopback, _safe_file_name, image_name, readable_file
from cianna_otf_server.samp._messages import IMAGE_LOAD, TABLE_LOAD
from cianna_otf_server.samp._output import save_bytes, stem_for

__all__ = ["NO_HUB", "Broadcast", "SampLink", "SampLinkError"]

log = logging.getLogger(__name__)

#: The start of the message of every "cannot reach a hub" failure.
NO_HUB = "no SAMP hub is running: start TOPCAT, Aladin Desktop or DS9"
#: Seconds a loopback image may take to download.
DOWNLOAD_TIMEOUT = 120.0

Hub = str | os.PathLike | Mapping[str, Any] | None


class SampLinkError(SampBridgeError):
    """What the link cannot do (no hub, an image it cannot open), in words for the user."""


@dataclass
class Broadcast:
    """What one `SampLink.broadcast_image` / `broadcast_table` pair reached.

    Attributes
    ----------
    image_recipients, table_recipients : list of str
        Public ids of the clients the image and the table were sent to (those subscribed).
    image_url, table_url : str or None
        The ``file://`` URLs sent (None: not sent).
    names : dict
        Public id -> ``samp.name`` of every recipient (``Aladin``, ``topcat``...).
    """

    image_recipients: list[str] = field(default_factory=list)
    table_recipients: list[str] = field(default_factory=list)
    image_url: str | None = None
    table_url: str | None = None
    names: dict[str, str] = field(default_factory=dict)

    @property
    def recipients(self) -> list[str]:
        """Every client that got the image or the table, once each, in the order reached."""
        return list(dict.fromkeys([*self.image_recipients, *self.table_recipients]))

    def viewers_text(self) -> str:
        """``sent to 2 viewers (Aladin, topcat)``, for a status line."""
        count = len(self.recipients)
        text = f"sent to {count} viewer{'' if count == 1 else 's'}"
        if count:
            return f"{text} ({', '.join(self.names.get(c, c) for c in self.recipients)})"
        return f"{text}: no client on the SAMP hub takes images or tables"


@dataclass
class _Incoming:
    mtype: str
    params: dict[str, Any]
    sender_id: str
    msg_id: str | None


class SampLink(SampConnection):
    """The notebook's SAMP client: broadcasts images and tables, receives images.

    Parameters
    ----------
    on_image : callable, optional
        ``on_image(path, sender)`` for each ``image.load.fits`` a viewer sends: the local path of
        the image (a ``file://`` URL's file, or a loopback ``http://`` URL downloaded) and the
        sender's ``samp.name``. Called from the link's worker thread. An exception it raises is
        reported like the link's own errors (``on_error``, and the reply to a call).
    on_error : callable, optional
        ``on_error(message, sender)`` for a message that could not be handled (a URL of another
        host, a file that is missing, an ``on_image`` that failed). By default logged.
    on_hub_gone : callable, optional
        Called (no arguments) when the hub shuts down or drops the link.
    hub : path, URL, mapping or None
        The hub's lockfile (path, ``file://`` URL or ``std-lockurl:URL``) or its parameters;
        None: ``$SAMP_HUB``, else ``~/.samp``.
    work_dir : path, optional
        Where in-memory images are written and loopback images downloaded; default: a new
        temporary folder, removed when the kernel exits.
    addr : str
        The address of the link's own SAMP endpoint: loopback, since the viewers are local.
    connect : bool
        Register at once (`connect`); False: later, by calling `connect`.

    Raises
    ------
    SampLinkError
        From `connect` (and so the constructor, with ``connect=True``): no hub.
    """

    name = "cianna-otf notebook"
    description = "CIANNA On-The-Fly notebook widget: shows images you send, sends images and detected sources"
    role = "notebook"

    def __init__(self, on_image: Callable[[Path, str], Any] | None = None,
                 on_error: Callable[[str, str], Any] | None = None, *, on_hub_gone: Callable[[], Any] | None = None,
                 hub: Hub = None, work_dir: str | os.PathLike | None = None, addr: str = "127.0.0.1",
                 connect: bool = True) -> None:
        super().__init__(addr)
        self.on_image = on_image
        self.on_error = on_error
        self.on_hub_gone = on_hub_gone
        self.hub = hub
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._lock = threading.RLock()
        self._queue: queue.Queue[_Incoming | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._serial = itertools.count(1)
        if connect:
            self.connect()

    def __repr__(self) -> str:
        return f"<SampLink {self.public_id or 'not connected'}>"

    def _leave(self) -> None:
        self.close()

    # -- life cycle ---------------------------------------------------------------------------
    @property
    def work_dir(self) -> Path:
        """The folder of the temporary files (made on first use; removed when the kernel exits)."""
        with self._lock:
            if self._work_dir is None:
                self._work_dir = Path(tempfile.mkdtemp(prefix="cianna-otf-samp-"))
                atexit.register(shutil.rmtree, self._work_dir, True)
            self._work_dir.mkdir(parents=True, exist_ok=True)
            return self._work_dir

    def connect(self) -> None:
        """Register with the hub as ``cianna-otf notebook`` and subscribe to ``image.load.fits``.

        Does nothing when already connected; reconnects after the hub went away.

        Raises
        ------
        SampLinkError
            ``no SAMP hub is running: start TOPCAT, Aladin Desktop or DS9`` and what was found
            (no lockfile, a hub that does not answer, a refused registration).
        """
        with self._lock:
            if self.connected:
                return
            if self._samp is not None:  # the hub went away: start over
                self.close()
            try:
                params = hub_params(self.hub)
            except SampBridgeError as exc:
                raise SampLinkError(f"{NO_HUB} ({_no_hub_reason(self.hub, exc)})") from None

            def refused(exc: Exception) -> SampLinkError:
                return SampLinkError(f"{NO_HUB} (the hub at {params.get('samp.hub.xmlrpc.url')} refused the "
                                     f"notebook: {exc})")

            try:
                connection = self._register(params, {}, refused)
            except SampLinkError:
                raise
            except Exception as exc:  # noqa: BLE001 - making the client failed (its endpoint): no hub either
                raise refused(exc) from None
            self._samp = connection
            self.hub_gone.clear()
            self._names.clear()
            self._queue = queue.Queue()  # a worker of an earlier connection may still hold the old one
            self._worker = threading.Thread(target=self._work, args=(self._queue,), name="cianna-otf-notebook-samp",
                                            daemon=True)
            self._worker.start()
            try:
                self._subscribe(connection, (IMAGE_LOAD,))
            except Exception as exc:  # noqa: BLE001
                self.close()
                raise SampLinkError(f"{NO_HUB} (subscribing with the hub failed: {exc})") from None
            _close_at_exit(self)
            log.info("registered with the SAMP hub as %s", self.public_id)

    def close(self, timeout: float = 10.0) -> None:
        """Unregister from the hub and end the worker (calls still queued are answered with an error).

        The temporary files stay until the kernel exits: the widget may still show (and
        upload) an image received there.
        """
        with self._lock:
            connection, self._samp = self._samp, None
            worker, self._worker = self._worker, None
            incoming = self._queue
        if connection is None:
            return
        while True:
            try:
                pending = incoming.get_nowait()
            except queue.Empty:
                break
            if pending is not None:
                self._reply_on(connection, pending, error_response("the notebook stopped listening to SAMP"))
        incoming.put(None)
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
        self._unregister(connection)

    # -- sending ------------------------------------------------------------------------------
    def broadcast_image(self, image: str | os.PathLike | bytes | Any, name: str | None = None,
                        image_id: str | None = None) -> tuple[str, list[str]]:
        """Send an image to every client subscribed to ``image.load.fits``.

        Parameters
        ----------
        image : path, HDUList or bytes
            A FITS file (sent as is, by its ``file://`` URL), or an image in memory (an
            HDUList, or the bytes of a FITS file), first written to the temporary folder.
        name : str, optional
            The name the viewers show (default: the file name).
        image_id : str, optional
            The ``image-id`` parameter (default: derived from the URL).

        Returns
        -------
        url, recipients
            The ``file://`` URL sent and the public ids of the clients it was sent to.
        """
        path = self._local_file(image, name or "image", ".fits")
        url = path.as_uri()
        params = {"url": url, "name": name or path.name, "image-id": image_id or f"cianna-otf-notebook:{url}"}
        return url, self._notify_all(IMAGE_LOAD, params)

    def broadcast_table(self, votable: str | os.PathLike | bytes, name: str | None = None,
                        table_id: str | None = None) -> tuple[str, list[str]]:
        """Send a VOTable to every client subscribed to ``table.load.votable``.

        Parameters
        ----------
        votable : path or bytes
            A VOTable file (sent by its ``file://`` URL), or its bytes (first written to the
            temporary folder).
        name, table_id : str, optional
            The table's name in the viewers, and its ``table-id``.

        Returns
        -------
        url, recipients
            As `broadcast_image`.
        """
        path = self._local_file(votable, name or "catalogue", ".vot")
        url = path.as_uri()
        params = {"url": url, "name": name or path.name, "table-id": table_id or f"cianna-otf-notebook:{url}"}
        return url, self._notify_all(TABLE_LOAD, params)

    def send(self, image: Any = None, votable: str | os.PathLike | bytes | None = None, *,
             image_name: str | None = None, table_name: str | None = None,
             image_id: str | None = None, table_id: str | None = None) -> Broadcast:
        """`broadcast_image` and/or `broadcast_table` at once; what they reached, with names."""
        sent = Broadcast()
        if image is not None:
            sent.image_url, sent.image_recipients = self.broadcast_image(image, image_name, image_id)
        if votable is not None:
            sent.table_url, sent.table_recipients = self.broadcast_table(votable, table_name, table_id)
        sent.names = {client: self.sender_name(client) for client in sent.recipients}
        return sent

    def sender_name(self, client_id: str) -> str:
        """A client's ``samp.name`` (``Aladin``, ``topcat``...), else its public id."""
        if client_id not in self._names:
            name = self._client_name(client_id)
            if not name:
                return client_id  # not cached: the metadata may come later
            self._names[client_id] = str(name)
        return self._names[client_id]

    def _connection(self) -> Any:
        if not self.connected:
            raise SampLinkError(f"{NO_HUB} (the notebook is not connected: the hub stopped, or the link "
                                "was closed)")
        return self._samp

    def _notify_all(self, mtype: str, params: dict[str, str]) -> list[str]:
        connection = self._connection()
        try:
            return [str(c) for c in connection.notify_all({"samp.mtype": mtype, "samp.params": params}) or []]
        except Exception as exc:  # noqa: BLE001 - the hub stopped between the check and the send
            self.hub_gone.set()
            raise SampLinkError(f"{NO_HUB} (the hub did not take the message: {exc})") from None

    def _local_file(self, source: Any, name: str, suffix: str) -> Path:
        """A local file holding `source` (a path as it is; bytes or an HDUList written down)."""
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser().resolve()
            if not path.is_file():
                raise SampLinkError(f"cannot send {path}: no such file")
            return path
        if hasattr(source, "writeto"):  # an astropy HDUList or HDU
            import io

            buffer = io.BytesIO()
            source.writeto(buffer)
            source = buffer.getvalue()
        if not isinstance(source, (bytes, bytearray)):
            raise SampLinkError(f"cannot send a {type(source).__name__}: give a path, bytes or an HDUList")
        # named by content: the same image sent again is the same file and URL (and image-id)
        content = bytes(source)
        digest = hashlib.blake2b(content, digest_size=8).hexdigest()
        stem = stem_for(name.removesuffix(".vot"))
        target = self.work_dir / "sent" / f"{stem}-{digest}{suffix}"
        if target.is_file() and target.stat().st_size == len(content):
            return target
        try:
            return save_bytes(target, content)
        except OSError as exc:
            raise SampLinkError(f"cannot write {target}: {exc.strerror or exc}") from None

    # -- receiving (the XML-RPC thread: queue and return) -------------------------------------
    def _receive(self, private_key: str, sender_id: str, msg_id: str | None, mtype: str,
                 params: dict[str, Any], extra: dict[str, Any]) -> None:
        self._queue.put(_Incoming(mtype, dict(params or {}), sender_id, msg_id))

    def _hub_event(self, private_key: str, sender_id: str, mtype: str, params: dict[str, Any],
                   extra: dict[str, Any]) -> None:
        super()._hub_event(private_key, sender_id, mtype, params, extra)
        if self.on_hub_gone is not None:
            try:
                self.on_hub_gone()
            except Exception:  # noqa: BLE001
                log.exception("on_hub_gone failed")

    def _work(self, incoming: queue.Queue[_Incoming | None]) -> None:
        while True:
            message = incoming.get()
            if message is None:
                return
            try:
                self.handle(message)
            except Exception:  # noqa: BLE001 - never let one message end the worker
                log.exception("unexpected failure handling %s", message.mtype)

    def handle(self, message: _Incoming) -> Path | None:
        """Open the image of an ``image.load.fits``, call ``on_image``, reply; never raises."""
        sender = self.sender_name(message.sender_id)
        try:
            path = self.fetch_image(str(message.params.get("url") or ""), message.params.get("name"))
            if self.on_image is not None:
                self.on_image(path, sender)
        except Exception as exc:  # noqa: BLE001 - each failure becomes a reply and a message
            text = str(exc) if isinstance(exc, SampBridgeError) else f"{type(exc).__name__}: {exc}"
            self._report_error(text, sender)
            self._reply_on(self._samp, message, error_response(text))
            return None
        self._reply_on(self._samp, message, {"samp.status": SAMP_OK, "samp.result": {"path": str(path)}})
        return path

    def fetch_image(self, url: str, name: str | None = None) -> Path:
        """The local path of an image URL a viewer sent.

        ``file://``: the file itself; ``http(s)://`` on this machine (Aladin Desktop's own web
        server): downloaded to the temporary folder; anything else is refused.

        Raises
        ------
        SampLinkError
        """
        url = url.strip()
        if not url:
            raise SampLinkError("the image.load.fits message names no image (no url parameter)")
        parsed = urlparse(url)
        scheme = parsed.scheme.lower()
        try:
            if scheme == "file":
                return readable_file(url)
            if scheme in ("http", "https") and _is_loopback(parsed.hostname):
                folder = self.work_dir / "received" / str(next(self._serial))
                title = _safe_file_name(image_name(url, name))
                return Path(_download(url, folder, title, None, DOWNLOAD_TIMEOUT))
        except SampLinkError:
            raise
        except SampBridgeError as exc:
            raise SampLinkError(str(exc)) from None
        if scheme in ("http", "https"):
            raise SampLinkError(f"image {url}: the notebook opens only images on this machine (file:// URLs, or "
                                f"http:// on localhost), not from {parsed.hostname}")
        raise SampLinkError(f"image {url}: only file:// and local http(s):// URLs can be opened in the notebook")

    def _report_error(self, text: str, sender: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(text, sender)
                return
            except Exception:  # noqa: BLE001
                log.exception("on_error failed")
        log.warning("image.load.fits from %s: %s", sender, text)



def _no_hub_reason(hub: Hub, exc: SampBridgeError) -> str:
    """Why no hub was found, without the command line's advice (``--hub-lockfile``)."""
    if isinstance(hub, Mapping):
        return str(exc)
    try:
        path = hub_lockfile(hub)
    except SampBridgeError as inner:  # $SAMP_HUB names another profile, a remote lockfile...
        return str(inner)
    if not path.is_file():
        return f"no lockfile {path}"
    return f"the hub of lockfile {path} does not answer: it stopped without removing it"


_OPEN: weakref.WeakSet[SampLink] = weakref.WeakSet()
_EXIT_HOOK = False


def _close_at_exit(link: SampLink) -> None:
    """Unregister the links still open when the kernel exits (else the hub lists a dead client)."""
    global _EXIT_HOOK
    _OPEN.add(link)
    if not _EXIT_HOOK:
        _EXIT_HOOK = True
        atexit.register(lambda: [_quiet_close(link) for link in list(_OPEN)])


def _quiet_close(link: SampLink) -> None:
    try:
        link.close(timeout=2.0)
    except Exception:  # noqa: BLE001 - exiting anyway
        pass
