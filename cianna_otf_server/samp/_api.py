"""Which SAMP implementation the bridge uses, and where it finds the hub.

astropy 8 deprecated ``astropy.samp`` in favour of ``pyvo.samp``, the same code moved to pyvo
(from pyvo 1.8). pyvo is only an optional extra of this project while astropy is a core
dependency, so the bridge takes pyvo's copy where it is installed and astropy's otherwise; both
speak the same SAMP standard profile to the same hubs.

The hub is found as astropy finds it (``$SAMP_HUB`` as ``std-lockurl:...``, else ``~/.samp``),
except that a ``file://`` lock URL in ``$SAMP_HUB`` is understood (astropy's client takes the URL
for a path) and that a missing or stale lockfile is reported in words a user can act on.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

__all__ = ["SAMP_ERROR", "SAMP_OK", "SampBridgeError", "hub_lockfile", "hub_params", "offline", "samp_module"]

SAMP_OK = "samp.ok"
SAMP_ERROR = "samp.error"
HUB_ENV = "SAMP_HUB"
_LOCK_PREFIX = "std-lockurl:"


class SampBridgeError(Exception):
    """The bridge cannot do what was asked (no hub, a stale lockfile, a bad image or region).

    The message is meant for the user as it stands (the command line prints it; a SAMP reply
    carries it as ``samp.errortxt``).
    """


def samp_module() -> ModuleType:
    """``pyvo.samp`` when it is installed (pyvo >= 1.8), else ``astropy.samp``."""
    try:
        from pyvo import samp

        if hasattr(samp, "SAMPIntegratedClient"):
            return samp
    except ImportError:
        pass
    with warnings.catch_warnings():  # astropy >= 8 warns on import; the fallback is deliberate
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from astropy.utils.exceptions import AstropyDeprecationWarning

            warnings.simplefilter("ignore", AstropyDeprecationWarning)
        except ImportError:  # pragma: no cover
            pass
        from astropy import samp
    return samp


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Keep the SAMP code from probing the internet while it makes a client or hub.

    With ``use_internet`` on (its default), every new client or hub first fetches
    http://google.com to choose between its host name and 127.0.0.1: a delay, a network access a
    desktop tool has no business making, and a hang on machines without network. The bridge
    talks to viewers on this machine, so 127.0.0.1 is the right address anyway.
    """
    samp = samp_module()
    with samp.conf.set_temp("use_internet", False):
        yield


def _lock_path(value: str) -> Path:
    text = value.strip()
    if text.startswith(_LOCK_PREFIX):
        text = text[len(_LOCK_PREFIX):]
    if text.lower().startswith("file:"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise SampBridgeError(f"the SAMP lockfile {value} lies on another host ({parsed.netloc})")
        return Path(url2pathname(unquote(parsed.path)))
    if "://" in text:
        raise SampBridgeError(f"the SAMP lockfile {value} is not a local file (only the standard "
                              "profile's file lockfiles are supported)")
    return Path(text).expanduser()


def hub_lockfile(lockfile: str | os.PathLike | None = None) -> Path:
    """The lockfile of the hub to join: `lockfile`, else ``$SAMP_HUB``, else ``~/.samp``.

    `lockfile` and ``$SAMP_HUB`` may be a path, a ``file://`` URL or ``std-lockurl:URL``.
    """
    if lockfile is not None and str(lockfile).strip():
        return _lock_path(os.fspath(lockfile))
    env = os.environ.get(HUB_ENV, "").strip()
    if env:
        if not env.startswith(_LOCK_PREFIX):
            raise SampBridgeError(f"${HUB_ENV}={env} names a SAMP profile other than the standard one "
                                  f"(expected {_LOCK_PREFIX}file:///path/to/lockfile)")
        return _lock_path(env)
    return Path.home() / ".samp"


def hub_params(hub: str | os.PathLike | Mapping[str, Any] | None = None) -> dict[str, str]:
    """The parameters of a running hub (``samp.secret``, ``samp.hub.xmlrpc.url``...).

    Parameters
    ----------
    hub : path, URL, mapping or None
        A lockfile (see `hub_lockfile`; None: the default one), or the parameters themselves.

    Raises
    ------
    SampBridgeError
        No lockfile, or one whose hub does not answer (a hub that died without removing it).
    """
    if isinstance(hub, Mapping):
        params = {str(k): str(v) for k, v in hub.items()}
        if "samp.hub.xmlrpc.url" not in params or "samp.secret" not in params:
            raise SampBridgeError("hub parameters need samp.secret and samp.hub.xmlrpc.url")
        return params
    path = hub_lockfile(hub)
    if not path.is_file():
        raise SampBridgeError(f"no SAMP hub is running (no lockfile {path}): start one first "
                              "(TOPCAT, Aladin Desktop and DS9 run one, or astropy's samp_hub), "
                              "or name its lockfile with --hub-lockfile")
    samp = samp_module()
    from importlib import import_module

    helpers = import_module(f"{samp.__name__}.lockfile_helpers")
    with offline():
        running, params = helpers.check_running_hub(str(path))
    if not running:
        raise SampBridgeError(f"the SAMP hub of lockfile {path} does not answer (it may have stopped "
                              "without removing its lockfile): restart the hub")
    return dict(params)
