"""HTTP hosting of the job service: the shared handlers, the standalone server, the settings."""

from ._context import ServiceContext, ServiceSettings
from ._handlers import ROUTES, make_handlers
from ._standalone import TokenAuthenticator, default_tokens, make_app, read_tokens_file, serve

__all__ = [
    "ROUTES",
    "ServiceContext",
    "ServiceSettings",
    "TokenAuthenticator",
    "default_tokens",
    "make_app",
    "make_handlers",
    "read_tokens_file",
    "serve",
]
