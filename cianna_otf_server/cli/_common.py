"""Pieces shared by the ``cianna-otf`` subcommands: the parser class, common options, helpers."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, NoReturn

from ..errors import UserInputError

PROG = "cianna-otf"
DEBUG_ENV = "CIANNA_OTF_DEBUG"


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit code 2).

    argparse prints the whole usage block before the message; a script reading stderr wants
    the message, and a person the hint where to find the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def add_common_options(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """``-v/--verbose`` and ``--debug``, accepted before or after the subcommand name.

    In subcommand parsers the defaults are suppressed, so that an option given before the
    subcommand is not reset by the subcommand's own default.
    """
    default_count = 0 if top_level else argparse.SUPPRESS
    default_flag = False if top_level else argparse.SUPPRESS
    parser.add_argument(
        "-v", "--verbose", action="count", default=default_count,
        help="log progress (-v) or everything (-vv) on stderr",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default_flag,
        help=f"show tracebacks of errors (also: {DEBUG_ENV}=1)",
    )


def add_models_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--models-dir DIR`` (repeatable): model directories searched before the usual ones."""
    parser.add_argument(
        "--models-dir", metavar="DIR", action="append", default=argparse.SUPPRESS,
        help="also look for model cards in DIR (before $CIANNA_OTF_MODELS, the per-user "
        "directory and the built-in models); may be repeated",
    )


def debug_enabled(args: argparse.Namespace) -> bool:
    """True when tracebacks were asked for, by ``--debug`` or ``CIANNA_OTF_DEBUG=1``."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no", "off")


def registry_from_args(args: argparse.Namespace):
    """The model registry for this command: ``--models-dir`` directories first, then the usual ones."""
    from ..models import ModelRegistry

    directories = [Path(d).expanduser() for d in getattr(args, "models_dir", None) or []]
    for directory in directories:
        if not directory.is_dir():
            raise UserInputError(f"models directory {directory} does not exist")
    return ModelRegistry(directories)


def require_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """The path of an existing, readable regular file; `UserInputError` otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserInputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise UserInputError(f"{what} {path} is not readable")
    return path


def require_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Check that an output file can be created where asked, before any long computation."""
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"cannot write {what} {path}: folder {parent} does not exist")
    if path.is_dir():
        raise UserInputError(f"cannot write {what} {path}: it is a directory")
    return path


def write_atomically(target: str, suffix: str, writer: Callable[[str], None]) -> None:
    """Run ``writer(tmp_path)`` then move the file to ``target`` (``"-"``: copy it to stdout).

    Writing to a temporary file first means a failure never leaves a half-written catalogue
    under the requested name, and lets every writer write to stdout the same way.
    """
    directory = None if target == "-" else str(Path(target).expanduser().parent or ".")
    fd, tmp = tempfile.mkstemp(prefix=".cianna-otf-", suffix=suffix, dir=directory)
    os.close(fd)
    os.unlink(tmp)  # writers such as astropy's FITS refuse to overwrite an existing file
    try:
        try:
            writer(tmp)
        except OSError as exc:
            raise UserInputError(f"cannot write {target}: {exc.strerror or exc}") from exc
        if target == "-":
            sys.stdout.flush()
            with open(tmp, "rb") as handle:
                shutil.copyfileobj(handle, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            try:
                os.replace(tmp, Path(target).expanduser())
            except OSError as exc:
                raise UserInputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def info(message: str) -> None:
    """One line for the user on stderr (stdout may carry a catalogue)."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def add_region_options(parser: argparse.ArgumentParser) -> None:
    """``--region`` (SODA, ICRS degrees) or ``--pixels`` (FITS 1-based), and ``--precision``.

    Shared by ``detect`` (local) and ``submit`` (service), which take the same region syntax.
    Giving both is refused by the job parameters' rule (`detection_options`), in its words.
    """
    parser.add_argument("--region", metavar="SHAPE",
                        help="region of interest in ICRS degrees, SODA syntax: 'CIRCLE ra dec r', "
                        "'POLYGON ra1 dec1 ra2 dec2 ...' or 'RANGE ra1 ra2 dec1 dec2' (not with --pixels)")
    parser.add_argument("--pixels", metavar="BOUNDS",
                        help="region of interest in pixels, 'x1 x2 y1 y2' (FITS 1-based, inclusive; not with --region)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                        help="arithmetic precision of the network (default: the card's)")


def detection_options(args: argparse.Namespace) -> dict[str, float]:
    """Check the detection options as the service checks job parameters; the numbers, by option name.

    ``--threshold``, ``--nms``, ``--min-size``, ``--region``, ``--pixels``, ``--unit`` and ``--beam``
    go through the job parameters' own checks (`cianna_otf_server.jobs._parameters`), so the
    command line refuses exactly what an HTTP request is refused (400) for, with the same
    sentence, as a usage error (exit code 2).

    Raises
    ------
    UserInputError
        An option the service would refuse.
    """
    from ..jobs._parameters import check_options, region_parameter
    from ..uws import InvalidRequestError

    numbers = {"THRESHOLD": "threshold", "NMS": "nms", "MIN_SIZE": "min_size"}
    try:
        given = [(key, getattr(args, option, None)) for key, option in numbers.items()]
        given += [("PIXELS", getattr(args, "pixels", None)), ("UNIT", getattr(args, "unit", None)),
                  ("BEAM", getattr(args, "beam", None))]
        region = getattr(args, "region", None)
        if region is not None:
            given.append(region_parameter(region))
        checked = check_options(given)
    except InvalidRequestError as exc:
        raise UserInputError(str(exc)) from None
    return {option: float(checked[key]) for key, option in numbers.items() if key in checked}


def add_header_options(parser: argparse.ArgumentParser) -> None:
    """``--unit`` and ``--beam``: what the image header says wrongly or not at all.

    Shared by ``detect`` and ``submit`` (the job parameters UNIT and BEAM).
    """
    parser.add_argument("--unit", metavar="UNIT",
                        help="brightness unit of the image, replacing its BUNIT (e.g. Jy/beam, mJy/beam, "
                        "Jy/pixel); without a known unit fluxes are left empty")
    parser.add_argument("--beam", metavar="'BMAJ BMIN PA'",
                        help="restoring beam replacing the header's: FWHM axes in arcsec and position angle "
                        "in degrees, e.g. '6 5 30'; without a beam fluxes and sizes are left empty")


def warn_lines(warnings: Iterable[str]) -> None:
    """Each warning of a result (an image outside a model's domain, an unknown unit...) on stderr."""
    for warning in warnings:
        info(f"warning: {warning}")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`, with a clear message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {value}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """An argparse type: a positive number of seconds (a timeout), with a clear message."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value
