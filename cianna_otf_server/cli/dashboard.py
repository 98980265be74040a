"""``cianna-otf dashboard``: the live terminal UI of the job service (see `cianna_otf_server.tui`).

Like the other client commands it takes ``--url`` and ``--token`` (else ``$CIANNA_OTF_URL``,
``$CIANNA_OTF_TOKEN``, the client config file). A missing URL or a missing textual exits 2
before the UI starts; once it runs, service errors (unreachable, refused token) show inside the
UI and the command exits 0 when the user quits.
"""

from __future__ import annotations

import argparse

from ._common import add_common_options
from ._remote import add_service_options, client_command, make_client
from ..errors import UserInputError

NAME = "dashboard"


def _refresh_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"refresh interval must be between 0.2 and 3600 seconds, not {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dashboard`` to the command line."""
    parser = subparsers.add_parser(
        NAME, help="watch your jobs, the queue and the models in a terminal UI",
        description="A live terminal dashboard of the service: your jobs (phase, model, owner, age, "
        "progress), the selected job's parameters, error and results, the models, and the queue and "
        "batch metrics. Works over SSH, keyboard only.",
        epilog="keys: arrows select a job; f cycles the phase filter, / types one; a aborts, d deletes "
        "the selected job (y/n to confirm); m shows the models; r refreshes; q quits.\n\n"
        "example:\n  cianna-otf dashboard --url http://127.0.0.1:8750 --token SECRET --refresh 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_service_options(parser)
    parser.add_argument("--refresh", type=_refresh_seconds, default=5.0, metavar="SECONDS",
                        help="seconds between refreshes of the jobs and metrics (default 5)")
    add_common_options(parser)
    parser.set_defaults(handler=client_command(run_dashboard))


def run_dashboard(args: argparse.Namespace) -> int:
    try:
        from ..tui import Dashboard
    except ImportError as exc:
        raise UserInputError(f"the dashboard needs textual ({exc}): pip install textual") from None
    with make_client(args) as client:
        Dashboard(client, args.refresh).run()
    return 0
