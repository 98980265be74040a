"""``cianna-otf models``: list the installed models, show one model card, or rank them for an image.

``cianna-otf models --for IMAGE`` says which model fits an image: for every model, how well the
image fits the images it was trained on (0-1), the brightness convention it reads, the
resampling the image would need, one sentence of reason and the warnings a detection would
carry. Locally by default (no service needed); with ``--url`` the service's models, ranked by
the service (``POST /models/match``).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from ._common import (
    add_common_options,
    add_header_options,
    add_models_dir_option,
    registry_from_args,
    require_input_file,
)
from ..errors import ModelCardError, UserInputError

NAME = "models"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` and ``models show NAME`` to the command line."""
    parser = subparsers.add_parser(
        NAME,
        help="list the models this installation can run",
        description="List the models found in the model directories (name, version, family, "
        "default precision, status), or show one model card. With --for IMAGE, rank the models "
        "for that image instead, best fit first: fit (0-1), input convention (absolute Jy/beam, "
        "snr signal-to-noise, native for the classic finder), zoom (resampling, model pixels per "
        "image pixel) and the reason, with each model's warnings below it. The image may be a "
        "FITS header alone (then the noise checks are skipped).",
    )
    parser.add_argument("--for", dest="for_image", metavar="IMAGE", default=None,
                        help="rank the models for this FITS image (with --url: uploaded, or by reference "
                        "when it is a URL or a path that is not a local file)")
    parser.add_argument("--hdu", metavar="N", default=None,
                        help="with --for: HDU index or EXTNAME of the image (default: the first 2-D image)")
    add_header_options(parser)
    _add_options(parser)
    parser.set_defaults(handler=run_list)
    sub = parser.add_subparsers(dest="models_command", metavar="{show}")
    show = sub.add_parser(
        "show", help="show one model card", description="Show a model card in full."
    )
    show.add_argument("name", metavar="NAME", help="model name, as listed by 'cianna-otf models'")
    _add_options(show)
    show.set_defaults(handler=run_show)


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text")
    parser.add_argument("--url", default=argparse.SUPPRESS, metavar="URL",
                        help="list the models of the service at URL instead of this installation's")
    parser.add_argument("--token", default=argparse.SUPPRESS, metavar="TOKEN",
                        help="token for --url (else $CIANNA_OTF_TOKEN)")
    add_models_dir_option(parser)
    add_common_options(parser)


