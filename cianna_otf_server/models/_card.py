"""Model cards: the TOML file beside a weights file that says how to use the network.

A card carries everything the detection pipeline needs (tiling, normalisation, YOLO layout,
thresholds, how extra outputs become catalogue columns) and what a person needs to trust the
model (provenance, licence, checksum). It replaces the long list of per-job parameters that
a client would otherwise have to send.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..errors import ModelCardError

Family = Literal["yolo-cianna", "classic"]
Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
NORMALISATIONS: tuple[str, ...] = ("linear", "tanh", "sqrt", "log")
PARAMETER_TRANSFORMS: tuple[str, ...] = ("linear", "exp", "log10", "pa_cos_sin")


@dataclass(frozen=True)
class TilingSpec:
    """How an image is cut into network patches.

    Patch ``i`` along an axis starts at pixel ``i * shift - offset`` (0-based), so with
    ``offset > 0`` the first patches reach beyond the image edge and are zero-padded,
    which lets the network see sources near the border in a patch's well-trained centre.
    """

    patch_size: tuple[int, int]  # (W, H) in pixels, the network input size
    shift: tuple[int, int]  # (W, H) step between patch origins, pixels
    offset: tuple[int, int] = (0, 0)  # (W, H) pixels by which the grid starts before the image


@dataclass(frozen=True)
class NormalisationSpec:
    """Pixel values (image units, usually Jy/beam) to network input values.

    ``x = clip(v, clip_min, clip_max)``, ``u = (x - clip_min) / (clip_max - clip_min)``, then
    ``function``: linear ``u``; tanh ``tanh(scale * u)``; sqrt ``sqrt(u)``;
    log ``log10(1 + scale * u) / log10(1 + scale)``. NaN pixels become 0 after normalisation.
    """

    function: str = "tanh"
    clip_min: float = 0.4e-6
    clip_max: float = 0.4e-4
    scale: float = 3.0
    blank: float | None = None  # value of NaN/blank pixels and of pixels beyond the image, input units (None: clip_min)

    @property
    def blank_value(self) -> float:
        """What a blank pixel (NaN, or beyond the image) is replaced with before normalisation."""
        return float(self.clip_min if self.blank is None else self.blank)


INPUT_CONVENTIONS: tuple[str, ...] = ("absolute", "snr")
ANGLE_FRAMES: tuple[str, ...] = ("sky", "pixel")


@dataclass(frozen=True)
class DomainSpec:
    """The images a network was trained on, so the pipeline can bring any image into that domain.

    ``input``: ``"absolute"`` (the normalisation reads brightness in Jy/beam, as the published
    SDC1 networks) or ``"snr"`` (it reads signal-to-noise: image minus background over the
    local rms, the portable convention). ``beam_pixels``: the restoring-beam FWHM (geometric
    mean of the axes) in pixels the network was trained around; an image whose beam spans a
    number of pixels outside ``beam_pixels_range`` is resampled so that it spans
    ``beam_pixels``. ``noise_range``: for absolute models, the rms (Jy/beam) of the training
    images; an image more than 10x outside is flagged. ``angles``: the frame of the position
    angles the head predicts (``"pixel"``: from +y towards -x, converted to the sky through the
    image's WCS; ``"sky"``: east of north, as on a north-up image). ``declared`` is False for
    cards without a ``[domain]`` table, which keep the behaviour of earlier releases: no
    resampling and no domain check.
    """

    input: str = "absolute"
    beam_pixels: float | None = None
    beam_pixels_range: tuple[float, float] | None = None
    noise_range: tuple[float, float] | None = None
    angles: str = "sky"
    declared: bool = False


@dataclass(frozen=True)
class ParameterSpec:
    """How some of the YOLO head's extra outputs become one catalogue column.

    ``channels`` index the head's extra parameters (0-based). Transforms of one channel ``p``:
    linear ``min + p*(max-min)``; exp ``exp(min + p*(max-min))`` (CIANNA's SDC1 recipe trains on
    natural logs); log10 ``10**(min + p*(max-min))``. ``pa_cos_sin`` takes two channels
    (c, s) and gives ``degrees(atan2(2*clip(s,0,1)-1, clip(c,0,1)))`` in [-90, 90].
    """

    name: str
    channels: tuple[int, ...]
    transform: str = "linear"
    min: float = 0.0
    max: float = 1.0
    unit: str = ""
    ucd: str = ""
    description: str = ""


@dataclass(frozen=True)
class YoloSpec:
    """The YOLO head layout and the detection thresholds of the SDC1-style post-processing.

    ``objectness_thresholds`` has one value per prior (box); boxes below it are dropped.
    ``nms_threshold`` is the DIoU-based overlap above which the weaker of two boxes inside
    one patch is dropped; ``second_nms_threshold`` the same between neighbouring patches.
    ``edge_margin`` pixels at a patch's border where predictions are not trusted (0 keeps all).
    ``nms_tiers`` (optional) replaces ``nms_threshold`` by CIANNA's graded first NMS: pairs
    ``(overlap_limit, objectness_limit)``, a box being dropped when a more confident box overlaps
    it above the limit and its own objectness is below the objectness limit.
    ``min_box_size`` widens smaller boxes to this size (pixels); ``edge_penalty`` lowers the
    objectness of the outermost grid cells, where the network sees only part of a source.
    ``extended_filter`` turns on the SDC1 recipe's last filter (`pipeline._extended`): a box is
    dropped when the median normalised input in the box widened by ``extended_filter_margin``
    pixels exceeds a tier's median limit while its objectness is below the tier's limit
    (``extended_filter_tiers`` pairs ``(median_limit, objectness_limit)``; empty: the recipe's).
    ``min_peak_snr`` (models with a noise map: signal-to-noise input or a noise check) drops
    detections whose peak inside the box is below this many local sigmas: a network that must
    find 3-sigma sources also proposes 3-sigma noise peaks, and only the measured peak tells them
    apart from the sources worth reporting (0 keeps all). ``measure`` makes the network a
    detector only: position, peak, integrated flux and apparent shape are measured from the image
    around each detection (`pipeline._measure`), since an image unlike the training skies is a
    better judge of its own fluxes than the network's regression heads. ``deblend`` (with
    ``measure`` and ``min_peak_snr`` on a signal-to-noise model) adds the significant peaks around
    the detections that no measured detection accounts for, the sources a box between two of them
    or the NMS merged (`pipeline._components`), and keeps one detection per measured peak.
    ``rescue_threshold`` and ``rescue_snr`` (both or neither; with ``measure`` on a signal-to-noise
    model) keep a box scored below its prior's threshold but at least ``rescue_threshold`` when its
    measured peak reaches ``rescue_snr`` sigmas, it clears the sidelobe level of its brighter
    standing neighbours and no standing detection measures the same peak: the network scores some
    isolated, clearly significant sources just below its threshold, and the image, not the score,
    says they are real (0: off, the card as before).
    """

    nb_box: int
    nb_class: int
    nb_param: int
    priors_w: tuple[float, ...]
    priors_h: tuple[float, ...]
    objectness_thresholds: tuple[float, ...]
    nms_threshold: float = 0.0
    second_nms_threshold: float = 0.0
    nms_type: str = "DIoU"
    min_size: float = 0.0  # pixels: boxes with a smaller width or height are dropped
    edge_margin: int = 0
    nms_tiers: tuple[tuple[float, float], ...] = ()
    min_box_size: float = 0.0
    edge_penalty: float = 0.0
    extended_filter: bool = False
    extended_filter_tiers: tuple[tuple[float, float], ...] = ()
    extended_filter_margin: float = 5.0
    min_peak_snr: float = 0.0
    measure: bool = False
    deblend: bool = False
    rescue_threshold: float = 0.0
    rescue_snr: float = 0.0

    @property
    def rescues(self) -> bool:
        """Whether the significance rescue (``rescue_threshold`` / ``rescue_snr``) is on."""
        return self.rescue_threshold > 0 and self.rescue_snr > 0


@dataclass(frozen=True)
class ClassicSpec:
    """Settings of the classical detector (background, noise, threshold, deblending)."""

    threshold_sigma: float = 5.0
    min_area: int = 5
    background_box: int = 64
    background_filter: int = 3
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    clean: bool = True


@dataclass(frozen=True)
class ModelCard:
    """A model: its identity and provenance, its weights, and how to run it."""

    name: str
    version: str
    family: str
    description: str = ""
    training_data: str = ""
    licence: str = ""
    source_url: str = ""
    citation: str = ""
    default_precision: str = "fp32"
    weights_file: Path | None = None  # absolute, resolved against the card's folder
    sha256: str | None = None
    input_bias: float = 0.1
    input_size: tuple[int, int] | None = None  # (W, H) stored in the weights file, when it differs from the patch
    channels: int = 1
    tiling: TilingSpec | None = None
    normalisation: NormalisationSpec = field(default_factory=NormalisationSpec)
    yolo: YoloSpec | None = None
    parameters: tuple[ParameterSpec, ...] = ()
    classic: ClassicSpec | None = None
    domain: DomainSpec = field(default_factory=DomainSpec)
    card_path: Path | None = None
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def is_network(self) -> bool:
        """True when the model is a CIANNA network run by the runtime (not a classical finder)."""
        return self.family == "yolo-cianna"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, for `/models`, `cianna-otf models --json` and provenance."""
        data = asdict(self)
        data["weights_file"] = self.weights_file.name if self.weights_file else None
        data["card_path"] = str(self.card_path) if self.card_path else None
        return data


def _check_rescue(yolo: YoloSpec, where: str) -> None:
    """The significance rescue needs both settings in range and a measuring card (its test is the measured peak)."""
    given = (yolo.rescue_threshold != 0, yolo.rescue_snr != 0)
    if given == (False, False):
        return
    if not all(given):
        raise ModelCardError(f"{where}: rescue_threshold and rescue_snr go together")
    if not 0 < yolo.rescue_threshold <= 1:
        raise ModelCardError(f"{where}: rescue_threshold must lie in (0, 1]")
    if yolo.rescue_snr <= 0:
        raise ModelCardError(f"{where}: rescue_snr must be positive")
    if not yolo.measure:
        raise ModelCardError(f"{where}: rescue_threshold and rescue_snr need measure = true")


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a model card; raise `ModelCardError` naming the file and the field."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except OSError as exc:
        raise ModelCardError(f"{path}: cannot read model card ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelCardError(f"{path}: not valid TOML ({exc})") from exc
    return card_from_dict(raw, path)


def card_from_dict(raw: dict[str, Any], path: Path | None = None) -> ModelCard:
    """Build a card from parsed TOML; `path` (the card's location) resolves the weights file."""
    where = str(path) if path else "model card"
    reader = _Reader(raw, where)
    model = reader.table("model", required=True)
    name = model.string("name", required=True)
    family = model.string("family", required=True)
    if family not in ("yolo-cianna", "classic"):
        raise ModelCardError(f"{where}: [model] family must be 'yolo-cianna' or 'classic', not {family!r}")
    precision = model.string("default_precision", default="fp32")
    if precision not in PRECISIONS:
        raise ModelCardError(f"{where}: [model] default_precision must be one of {PRECISIONS}, not {precision!r}")

    weights_file: Path | None = None
    sha256: str | None = None
    input_bias = 0.1
    input_size: tuple[int, int] | None = None
    weights = reader.table("weights", required=family == "yolo-cianna")
    if weights.present:
        file_name = weights.string("file", required=True)
        base = path.parent if path else Path.cwd()
        weights_file = (base / file_name).resolve()
        sha256 = weights.string("sha256", default=None)
        if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256.lower())):
            raise ModelCardError(f"{where}: [weights] sha256 must be 64 hexadecimal digits")
        input_bias = weights.number("input_bias", default=0.1)
        if "input_size" in weights.raw:
            input_size = weights.pair("input_size")

    tiling = None
    tiling_table = reader.table("tiling", required=family == "yolo-cianna")
    if tiling_table.present:
        tiling = TilingSpec(
            patch_size=tiling_table.pair("patch_size", required=True),
            shift=tiling_table.pair("shift", required=True),
            offset=tiling_table.pair("offset", default=(0, 0)),
        )
        if min(tiling.patch_size) <= 0 or min(tiling.shift) <= 0:
            raise ModelCardError(f"{where}: [tiling] patch_size and shift must be positive")

    norm_table = reader.table("normalisation")
    normalisation = NormalisationSpec(
        function=norm_table.string("function", default="tanh"),
        clip_min=norm_table.number("clip_min", default=0.4e-6),
        clip_max=norm_table.number("clip_max", default=0.4e-4),
        scale=norm_table.number("scale", default=3.0),
        blank=norm_table.number("blank", default=None) if "blank" in norm_table.raw else None,
    )
    if normalisation.function not in NORMALISATIONS:
        raise ModelCardError(f"{where}: [normalisation] function must be one of {NORMALISATIONS}")
    if not normalisation.clip_max > normalisation.clip_min:
        raise ModelCardError(f"{where}: [normalisation] clip_max must be greater than clip_min")

    yolo = None
    yolo_table = reader.table("yolo", required=family == "yolo-cianna")
    if yolo_table.present:
        nb_box = int(yolo_table.number("nb_box", required=True))
        yolo = YoloSpec(
            nb_box=nb_box,
            nb_class=int(yolo_table.number("nb_class", default=0)),
            nb_param=int(yolo_table.number("nb_param", default=0)),
            priors_w=yolo_table.numbers("priors_w", length=nb_box),
            priors_h=yolo_table.numbers("priors_h", length=nb_box),
            objectness_thresholds=yolo_table.numbers("objectness_thresholds", length=nb_box),
            nms_threshold=yolo_table.number("nms_threshold", default=0.0),
            second_nms_threshold=yolo_table.number("second_nms_threshold", default=0.0),
            nms_type=yolo_table.string("nms_type", default="DIoU"),
            min_size=yolo_table.number("min_size", default=0.0),
            edge_margin=int(yolo_table.number("edge_margin", default=0)),
            nms_tiers=yolo_table.pairs("nms_tiers"),
            min_box_size=yolo_table.number("min_box_size", default=0.0),
            edge_penalty=yolo_table.number("edge_penalty", default=0.0),
            extended_filter=yolo_table.flag("extended_filter", default=False),
            extended_filter_tiers=yolo_table.pairs("extended_filter_tiers"),
            extended_filter_margin=yolo_table.number("extended_filter_margin", default=5.0),
            min_peak_snr=yolo_table.number("min_peak_snr", default=0.0),
            measure=yolo_table.flag("measure", default=False),
            deblend=yolo_table.flag("deblend", default=False),
            rescue_threshold=yolo_table.number("rescue_threshold", default=0.0),
            rescue_snr=yolo_table.number("rescue_snr", default=0.0),
        )
        _check_rescue(yolo, f"{where}: [yolo]")

    domain = _domain(reader.table("domain"), family)

    parameters = []
    for index, entry in enumerate(raw.get("parameters", []) or []):
        item = _Reader(entry, f"{where}: [[parameters]] #{index + 1}")
        spec = ParameterSpec(
            name=item.string("name", required=True),
            channels=tuple(int(c) for c in item.numbers("channels")),
            transform=item.string("transform", default="linear"),
            min=item.number("min", default=0.0),
            max=item.number("max", default=1.0),
            unit=item.string("unit", default=""),
            ucd=item.string("ucd", default=""),
            description=item.string("description", default=""),
        )
        if spec.transform not in PARAMETER_TRANSFORMS:
            raise ModelCardError(f"{item.where}: transform must be one of {PARAMETER_TRANSFORMS}")
        wanted = 2 if spec.transform == "pa_cos_sin" else 1
        if len(spec.channels) != wanted:
            raise ModelCardError(f"{item.where}: transform {spec.transform!r} takes {wanted} channel(s)")
        if yolo is not None and any(c < 0 or c >= yolo.nb_param for c in spec.channels):
            raise ModelCardError(f"{item.where}: channels must lie in 0..{yolo.nb_param - 1} (nb_param)")
        parameters.append(spec)

    classic = None
    classic_table = reader.table("classic", required=family == "classic")
    if classic_table.present:
        defaults = ClassicSpec()
        classic = ClassicSpec(
            threshold_sigma=classic_table.number("threshold_sigma", default=defaults.threshold_sigma),
            min_area=int(classic_table.number("min_area", default=defaults.min_area)),
            background_box=int(classic_table.number("background_box", default=defaults.background_box)),
            background_filter=int(classic_table.number("background_filter", default=defaults.background_filter)),
            deblend_nthresh=int(classic_table.number("deblend_nthresh", default=defaults.deblend_nthresh)),
            deblend_cont=classic_table.number("deblend_cont", default=defaults.deblend_cont),
            clean=bool(classic_table.raw.get("clean", defaults.clean)),
        )

    return ModelCard(
        name=name,
        version=model.string("version", default="0"),
        family=family,
        description=model.string("description", default=""),
        training_data=model.string("training_data", default=""),
        licence=model.string("licence", default=""),
        source_url=model.string("source_url", default=""),
        citation=model.string("citation", default=""),
        default_precision=precision,
        weights_file=weights_file,
        sha256=sha256.lower() if sha256 else None,
        input_bias=input_bias,
        input_size=input_size,
        channels=int(reader.table("input").number("channels", default=1)),
        tiling=tiling,
        normalisation=normalisation,
        yolo=yolo,
        parameters=tuple(parameters),
        classic=classic,
        domain=domain,
        card_path=path.resolve() if path else None,
        training=dict(raw.get("training", {}) or {}),
    )


