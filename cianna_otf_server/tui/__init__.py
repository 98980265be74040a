"""The terminal dashboard: a live view of one's jobs, the models and the queue, over the Python client.

Started by ``cianna-otf dashboard``; of the project it imports only `cianna_otf_server.client`,
so it works against any deployment the client reaches.
"""

from ._dashboard import (
    Dashboard,
    format_age,
    format_metrics,
    format_models,
    job_detail,
    job_row,
    matches_filter,
    parse_filter,
    parse_metrics,
    run_dashboard,
)

__all__ = [
    "Dashboard",
    "format_age",
    "format_metrics",
    "format_models",
    "job_detail",
    "job_row",
    "matches_filter",
    "parse_filter",
    "parse_metrics",
    "run_dashboard",
]
