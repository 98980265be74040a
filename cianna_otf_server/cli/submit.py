"""``cianna-otf submit``: send FITS images to the job service, optionally wait and save the catalogues.

One job per image. IMAGE may be files, directories (every ``*.fits``, ``*.fit``, ``*.fts``, and
their ``.gz`` forms in it, not recursively), glob patterns (quoted, so the shell leaves them to
us, or expanded by the shell: both work), or ``http(s)://`` URLs, which the service fetches
itself. A local file is uploaded; ``--remote`` sends paths by reference instead, for a server
that reads them from its data roots (a shared file system).

Exit codes are those of `cianna_otf_server.cli.jobs` (0, 2 user-fixable, 1 service failure); with ``--wait``,
a job that ends in ERROR or ABORTED prints its error and gives exit code 1, after the
catalogues of the other jobs have been written.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import add_common_options, add_header_options, add_region_options, detection_options, info, warn_lines
from ._remote import (
    add_json_option,
    add_service_options,
    check_output_target,
    client_command,
    download,
    error_line,
    format_for_output,
    make_client,
    output_suffix,
    print_json,
    write_output,
)
from ..catalogue import FORMAT_NAMES
from ..errors import UserInputError

if TYPE_CHECKING:
    from ..client import Job

NAME = "submit"
FITS_SUFFIXES: tuple[str, ...] = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
_GLOB_CHARS = set("*?[")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="submit FITS images to the detection service (one job each)",
        description="Submit one detection job per image to a running service (cianna-otf serve, or "
        "the Jupyter extension) and print the job URLs. IMAGE may be several files, a directory "
        "(its FITS files), a glob pattern or an http(s) URL. --wait follows the jobs to their end; "
        "-o also writes their catalogues (and implies --wait); with several images -o names a "
        "directory that receives STEM.vot, STEM.csv, STEM.cat.fits or STEM.reg per image.",
        epilog="examples:\n"
        "  cianna-otf submit sky.fits --model classic --url http://127.0.0.1:8750 --token SECRET\n"
        "  cianna-otf submit sky.fits --wait -o sources.vot --region 'CIRCLE 0.0 -30.0 0.1'\n"
        "  cianna-otf submit 'night1/*.fits' --wait -o catalogues/ --format csv\n"
        "  cianna-otf submit images/ --json | jq -r '.[].url'\n\n"
        "exit codes: 0 done (with --wait: every job COMPLETED); 2 bad arguments, no URL, refused token,\n"
        "a parameter the service refused; 1 service unreachable or failing, or a job ended in\n"
        "ERROR or ABORTED (its error is printed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="FITS file, directory of FITS files, glob pattern or http(s) URL")
    parser.add_argument("--model", "-m", metavar="NAME", help="model name (default: the service's default)")
    add_region_options(parser)
    add_header_options(parser)
    # checked before anything is sent by the job parameters' own rules (`detection_options`)
    parser.add_argument("--threshold", metavar="T", help="detection threshold (default: the card's)")
    parser.add_argument("--nms", metavar="N", help="box overlap threshold (default: the card's)")
    parser.add_argument("--min-size", metavar="S", dest="min_size", help="drop boxes smaller than S pixels")
    parser.add_argument("--hdu", metavar="N", help="HDU index or EXTNAME of the image")
    parser.add_argument("--run-id", metavar="LABEL", dest="run_id", help="a label shown in job lists (UWS RUNID)")
    parser.add_argument("--remote", action="store_true",
                        help="send IMAGE paths by reference (the server reads them from its data roots) "
                        "instead of uploading local files")
    parser.add_argument("--wait", "-w", action="store_true",
                        help="wait for the jobs to finish, showing their progress on stderr")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="with --wait: give up after S seconds in all (exit 1; the jobs go on)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="write the catalogue to OUT ('-': stdout) once the job completes; with "
                        "several images OUT is a directory receiving STEM.vot|.csv|.cat.fits|.reg files; implies --wait")
    parser.add_argument("--format", "-f", choices=FORMAT_NAMES,
                        help="catalogue format (default: from the OUT suffix .vot/.xml, .csv, .fits, .reg; "
                        "else votable); the job is asked for it (RESPONSEFORMAT)")
    add_json_option(parser, "the jobs (a list)")
    add_service_options(parser)
    add_common_options(parser)
    parser.set_defaults(handler=client_command(run))


# -- images --------------------------------------------------------------------------------
def _is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def _is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def expand_images(items: list[str], remote: bool = False) -> list[str]:
    """The images to submit, in order, without duplicates.

    Raises
    ------
    UserInputError
        A path that does not exist here (without ``--remote``), a directory without FITS
        files, a pattern that matches none.
    """
    found: list[str] = []
    for item in items:
        if _is_url(item):
            found.append(item)
            continue
        path = Path(item).expanduser()
        if remote and not path.exists():
            found.append(item)
        elif path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.is_file() and _is_fits_name(p))
            if not files:
                raise UserInputError(f"directory {item} holds no FITS file ({', '.join(FITS_SUFFIXES[:3])})")
            found.extend(files)
        elif path.is_file():
            if not os.access(path, os.R_OK):
                raise UserInputError(f"image {item} is not readable")
            found.append(str(path))
        elif _GLOB_CHARS & set(item):
            matches = sorted(p for p in glob.glob(os.path.expanduser(item))
                             if Path(p).is_file() and _is_fits_name(Path(p)))
            if not matches:
                raise UserInputError(f"no FITS file matches {item}")
            found.extend(matches)
        else:
            raise UserInputError(f"image {item} does not exist (give --remote for a path on the server)")
    unique = list(dict.fromkeys(found))
    return unique


def _image_stem(image: str) -> str:
    name = image.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "image"
    lower = name.lower()
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)] or "image"
    return name


def output_targets(images: list[str], output: str, fmt: str) -> list[str]:
    """One output file per image: `output` itself for one image (unless a directory), else DIR/STEM.SUFFIX."""
    if len(images) == 1 and not Path(output).expanduser().is_dir() and not output.endswith(os.sep):
        check_output_target(output)
        _refuse_overwriting_images(images, [output])
        return [output]
    if output == "-":
        raise UserInputError("-o - (stdout) takes one image; give -o DIR for several")
    directory = Path(output).expanduser()
    if directory.exists() and not directory.is_dir():
        raise UserInputError(f"-o {output} must be a directory with several images")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the folder {output}: {exc.strerror or exc}") from None
    stems = [_image_stem(image) for image in images]
    suffix = output_suffix(fmt, in_folder=True)  # a FITS catalogue must not look like an image
    targets = []
    for index, stem in enumerate(stems):
        if stems.count(stem) > 1:  # the same file name in two folders: keep both catalogues
            stem = f"{stem}-{index + 1}"
        targets.append(str(directory / f"{stem}{suffix}"))
    _refuse_overwriting_images(images, targets)
    return targets


def _refuse_overwriting_images(images: list[str], targets: list[str]) -> None:
    inputs = {Path(image).expanduser().resolve() for image in images if not _is_url(image)}
    for target in targets:
        if target != "-" and Path(target).expanduser().resolve() in inputs:
            raise UserInputError(f"-o {target} would overwrite the image it catalogues")


# -- progress ------------------------------------------------------------------------------
class PlainProgress:
    """Progress as plain lines on stderr: each phase change, and every tenth of the work."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def callback(self, index: int, job: Job):
        state: dict[str, Any] = {"phase": None, "tenth": -1}

        def report(done: int, total: int) -> None:
            if job.finished:  # the final line comes from `finished`
                return
            tenth = (10 * done // total) if total else -1
            if job.phase != state["phase"] or tenth > state["tenth"]:
                state["phase"], state["tenth"] = job.phase, tenth
                info(f"job {job.job_id} ({self.labels[index]}): {job.phase}{_amount(done, total)}")

        return report

    def finished(self, index: int, job: Job) -> None:
        """The job's final phase (a failed job's error is printed at the end, as an error line)."""
        info(f"job {job.job_id} ({self.labels[index]}): {job.phase}{_amount(*job.progress)}")


def _amount(done: int, total: int) -> str:
    return f" {done}/{total} patches" if total else ""


class RichProgress:
    """One rich progress bar per job on stderr (used when rich is installed and stderr is a terminal)."""

    def __init__(self, labels: list[str]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"), TimeElapsedColumn(),
            console=Console(stderr=True), redirect_stdout=sys.stdout.isatty(),
        )
        self.tasks = [self.progress.add_task(label, total=None, phase="QUEUED") for label in labels]

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def callback(self, index: int, job: Job):
        def report(done: int, total: int) -> None:
            self.progress.update(self.tasks[index], completed=done, total=total or None, phase=job.phase)

        return report

    def finished(self, index: int, job: Job) -> None:
        done, total = job.progress
        total = total or 1  # a known total stops the pulsing bar of a job that never reported any
        if job.phase == "COMPLETED":
            done = total
        self.progress.update(self.tasks[index], completed=done, total=total or None, phase=job.phase)


class PlainUploadProgress:
    """Uploads on a plain stderr: one line per image once the service has it (size and job)."""

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    def __enter__(self) -> PlainUploadProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def callback(self, label: str):
        def report(sent: int, total: int) -> None:
            self.sizes[label] = total

        return report

    def finished(self, label: str, job: Job) -> None:
        """Called once the service created the job (not on a refused upload: its error says enough)."""
        if label in self.sizes:
            info(f"uploaded {label} ({_size(self.sizes[label])}): job {job.job_id}")


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} bytes"  # pragma: no cover - the loop always returns


