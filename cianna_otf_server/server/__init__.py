"""HTTP hosting of the job service: the shared handlers, the standalone server, the configuration.

`ServiceConfig` is imported at once (the command line builds its options from it at start-up);
the handlers and servers, which pull in the whole service, only when first used.
"""

from __future__ import annotations

from typing import Any

from ._config import ServiceConfig, settings_table

__all__ = [
    "ROUTES",
    "ServiceConfig",
    "ServiceContext",
    "TokenAuthenticator",
    "default_tokens",
    "make_app",
    "make_handlers",
    "make_server",
    "read_tokens_file",
    "serve",
    "settings_table",
]

_LAZY = {
    "ServiceContext": "._context",
    "ROUTES": "._handlers",
    "make_handlers": "._handlers",
    "TokenAuthenticator": "._standalone",
    "default_tokens": "._standalone",
    "make_app": "._standalone",
    "make_server": "._standalone",
    "read_tokens_file": "._standalone",
    "serve": "._standalone",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
