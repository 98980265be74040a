"""The ``cianna-otf`` command line.

Each subcommand lives in its own module of this package exposing ``register(subparsers)``,
which adds its parser and sets ``handler`` (a function ``(args) -> int``); `COMMAND_MODULES`
lists them in the order ``--help`` shows them. Adding a command (``serve``, ``submit``,
``status``, ``jobs``, ``fetch``, ``abort``, ``delete``, ``dashboard``) means adding a module and
one line here. Modules import heavy dependencies (torch, the pipeline) inside their handlers, so
``cianna-otf --help`` and ``cianna-otf models`` stay fast.

Exit codes: 0 success; 2 bad usage or bad input (argparse errors, any
`cianna_otf_server.errors.UserInputError`); 1 internal failure; 130 interrupted. Errors are one
line on stderr; ``--debug`` (or ``CIANNA_OTF_DEBUG=1``) adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings
from typing import Sequence

from .. import __version__
from ._common import PROG, CliParser, add_common_options, debug_enabled
from ..errors import UserInputError

COMMAND_MODULES: tuple[str, ...] = (
    "cianna_otf_server.cli.detect",
    "cianna_otf_server.cli.simulate",
    "cianna_otf_server.cli.models",
    "cianna_otf_server.cli.serve",
    "cianna_otf_server.cli.submit",
    "cianna_otf_server.cli.jobs",
    "cianna_otf_server.cli.dashboard",
    "cianna_otf_server.cli.samp",
    "cianna_otf_server.cli.ds9",
    "cianna_otf_server.cli.completion",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one subparser per module of `COMMAND_MODULES`."""
    parser = CliParser(
        prog=PROG,
        description="Deep-learning source detection on astronomical FITS images.",
        epilog="Run 'cianna-otf COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return _code(exc.code)
    debug = debug_enabled(args)
    _configure_logging(getattr(args, "verbose", 0))
    # astropy says so on import when XDG_CONFIG_HOME/XDG_CACHE_HOME name a missing folder, then
    # ignores them: noise on a command line whose errors are one line
    warnings.filterwarnings("ignore", message=r"XDG_(CONFIG|CACHE)_HOME is set to .* no such file")
    handler = getattr(args, "handler", None)
    if handler is None:
        _error("a command is needed (see 'cianna-otf --help')")
        return 2
    try:
        return int(handler(args) or 0)
    except UserInputError as exc:
        if debug:
            traceback.print_exc()
        _error(str(exc))
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # the reader of stdout went away (e.g. '| head')
        _silence_stdout()
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
            _error(f"internal error: {type(exc).__name__}: {exc}")
        else:
            _error(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        return 1


def _code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 2


def _error(message: str) -> None:
    one_line = " ".join(str(message).splitlines()).strip() or "unknown error"
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def _configure_logging(verbose: int) -> None:
    """Warnings by default; -v: this package's progress; -vv: its debug messages too."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"{PROG}: %(levelname)s: %(message)s")
    logging.getLogger("cianna_otf_server").setLevel(level)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass

