"""Users of a JupyterHub as the service's users: `cianna-otf serve --auth hub`.

On a science platform one service serves every user of a hub, registered as a JupyterHub
service. A request carries the user's Hub API token (``Authorization: token ...`` or
``Bearer ...``, as the notebook extension and pyvo send it); the Hub says whose it is and which
scopes it holds (`jupyterhub.services.auth.HubAuth`, replies cached for `cache_seconds`). The
job owner is the Hub user name, so each user sees only their own jobs, and a token without
access to this service (``access:services!service=NAME``) is refused as if absent.

The service reads its Hub API token and URL and its own name from the environment JupyterHub
gives a service (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_NAME``),
whether JupyterHub starts it (managed) or it runs on a GPU node of its own (external).

jupyterhub is imported only when this authenticator is chosen (``pip install jupyterhub``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from ..errors import UserInputError

__all__ = ["HubAuthenticator", "HubUnavailableError", "HubPrincipal"]


class HubUnavailableError(Exception):
    """The Hub could not say whose a token is (down, restarting, unreachable): 503, not 401."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubPrincipal:
    """A Hub user as the service sees them: their name (the job owner) and whether they administer it."""

    name: str
    admin: bool = False


class HubAuthenticator:
    """Maps a Hub API token to its user's name, through the Hub's API."""

    def __init__(self, *, api_token: str | None = None, api_url: str | None = None,
                 service_name: str | None = None, cache_seconds: int = 60) -> None:
        try:
            from jupyterhub.services.auth import HubAuth
        except ImportError as exc:
            raise UserInputError("--auth hub needs JupyterHub's service library: pip install jupyterhub") from exc
        api_token = api_token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
        api_url = api_url or os.environ.get("JUPYTERHUB_API_URL", "")
        if not api_token or not api_url:
            raise UserInputError(
                "--auth hub: JUPYTERHUB_API_TOKEN and JUPYTERHUB_API_URL are not set; register the service "
                "in jupyterhub_config.py (c.JupyterHub.services) and start it with the token given there")
        self.service_name = service_name or os.environ.get("JUPYTERHUB_SERVICE_NAME", "cianna-otf")
        #: the custom scope of the service's administrators (declared in the Hub's custom_scopes)
        self.admin_scope = f"custom:{self.service_name}:admin"
        self.hub = HubAuth(api_token=api_token, api_url=api_url, cache_max_age=cache_seconds,
                           access_scopes={f"access:services!service={self.service_name}"})

    def model_for(self, header: str | None) -> dict[str, Any] | None:
        """The Hub's model of the token's user, if the token may use this service; else None."""
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value.strip():
            return None
        try:
            model = self.hub.user_for_token(value.strip(), sync=True)
        except Exception as exc:  # the Hub is down or answered an error: not the user's fault
            log.warning("the Hub could not check a token: %s", exc)
            raise HubUnavailableError(
                "the JupyterHub that vouches for users cannot be reached just now; try again shortly") from None
        if not model or model.get("kind", "user") != "user":
            return None
        if not self.hub.check_scopes(self.hub.access_scopes, model):
            return None
        return model

    def user_for(self, header: str | None) -> str | None:
        model = self.model_for(header)
        return str(model["name"]) if model else None

    def principal_for(self, header: str | None) -> HubPrincipal | None:
        """The token's user, and whether the token holds the service's admin scope (``custom:NAME:admin``).

        An administrator lists, reads, aborts and deletes every user's jobs and reads /metrics;
        the Hub grants the scope through a role (see the README), and only on tokens that
        carry it: a user's other tokens stay plain.
        """
        model = self.model_for(header)
        if not model:
            return None
        return HubPrincipal(str(model["name"]), bool(self.hub.check_scopes({self.admin_scope}, model)))
