"""``cianna-otf status|jobs|fetch|abort|delete``: one job of the service, or the list of one's jobs.

They speak to the service only through `cianna_otf_server.client.Client`; their shared options,
exit codes and downloads are `_remote`'s.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Callable

from ..catalogue import FORMAT_NAMES
from ..errors import UserInputError
from ._common import add_common_options, int_at_least
from ._remote import (
    add_json_option,
    add_service_options,
    check_output_target,
    client_command,
    download,
    format_for_output,
    make_client,
    print_json,
    write_output,
)

#: What ``fetch --format`` offers: the catalogue formats and the provenance record.
FETCH_FORMATS: tuple[str, ...] = (*FORMAT_NAMES, "provenance")


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
    fetch.add_argument("--format", "-f", choices=FETCH_FORMATS,
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
    from ..client import format_job, job_dict

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
    from ..client import iso_time, short_time

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
                     "owner": s.owner, "creation_time": iso_time(s.creation_time)} for s in summaries])
        return 0
    rows = [("JOB", "PHASE", "CREATED", "RUNID", "OWNER")]
    rows += [(s.job_id, s.phase, short_time(s.creation_time), s.run_id or "-", s.owner or "-")
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
    from ..client import job_dict

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
