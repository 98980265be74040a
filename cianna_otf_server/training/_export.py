"""Write a trained network as a model the registry serves: CIANNA weights file + TOML card.

The card is generated from the same records the training used (`TrainConfig` and its `Recipe`:
normalisation, parameters, domain), so tiling, normalisation, parameter transforms and the
declared domain cannot drift from what the network learnt. Its ``sha256`` is that of the file just written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cianna import CiannaNetwork, ConvLayer, NetworkSpec, compute_shapes, save_network
from ..models._card import ModelCard, ParameterSpec, YoloSpec, load_card
from ._config import TrainConfig, recipe_of

__all__ = ["DecodeChoice", "yolo_spec", "inference_spec", "export_model", "card_text"]

MODEL_NAME = "yolo-demo"


@dataclass(frozen=True)
class DecodeChoice:
    """Detection settings written into the card (tuned on held-out images by `tune_decoding`)."""

    threshold: float = 0.5
    nms: float = 0.0
    second_nms: float = 0.0
    min_peak_snr: float = 0.0


def yolo_spec(net_head: Any, choice: DecodeChoice, edge_margin: int = 0, measure: bool = False,
              deblend: bool = False, rescue: tuple[float, float] | None = None) -> YoloSpec:
    """The card's ``[yolo]`` table for a head and detection settings.

    ``edge_margin`` is half the overlap of neighbouring patches: then every place of an overlap
    is trusted to exactly one patch (the one that sees it further from its side), so a source
    seen by two patches is reported once even when both are equally sure of it, where the
    second NMS, which needs a strictly higher objectness, would keep both.
    """
    return YoloSpec(
        nb_box=int(net_head.nb_box), nb_class=int(net_head.nb_class), nb_param=int(net_head.nb_param),
        priors_w=tuple(float(v) for v in net_head.priors[0]),
        priors_h=tuple(float(v) for v in net_head.priors[1]),
        objectness_thresholds=(float(choice.threshold),) * int(net_head.nb_box),
        nms_threshold=float(choice.nms), second_nms_threshold=float(choice.second_nms),
        edge_margin=int(edge_margin), min_peak_snr=float(choice.min_peak_snr), measure=bool(measure),
        deblend=bool(deblend),
        rescue_threshold=float(rescue[0]) if rescue else 0.0, rescue_snr=float(rescue[1]) if rescue else 0.0,
    )


def inference_spec(net: CiannaNetwork, patch: int) -> NetworkSpec:
    """The network's current weights as a spec whose input is the inference patch.

    The network is fully convolutional, so the weights trained on small patches run unchanged
    on larger ones; only the stored input size (and each conv's informative input size) changes.
    """
    spec = net.to_spec()  # a copy
    channels = int(spec.in_dims[3])
    spec.in_dims = (int(patch), int(patch), 1, channels)
    spec.source = None
    shapes = compute_shapes(spec)  # raises if the patch does not fit the architecture
    sizes = [(int(patch), int(patch), 1)] + [(s.width, s.height, s.depth) for s in shapes[:-1]]
    depths = [channels] + [s.channels for s in shapes[:-1]]
    for layer, size, depth in zip(spec.layers, sizes, depths):
        if isinstance(layer, ConvLayer):
            layer.prev_size, layer.prev_depth = size, depth
    return spec


def _toml_value(value: Any) -> str:
    """A TOML literal for strings, numbers, booleans and (nested) lists; dicts are not expected here."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, int) else repr(float(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        return '""'
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _parameter_table(spec: ParameterSpec) -> str:
    lines = ["[[parameters]]", f"name = {_toml_value(spec.name)}", f"channels = {_toml_value(list(spec.channels))}",
             f"transform = {_toml_value(spec.transform)}"]
    if spec.transform != "pa_cos_sin":
        lines += [f"min = {_toml_value(spec.min)}", f"max = {_toml_value(spec.max)}"]
    lines += [f"unit = {_toml_value(spec.unit)}", f"ucd = {_toml_value(spec.ucd)}",
              f"description = {_toml_value(spec.description)}"]
    return "\n".join(lines)


def _domain_lines(domain: Any) -> list[str]:
    """The card's ``[domain]`` table (nothing for an undeclared domain)."""
    if not domain.declared:
        return []
    lines = ["[domain]", f"input = {_toml_value(domain.input)}"]
    if domain.beam_pixels is not None:
        lines.append(f"beam_pixels = {_toml_value(domain.beam_pixels)}")
    if domain.beam_pixels_range is not None:
        lines.append(f"beam_pixels_range = {_toml_value(list(domain.beam_pixels_range))}")
    if domain.noise_range is not None:
        lines.append(f"noise_range = {_toml_value(list(domain.noise_range))}")
    lines += [f"angles = {_toml_value(domain.angles)}", ""]
    return lines


def card_text(*, weights_file: str, sha256: str, config: TrainConfig, yolo: YoloSpec, version: str,
              description: str, training_data: str, training: dict[str, Any]) -> str:
    """The model card of the demo model as TOML text."""
    recipe = recipe_of(config)
    norm = recipe.normalisation
    flat_training = {k: v for k, v in training.items() if not isinstance(v, dict)}
    lines = [
        "# Demonstration YOLO-CIANNA model trained on simulated skies; written by cianna_otf_server.training.",
        "[model]",
        f"name = {_toml_value(MODEL_NAME)}",
        f"version = {_toml_value(version)}",
        'family = "yolo-cianna"',
        f"description = {_toml_value(description)}",
        f"training_data = {_toml_value(training_data)}",
        'licence = "Apache-2.0"',
        'source_url = ""',
        'citation = "Cornu et al. 2024, A&A 690, A211 (YOLO-CIANNA), for the method"',
        'default_precision = "fp32"',
        "",
        "[weights]",
        f"file = {_toml_value(weights_file)}",
        f"sha256 = {_toml_value(sha256)}",
        "input_bias = 0.1",
        "",
        "[input]",
        "channels = 1",
        "",
        "[tiling]",
        f"patch_size = {config.inference_patch}",
        f"shift = {config.inference_shift}",
        f"offset = {config.inference_offset}",
        "",
        "[normalisation]",
        f"function = {_toml_value(norm.function)}",
        f"clip_min = {_toml_value(norm.clip_min)}",
        f"clip_max = {_toml_value(norm.clip_max)}",
        f"scale = {_toml_value(norm.scale)}",
        *([f"blank = {_toml_value(norm.blank)}"] if norm.blank is not None else []),
        "",
        *_domain_lines(recipe.domain),
        "[yolo]",
        f"nb_box = {yolo.nb_box}",
        f"nb_class = {yolo.nb_class}",
        f"nb_param = {yolo.nb_param}",
        f"priors_w = {_toml_value(list(yolo.priors_w))}",
        f"priors_h = {_toml_value(list(yolo.priors_h))}",
        f"objectness_thresholds = {_toml_value([round(t, 4) for t in yolo.objectness_thresholds])}",
        f"nms_threshold = {_toml_value(yolo.nms_threshold)}",
        f"second_nms_threshold = {_toml_value(yolo.second_nms_threshold)}",
        'nms_type = "DIoU"',
        "min_size = 0",
        f"edge_margin = {yolo.edge_margin}",
        *([f"min_peak_snr = {_toml_value(yolo.min_peak_snr)}"] if yolo.min_peak_snr > 0 else []),
        *(["measure = true"] if yolo.measure else []),
        *(["deblend = true"] if yolo.deblend else []),
        *([f"rescue_threshold = {_toml_value(yolo.rescue_threshold)}", f"rescue_snr = {_toml_value(yolo.rescue_snr)}"]
          if yolo.rescues else []),
        "",
        *[_parameter_table(p) + "\n" for p in recipe.parameters],
        "[training]",
        *[f"{key} = {_toml_value(value)}" for key, value in flat_training.items()],
        "",
    ]
    for key, value in training.items():
        if isinstance(value, dict):
            lines.append(f"[training.{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items() if not isinstance(v, dict)]
            lines.append("")
    return "\n".join(lines)


def export_model(net: CiannaNetwork, directory: str | Path, *, config: TrainConfig, choice: DecodeChoice,
                 version: str, description: str, training_data: str, training: dict[str, Any]) -> ModelCard:
    """Write ``yolo-demo.dat`` and ``yolo-demo.toml`` into `directory` and return the loaded card."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{MODEL_NAME}.dat"
    save_network(inference_spec(net, config.inference_patch), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    head = net.yolo
    margin = (config.inference_patch - config.inference_shift) // 2
    recipe = recipe_of(config)
    yolo = yolo_spec(head, choice, margin, measure=recipe.measure, deblend=recipe.deblend, rescue=recipe.rescue)
    text = card_text(weights_file=weights.name, sha256=sha, config=config, yolo=yolo,
                     version=version, description=description, training_data=training_data, training=training)
    card_path = directory / f"{MODEL_NAME}.toml"
    card_path.write_text(text, encoding="utf-8")
    return load_card(card_path)
