"""`SampConnection`: the SAMP life cycle shared by the bridge and the notebook's link.

Registering with a hub (under `offline`, with this project's metadata), subscribing to the
MTypes handled and to the hub's shutdown and disconnect notices, noticing that the hub went away
(`hub_gone`), unregistering when the hub may already be gone, the other clients' names and the
replies to calls. What each client does with its messages is its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .. import __version__
from ._api import SAMP_ERROR, offline, samp_module
from ._messages import HUB_SHUTDOWN

__all__ = ["SampConnection", "error_response"]


_Self = TypeVar("_Self", bound="SampConnection")


def error_response(text: str) -> dict[str, Any]:
    """The ``samp.error`` response that carries `text` as ``samp.errortxt``."""
    return {"samp.status": SAMP_ERROR, "samp.error": {"samp.errortxt": text}}


class SampConnection:
    """A SAMP client of this project: its connection to the hub, and the end of it.

    Subclasses set `name`, `description` and `role` (the word its log lines use for it), keep
    the connection made by `_register` in ``_samp``, subscribe with `_subscribe` (messages go to
    their ``_receive``), and end it with `_unregister`; `_leave` is what ``with`` calls on the way out.

    Parameters
    ----------
    addr : str
        The address of the client's own SAMP endpoint: loopback, since the viewers are local.
    """

    name = "cianna-otf"
    description = ""
    role = "client"

    def __init__(self, addr: str = "127.0.0.1") -> None:
        self.addr = addr
        self._samp: Any = None
        self._names: dict[str, str] = {}
        #: Set when the hub shut down or dropped the client: nothing more will arrive (`connected`
        #: is then False).
        self.hub_gone = threading.Event()

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._leave()

    def _leave(self) -> None:
        raise NotImplementedError

    @property
    def _log(self) -> logging.Logger:
        """The logger of the subclass's module (``cianna_otf_server.samp._bridge``...)."""
        return logging.getLogger(type(self).__module__)

    # -- the connection -----------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Registered with a hub that has not gone away."""
        connection = self._samp
        try:
            return connection is not None and bool(connection.is_connected) and not self.hub_gone.is_set()
        except Exception:  # noqa: BLE001 - a half-closed client
            return False

    @property
    def public_id(self) -> str | None:
        """The client's id on the hub (``cli#3``), once connected."""
        try:
            return self._samp.get_public_id() if self._samp is not None else None
        except Exception:  # noqa: BLE001 - disconnected
            return None

    def _register(self, params: Mapping[str, str], metadata: Mapping[str, str],
                  refused: Callable[[Exception], Exception]) -> Any:
        """A new SAMP client registered with the hub of `params`, as `name` with `metadata` added.

        A failure to register (``SAMPHubError``, socket errors: all mean "no hub") raises
        ``refused(exc)``; a failure to make the client itself propagates.
        """
        samp = samp_module()
        metadata = {"samp.name": self.name, "samp.description.text": self.description,
                    "cianna-otf.version": __version__, **metadata}
        with offline():
            connection = samp.SAMPIntegratedClient(name=self.name, description=self.description,
                                                   metadata=metadata, addr=self.addr)
            try:
                connection.connect(hub_params=params)
            except Exception as exc:  # noqa: BLE001
                raise refused(exc) from None
        return connection

    def _subscribe(self, connection: Any, mtypes: Iterable[str]) -> None:
        """Subscribe to `mtypes` (to ``_receive``) and to the hub's shutdown and disconnect (`_hub_event`)."""
        for mtype in mtypes:
            connection.bind_receive_message(mtype, self._receive, declare=False)
        for mtype in HUB_SHUTDOWN:
            connection.bind_receive_notification(mtype, self._hub_event, declare=False)
        connection.declare_subscriptions()

    def _unregister(self, connection: Any) -> None:
        """Unregister `connection` from the hub; where the hub is gone already, stop its endpoint."""
        try:
            connection.disconnect()
        except Exception as exc:  # noqa: BLE001 - the hub may be gone already
            self._log.debug("unregistering from the SAMP hub: %s", exc)
            client = getattr(connection, "client", None)
            if client is not None and getattr(client, "is_running", False):
                try:
                    client.stop()
                except Exception:  # noqa: BLE001
                    pass
        self._log.info("unregistered from the SAMP hub")

    # -- what the hub sends -------------------------------------------------------------------
    def _receive(self, private_key: str, sender_id: str, msg_id: str | None, mtype: str,
                 params: dict[str, Any], extra: dict[str, Any]) -> None:
        raise NotImplementedError

    def _hub_event(self, private_key: str, sender_id: str, mtype: str, params: dict[str, Any],
                   extra: dict[str, Any]) -> None:
        what = "shut down" if mtype.endswith("shutdown") else f"dropped the {self.role}"
        self._log.warning("the SAMP hub %s (%s)", what, mtype)
        self.hub_gone.set()

    # -- the other clients --------------------------------------------------------------------
    def _client_name(self, client_id: str) -> str | None:
        """A client's ``samp.name`` as the hub has it; None when it has none (or is gone)."""
        connection = self._samp
        if connection is None:
            return None
        try:
            return (connection.get_metadata(client_id) or {}).get("samp.name")
        except Exception:  # noqa: BLE001 - gone already
            return None

    def _reply_on(self, connection: Any, message: Any, response: dict[str, Any]) -> None:
        """Reply to `message` (``mtype``, ``sender_id``, ``msg_id``) if it is a call; a log line if it cannot be."""
        if message.msg_id is None or connection is None:
            return
        try:
            connection.reply(message.msg_id, response)
        except Exception as exc:  # noqa: BLE001 - the caller or the hub went away
            self._log.warning("cannot reply to %s from %s: %s", message.mtype, message.sender_id, exc)
