"""A SAMP hub of a test's own and a SAMP client playing a desktop viewer, for tests of SAMP clients.

With `serve_folder`, the viewer can also send images as Aladin Desktop does: from a web server of
its own on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..samp._api import SAMP_OK, SampBridgeError, hub_lockfile, offline, samp_module

__all__ = ["SampHub", "SampViewer", "samp_hub", "serve_folder"]


@dataclass(frozen=True)
class SampHub:
    """A running hub of `samp_hub`.

    Attributes
    ----------
    lockfile : Path
        The hub's lockfile (what ``--hub-lockfile`` or a client's ``hub`` takes).
    server : SAMPHubServer
        The hub itself (``pyvo.samp``'s, else ``astropy.samp``'s).
    """

    lockfile: Path
    server: Any

    @property
    def params(self) -> dict[str, str]:
        """The hub's parameters (``samp.secret``, ``samp.hub.xmlrpc.url``...), as a client connects with."""
        return self.server.params

    @property
    def env_value(self) -> str:
        """The value of ``$SAMP_HUB`` that names this hub (``std-lockurl:file:///...``)."""
        return f"std-lockurl:{self.lockfile.as_uri()}"


@contextlib.contextmanager
def samp_hub(folder: str | os.PathLike) -> Iterator[SampHub]:
    """A SAMP hub in this process, its lockfile ``samp.lock`` in `folder`; stopped on the way out.

    The hub listens on 127.0.0.1 only, with the Web Profile off, and makes no internet probe.
    It is not the user's: nothing finds it unless told (its lockfile, or ``$SAMP_HUB`` set to
    `SampHub.env_value`). Two things the hub does at start are the test's to keep in its own
    folder, with ``monkeypatch``: it looks for stale lockfiles under ``$HOME``, and it writes its
    lockfile where ``$SAMP_HUB`` says when that is set; a ``$SAMP_HUB`` naming another lockfile
    is refused here rather than taken over.

    Raises
    ------
    RuntimeError
        ``$SAMP_HUB`` names another lockfile, or the hub wrote none.
    """
    lockfile = Path(folder).absolute() / "samp.lock"
    env = os.environ.get("SAMP_HUB", "").strip()
    if env.startswith("std-lockurl:"):  # what the hub writes then, whatever lockfile it is given
        try:
            named = hub_lockfile(env)
        except SampBridgeError:
            named = None
        if named != lockfile:
            raise RuntimeError(f"$SAMP_HUB={env} names another hub's lockfile: unset it, or set it to "
                               f"std-lockurl:{lockfile.as_uri()}, before starting a test hub")
    samp = samp_module()
    with offline():
        server = samp.SAMPHubServer(lockfile=str(lockfile), web_profile=False, addr="127.0.0.1")
    server.start(wait=False)
    try:
        if not lockfile.is_file():
            raise RuntimeError(f"the test SAMP hub wrote no lockfile {lockfile}")
        yield SampHub(lockfile, server)
    finally:
        server.stop()


class SampViewer:
    """A SAMP client standing in for a desktop viewer: records what it is sent, replies ok, sends.

    Parameters
    ----------
    name : str
        Its ``samp.name`` on the hub.
    mtypes : tuple of str
        The MTypes it subscribes to (``image.load.fits``, ``table.load.votable``, ``ds9.set``...);
        each message of one is recorded and, for a call, replied to with ``samp.ok``.
    hub_params : mapping
        The hub's parameters (`SampHub.params`).
    timeout : float
        Seconds `next` waits by default, and a `call` waits for its reply.

    Attributes
    ----------
    client : SAMPIntegratedClient
        The SAMP client itself, for what the methods here do not cover.
    received : queue.Queue
        ``(mtype, params)`` of each message received, in the order they came.
    """

    def __init__(self, name: str, mtypes: tuple[str, ...], hub_params: Mapping[str, Any],
                 timeout: float = 30.0) -> None:
        samp = samp_module()
        self.timeout = timeout
        self.received: queue.Queue[tuple[str, dict]] = queue.Queue()
        with offline():
            self.client = samp.SAMPIntegratedClient(name=name, addr="127.0.0.1")
            self.client.connect(hub_params=dict(hub_params))
        for mtype in mtypes:
            self.client.bind_receive_message(mtype, self._record, declare=False)
        self.client.declare_subscriptions()

    def _record(self, private_key, sender_id, msg_id, mtype, params, extra) -> None:
        self.received.put((mtype, dict(params)))
        if msg_id is not None:
            self.client.reply(msg_id, {"samp.status": SAMP_OK, "samp.result": {}})

    def next(self, timeout: float | None = None) -> tuple[str, dict]:
        """The next message received, as ``(mtype, params)``; AssertionError when none comes in time."""
        timeout = self.timeout if timeout is None else timeout
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing arrived within {timeout:g} s") from None

    def messages(self, count: int) -> dict[str, dict]:
        """The next `count` messages, by MType (the hub delivers them in threads: in any order)."""
        got = dict(self.next() for _ in range(count))
        assert len(got) == count, got
        return got

    def drain(self) -> None:
        """Forget what was received so far."""
        while not self.received.empty():
            self.received.get_nowait()

    def notify(self, recipient: str, mtype: str, **params: str) -> None:
        self.client.notify(recipient, {"samp.mtype": mtype, "samp.params": params})

    def notify_all(self, mtype: str, **params: str) -> list[str]:
        """Broadcast a notification; the public ids of the clients it went to."""
        return self.client.notify_all({"samp.mtype": mtype, "samp.params": params})

    def call(self, recipient: str, mtype: str, **params: str) -> dict:
        """A call to `recipient`, waiting (up to `timeout`) for its reply; the reply."""
        return self.client.call_and_wait(recipient, {"samp.mtype": mtype, "samp.params": params},
                                         str(int(self.timeout)))

    def close(self) -> None:
        """Unregister (if still registered)."""
        if self.client.is_connected:
            self.client.disconnect()


@contextlib.contextmanager
def serve_folder(folder: str | os.PathLike) -> Iterator[str]:
    """The files of `folder` over HTTP on 127.0.0.1 (a free port), as Aladin Desktop serves its images.

    Yields the root URL, ``http://127.0.0.1:PORT`` (a file's URL is ``f"{root}/{name}"``); the
    server is shut down on the way out. Requests are not logged.
    """
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.fspath(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="cianna-otf-test-files")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
