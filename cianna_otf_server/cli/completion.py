"""``cianna-otf completion SHELL``: print a shell completion script for bash, zsh or tcsh.

The script is generated from the real argument parser by `shtab`, so every command and option
(``submit --model``, ``jobs --phase``, the ``--format`` choices) completes without a hand-kept
list. Install it once, e.g.::

    cianna-otf completion bash > ~/.local/share/bash-completion/completions/cianna-otf
    cianna-otf completion zsh > ~/.zfunc/_cianna-otf      # with fpath+=(~/.zfunc) in ~/.zshrc
    cianna-otf completion tcsh > ~/.cianna-otf.tcsh        # then: source ~/.cianna-otf.tcsh

Files and folders complete where an argument names one (images, ``-o``, ``--data-dir``, ...).
"""

from __future__ import annotations

import argparse
import sys

from ._common import add_common_options
from ..errors import UserInputError

NAME = "completion"
SHELLS = ("bash", "zsh", "tcsh")

#: Argument destinations that name files, and those that name folders (completed as such).
FILE_DESTS = frozenset({"images", "image", "for_image", "output", "input", "config", "catalogue"})
DIR_DESTS = frozenset({"models_dir", "data_dir", "directory", "output_dir"})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``completion`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="print a shell completion script (bash, zsh or tcsh)",
        description="Print a completion script for SHELL on stdout, generated from the command "
        "line itself (needs the shtab package: pip install shtab).",
        epilog="examples:\n"
        "  cianna-otf completion bash > ~/.local/share/bash-completion/completions/cianna-otf\n"
        "  cianna-otf completion zsh > ~/.zfunc/_cianna-otf\n"
        "  eval \"$(cianna-otf completion bash)\"      # this shell only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="one of: " + ", ".join(SHELLS))
    add_common_options(parser)
    parser.set_defaults(handler=run)


def _mark_paths(parser: argparse.ArgumentParser, shtab) -> None:
    """Tell shtab which arguments complete as files or folders, in every subparser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _mark_paths(sub, shtab)
        elif getattr(action, "complete", None) is None and not action.choices:
            if action.dest in FILE_DESTS:
                action.complete = shtab.FILE
            elif action.dest in DIR_DESTS:
                action.complete = shtab.DIRECTORY


def completion_script(shell: str) -> str:
    """The completion script for `shell` (``bash``, ``zsh`` or ``tcsh``)."""
    try:
        import shtab
    except ImportError:
        raise UserInputError("shell completion needs the shtab package: pip install shtab") from None
    from . import build_parser  # here, not at import: cli imports this module

    parser = build_parser()
    _mark_paths(parser, shtab)
    return shtab.complete(parser, shell=shell)


def run(args: argparse.Namespace) -> int:
    script = completion_script(args.shell)
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    return 0
