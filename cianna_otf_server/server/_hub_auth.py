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

Browsers log in with the Hub's OAuth (`jupyterhub.services.auth.HubOAuth`) where the service is
an OAuth client of the Hub (``JUPYTERHUB_CLIENT_ID``; the Hub makes one, ``service-NAME``, for
every service with a URL): a page asked for without credentials is redirected to the Hub's
login, which comes back to ``PREFIX/oauth_callback``; that sets a cookie holding the user's
OAuth token. The cookie authenticates reads only (GET and HEAD: job lists, job documents,
results in the browser): a request that changes anything needs the token in the
``Authorization`` header, so another site cannot make a logged-in browser create or delete jobs.

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

    #: request methods a browser's login cookie may authenticate (reads)
    COOKIE_METHODS = ("GET", "HEAD")

    def __init__(self, *, api_token: str | None = None, api_url: str | None = None,
                 service_name: str | None = None, cache_seconds: int = 60,
                 oauth_client_id: str | None = None, service_prefix: str | None = None) -> None:
        try:
            from jupyterhub.services.auth import HubAuth, HubOAuth
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
        access = {f"access:services!service={self.service_name}"}
        client_id = oauth_client_id if oauth_client_id is not None else os.environ.get("JUPYTERHUB_CLIENT_ID", "")
        prefix = service_prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "") or f"/services/{self.service_name}/"
        #: browsers log in through the Hub (OAuth) when the service is one of its OAuth clients
        self.browser_login = bool(client_id)
        if self.browser_login:
            self.hub = HubOAuth(api_token=api_token, api_url=api_url, cache_max_age=cache_seconds,
                                access_scopes=access, oauth_client_id=client_id, base_url=prefix)
        else:
            self.hub = HubAuth(api_token=api_token, api_url=api_url, cache_max_age=cache_seconds,
                               access_scopes=access)
            log.info("JUPYTERHUB_CLIENT_ID is not set: API tokens only, no browser login through the Hub")

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
        return self._allowed(model)

    def _allowed(self, model: dict[str, Any] | None) -> dict[str, Any] | None:
        if not model or model.get("kind", "user") != "user":
            return None
        return model if self.hub.check_scopes(self.hub.access_scopes, model) else None

    def model_for_request(self, handler: Any) -> dict[str, Any] | None:
        """The user of a request: its ``Authorization`` token, else (reads only) its login cookie."""
        header = handler.request.headers.get("Authorization")
        if header or not self.browser_login or handler.request.method not in self.COOKIE_METHODS:
            return self.model_for(header)
        try:
            model = self.hub.get_user(handler, sync=True)  # no header: the login cookie
        except Exception as exc:  # the Hub is down or answered an error: not the user's fault
            log.warning("the Hub could not check a login cookie: %s", exc)
            raise HubUnavailableError(
                "the JupyterHub that vouches for users cannot be reached just now; try again shortly") from None
        return self._allowed(model)

    def login_url(self, handler: Any) -> str | None:
        """Where to send a browser that asked for a page without credentials (the Hub's login), or None.

        Sets the OAuth state cookie the callback checks (and the PKCE verifier, as HubOAuth's own
        handlers do); the user comes back to the page they asked for.
        """
        if not self.browser_login:
            return None
        from tornado.httputil import url_concat

        params: dict[str, str] = {}
        verifier = None
        if self.hub.pkce_enabled:
            verifier, challenge, method = self.hub.generate_pkce_code_challenge()
            params.update(code_challenge=challenge, code_challenge_method=method)
        params["state"] = self.hub.set_state_cookie(handler, next_url=handler.request.uri, code_verifier=verifier)
        return url_concat(self.hub.login_url, params)

    def callback_route(self, root_path: str) -> tuple[str, Any, dict[str, Any]] | None:
        """The tornado route that completes a browser's login (``ROOT/oauth_callback``), or None."""
        if not self.browser_login:
            return None
        from jupyterhub.services.auth import HubOAuthCallbackHandler

        hub = self.hub

        class _Callback(HubOAuthCallbackHandler):
            def initialize(self) -> None:
                self.hub_auth = hub

        return (root_path.rstrip("/") + "/oauth_callback", _Callback, {})

    def user_for(self, header: str | None) -> str | None:
        model = self.model_for(header)
        return str(model["name"]) if model else None

    def principal_for(self, header: str | None) -> HubPrincipal | None:
        """The token's user, and whether the token holds the service's admin scope (``custom:NAME:admin``).

        An administrator lists, reads, aborts and deletes every user's jobs and reads /metrics;
        the Hub grants the scope through a role (see the README), and only on tokens that
        carry it: a user's other tokens stay plain.
        """
        return self._principal(self.model_for(header))

    def principal_for_request(self, handler: Any) -> HubPrincipal | None:
        """`principal_for` of a request, whose login cookie counts too (`model_for_request`)."""
        return self._principal(self.model_for_request(handler))

    def _principal(self, model: dict[str, Any] | None) -> HubPrincipal | None:
        if not model:
            return None
        return HubPrincipal(str(model["name"]), bool(self.hub.check_scopes({self.admin_scope}, model)))
