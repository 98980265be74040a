"""The Jupyter base handler: Jupyter's authentication and authorization around the shared handlers."""

from __future__ import annotations

from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

AUTH_RESOURCE = "cianna-otf"


class JupyterServiceHandler(ExtensionHandlerMixin, JupyterHandler):
    """Authenticates with the Jupyter server's identity provider and authorizer.

    Token clients (pyvo with ``Authorization: token ...``) are authenticated and exempt from the
    XSRF check; browser POSTs keep Jupyter's XSRF protection. Unauthenticated requests get 403.
    """

    auth_resource = AUTH_RESOURCE

    def initialize(self, name: str, context) -> None:  # type: ignore[override]
        super().initialize(name)
        self.context = context

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare(_redirect_to_login=False)
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "authentication required: send 'Authorization: token TOKEN'")
        action = "read" if self.request.method in ("GET", "HEAD", "OPTIONS") else "write"
        if not self.authorizer.is_authorized(self, user, action, self.auth_resource):
            raise web.HTTPError(403, "not authorized to use the detection service")
        self.start_body()  # type: ignore[attr-defined]

    @property
    def owner(self) -> str | None:
        user = self.current_user
        return getattr(user, "username", None) or (str(user) if user else None)
