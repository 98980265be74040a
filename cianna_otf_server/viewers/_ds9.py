"""SAOImage DS9 without a plug-in: an Analysis menu file, its region text, and XPA/SAMP to answer.

DS9 runs the commands of an *analysis file* from its Analysis menu, after replacing macros
(``$filename``: the frame's FITS file, ``$regions(ds9,icrs,degrees)``: its regions as one line,
``$xpa_method``: the address of its XPA server) and shows what they print in a text window
(``| $text``). DS9 has no analysis return type that loads regions, so the detections go back
through XPA (``xpaset ADDRESS regions``, the regions document on stdin) or, where xpa-tools is
missing, SAMP (``ds9.set 'regions load FILE'``).

Everything here is plain functions of text so that it can be tested without DS9; only
`xpa_get`, `xpa_set`, `load_regions` and `samp_load_regions` run programs or talk to a hub.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import RegionError, UserInputError

#: File name that ``cianna-otf ds9-analysis --install`` writes under ``~/.ds9``.
ANALYSIS_FILE_NAME = "cianna-otf.ds9.ans"
#: DS9 tag (group) of the detections loaded back, so a later run can tell them from the user's region.
RESULT_TAG = "cianna-otf"
#: Titles of the two Analysis menu entries.
WHOLE_IMAGE_TITLE = "Detect sources (CIANNA OTF)"
REGION_TITLE = "Detect sources in selected region (CIANNA OTF)"
#: What the region entry asks DS9 for: ds9 syntax, ICRS (the SODA frame), decimal degrees.
REGIONS_MACRO = "$regions(ds9,icrs,degrees)"

# ---------------------------------------------------------------- the analysis file


@dataclass(frozen=True)
class AnalysisEntry:
    """One command of an analysis file: the four lines DS9 reads (title, template, type, command)."""

    title: str
    template: str
    kind: str
    command: str


def _tcl_word(value: str, what: str) -> str:
    """`value` as one word of the Tcl list DS9 splits the command line into.

    DS9 cuts every line at its first ``#`` (an end-of-line comment) and expands ``$name``
    macros anywhere, so ``#`` is refused and ``$`` doubled (DS9's escape); braces keep spaces
    and quotes literal.
    """
    if "#" in value or "\n" in value or "\r" in value:
        raise UserInputError(f"{what} cannot go into a DS9 analysis file: it holds '#' or a line break "
                             "(leave it out and set it in the environment DS9 runs in)")
    value = value.replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./:@%+=,~-]+", value):
        return value
    if any(c in value for c in "{}\\"):
        raise UserInputError(f"{what} cannot go into a DS9 analysis file: it holds a brace or a backslash")
    return "{" + value + "}"


def analysis_file_text(program: Sequence[str], *, url: str | None = None, token: str | None = None,
                       model: str | None = None, timeout: float | None = None, version: str = "") -> str:
    """The analysis file: two Analysis menu entries that run ``PROGRAM ds9-run`` on the frame.

    Parameters
    ----------
    program : sequence of str
        The words that start ``cianna-otf`` (an absolute path, so DS9 finds it whatever its PATH).
    url, token, model, timeout : optional
        Baked into both command lines; None leaves the choice to ``ds9-run`` when it runs
        ($CIANNA_OTF_URL, $CIANNA_OTF_TOKEN, the client config file, the service's default model).
    """
    words = [_tcl_word(w, "the program path") for w in program] + ["ds9-run", "--xpa", '"$xpa_method"',
                                                                     "--image", '"$filename"']
    options: list[str] = []
    for flag, value in (("--url", url), ("--token", token), ("--model", model)):
        if value:
            options += [flag, _tcl_word(str(value), flag)]
    if timeout is not None:
        options += ["--timeout", f"{float(timeout):g}"]
    whole = " ".join(words + options + ["|", "$text"])
    region = " ".join(words + ["--regions", f'"{REGIONS_MACRO}"'] + options + ["|", "$text"])
    lines = [
        f"# SAOImage DS9 analysis commands of CIANNA On-The-Fly{' ' + version if version else ''}",
        "# written by 'cianna-otf ds9-analysis'; load with Analysis > Load Analysis Commands...",
        "# or start DS9 as: ds9 -analysis THIS_FILE",
    ]
    if token:
        lines.append("# holds the service token: keep this file private")
    lines += ["", WHOLE_IMAGE_TITLE, "*", "menu", whole, "", REGION_TITLE, "*", "menu", region, ""]
    return "\n".join(lines)


def parse_analysis_file(text: str) -> list[AnalysisEntry]:
    """The menu and bind entries of an analysis file, read as DS9 8 reads them (``ProcessAnalysis``).

    Blank lines and ``#`` comments are skipped and every line is cut at its first ``#``; the
    other lines come in fours. ``param``, ``help`` and ``hmenu`` blocks are skipped.
    """
    entries: list[AnalysisEntry] = []
    pending: list[str] = []
    block: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if block == "help":
            if line.split()[:1] in (["endhelp"], ["end"]):
                block = None
            continue
        if not line or line.startswith("#"):
            continue
        line = line.split("#", 1)[0].strip()
        if block == "param":
            if line.split()[:1] in (["endparam"], ["end"]):
                block = None
            continue
        if not pending:
            first = line.split()[0]
            if first in ("param", "help"):
                block = first
                continue
            if first in ("hmenu", "endhmenu", "end", "buttonbar", "endbuttonbar", "---"):
                continue
        pending.append(line)
        if len(pending) == 4:
            entries.append(AnalysisEntry(*pending))
            pending = []
    if pending:
        raise UserInputError(f"analysis file ends inside an entry: {pending}")
    return entries


# ---------------------------------------------------------------- DS9 region text


@dataclass(frozen=True)
class Ds9Shape:
    """One shape of a DS9 region text, its parameters as DS9 wrote them.

    Attributes
    ----------
    name : str
        ``circle``, ``box``, ``polygon``, ``ellipse``... (lower case).
    frame : str
        The coordinate system in force: ``icrs``, ``fk5``, ``galactic``, ``image``...
    params : tuple of str
        The values between the parentheses, with their units (``36"``, ``0:00:01.2``).
    exclude, background : bool
        ``-circle(...)`` and ``background`` shapes: not regions to detect in.
    tags : tuple of str
        ``tag={...}`` properties (DS9 groups).
    source : str
        The shape as written, for messages.
    """

    name: str
    frame: str
    params: tuple[str, ...]
    exclude: bool = False
    background: bool = False
    tags: tuple[str, ...] = ()
    source: str = ""


_SKY_FRAMES = {"icrs": "icrs", "fk5": "fk5", "j2000": "fk5", "fk4": "fk4", "b1950": "fk4",
               "galactic": "galactic", "ecliptic": "geocentrictrueecliptic"}
_PIXEL_FRAMES = ({"image", "physical", "detector", "amplifier", "linear"}
                 | {f"wcs{c}" for c in "abcdefghijklmnopqrstuvwxyz"})
_AREA_SHAPES = {"circle", "box", "polygon", "ellipse"}
_SHAPE = re.compile(r"^([+-]?)\s*([a-z]+)\s*\((.*)\)\s*$", re.IGNORECASE | re.DOTALL)


def parse_ds9_regions(text: str) -> list[Ds9Shape]:
    """The shapes of a DS9 region text: a region file, or DS9's one-line ``a;b;c`` form.

    Header, ``global`` and comment lines (DS9 writes its non-standard shapes, text and rulers
    as ``# text(...)``) are skipped; ``fk5``, ``icrs``, ``image``... set the frame of what follows.
    """
    shapes: list[Ds9Shape] = []
    frame = "physical"  # DS9's default
    for line in text.replace("\r", "\n").split("\n"):
        for piece in line.split(";"):
            piece = piece.strip()
            if not piece or piece.startswith("#"):
                continue
            body, _, props = piece.partition("#")
            body = body.strip()
            word = body.lower()
            if word in _SKY_FRAMES or word in _PIXEL_FRAMES or word == "wcs":
                frame = "fk5" if word == "wcs" else word
                continue
            if word.startswith(("global", "region file format", "version")):
                continue
            match = _SHAPE.match(body)
            if match is None:
                continue
            sign, name, inner = match.groups()
            params = tuple(p.strip() for p in inner.split(",") if p.strip())
            tags = tuple(t.strip() for t in re.findall(r"\btag\s*=\s*\{([^}]*)\}", props))
            background = bool(re.search(r"\bbackground\b|\bsource\s*=\s*0\b", props))
            shapes.append(Ds9Shape(name.lower(), frame, params, sign == "-", background, tags, piece))
    return shapes


def choose_region(text: str, selected: str | None = None, ignore_tag: str = RESULT_TAG) -> Ds9Shape:
    """The one area shape to detect in, among the regions DS9 holds.

    Shapes tagged `ignore_tag` (detections loaded back earlier), exclusions, background
    shapes and non-areas (points, lines, text) do not count. Where several remain, the
    `selected` ones (DS9's selection, read over XPA) decide; several still is an error rather
    than a guess, since SODA takes one region.

    Raises
    ------
    RegionError
        No shape, or more than one, to detect in.
    """

    def usable(shapes: list[Ds9Shape]) -> list[Ds9Shape]:
        return [s for s in shapes if not s.exclude and not s.background and ignore_tag not in s.tags
                and s.name in _AREA_SHAPES]

    candidates = usable(parse_ds9_regions(text))
    if selected is not None and len(candidates) != 1:
        chosen = usable(parse_ds9_regions(selected))
        if len(chosen) == 1:
            return chosen[0]
        if len(chosen) > 1:
            raise RegionError(f"{len(chosen)} regions are selected in DS9: select only the one to detect in")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        others = {s.name for s in parse_ds9_regions(text) if s.name not in _AREA_SHAPES}
        hint = f" ({', '.join(sorted(others))} regions do not enclose an area)" if others else ""
        raise RegionError("no region to detect in: draw a circle, box, ellipse or polygon on the image first" + hint)
    raise RegionError(f"{len(candidates)} regions in this DS9 frame: select (click) the one to detect in, "
                      "or delete the others, and run the command again")


def ds9_to_soda(text: str, selected: str | None = None) -> str:
    """The SODA region text (``CIRCLE ...`` or ``POLYGON ...``, ICRS degrees) of DS9's region text."""
    return shape_to_soda(choose_region(text, selected))


# -- values --------------------------------------------------------------------------------

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _sexagesimal(text: str, hours: bool) -> float | None:
    """``12:34:56.7`` or ``12h34m56.7s`` / ``-30d00m10s`` in degrees; None if not sexagesimal."""
    match = (re.fullmatch(rf"([+-]?)(\d+):(\d+):({_NUMBER})", text)
             or re.fullmatch(rf"([+-]?)(\d+)[hd](?:(\d+)m)?(?:({_NUMBER})s)?", text, re.IGNORECASE))
    if match is None:
        return None
    sign, a, b, c = match.groups()
    value = float(a) + float(b or 0) / 60 + float(c or 0) / 3600
    value = -value if sign == "-" else value
    return value * 15 if hours and ("h" in text.lower() or ":" in text) else value


def _coordinate(text: str, hours: bool, what: str) -> float:
    value = _sexagesimal(text, hours)
    if value is not None:
        return value
    match = re.fullmatch(rf"({_NUMBER})(d?)", text, re.IGNORECASE)
    if match is None:
        raise RegionError(f"{what}: cannot read the coordinate {text!r} (ask DS9 for sky coordinates)")
    return float(match.group(1))


_LENGTH_UNITS = {"": 1.0, "d": 1.0, "'": 1 / 60, '"': 1 / 3600, "r": 180 / math.pi}


def _length(text: str, what: str) -> float:
    """A DS9 sky length in degrees: ``36"``, ``0.6'``, ``0.01d``, ``0.01`` (degrees), ``1r``."""
    match = re.fullmatch(rf"({_NUMBER})\s*([d'\"r]?)", text, re.IGNORECASE)
    if match is None:
        raise RegionError(f"{what}: cannot read the size {text!r} (pixel sizes cannot become a sky region)")
    return float(match.group(1)) * _LENGTH_UNITS[match.group(2).lower()]


def _deg(value: float) -> str:
    text = f"{value:.8f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _offsets(ra0: float, dec0: float, xi: list[float], eta: list[float]) -> list[tuple[float, float]]:
    """Points at tangent-plane offsets (xi east, eta north, degrees) from (ra0, dec0): gnomonic."""
    a0, d0 = math.radians(ra0), math.radians(dec0)
    points = []
    for x, y in zip(xi, eta):
        x, y = math.radians(x), math.radians(y)
        denominator = math.cos(d0) - y * math.sin(d0)
        ra = a0 + math.atan2(x, denominator)
        dec = math.atan2(math.sin(d0) + y * math.cos(d0), math.hypot(x, denominator))
        points.append((math.degrees(ra) % 360.0, math.degrees(dec)))
    return points


def _rotated(ra0: float, dec0: float, along: list[float], across: list[float],
             angle: float) -> list[tuple[float, float]]:
    """Points of a shape rotated by DS9's `angle` (degrees, anticlockwise from the RA axis seen
    with north up and east left): `along` follows its first axis, `across` its second."""
    t = math.radians(angle)
    # first axis: towards the west at angle 0, turning to the north; second axis: north at 0
    xi = [-a * math.cos(t) + b * math.sin(t) for a, b in zip(along, across)]
    eta = [a * math.sin(t) + b * math.cos(t) for a, b in zip(along, across)]
    return _offsets(ra0, dec0, xi, eta)


def _to_icrs(points: list[tuple[float, float]], frame: str) -> list[tuple[float, float]]:
    if frame == "icrs":
        return points
    from astropy.coordinates import SkyCoord

    lon, lat = zip(*points)
    coords = SkyCoord(list(lon), list(lat), unit="deg", frame=_SKY_FRAMES[frame]).icrs
    return [(float(r) % 360.0, float(d)) for r, d in zip(coords.ra.deg, coords.dec.deg)]


def shape_to_soda(shape: Ds9Shape, ellipse_vertices: int = 36) -> str:
    """One DS9 shape in a sky frame as SODA text in ICRS degrees.

    A circle stays a ``CIRCLE ra dec radius``; a polygon keeps its vertices; a box (rotated or
    not) becomes the ``POLYGON`` of its four corners and an ellipse a polygon of
    `ellipse_vertices` points, both laid out on the tangent plane at their centre as DS9 draws
    them. Other frames than ICRS (fk5, galactic...) are converted with astropy.
    """
    what = f"DS9 {shape.name}"
    if shape.frame in _PIXEL_FRAMES or shape.frame not in _SKY_FRAMES:
        raise RegionError(f"{what} is in {shape.frame} coordinates: a sky region (icrs or fk5) is needed, "
                          "and the image needs a celestial WCS")
    if shape.name not in _AREA_SHAPES:
        raise RegionError(f"{what} regions cannot be detected in: draw a circle, box, ellipse or polygon")
    p = shape.params
    if shape.name == "polygon":
        if len(p) < 6 or len(p) % 2:
            raise RegionError(f"{what} needs at least 3 vertices, got {p}")
        points = [(_coordinate(p[i], True, what), _coordinate(p[i + 1], False, what)) for i in range(0, len(p), 2)]
        points = _to_icrs([(ra % 360.0, dec) for ra, dec in points], shape.frame)
        return "POLYGON " + " ".join(f"{_deg(ra)} {_deg(dec)}" for ra, dec in points)
    if len(p) < 3:
        raise RegionError(f"{what} needs a centre and a size, got {p}")
    ra0, dec0 = _coordinate(p[0], True, what) % 360.0, _coordinate(p[1], False, what)
    if not -90 <= dec0 <= 90:
        raise RegionError(f"{what}: declination {dec0:g} is outside [-90, 90]")
    if shape.name == "circle":
        if len(p) != 3:
            raise RegionError(f"{what} takes a centre and one radius, got {p}")
        radius = _length(p[2], what)
        if not radius > 0:
            raise RegionError(f"{what}: the radius must be positive")
        (ra, dec), = _to_icrs([(ra0, dec0)], shape.frame)
        return f"CIRCLE {_deg(ra)} {_deg(dec)} {_deg(radius)}"
    if len(p) not in (4, 5):  # box(x,y,w,h[,angle]), ellipse(x,y,r1,r2[,angle]); annuli have more
        raise RegionError(f"{what} annuli are not supported: draw one {shape.name}")
    first, second = _length(p[2], what), _length(p[3], what)
    angle = float(p[4]) if len(p) == 5 else 0.0
    if not (first > 0 and second > 0):
        raise RegionError(f"{what}: sizes must be positive")
    if shape.name == "box":
        along = [first / 2 * s for s in (-1, 1, 1, -1)]
        across = [second / 2 * s for s in (-1, -1, 1, 1)]
    else:
        steps = [2 * math.pi * k / ellipse_vertices for k in range(ellipse_vertices)]
        along = [first * math.cos(s) for s in steps]
        across = [second * math.sin(s) for s in steps]
    points = _to_icrs(_rotated(ra0, dec0, along, across, angle), shape.frame)
    return "POLYGON " + " ".join(f"{_deg(ra)} {_deg(dec)}" for ra, dec in points)


def tag_regions(document: str, tag: str = RESULT_TAG) -> str:
    """The service's DS9 regions with ``tag={TAG}`` on every shape: one DS9 group, and shapes the
    region entry knows not to take for the user's region."""
    lines = []
    for line in document.splitlines():
        stripped = line.strip()
        body = stripped.split("#", 1)[0].strip().lower()
        if _SHAPE.match(body) and not stripped.startswith("#"):
            line = f"{line} tag={{{tag}}}" if "#" in line else f"{line} # tag={{{tag}}}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def count_shapes(document: str) -> int:
    """How many shapes (detections) a DS9 regions document holds."""
    return len(parse_ds9_regions(document))


def image_reference(filename: str) -> tuple[str, str | None]:
    """DS9's ``$filename`` as (image for the service, HDU or None).

    DS9 names an extension as ``file.fits[2]`` or ``file.fits[SCI]``; a URL goes by reference.

    Raises
    ------
    UserInputError
        No file in the frame, or one that is not on disk (an image sent over XPA or SAMP).
    """
    name = filename.strip().strip('"').strip()
    if not name:
        raise UserInputError("no image in the current DS9 frame: open a FITS file first")
    if name.lower().startswith(("http://", "https://")):
        return name, None
    hdu = None
    match = re.fullmatch(r"(.*?)\[([^\[\]]*)\]", name)
    if match and not Path(name).exists():
        name, hdu = match.group(1), match.group(2).strip() or None
    if not Path(name).expanduser().is_file():
        raise UserInputError(f"DS9's image {name!r} is not a file on this computer: "
                             "save it (File > Save) and open that file")
    return str(Path(name).expanduser()), hdu


# ---------------------------------------------------------------- XPA and SAMP


class Ds9LinkError(Exception):
    """DS9 could not be reached, over XPA or SAMP."""


def xpa_available(method: str | None) -> bool:
    """True when DS9 gave an XPA address and xpa-tools (``xpaget``/``xpaset``) is installed."""
    return bool(method) and method not in ("none", "$xpa_method") and shutil.which("xpaset") is not None \
        and shutil.which("xpaget") is not None


def xpa_get(method: str, *words: str, timeout: float = 20.0) -> str:
    """``xpaget METHOD WORDS...``: what DS9 answers."""
    return _xpa(["xpaget", method, *words], None, timeout)


def xpa_set(method: str, *words: str, data: str | None = None, timeout: float = 20.0) -> None:
    """``xpaset [-p] METHOD WORDS...``, with `data` on stdin when given."""
    _xpa(["xpaset", *(() if data is not None else ("-p",)), method, *words], data, timeout)


def _xpa(argv: list[str], data: str | None, timeout: float) -> str:
    try:
        done = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Ds9LinkError(f"{argv[0]} failed: {exc}") from None
    error = (done.stderr or "") + ("" if done.returncode == 0 else done.stdout)
    if done.returncode != 0 or "XPA$ERROR" in error:
        message = " ".join(error.split()) or f"exit code {done.returncode}"
        raise Ds9LinkError(f"{' '.join(argv[:3])}: {message}")
    return done.stdout


def read_regions(method: str) -> tuple[str, str]:
    """DS9's regions (all, and the selected ones) with their properties, ICRS degrees, over XPA."""
    words = ("-format", "ds9", "-system", "wcs", "-sky", "icrs", "-skyformat", "degrees")
    return xpa_get(method, "regions", *words), xpa_get(method, "regions", "selected", *words)


def load_regions(document: str, method: str | None, path: Path | None = None) -> str:
    """Load a regions document into DS9: over XPA where it can, else SAMP; how it went, in words.

    Raises
    ------
    Ds9LinkError
        Neither way reached DS9.
    """
    problems = []
    if xpa_available(method):
        try:
            xpa_set(str(method), "regions", "-format", "ds9", data=document)
            return "loaded into DS9 over XPA"
        except Ds9LinkError as exc:
            problems.append(str(exc))
    elif method in (None, "", "none"):
        problems.append("DS9 has XPA off")
    else:
        problems.append("xpa-tools (xpaset) is not installed")
    if path is not None:
        try:
            count = samp_load_regions(path)
            return f"loaded into {count} DS9 over SAMP"
        except Ds9LinkError as exc:
            problems.append(str(exc))
    raise Ds9LinkError("; ".join(problems))


def samp_load_regions(path: Path, hub: str | None = None) -> int:
    """Send ``regions load PATH`` (``ds9.set``) to every DS9 on the running SAMP hub; how many.

    The hub is found as ``cianna-otf samp`` finds it (`cianna_otf_server.samp`: $SAMP_HUB, else
    ``~/.samp``), with pyvo's or astropy's SAMP client and no probe of the internet.
    """
    from ..samp import DS9_SET, SampBridgeError, hub_params, samp_module
    from ..samp._api import offline
    from ..samp._output import ds9_path

    try:
        params = hub_params(hub)
    except SampBridgeError as exc:
        raise Ds9LinkError(str(exc)) from None
    samp = samp_module()
    try:
        with offline():
            client = samp.SAMPIntegratedClient(name="cianna-otf ds9-run", addr="127.0.0.1")
            client.connect(hub_params=params)
    except Exception as exc:  # noqa: BLE001 - SAMPHubError, socket and XML-RPC errors alike
        raise Ds9LinkError(f"cannot join the SAMP hub: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    try:
        me = client.get_public_id()
        targets = [c for c in client.get_subscribed_clients(DS9_SET) if c != me]
        if not targets:
            raise Ds9LinkError("no DS9 on the SAMP hub")
        for target in targets:
            client.notify(target, {"samp.mtype": DS9_SET, "samp.params": {"cmd": f"regions load {ds9_path(path)}"}})
        return len(targets)
    finally:
        client.disconnect()