def _domain(table: "_Reader", family: str) -> DomainSpec:
    """The ``[domain]`` table (see `DomainSpec`); absent: an undeclared absolute domain."""
    if not table.present:
        return DomainSpec()
    where = table.where
    convention = table.string("input", default="absolute")
    if convention not in INPUT_CONVENTIONS:
        raise ModelCardError(f"{where}: 'input' must be one of {INPUT_CONVENTIONS}, not {convention!r}")
    angles = table.string("angles", default="sky")
    if angles not in ANGLE_FRAMES:
        raise ModelCardError(f"{where}: 'angles' must be one of {ANGLE_FRAMES}, not {angles!r}")
    beam = table.number("beam_pixels", default=None) if "beam_pixels" in table.raw else None
    if beam is not None and not beam > 0:
        raise ModelCardError(f"{where}: 'beam_pixels' must be positive")
    beam_range = table.range("beam_pixels_range")
    if beam_range is not None and beam is not None and not beam_range[0] <= beam <= beam_range[1]:
        raise ModelCardError(f"{where}: 'beam_pixels' {beam} lies outside 'beam_pixels_range' {list(beam_range)}")
    if beam_range is not None and beam is None:
        raise ModelCardError(f"{where}: 'beam_pixels_range' needs 'beam_pixels' (the size images are resampled to)")
    noise_range = table.range("noise_range")
    if noise_range is not None and convention != "absolute":
        raise ModelCardError(f"{where}: 'noise_range' applies to absolute-input models only")
    return DomainSpec(input=convention, beam_pixels=float(beam) if beam is not None else None,
                      beam_pixels_range=beam_range, noise_range=noise_range, angles=angles, declared=True)


