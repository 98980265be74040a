"""What the commands that talk to a service share: ``--url``/``--token``, exit codes, downloads.

These commands (``submit``, ``status``, ``jobs``, ``fetch``, ``abort``, ``delete``, ``models
--url``, ``dashboard``) reach a running service (``cianna-otf serve`` or the Jupyter extension)
only through `cianna_otf_server.client.Client`, that is only through the public UWS API.

Exit codes of the client commands (on top of the general ones of `cianna_otf_server.cli`):

* 0: done;
* 2: something the user can fix: bad arguments, no service URL, a refused or missing token
  (401/403), an unknown job (404), an action the job's phase does not allow, any other 4xx
  answer (a bad parameter, an upload over the limit), a job whose results are not there yet;
* 1: the service failed or the job did: the service cannot be reached or timed out, a 5xx
  answer, the service is busy (503/429), a job that ended in ERROR or ABORTED (its error
  message is printed), a wait that ran past ``--timeout``.

Errors are one line on stderr: ``cianna-otf: error: MESSAGE``, the service's own message.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..catalogue import CATALOGUE_FORMATS, format_for_media_type, format_for_suffix
from ..errors import UserInputError
from ._common import PROG, write_atomically

if TYPE_CHECKING:  # the client imports requests and lxml: loaded only when a command runs
    from ..client import Client, Job

URL_ENV = "CIANNA_OTF_URL"
TOKEN_ENV = "CIANNA_OTF_TOKEN"

# -- options -------------------------------------------------------------------------------
def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token`` (environment and config file fallbacks are the Client's)."""
    group = parser.add_argument_group("service")
    group.add_argument("--url", default=None, metavar="URL",
                       help=f"the service root, e.g. http://127.0.0.1:8750 (else ${URL_ENV}, else "
                       "'url' in ~/.config/cianna-otf/client.toml)")
    group.add_argument("--token", default=None, metavar="TOKEN",
                       help=f"the API token (else ${TOKEN_ENV}, else 'token' in the config file)")


def add_json_option(parser: argparse.ArgumentParser, what: str = "the job") -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON (for scripts)")


def make_client(args: argparse.Namespace) -> Client:
    """The client for this command; a missing URL raises ConfigurationError (exit 2)."""
    from ..client import Client

    return Client(args.url, token=args.token)


# -- errors --------------------------------------------------------------------------------
def error_line(message: str) -> None:
    """One error line on stderr, as `cianna_otf_server.cli` prints them."""
    one_line = " ".join(str(message).splitlines()).strip() or "unknown error"
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def is_user_error(exc: Exception) -> bool:
    """True for client errors the user can fix (exit 2); False for failures of the service or job (1)."""
    from ..client import (
        AuthenticationError,
        ConfigurationError,
        InvalidPhaseError,
        JobFailedError,
        NotFoundError,
        ServiceBusyError,
        WaitTimeoutError,
    )

    if isinstance(exc, (JobFailedError, ServiceBusyError, WaitTimeoutError)):
        return False
    if isinstance(exc, (ConfigurationError, AuthenticationError, NotFoundError, InvalidPhaseError)):
        return True
    status = getattr(exc, "status", None)
    return status is not None and 400 <= status < 500


def client_command(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a handler so that client exceptions become exit codes and one error line.

    User-fixable errors are re-raised as `UserInputError` (the command line prints them and
    exits 2); others are printed here and give exit code 1.
    """

    @functools.wraps(handler)
    def wrapper(args: argparse.Namespace) -> int:
        from ..client import ClientError, client_message

        try:
            return handler(args)
        except ClientError as exc:
            if is_user_error(exc):
                raise UserInputError(client_message(exc)) from None
            error_line(client_message(exc))
            return 1

    return wrapper


# -- job documents -------------------------------------------------------------------------
def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


# -- results -------------------------------------------------------------------------------
def format_for_output(output: str | None, fmt: str | None) -> str | None:
    """The format asked for: ``--format``, else the output's suffix, else None (the job's own)."""
    if fmt:
        return fmt
    if output and output != "-":
        return format_for_suffix(output)
    return None


def download(job: Job, fmt: str | None) -> tuple[bytes, str]:
    """The bytes of the job's catalogue in `fmt` (None: the main result as the service made it).

    ``ds9`` is the job's ``regions`` result and ``provenance`` its PROV-JSON record; a VOTable is
    the ``result`` or, for a job that asked for another RESPONSEFORMAT, its ``votable`` result.
    CSV or FITS from a job whose result is in another format are converted here from its VOTable.

    Returns
    -------
    bytes, str
        The content and its format name (for the file suffix).
    """
    job.raise_if_error()
    if job.phase != "COMPLETED":
        raise UserInputError(f"job {job.job_id} is {job.phase}: its results exist once it is COMPLETED "
                             f"(wait with 'cianna-otf status {job.job_id}')")
    main_format = format_for_media_type(job.parameters.get("RESPONSEFORMAT") or "votable")
    if fmt is None:
        return job.fetch("result"), main_format or "votable"
    if fmt == "provenance":
        return job.fetch("provenance"), fmt
    if fmt == "ds9":
        return job.fetch("regions" if "regions" in job.results else "result"), fmt
    if fmt == main_format:
        return job.fetch("result"), fmt
    votable = job.fetch("votable" if "votable" in job.results else "result")
    if fmt == "votable":
        return votable, fmt
    from ..catalogue import catalogue_to_bytes, read_catalogue

    table = read_catalogue(votable, "votable")
    for column in table.columns.values():  # VOTable descriptions come back with line breaks
        if column.description:
            column.description = " ".join(str(column.description).split())
    for key, value in list(table.meta.items()):
        if isinstance(value, str):
            table.meta[key] = " ".join(value.split())
    return catalogue_to_bytes(table, fmt), fmt


def write_output(target: str, content: bytes, fmt: str) -> None:
    """Write `content` to `target` (``-``: stdout) atomically."""

    def writer(path: str) -> None:
        Path(path).write_bytes(content)

    write_atomically(target, output_suffix(fmt), writer)


def output_suffix(fmt: str, in_folder: bool = False) -> str:
    """The suffix of a file the command line names itself for `fmt` (provenance: ``.json``)."""
    if fmt not in CATALOGUE_FORMATS:
        return ".json" if fmt == "provenance" else ".dat"
    entry = CATALOGUE_FORMATS[fmt]
    return (entry.folder_suffix or entry.file_suffix) if in_folder else entry.file_suffix


def check_output_target(target: str) -> None:
    """Fail before any request when the output file cannot be created."""
    if target == "-":
        return
    path = Path(target).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserInputError(f"cannot write {target}: folder {parent} does not exist")
    if path.is_dir():
        raise UserInputError(f"cannot write {target}: it is a directory")