def _print_service_models(args: argparse.Namespace) -> int:
    """The model table (or JSON) of the service at ``--url``."""
    from ._remote import make_client

    args.token = getattr(args, "token", None)
    cards = make_client(args).models()
    if getattr(args, "json", False):
        _print_json(cards)
        return 0
    rows = [("NAME", "VERSION", "FAMILY", "PRECISION")]
    rows += [(str(c.get("name")), str(c.get("version", "-")), str(c.get("family", "-")),
              str(c.get("default_precision", "-"))) for c in cards]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the model table (or JSON list) on stdout: this installation's, or a service's."""
    if getattr(args, "for_image", None):
        return run_match(args)
    for option in ("hdu", "unit", "beam"):
        if getattr(args, option, None) is not None:
            raise UserInputError(f"--{option} goes with --for IMAGE")
    if getattr(args, "url", None):
        from ._remote import client_command

        return client_command(_print_service_models)(args)
    entries = registry_from_args(args).list()
    if getattr(args, "json", False):
        _print_json([entry.to_dict() for entry in entries])
        return 0
    rows = [("NAME", "VERSION", "FAMILY", "PRECISION", "STATUS")]
    for entry in entries:
        card = entry.card
        rows.append((
            entry.name,
            card.version if card else "-",
            card.family if card else "-",
            card.default_precision if card else "-",
            entry.status,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())
    problems = [entry for entry in entries if not entry.available]
    if problems:
        print()
        for entry in problems:
            print(f"{entry.name}: {entry.reason}")
    return 0


def run_match(args: argparse.Namespace) -> int:
    """``models --for IMAGE``: the models ranked for the image, here or by the service at ``--url``."""
    hdu: int | str | None = args.hdu
    if isinstance(hdu, str) and hdu.strip().isdigit():
        hdu = int(hdu)
    if getattr(args, "url", None):
        from ._remote import client_command, make_client

        def ask(args: argparse.Namespace) -> int:
            args.token = getattr(args, "token", None)
            answer = make_client(args).match(args.for_image, hdu=hdu, unit=args.unit, beam=args.beam)
            _print_match(answer, as_json=getattr(args, "json", False))
            return 0

        return client_command(ask)(args)
    from ..model_match import match_file
    from ..models import DEFAULT_MODEL

    path = require_input_file(args.for_image, "image")
    result = match_file(path, registry_from_args(args), hdu=hdu, unit=args.unit, beam=args.beam,
                        default_model=DEFAULT_MODEL)
    _print_match(result.to_dict(), as_json=getattr(args, "json", False))
    return 0


def _print_match(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(answer)
    else:
        print(format_match(answer))


def format_match(answer: dict[str, Any]) -> str:
    """A ``/models/match`` answer as text: the image, its warnings, then one line per model, best first.

    Each model line is ``MODEL FIT INPUT ZOOM REASON`` (fit 0-1; input: absolute, snr or native;
    zoom: model pixels per image pixel); the model's warnings follow it, indented.
    """
    image = answer.get("image", {})
    size = image.get("size") or [0, 0]
    where = image.get("name") or "image"
    if image.get("hdu"):
        where += f" (HDU {image['hdu']})"
    parts = [f"{size[0]} x {size[1]} px"]
    scale = image.get("pixel_scale_arcsec")
    parts.append(f"{scale:.3g} arcsec/px" if scale else "no celestial WCS")
    beam = image.get("beam_pixels")
    if beam:
        origin = " estimated" if image.get("beam_estimated") else ""
        parts.append(f"beam {beam:.3g} px{origin}")
    else:
        parts.append("beam unknown")
    parts.append(image.get("unit") or "no brightness unit")
    noise = image.get("noise_jy_per_beam")
    if noise is not None:
        parts.append(f"noise {noise:.3g} Jy/beam")
    elif not image.get("noise_measured"):
        parts.append("noise not measured")
    else:
        parts.append("noise not in Jy/beam (unknown unit)")
    lines = [f"{where}: " + ", ".join(parts)]
    lines.extend(f"  warning: {warning}" for warning in answer.get("warnings", ()))
    lines.append("")
    models = answer.get("models", [])
    rows = [("MODEL", "FIT", "INPUT", "ZOOM", "REASON")]
    for model in models:
        reason = str(model.get("reason", ""))
        if model.get("status", "available") != "available":
            reason = f"(unavailable) {reason}"
        rows.append((str(model.get("model")), f"{float(model.get('fit', 0)):.2f}", str(model.get("convention", "-")),
                     f"{float(model.get('zoom', 1)):.3g}", reason))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(value.ljust(width) for value, width in zip(row[:4], widths)) + "  " + row[4]

    lines.append(line(rows[0]).rstrip())
    for row, model in zip(rows[1:], models):
        lines.append(line(row).rstrip())
        lines.extend(f"    warning: {warning}" for warning in model.get("warnings", ()))
    return "\n".join(lines)


def run_show(args: argparse.Namespace) -> int:
    """Print one model card, human-readable (or as JSON)."""
    entry = registry_from_args(args).entry(args.name)
    if getattr(args, "json", False):
        _print_json(entry.to_dict())
        return 0
    if entry.card is None:
        raise ModelCardError(entry.reason)
    print(format_card(entry.card, status=entry.status, reason=entry.reason, origin=entry.origin))
    return 0


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def format_card(card, *, status: str = "", reason: str = "", origin: str = "") -> str:
    """A model card as text for a terminal: identity, provenance, weights, how it runs.

    Parameters
    ----------
    card : ModelCard
        The card to show.
    status, reason, origin : str
        What the registry knows about the card (availability, why not, builtin or user).
    """
    lines: list[str] = [f"{card.name} {card.version} ({card.family})"]

    def field(label: str, value: Any) -> None:
        if value in (None, "", ()):
            return
        text = str(value)
        wrapped = textwrap.wrap(text, width=96 - 20) or [""]
        lines.append(f"  {label:<17} {wrapped[0]}")
        lines.extend(f"  {'':<17} {more}" for more in wrapped[1:])

    field("status", f"{status}: {reason}" if reason else status)
    field("origin", origin)
    field("card", card.card_path)
    field("description", card.description)
    field("training data", card.training_data)
    field("licence", card.licence)
    field("source", card.source_url)
    field("citation", card.citation)
    field("precision", card.default_precision)
    if card.weights_file is not None:
        field("weights", card.weights_file)
        field("sha256", card.sha256 or "(not given: the weights cannot be checked)")
        field("input bias", card.input_bias)
    field("input channels", card.channels)
    if card.tiling is not None:
        t = card.tiling
        field("tiling", f"patch {_pair(t.patch_size)} px, shift {_pair(t.shift)} px, offset {_pair(t.offset)} px")
    if card.is_network:
        n = card.normalisation
        field("normalisation", f"{n.function} (clip {n.clip_min:g} .. {n.clip_max:g}, scale {n.scale:g})")
    if card.yolo is not None:
        y = card.yolo
        field("yolo head", f"{y.nb_box} boxes, {y.nb_class} classes, {y.nb_param} extra parameters")
        field("priors (w x h px)", ", ".join(f"{w:g}x{h:g}" for w, h in zip(y.priors_w, y.priors_h)))
        field("objectness", ", ".join(f"{v:g}" for v in y.objectness_thresholds))
        field("nms", f"{y.nms_type} > {y.nms_threshold:g} in a patch, > {y.second_nms_threshold:g} "
              "between patches")
        if y.min_size:
            field("min size", f"{y.min_size:g} px")
        if y.edge_margin:
            field("edge margin", f"{y.edge_margin} px")
    for spec in card.parameters:
        detail = f"{spec.transform} of channel(s) {', '.join(str(c) for c in spec.channels)}"
        if spec.transform != "pa_cos_sin":
            detail += f" [{spec.min:g} .. {spec.max:g}]"
        unit = f" [{spec.unit}]" if spec.unit else ""
        field(f"column {spec.name}", f"{detail}{unit}" + (f": {spec.description}" if spec.description else ""))
    if card.classic is not None:
        c = card.classic
        field("threshold", f"{c.threshold_sigma:g} sigma, islands of at least {c.min_area} px")
        field("background", f"mesh {c.background_box} px, median filter {c.background_filter} cells")
        field("deblending", f"{c.deblend_nthresh} levels, contrast {c.deblend_cont:g}, "
              f"cleaning {'on' if c.clean else 'off'}")
    return "\n".join(lines)


def _pair(value: tuple[int, int]) -> str:
    return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