class RichUploadProgress:
    """A rich transfer bar per uploaded image on stderr (bytes sent, rate, time left)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("upload {task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            TransferSpeedColumn(), TimeRemainingColumn(),
            console=Console(stderr=True), redirect_stdout=sys.stdout.isatty(),
        )

    def __enter__(self) -> RichUploadProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def callback(self, label: str):
        task = self.progress.add_task(label, total=None)

        def report(sent: int, total: int) -> None:
            self.progress.update(task, completed=sent, total=total)

        return report

    def finished(self, label: str, job: Job) -> None:
        pass


def make_upload_progress() -> PlainUploadProgress | RichUploadProgress:
    """A rich transfer bar when rich is installed and stderr is a terminal, else plain lines."""
    if sys.stderr.isatty():
        try:
            return RichUploadProgress()
        except ImportError:
            pass
    return PlainUploadProgress()


def make_progress(labels: list[str]) -> PlainProgress | RichProgress:
    if sys.stderr.isatty():
        try:
            return RichProgress(labels)
        except ImportError:
            pass
    return PlainProgress(labels)


# -- the command ---------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from ..client import job_dict

    from ..client import JobFailedError, WaitTimeoutError

    numbers = detection_options(args)  # refused here with the sentence the service would answer
    images = expand_images(args.images, remote=args.remote)
    if args.json and args.output == "-":
        raise UserInputError("--json and -o - both write to stdout: give -o FILE")
    wait = args.wait or args.output is not None
    if args.timeout is not None and args.timeout <= 0:
        raise UserInputError("--timeout must be positive")
    fmt = format_for_output(args.output, args.format) or "votable"
    targets = output_targets(images, args.output, fmt) if args.output is not None else []
    urls_to = sys.stderr if args.output == "-" else sys.stdout
    extra: dict[str, Any] = {}
    if fmt in ("csv", "fits"):  # ds9 comes from the job's regions result; votable is the default
        extra["responseformat"] = fmt
    if args.hdu is not None:
        extra["hdu"] = args.hdu
    if args.unit is not None:
        extra["unit"] = args.unit
    if args.beam is not None:
        extra["beam"] = args.beam

    with make_client(args) as client:
        jobs: list[Job] = []
        uploads = [not (args.remote or _is_url(image)) for image in images]
        with make_upload_progress() if any(uploads) else contextlib.nullcontext() as uploading:
            for image, upload in zip(images, uploads):
                label = _image_stem(image)
                try:
                    job = client.submit(
                        image, model=args.model, region=args.region, pixels=args.pixels, precision=args.precision,
                        threshold=numbers.get("threshold"), nms=numbers.get("nms"),
                        min_size=numbers.get("min_size"), run_id=args.run_id,
                        upload=upload, upload_progress=uploading.callback(label) if upload else None, **extra,
                    )
                except ValueError as exc:  # a malformed --region, found before any request
                    raise UserInputError(str(exc)) from None
                jobs.append(job)
                if upload:
                    uploading.finished(label, job)
                if not args.json:
                    print(job.url, file=urls_to, flush=True)
        if not wait:
            if args.json:
                print_json([{**job_dict(job), "image": image} for job, image in zip(jobs, images)])
            return 0

        labels = [_image_stem(image) for image in images]
        failed: list[Job] = []
        written: dict[int, str] = {}
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        with make_progress(labels) as progress:
            for index, job in enumerate(jobs):
                remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
                try:
                    job.wait(timeout=remaining, progress=progress.callback(index, job), raise_on_error=False)
                except WaitTimeoutError:
                    still = [j.job_id for j in jobs[index:] if not j.finished]
                    raise WaitTimeoutError(f"gave up waiting after {args.timeout:g} s; still running: "
                                           f"{', '.join(still)}") from None
                progress.finished(index, job)
                if job.warnings and not args.json:
                    warn_lines(f"job {job.job_id}: {w}" for w in job.warnings)
                if job.phase == "COMPLETED":
                    if targets:
                        content, _ = download(job, fmt)
                        write_output(targets[index], content, fmt)
                        written[index] = targets[index]
                        if not args.json and args.output != "-":
                            info(f"job {job.job_id}: catalogue written to {targets[index]}")
                else:
                    failed.append(job)

        if args.json:
            print_json([{**job_dict(job), "image": image, "output": written.get(index)}
                        for index, (job, image) in enumerate(zip(jobs, images))])
        for job in failed:
            error_line(str(JobFailedError(job)))
        return 1 if failed else 0
