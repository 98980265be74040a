"""``cianna-otf simulate``: write a simulated radio image (and its true source list) for trials."""

from __future__ import annotations

import argparse
import time

from ._common import add_common_options, info, int_at_least, require_output_dir
from ..errors import UserInputError

NAME = "simulate"
MIN_SIZE = 32  # pixels: smaller images hold too few beams to be of any use


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="write a simulated radio image with known sources",
        description="Write a simulated radio continuum image (Jy/beam, SKA SDC1-like sky, thermal "
        "noise, point and extended sources) to try the detectors on, and optionally the list of "
        "the sources it contains.",
        epilog="example:\n  cianna-otf simulate sky.fits --size 2048 --seed 1 --truth truth.vot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", metavar="OUT.fits", help="FITS image to write")
    parser.add_argument("--size", type=int_at_least(MIN_SIZE), default=2048, metavar="N",
                        help="image width and height in pixels (default: 2048)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed; the same seed gives the same sky (default: 0)")
    parser.add_argument("--truth", metavar="TRUTH.vot",
                        help="also write the true source list (VOTable)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_common_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Simulate, write the image (and truth), and print a one-line summary on stderr."""
    require_output_dir(args.output, "image")
    if args.truth:
        require_output_dir(args.truth, "truth catalogue")

    from ..sky.simulate import write_simulation

    start = time.perf_counter()
    try:
        write_simulation(args.output, args.size, args.seed, truth_path=args.truth, overwrite=args.overwrite)
    except OSError as exc:
        raise UserInputError(f"cannot write {exc.filename or args.output}: {exc.strerror or exc}") from exc
    elapsed = time.perf_counter() - start
    extra = f" and its sources -> {args.truth}" if args.truth else ""
    info(f"simulated {args.size}x{args.size} px sky (seed {args.seed}) in {elapsed:.1f} s "
         f"-> {args.output}{extra}")
    return 0
