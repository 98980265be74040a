"""``cianna-otf status|jobs|fetch|abort|delete``: the job service, driven through the Python client.

These commands (and ``submit``, in `_cli_submit`) talk to a running service (``cianna-otf serve``
or the Jupyter extension) only through `cianna_otf_server.client.Client`, that is only through
the public UWS API. The helpers they share live here: the ``--url``/``--token`` options, the
mapping of client exceptions to exit codes, job documents as JSON, and result downloads.

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
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ._cli_common import PROG, add_common_options, int_at_least, write_atomically
from .errors import UserInputError

if TYPE_CHECKING:  # the client imports requests and lxml: loaded only when a command runs
    from .client import Client, Job

URL_ENV = "CIANNA_OTF_URL"
TOKEN_ENV = "CIANNA_OTF_TOKEN"

#: Catalogue formats, and the suffixes that imply them (as for ``cianna-otf detect``).
CATALOGUE_FORMATS: tuple[str, ...] = ("votable", "csv", "fits", "ds9")
SUFFIX_FORMATS: dict[str, str] = {
    ".vot": "votable", ".votable": "votable", ".xml": "votable",
    ".csv": "csv",
    ".fits": "fits", ".fit": "fits", ".fts": "fits",
    ".reg": "ds9",
}
FORMAT_SUFFIX: dict[str, str] = {"votable": ".vot", "csv": ".csv", "fits": ".fits", "ds9": ".reg",
                                 "provenance": ".json"}
_MIME_FORMATS: tuple[tuple[str, str], ...] = (("csv", "csv"), ("fits", "fits"), ("votable", "votable"),
                                               ("xml", "votable"), ("ds9", "ds9"), ("region", "ds9"))


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
    from .client import Client

    return Client(args.url, token=args.token)


# -- errors --------------------------------------------------------------------------------
def error_line(message: str) -> None:
    """One error line on stderr, as `cianna_otf_server.cli` prints them."""
    one_line = " ".join(str(message).splitlines()).strip() or "unknown error"
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)


def is_user_error(exc: Exception) -> bool:
    """True for client errors the user can fix (exit 2); False for failures of the service or job (1)."""
    from .client import (
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
        from .client import ClientError

        try:
            return handler(args)
        except ClientError as exc:
            if is_user_error(exc):
                raise UserInputError(client_message(exc)) from None
            error_line(client_message(exc))
            return 1

    return wrapper


def client_message(exc: Exception) -> str:
    from .client import ConfigurationError

    if isinstance(exc, ConfigurationError) and str(exc).startswith("no service URL"):
        return f"no service URL: give --url URL or set ${URL_ENV} (or 'url' in the client config file)"
    return str(exc)


# -- job documents -------------------------------------------------------------------------
def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def job_dict(job: Job) -> dict[str, Any]:
    """A job as plain JSON-able data (the fields of the UWS job document)."""
    done, total = job.progress
    return {
        "job_id": job.job_id,
        "url": job.url,
        "phase": job.phase,
        "run_id": job.run_id,
        "owner": job.owner,
        "creation_time": _iso(job.creation_time),
        "start_time": _iso(job.start_time),
        "end_time": _iso(job.end_time),
        "destruction": _iso(job.destruction),
        "execution_duration": job.execution_duration,
        "progress": {"done": done, "total": total},
        "parameters": dict(job.parameters),
        "results": {result_id: job.result_url(result_id) for result_id in job.results},
        "error": job.error_message,
        "warnings": list(job.warnings),
    }


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _short_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def format_job(job: Job) -> str:
    """A job for a person: one ``label  value`` line per known field."""
    done, total = job.progress
    lines = [(label, value) for label, value in (
        ("job", job.job_id),
        ("url", job.url),
        ("phase", job.phase),
        ("progress", f"{done}/{total}" if total else ""),
        ("model", job.parameters.get("MODEL", "")),
        ("image", job.parameters.get("IMAGE", "")),
        ("run id", job.run_id or ""),
        ("owner", job.owner or ""),
        ("created", _short_time(job.creation_time) if job.creation_time else ""),
        ("started", _short_time(job.start_time) if job.start_time else ""),
        ("ended", _short_time(job.end_time) if job.end_time else ""),
        ("destruction", _short_time(job.destruction) if job.destruction else ""),
        ("results", ", ".join(job.results)),
        ("error", job.error_message or ""),
    ) if value]
    others = {k: v for k, v in job.parameters.items() if k not in ("MODEL", "IMAGE")}
    if others:
        lines.append(("parameters", " ".join(f"{k}={v}" for k, v in sorted(others.items()))))
    return "\n".join(f"{label:<12} {value}" for label, value in lines)


# -- results -------------------------------------------------------------------------------
def format_for_output(output: str | None, fmt: str | None) -> str | None:
    """The format asked for: ``--format``, else the output's suffix, else None (the job's own)."""
    if fmt:
        return fmt
    if output and output != "-":
        return SUFFIX_FORMATS.get(Path(output).suffix.lower())
    return None


def _mime_format(mime: str | None) -> str | None:
    mime = (mime or "").lower()
    for word, fmt in _MIME_FORMATS:
        if word in mime:
            return fmt
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
    main_format = _mime_format(job.parameters.get("RESPONSEFORMAT") or "votable")
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
    from .catalogue import catalogue_to_bytes, read_catalogue

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

    write_atomically(target, FORMAT_SUFFIX.get(fmt, ".dat"), writer)


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


# -- commands ------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``status``, ``jobs``, ``fetch``, ``abort`` and ``delete`` to the command line."""
    status = subparsers.add_parser(
        "status", help="show one job of the service",
        description="Show a job: phase, progress, parameters, times, results and error.",
        epilog="example:\n  cianna-otf status 3f2a9c --url http://127.0.0.1:8750 --token SECRET",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("job", metavar="JOB", help="job identifier or URL")
    add_json_option(status)
    _finish(status, run_status)

    jobs = subparsers.add_parser(
        "jobs", help="list your jobs on the service",
        description="List your jobs (newest first with --last): id, phase, creation time, run id, owner. "
        "Filters are applied by the service and combine with AND.",
        epilog="examples:\n  cianna-otf jobs --phase EXECUTING --phase QUEUED\n"
        "  cianna-otf jobs --last 10 --json\n  cianna-otf jobs --after 2025-01-31T12:00:00Z",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    jobs.add_argument("--phase", action="append", metavar="PHASE", default=None,
                      help="only jobs in this phase (repeatable or comma-separated: a union); "
                      "ARCHIVED jobs are listed only when asked for")
    jobs.add_argument("--last", type=int_at_least(1), metavar="N", help="only the N most recently created jobs")
    jobs.add_argument("--after", metavar="ISO", help="only jobs created after this instant (ISO 8601, UTC)")
    add_json_option(jobs, "the list")
    _finish(jobs, run_jobs)

    fetch = subparsers.add_parser(
        "fetch", help="download the catalogue (or regions, provenance) of a finished job",
        description="Download a result of a COMPLETED job. Without --format, the format follows the "
        "OUT suffix (.vot/.xml, .csv, .fits, .reg); otherwise the job's main result is written as "
        "the service made it.",
        epilog="examples:\n  cianna-otf fetch 3f2a9c -o sources.vot\n"
        "  cianna-otf fetch 3f2a9c --format ds9 -o sources.reg\n"
        "  cianna-otf fetch 3f2a9c --format provenance | jq .",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("job", metavar="JOB", help="job identifier or URL")
    fetch.add_argument("-o", "--output", default="-", metavar="OUT",
                       help="file to write (default: '-', stdout)")
    fetch.add_argument("--format", "-f", choices=(*CATALOGUE_FORMATS, "provenance"),
                       help="votable, csv, fits, ds9 (the regions) or provenance (W3C PROV-JSON)")
    _finish(fetch, run_fetch)

    abort = subparsers.add_parser(
        "abort", help="abort a queued or running job",
        description="Abort a job (UWS PHASE=ABORT): it ends ABORTED; a finished job cannot be aborted (exit 2).",
    )
    abort.add_argument("job", metavar="JOB", help="job identifier or URL")
    add_json_option(abort)
    _finish(abort, run_abort)

    delete = subparsers.add_parser(
        "delete", help="delete a job and its files",
        description="Delete a job and its files on the service; its URL answers 404 afterwards.",
    )
    delete.add_argument("job", metavar="JOB", help="job identifier or URL")
    _finish(delete, run_delete)


def _finish(parser: argparse.ArgumentParser, handler: Callable[[argparse.Namespace], int]) -> None:
    add_service_options(parser)
    add_common_options(parser)
    parser.set_defaults(handler=client_command(handler))


def run_status(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.job(args.job)
        if args.json:
            print_json(job_dict(job))
        else:
            print(format_job(job))
    return 0


_PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "HELD", "SUSPENDED",
           "ARCHIVED", "UNKNOWN")


def run_jobs(args: argparse.Namespace) -> int:
    phases: list[str] | None = None
    if args.phase:
        phases = [p.strip().upper() for value in args.phase for p in value.split(",") if p.strip()]
        unknown = [p for p in phases if p not in _PHASES]
        if unknown:
            raise UserInputError(f"unknown phase {unknown[0]}: use one of {', '.join(_PHASES[:-1])}")
    after = None
    if args.after:
        try:
            after = datetime.fromisoformat(args.after.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UserInputError(f"--after {args.after!r} is not an ISO 8601 instant "
                                 "(e.g. 2025-01-31T12:00:00Z)") from None
    with make_client(args) as client:
        summaries = client.jobs(phase=phases, after=after, last=args.last)
    if args.json:
        print_json([{"job_id": s.job_id, "url": s.url, "phase": s.phase, "run_id": s.run_id,
                     "owner": s.owner, "creation_time": _iso(s.creation_time)} for s in summaries])
        return 0
    rows = [("JOB", "PHASE", "CREATED", "RUNID", "OWNER")]
    rows += [(s.job_id, s.phase, _short_time(s.creation_time), s.run_id or "-", s.owner or "-")
             for s in summaries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    check_output_target(args.output)
    fmt = format_for_output(args.output, args.format)
    with make_client(args) as client:
        job = client.job(args.job)
        content, fmt = download(job, fmt)
    write_output(args.output, content, fmt)
    return 0


def run_abort(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.job(args.job).abort()
    if args.json:
        print_json(job_dict(job))
    else:
        print(f"{job.job_id} {job.phase}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = client.job(args.job)
        job.delete()
    print(f"{job.job_id} deleted")
    return 0