class _Reader:
    """Typed access to one TOML table with error messages that name the card and the key."""

    def __init__(self, raw: Any, where: str, present: bool = True) -> None:
        if raw is not None and not isinstance(raw, dict):
            raise ModelCardError(f"{where}: expected a table")
        self.raw: dict[str, Any] = raw or {}
        self.where = where
        self.present = present and raw is not None

    def table(self, key: str, required: bool = False) -> "_Reader":
        if key not in self.raw:
            if required:
                raise ModelCardError(f"{self.where}: missing table [{key}]")
            return _Reader(None, f"{self.where}: [{key}]", present=False)
        return _Reader(self.raw[key], f"{self.where}: [{key}]")

    def _get(self, key: str, required: bool, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if required:
            raise ModelCardError(f"{self.where}: missing key {key!r}")
        return default

    def string(self, key: str, required: bool = False, default: Any = "") -> Any:
        value = self._get(key, required, default)
        if value is not None and not isinstance(value, str):
            raise ModelCardError(f"{self.where}: {key!r} must be a string")
        return value

    def number(self, key: str, required: bool = False, default: Any = 0.0) -> Any:
        value = self._get(key, required, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ModelCardError(f"{self.where}: {key!r} must be a finite number")
        return float(value) if isinstance(value, float) else value

    def numbers(self, key: str, length: int | None = None) -> tuple[float, ...]:
        value = self._get(key, True, None)
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise ModelCardError(f"{self.where}: {key!r} must be a list of numbers")
        if length is not None and len(value) != length:
            raise ModelCardError(f"{self.where}: {key!r} must have {length} values, not {len(value)}")
        return tuple(value)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            raise ModelCardError(f"{self.where}: {key!r} must be true or false")
        return value

    def range(self, key: str) -> tuple[float, float] | None:
        """An optional ``[low, high]`` pair of positive numbers with low <= high."""
        if key not in self.raw:
            return None
        value = self.raw[key]
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                           for v in value) or value[0] > value[1]):
            raise ModelCardError(f"{self.where}: {key!r} must be [low, high] with 0 < low <= high")
        return (float(value[0]), float(value[1]))

    def pairs(self, key: str) -> tuple[tuple[float, float], ...]:
        """An optional list of [a, b] number pairs."""
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(
            isinstance(item, list) and len(item) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in item)
            for item in value
        ):
            raise ModelCardError(f"{self.where}: {key!r} must be a list of [number, number] pairs")
        return tuple((float(a), float(b)) for a, b in value)

    def pair(self, key: str, required: bool = False, default: Any = None) -> tuple[int, int]:
        value = self._get(key, required, default)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        if (
            isinstance(value, (list, tuple))
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return (int(value[0]), int(value[1]))
        raise ModelCardError(f"{self.where}: {key!r} must be an integer or a list [W, H] of integers")
