"""The Jupyter base handler: Jupyter's authentication and authorization around the shared handlers."""

from __future__ import annotations

from jupyter_server.auth.identity import IdentityProvider, PasswordIdentityProvider
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from cianna_otf_server.server._refusal import refuse_after_body

AUTH_RESOURCE = "cianna-otf"
AUTH_MESSAGE = "authentication required: send 'Authorization: token TOKEN'"

#: Jupyter's own identity providers: one principal (whoever holds the server's token or
#: password), to whom they give a new random user id per cookie-less request or browser session.
SINGLE_PRINCIPAL_PROVIDERS = (IdentityProvider, PasswordIdentityProvider)


class JupyterServiceHandler(ExtensionHandlerMixin, JupyterHandler):
    """Authenticates with the Jupyter server's identity provider and authorizer.

    Token clients (pyvo with ``Authorization: token ...``) are authenticated and exempt from the
    XSRF check; browser POSTs keep Jupyter's XSRF protection. Unauthenticated requests get 403.

    The job owner is the identity provider's user name (JupyterHub's single-user servers and
    other multi-user providers), except under Jupyter's own token/password providers: those know
    a single principal but name it with a fresh random id for every request without a login
    cookie, so jobs would vanish from the next notebook's view; there every job belongs to the
    configured ``single_user_owner`` (by default the server's account name).
    """

    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str, context, single_user_owner: str | None = None) -> None:  # type: ignore[override]
        super().initialize(name)
        self.context = context
        self.single_user_owner = single_user_owner

    async def prepare(self) -> None:  # type: ignore[override]
        try:
            await super().prepare(_redirect_to_login=False)  # authentication, and the XSRF check
            user = self.current_user
            if user is None:
                raise web.HTTPError(403, AUTH_MESSAGE)
            action = "read" if self.request.method in ("GET", "HEAD", "OPTIONS") else "write"
            if not self.authorizer.is_authorized(self, user, action, self.auth_resource):
                raise web.HTTPError(403, "not authorized to use the detection service")
        except web.HTTPError as refusal:
            if refusal.status_code == 403 and getattr(self, "_jupyter_current_user", None) is None:
                # no credentials at all: say so, rather than Jupyter's "'_xsrf' argument missing"
                refusal = web.HTTPError(403, AUTH_MESSAGE)
            if not refuse_after_body(self, refusal):
                raise refusal from None
            return
        self.start_body()  # type: ignore[attr-defined]

    @property
    def owner(self) -> str | None:
        user = self.current_user
        if user is None:
            return None
        if self.single_user_owner and type(self.identity_provider) in SINGLE_PRINCIPAL_PROVIDERS:
            return self.single_user_owner
        return getattr(user, "username", None) or str(user)
