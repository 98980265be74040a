"""CIANNA On-The-Fly inside Jupyter: a server extension hosting the detection job service.

Installed with the package and enabled automatically; the service lives at
``{base_url}cianna-otf/`` of the Jupyter server.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import CiannaOTF

    return [{"module": "cianna_otf_jupyter.extension", "app": CiannaOTF}]
