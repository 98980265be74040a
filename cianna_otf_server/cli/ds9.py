"""``cianna-otf ds9-analysis`` and ``ds9-run``: source detection from SAOImage DS9's Analysis menu.

``ds9-analysis`` writes a DS9 analysis file (`cianna_otf_server.viewers._ds9`) with two menu
entries, "Detect sources (CIANNA OTF)" and "Detect sources in selected region (CIANNA OTF)".
Each runs ``cianna-otf ds9-run`` with the frame's file, its regions and DS9's XPA address;
``ds9-run`` submits the job through `cianna_otf_server.client.Client`, waits, and loads the
``regions`` result back into DS9 over XPA (else SAMP), printing its progress and outcome for
DS9's text window. DS9 runs it with its own environment, so the service URL and token are
baked into the file when given (``--url``/``--token``), else read from $CIANNA_OTF_URL,
$CIANNA_OTF_TOKEN or the client config file when the entry runs.

Exit codes: 0 done; 2 bad options, a bad region, no URL, a refused token or parameter; 1 the
service failed, the job ended in ERROR or ABORTED, or DS9 could not be reached to load the result.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from ._common import add_common_options, debug_enabled, info, positive_seconds
from ._remote import add_service_options, error_line

ANALYSIS = "ds9-analysis"
RUN = "ds9-run"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ds9-analysis`` and ``ds9-run`` to the command line."""
    parser = subparsers.add_parser(
        ANALYSIS,
        help="add 'Detect sources (CIANNA OTF)' to SAOImage DS9's Analysis menu",
        description="Print (or, with --install, write) a SAOImage DS9 analysis file with two Analysis\n"
        "menu entries:\n"
        "  Detect sources (CIANNA OTF)                      all of the current frame's image\n"
        "  Detect sources in selected region (CIANNA OTF)   inside its one (or selected) region\n"
        "Each submits a job to the service, waits, and loads the detections back into DS9 as\n"
        "regions (group 'cianna-otf'), over XPA or else SAMP. The entries run 'cianna-otf ds9-run';\n"
        "--url, --token and --model given here are written into the file.",
        epilog="examples:\n"
        "  cianna-otf ds9-analysis --install --url http://127.0.0.1:8750 --token SECRET --model classic\n"
        "  cianna-otf ds9-analysis > cianna.ans && ds9 -analysis cianna.ans sky.fits\n\n"
        "then in DS9: Analysis > Load Analysis Commands... (or start it with: ds9 -analysis FILE).\n"
        "Loading the detections back needs DS9's XPA (xpa-tools) or a SAMP hub.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--install", action="store_true",
                        help="write the file to ~/.ds9/cianna-otf.ds9.ans (or --output) instead of stdout")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the file here (implies --install)")
    parser.add_argument("--model", "-m", metavar="NAME", help="model of the jobs (default: the service's default)")
    parser.add_argument("--timeout", type=positive_seconds, metavar="S",
                        help="give up waiting for a job after S seconds (default 900)")
    parser.add_argument("--program", metavar="PATH",
                        help="the cianna-otf command DS9 runs (default: this one, by absolute path)")
    add_service_options(parser)
    add_common_options(parser)
    parser.set_defaults(handler=run_analysis)

    runner = subparsers.add_parser(
        RUN,
        help="(run by DS9's Analysis menu) detect on DS9's image and load the detections into DS9",
        description="What the entries of 'cianna-otf ds9-analysis' run: submit --image (DS9's $filename),\n"
        "inside the one region of --regions (DS9's $regions, ICRS degrees) when given, wait for the\n"
        "job, and load its DS9 regions into the DS9 at --xpa ($xpa_method; SAMP where XPA is\n"
        "missing). Progress and the outcome are printed for DS9's text window.",
        epilog="example (by hand):\n"
        "  cianna-otf ds9-run --image sky.fits --regions 'icrs;circle(0,-30,36\")' --print > sources.reg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    runner.add_argument("--image", required=True, metavar="FILE", help="the image (DS9's $filename)")
    runner.add_argument("--regions", metavar="TEXT",
                        help="DS9 regions to detect in (DS9's $regions(ds9,icrs,degrees); '@FILE' reads a file)")
    runner.add_argument("--xpa", metavar="ADDRESS", help="DS9's XPA address (its $xpa_method)")
    runner.add_argument("--model", "-m", metavar="NAME", help="model of the job (default: the service's default)")
    runner.add_argument("--timeout", type=positive_seconds, default=900.0, metavar="S",
                        help="give up waiting after S seconds (default 900; the job goes on)")
    runner.add_argument("--print", dest="print_regions", action="store_true",
                        help="print the regions on stdout (progress on stderr) instead of loading them into DS9")
    runner.add_argument("--out-dir", dest="output_dir", metavar="DIR",
                        help="where the regions files are saved (default $XDG_CACHE_HOME/cianna-otf/ds9)")
    add_service_options(runner)
    add_common_options(runner)
    runner.set_defaults(handler=run_detection)


# -- ds9-analysis --------------------------------------------------------------------------
def default_program() -> list[str]:
    """The words that start this cianna-otf wherever DS9 runs it: an absolute path, not a PATH lookup."""
    for candidate in (Path(sys.argv[0]) if sys.argv and sys.argv[0] else None,
                      Path(sys.executable).parent / "cianna-otf"):
        if candidate is not None and candidate.name == "cianna-otf" and candidate.is_file():
            return [str(candidate.resolve())]
    return [sys.executable, "-m", "cianna_otf_server.cli"]


def run_analysis(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..errors import UserInputError
    from ..viewers import ANALYSIS_FILE_NAME, analysis_file_text

    program = args.program.split() if args.program else default_program()
    text = analysis_file_text(program, url=args.url, token=args.token, model=args.model,
                              timeout=args.timeout, version=__version__)
    if not (args.install or args.output):
        sys.stdout.write(text)
        return 0
    target = Path(args.output).expanduser() if args.output else Path.home() / ".ds9" / ANALYSIS_FILE_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the token is a secret: the file is the user's alone when it holds one
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if args.token else 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
    except (OSError, UnicodeEncodeError) as exc:
        raise UserInputError(f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}") from None
    info(f"wrote {target}")
    info("load it in DS9 with Analysis > Load Analysis Commands..., or start DS9 with: "
         f"ds9 -analysis {target}")
    if not args.url and not os.environ.get("CIANNA_OTF_URL"):
        info("no --url given: the entries use $CIANNA_OTF_URL or the client config file of DS9's environment")
    return 0


# -- ds9-run -------------------------------------------------------------------------------
def run_detection(args: argparse.Namespace) -> int:
    """Detect, load back, and say so; errors also go to DS9's text window when DS9 runs us."""
    in_ds9 = args.xpa is not None and not args.print_regions
    try:
        return _detect(args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - DS9 shows stdout, never our traceback
        if debug_enabled(args):
            raise
        code, message = _describe_error(exc)
        if in_ds9:
            print(f"CIANNA OTF error: {message}", flush=True)
        error_line(message)
        return code


def _describe_error(exc: Exception) -> tuple[int, str]:
    from ..errors import UserInputError

    if isinstance(exc, UserInputError):
        return 2, str(exc)
    try:
        from ..client import ClientError, client_message

        from ._remote import is_user_error

        if isinstance(exc, ClientError):
            return (2 if is_user_error(exc) else 1), client_message(exc)
    except ImportError:  # pragma: no cover - requests missing
        pass
    from ..viewers import Ds9LinkError

    if isinstance(exc, Ds9LinkError):
        return 1, f"the detections could not be loaded into DS9: {exc}"
    return 1, f"internal error: {type(exc).__name__}: {exc}"


def _detect(args: argparse.Namespace) -> int:
    from ..client import Client, JobFailedError
    from ..viewers import (
        RESULT_TAG,
        Ds9LinkError,
        choose_region,
        count_shapes,
        image_reference,
        load_regions,
        read_regions,
        shape_to_soda,
        tag_regions,
        xpa_available,
    )

    say = _say(to_stderr=args.print_regions)
    image, hdu = image_reference(args.image)
    region = None
    if args.regions is not None:
        text, selected = _regions_text(args.regions), None
        if xpa_available(args.xpa):  # with their tags and DS9's selection, which $regions leaves out
            try:
                text, selected = read_regions(args.xpa)
            except Ds9LinkError:
                pass
        region = shape_to_soda(choose_region(text, selected))
    started = time.monotonic()
    with Client(args.url, token=args.token) as client:
        where = f" in {region}" if region else ""
        say(f"detecting sources in {Path(image).name}{where} with {client.url}, "
            f"model {args.model or 'the default'}")
        job = client.submit(image, model=args.model, region=region, hdu=hdu, run_id="ds9")
        say(f"job {job.job_id}: {job.phase}")
        seen = {"phase": job.phase}

        def progress(done: int, total: int) -> None:
            if job.phase != seen["phase"]:
                seen["phase"] = job.phase
                say(f"job {job.job_id}: {job.phase}")

        job.wait(timeout=args.timeout, progress=progress, raise_on_error=False)
        if job.phase != "COMPLETED":
            raise JobFailedError(job)
        for warning in job.warnings:
            say(f"warning: {warning}")
        document = tag_regions(job.fetch("regions").decode("utf-8"), RESULT_TAG)
    count = count_shapes(document)
    seconds = time.monotonic() - started
    if args.print_regions:
        sys.stdout.write(document)
        sys.stdout.flush()
        say(f"{count} sources, job {job.job_id} ({seconds:.1f} s)")
        return 0
    saved = _save(document, args.output_dir, image, job.job_id)
    summary = f"{count} source{'s' if count != 1 else ''} found, job {job.job_id} ({seconds:.1f} s)"
    try:
        how = load_regions(document, args.xpa, saved)
    except Ds9LinkError as exc:
        if saved is None:
            raise
        say(f"{summary}; not loaded into DS9 ({exc}): open {saved} with Region > Open...")
        return 1
    say(f"{summary}; {how} (region group '{RESULT_TAG}')" + (f"; saved as {saved}" if saved else ""))
    return 0


def _say(to_stderr: bool) -> Any:
    def say(message: str) -> None:
        if to_stderr:
            info(message)
        else:
            print(f"CIANNA OTF: {message}", flush=True)

    return say


def _regions_text(value: str) -> str:
    """DS9's $regions value; DS9 passes long ones (over 8 kB) as '@FILE'."""
    from ..errors import UserInputError

    if value.startswith("@") and "(" not in value:
        try:
            return Path(value[1:]).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UserInputError(f"cannot read DS9's regions file {value[1:]}: {exc.strerror or exc}") from None
    return value


def _save(document: str, folder: str | None, image: str, job_id: str) -> Path | None:
    """The regions as a file (what SAMP loads, and a copy for the user); None where it cannot be written."""
    base = Path(folder).expanduser() if folder else Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cianna-otf" / "ds9"
    stem = re.sub(r"(?i)\.(fits|fit|fts)(\.gz)?$", "", image.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0])
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._")[:60] or "image"
    target = base / f"{stem}-{job_id}.reg"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(document, encoding="utf-8")
    except OSError as exc:
        info(f"warning: cannot save the regions to {target}: {exc.strerror or exc}")
        return None
    return target
