"""The `ExtensionApp`: the service's configuration as Jupyter traits, and its start and stop hooks."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Unicode, default

from cianna_otf_server.errors import StorageError
from cianna_otf_server.server import ServiceConfig, ServiceContext, make_handlers

from .handlers import JupyterServiceHandler
from .static_files import static_handlers

SERVICE_PATH = "cianna-otf/"


class CiannaOTF(ServiceConfig, ExtensionApp):
    """Hosts the detection job service in a Jupyter server.

    Its traits are the service's one configuration (`ServiceConfig`), set as ``c.CiannaOTF.*``
    (or ``c.ServiceConfig.*``) in a Jupyter config file; only the owner of single-user jobs is
    Jupyter's own. The service lives at ``{base_url}cianna-otf/``.
    """

    name = "cianna_otf_jupyter"
    description = "CIANNA On-The-Fly: deep-learning source detection jobs (IVOA UWS) in Jupyter"
    load_other_extensions = True

    single_user_owner = Unicode(
        help="Owner of every job when Jupyter's own token/password identity provider is in use (one "
             "principal, which Jupyter names with a random id per session); default: the account name. "
             "Ignored under JupyterHub and other multi-user identity providers, where the user name is the owner.",
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return str(Path(jupyter_data_dir()) / "cianna-otf")

    @default("single_user_owner")
    def _default_single_user_owner(self) -> str:
        try:
            return getpass.getuser()
        except Exception:  # pragma: no cover - no account name (some containers)
            return "owner"

    def service_config(self) -> ServiceConfig:
        """This app's settings as the service's configuration, rooted under the server's base_url."""
        base_url = self.serverapp.base_url if self.serverapp is not None else "/"
        values = {name: getattr(self, name) for name in ServiceConfig.class_trait_names(config=True)}
        values["root_path"] = url_path_join(base_url, SERVICE_PATH)
        if not values.get("public_url"):
            values["public_url"] = self._server_origin()
        return ServiceConfig(**values)

    def _server_origin(self) -> str:
        """``scheme://host:port`` of this server, from its configuration (never from a request's Host).

        Under JupyterHub, the single-user server's public URL as the hub gives it
        (``JUPYTERHUB_PUBLIC_URL``); otherwise the server's own connection URL.
        """
        from urllib.parse import urlsplit

        public = os.environ.get("JUPYTERHUB_PUBLIC_URL", "")
        url = public or (self.serverapp.connection_url if self.serverapp is not None else "")
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""

    #: The running service; None when it could not be set up (its reason is in the server's log).
    context: ServiceContext | None = None

    def initialize_handlers(self) -> None:
        """Set the service up and mount it; a damaged or unwritable job database mounts nothing.

        The rest of the Jupyter server keeps working; the log says which file and what to do,
        and the service's URLs answer 404 rather than fail job by job.
        """
        try:
            self.context = ServiceContext(self.service_config())
        except StorageError as exc:
            self.context = None
            self.log.error("CIANNA On-The-Fly is not available in this server: %s", exc)
            return
        self.handlers.extend(
            make_handlers("/" + SERVICE_PATH, JupyterServiceHandler, {"context": self.context, "single_user_owner": self.single_user_owner})
        )
        # Aladin Lite for the notebook view (fetch_aladin.py), at {base_url}cianna-otf/static/
        self.handlers.extend(static_handlers("/" + SERVICE_PATH))

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        if self.context is not None:
            self.context.start()

    async def stop_extension(self) -> None:
        if self.context is not None:
            self.context.stop()
