"""``cianna-otf samp``: let desktop viewers (Aladin Desktop, DS9, TOPCAT) ask for detections over SAMP.

Registers with the running SAMP hub and turns what viewers send into detection jobs of a
running service (see `cianna_otf_server.samp`): a loaded image is detected on, a position pointed
at is detected around, and each catalogue comes back to the viewers as a VOTable (and DS9
regions). One line per detection on stdout; problems as warning lines on stderr, for the
command goes on whatever one message did. Ctrl-C (or SIGTERM) unregisters and exits 0.

Exit codes: 0 stopped by the user; 2 bad options, no hub, no service URL, a refused token or an
unknown model; 1 the service cannot be reached, or the hub shut down while running.
"""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from ._common import add_common_options, info, positive_seconds
from ._remote import add_service_options, client_command, error_line, make_client
from ..errors import UserInputError

NAME = "samp"


def _positive_degrees(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected degrees, not {text!r}") from None
    if not 0 < value <= 90:
        raise argparse.ArgumentTypeError(f"must be between 0 and 90 degrees, not {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``samp`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="serve detections to desktop viewers (Aladin Desktop, DS9, TOPCAT) over SAMP",
        description="Register with the running SAMP hub as 'cianna-otf' and run a detection job on the\n"
        "service for each message of a viewer:\n"
        "  image.load.fits     an image sent (file:// or http(s) URL): detect on all of it\n"
        "  coord.pointAt.sky   a position: detect in a circle of --radius around it, on the\n"
        "                      latest image sent that covers it\n"
        "  cianna-otf.detect   params image-id or url, region (SODA text), model: all optional\n"
        "Each catalogue is saved under --out-dir and sent to every viewer (table.load.votable),\n"
        "and as regions to DS9 (ds9.set 'regions load FILE'); calls are replied to with the\n"
        "table URL or the error. Runs until Ctrl-C.",
        epilog="examples:\n"
        "  cianna-otf samp --url http://127.0.0.1:8750 --token SECRET\n"
        "  cianna-otf samp --model classic --radius 0.1 --on-image remember\n"
        "  cianna-otf samp --hub-lockfile ~/.samp -v\n\n"
        "a SAMP hub must be running: TOPCAT, Aladin Desktop and DS9 start one, or run astropy's samp_hub.\n"
        "exit codes: 0 stopped with Ctrl-C; 2 bad options, no hub, no URL, refused token, unknown model;\n"
        "1 service unreachable, or the hub shut down.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", metavar="NAME", help="model of the jobs (default: the service's default; "
                        "a cianna-otf.detect message may name another)")
    parser.add_argument("--radius", type=_positive_degrees, default=0.05, metavar="DEG",
                        help="radius of the circle detected around a pointed position, degrees (default 0.05, 3 arcmin)")
    parser.add_argument("--on-image", dest="on_image", choices=("detect", "remember"), default="detect",
                        help="what a loaded image does: detect on all of it (default), or only be remembered "
                        "for later pointAt and cianna-otf.detect messages")
    parser.add_argument("--out-dir", dest="output_dir", metavar="DIR",
                        help="where catalogues (.vot) and DS9 regions (.reg) are saved "
                        "(default $XDG_CACHE_HOME/cianna-otf/samp, i.e. ~/.cache/cianna-otf/samp)")
    parser.add_argument("--hub-lockfile", dest="hub_lockfile", metavar="FILE",
                        help="the SAMP hub's lockfile, a path or file:// URL (default: $SAMP_HUB, else ~/.samp)")
    parser.add_argument("--job-timeout", dest="job_timeout", type=positive_seconds, default=900.0, metavar="S",
                        help="give up on a job after S seconds (default 900; it goes on on the service)")
    add_service_options(parser)
    add_common_options(parser)
    parser.set_defaults(handler=client_command(run))


def run(args: argparse.Namespace) -> int:
    from ..samp import SampBridge, SampBridgeError

    with make_client(args) as client:
        client.info()  # unreachable service (1) or refused token (2) now rather than on the first image
        if args.model:
            client.model(args.model)  # an unknown model: 404, exit 2 with the service's message
        try:
            bridge = SampBridge(client, model=args.model, radius=args.radius, on_image=args.on_image,
                                out_dir=args.output_dir, job_timeout=args.job_timeout,
                                on_detection=_print_detection, on_error=_print_error)
            bridge.start(args.hub_lockfile)
        except SampBridgeError as exc:
            raise UserInputError(str(exc)) from None
        stop = threading.Event()
        previous = _on_sigterm(stop)
        try:
            info(f"registered with the SAMP hub as {bridge.public_id}: detections by {client.url} "
                 f"(model {args.model or 'the default'}), catalogues in {bridge.out_dir}; Ctrl-C to stop")
            while not stop.is_set():
                if bridge.wait(0.5):
                    error_line("the SAMP hub shut down")
                    return 1
        except KeyboardInterrupt:
            pass
        finally:
            _restore_sigterm(previous)
            bridge.stop()
        info("stopped")
        return 0


def _print_detection(detection: Any) -> None:
    print(f"{detection.image}: {detection.summary()}", flush=True)
    for warning in detection.warnings:
        info(f"warning: job {detection.job_id}: {warning}")


def _print_error(request: Any, message: str) -> None:
    one_line = " ".join(message.splitlines())
    info(f"warning: {request.mtype}: {one_line}")


def _on_sigterm(stop: threading.Event) -> Any:
    """SIGTERM stops as Ctrl-C does (a clean unregister), where signals can be caught (main thread)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return None
    try:
        return signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except (ValueError, OSError):  # pragma: no cover
        return None


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        try:
            signal.signal(signal.SIGTERM, previous)
        except (ValueError, OSError, TypeError):  # pragma: no cover
            pass
