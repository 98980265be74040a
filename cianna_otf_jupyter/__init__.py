"""CIANNA On-The-Fly inside Jupyter: a server extension hosting the detection job service.

Installed with the package and enabled automatically; the service lives at
``{base_url}cianna-otf/`` of the Jupyter server. In a notebook, ``DetectionWidget`` is the
front end (``from cianna_otf_jupyter import DetectionWidget``).
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import CiannaOTF

    return [{"module": "cianna_otf_jupyter.extension", "app": CiannaOTF}]


def __getattr__(name: str) -> Any:
    # the notebook widget, imported on first use: the server extension must not pull in
    # ipywidgets and ipyaladin when the server starts
    if name in ("DetectionWidget", "OfflineAladin"):
        from . import aladin, widget

        return getattr(widget if name == "DetectionWidget" else aladin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
