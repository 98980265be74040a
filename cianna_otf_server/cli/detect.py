"""``cianna-otf detect``: run a model on a FITS image and write the source catalogue."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ._common import (
    add_common_options,
    add_header_options,
    add_models_dir_option,
    add_region_options,
    detection_options,
    info,
    int_at_least,
    registry_from_args,
    require_input_file,
    require_output_dir,
    warn_lines,
    write_atomically,
)
from ..catalogue import CATALOGUE_FORMATS, FORMAT_NAMES, format_for_suffix
from ..errors import ImageError, UserInputError
from ..models import DEFAULT_MODEL

NAME = "detect"
_FITS_MAGIC = (b"SIMPLE  =", b"\x1f\x8b", b"BZh")  # plain FITS, gzip, bzip2 (astropy reads both)

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``detect`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="detect the sources of a FITS image and write their catalogue",
        description="Run a model on a FITS image (or a region of it) and write the catalogue "
        "of detected sources. Detection settings default to the model card's.",
        epilog="examples:\n"
        "  cianna-otf detect sky.fits -o sources.vot\n"
        "  cianna-otf detect sky.fits --model classic -o sources.vot\n"
        "  cianna-otf detect sky.fits --model yolo-sdc1-ref -o - --format csv "
        "--region 'CIRCLE 0.0 -30.0 0.1'\n"
        "  cianna-otf detect sky.fits --model classic -o sources.reg --pixels '1 1024 1 1024'\n"
        "  cianna-otf detect aips.fits --unit mJy/beam --beam '45 45 0' -o sources.vot",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE.fits", help="the FITS image to search")
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, metavar="NAME",
                        help=f"model name (see 'cianna-otf models'; default: {DEFAULT_MODEL})")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="catalogue file to write; '-' writes to stdout")
    parser.add_argument("--format", "-f", choices=FORMAT_NAMES,
                        help="catalogue format (default: from the OUT suffix .vot/.xml, .csv, "
                        ".fits, .reg; votable for stdout)")
    add_region_options(parser)
    add_header_options(parser)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the network runs (default: cpu)")
    parser.add_argument("--hdu", type=int_at_least(0), metavar="N",
                        help="FITS HDU index holding the image (default: the first with 2-D data)")
    # numbers are checked by the job parameters' own rules (`detection_options`), not by argparse,
    # so that a value the service refuses is refused here with the same sentence
    parser.add_argument("--threshold", metavar="T",
                        help="detection threshold: objectness for a network (replaces the card's "
                        "per-prior values), in sigma for the classic finder")
    parser.add_argument("--nms", metavar="N",
                        help="overlap (DIoU) above which the weaker of two boxes is dropped")
    parser.add_argument("--min-size", metavar="S", dest="min_size",
                        help="drop boxes smaller than S pixels")
    add_models_dir_option(parser)
    add_common_options(parser)
    parser.set_defaults(handler=run)


def output_format(output: str, given: str | None) -> str:
    """The catalogue format: the one given, else from the output suffix (stdout: votable).

    Raises
    ------
    UserInputError
        The suffix says nothing and no format was given.
    """
    if given:
        return given
    if output == "-":
        return "votable"
    implied = format_for_suffix(output)
    if implied:
        return implied
    raise UserInputError(
        f"cannot tell the catalogue format from {output!r}; give --format ({'|'.join(FORMAT_NAMES)}) "
        "or use a .vot, .xml, .csv, .fits or .reg suffix"
    )


def check_fits_file(path: Path) -> None:
    """Refuse early a file that cannot be FITS (before loading a model for nothing)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image ({exc.strerror})") from exc
    if not any(head.startswith(magic) for magic in _FITS_MAGIC):
        raise ImageError(f"{path} is not a FITS file (it does not start with 'SIMPLE  =')")


def run(args: argparse.Namespace) -> int:
    """Detect sources and write the catalogue; a one-line summary goes to stderr."""
    options = detection_options(args)
    image = require_input_file(args.image, "image")
    check_fits_file(image)
    fmt = output_format(args.output, args.format)
    if args.output != "-":
        require_output_dir(args.output, "catalogue")
    card = registry_from_args(args).verify(args.model)
    if args.device == "cuda" and card.is_network:
        _require_cuda()

    from ..catalogue import write_catalogue
    from ..pipeline import detect

    log.info("detecting sources in %s with model %s %s", image, card.name, card.version)
    start = time.perf_counter()
    table = detect(
        str(image), card,
        region=args.region, pixels=args.pixels, precision=args.precision, device=args.device,
        threshold=options.get("threshold"), nms=options.get("nms"), min_size=options.get("min_size"), hdu=args.hdu,
        unit=args.unit, beam=args.beam,
    )
    elapsed = time.perf_counter() - start
    write_atomically(args.output, CATALOGUE_FORMATS[fmt].file_suffix,
                     lambda tmp: write_catalogue(table, tmp, format=fmt))
    count = len(table)
    where = "stdout" if args.output == "-" else args.output
    info(f"{count} source{'s' if count != 1 else ''} in {elapsed:.1f} s "
         f"(model {card.name} {card.version}) -> {where} [{fmt}]")
    warn_lines(table.meta.get("warnings", ()))
    return 0


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available on this machine; use --device cpu")
