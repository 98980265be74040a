"""Where the client finds its service: arguments, then environment, then one config file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

URL_ENV = "CIANNA_OTF_URL"
TOKEN_ENV = "CIANNA_OTF_TOKEN"

#: Seconds for connecting and for reading an ordinary (non-blocking) response.
DEFAULT_TIMEOUT = 60.0


def config_path() -> Path:
    """The client config file: ``$XDG_CONFIG_HOME/cianna-otf/client.toml`` (``~/.config`` by default).

    A file rather than only environment variables, so a user sets the URL and token once on a
    login node and every notebook and shell finds them.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cianna-otf" / "client.toml"


def has_configured_token() -> bool:
    """Whether the user set a token of their own: ``$CIANNA_OTF_TOKEN`` or ``token`` in the config file."""
    return bool(os.environ.get(TOKEN_ENV) or _read_config(config_path()).get("token"))


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
        import tomli as tomllib

    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the client config file {path}: {exc}") from None
    return data


def _first(*values: Any) -> Any:
    for value in values:
        if value not in (None, ""):
            return value
    return None
