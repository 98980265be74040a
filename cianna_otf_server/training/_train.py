"""The training loop: time-budgeted, resumable, mixed precision on a GPU, validated as it goes.

A run trains for a wall-clock budget, then writes a checkpoint and (unless told not to) tunes
the detection settings and exports the model. A run resumed from a checkpoint continues the
step count, the learning-rate schedule (a function of the training time spent over all runs)
and the weight average, and draws skies it has never seen. Training time, not steps, sets the
schedule because the budget is what is known in advance.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from .. import __version__
from ..cianna import CiannaNetwork
from ..models._card import ModelCard
from ..pipeline._decode import decode_settings
from ..sky.simulate import SimulationOptions
from ._config import TUNING_SEED_BASE, TrainConfig, recipe_of
from ._data import TrainingStream, collate, validation_samples
from ._evaluate import validate
from ._export import DecodeChoice, export_model, inference_spec, yolo_spec
from ._loss import YoloLoss
from ._model import build_network, demo_spec, forward_raw
from ._tune import tune_decoding, tuning_images

__all__ = ["RunOptions", "TrainResult", "train", "load_checkpoint", "learning_rate"]

CHECKPOINT = "checkpoint.pt"


@dataclass
class RunOptions:
    """How one run (segment) of training is carried out; not part of what the model is."""

    out: Path
    device: str = "cpu"
    minutes: float = 5.0
    resume: Path | None = None
    init_weights: Path | None = None  # a CIANNA file (with its card beside it) to continue training from
    workers: int = 2
    max_steps: int | None = None
    log_every: int = 50
    validate_every_s: float = 60.0
    validation_skies: int = 8
    export: bool = True
    model_dir: Path | None = None
    tuning_images: int = 3
    tuning_size: int = 2048
    tuning_nms: tuple[float, ...] | None = None  # NMS candidates (None: the tuning's defaults)
    min_precision: float = 0.95
    command: str = ""


@dataclass
class TrainResult:
    """What a run produced."""

    step: int
    patches: int
    train_seconds: float
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    card: ModelCard | None = None


def learning_rate(config: TrainConfig, step: int, train_seconds: float) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``lr_final`` over ``schedule_minutes``."""
    warm = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    progress = min(1.0, train_seconds / max(config.schedule_minutes * 60.0, 1e-9))
    cosine = config.lr_final + 0.5 * (config.lr - config.lr_final) * (1.0 + math.cos(math.pi * progress))
    return warm * cosine


@dataclass
class PriorTraining:
    """A shipped model to continue training from, with what its card says it was trained on."""

    network: CiannaNetwork
    record: dict[str, Any]


def load_prior(path: str | Path) -> PriorTraining:
    """The network in a CIANNA file and the training record of the card beside it.

    Continuing from a model keeps the card honest: the new card counts the earlier patches,
    steps, minutes and commands too (`prior_training`), not only this run's.
    """
    from ..cianna import read_model_file
    from ..models._card import load_card

    path = Path(path)
    card_path = path.with_suffix(".toml")
    if not card_path.is_file():
        raise FileNotFoundError(f"{path}: no card {card_path.name} beside it to say how it was trained")
    training = load_card(card_path).training
    network = CiannaNetwork(read_model_file(path), input_bias=0.1, norm_activation="cuda")
    record = {"model": path.name, "sha256": _sha256(path), "commands": list(training.get("commands", [])),
              "steps": int(training.get("steps", 0)), "patches": int(training.get("patches", 0)),
              "train_minutes": float(training.get("train_minutes", 0.0)), "date": training.get("date", ""),
              "device": training.get("device", "")}
    return PriorTraining(network, record)


def prior_training(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the model this training continued from (`load_prior`), if any."""
    return next((h["initialised_from"] for h in history if "initialised_from" in h), None)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `train` (on the CPU, whatever device wrote it)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)


@torch.no_grad()
def _update_average(average: CiannaNetwork, net: CiannaNetwork, decay: float) -> None:
    for mine, theirs in zip(average.parameters(), net.parameters()):
        mine.lerp_(theirs.detach(), 1.0 - decay)


def train(config: TrainConfig, options: RunOptions, log: Callable[[str], None] = print) -> TrainResult:
    """Train (or resume), checkpoint, and export; see the module docs."""
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(options.device)
    state = load_checkpoint(options.resume) if options.resume else None
    if state is not None:
        config = TrainConfig.from_dict(state["config"])
    torch.manual_seed(config.seed)
    spec = demo_spec(config.architecture, config.patch_size, seed=config.seed,
                     objectness_max=recipe_of(config).objectness_max)
    net = build_network(spec, device)
    average = copy.deepcopy(net)
    for p in average.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, patches, train_seconds, segment = 0, 0, 0.0, 0
    history: list[dict[str, Any]] = []
    commands: list[str] = []
    if state is not None:
        net.load_state_dict(state["model"])
        average.load_state_dict(state["average"])
        optimiser.load_state_dict(state["optimiser"])
        step, patches, train_seconds = state["step"], state["patches"], state["train_seconds"]
        segment = state["segment"] + 1
        history, commands = state["history"], state["commands"]
        log(f"resumed from {options.resume}: step {step}, {train_seconds / 60:.1f} min trained")
    elif options.init_weights is not None:
        prior = load_prior(options.init_weights)
        net.load_state_dict(prior.network.state_dict())
        average.load_state_dict(prior.network.state_dict())
        history.append({"initialised_from": prior.record})
        log(f"weights from {options.init_weights}: {prior.record['patches']:,} patches in "
            f"{prior.record['train_minutes']:g} min before this run")
    commands.append(options.command)
    head = net.yolo
    cell = config.patch_size // net.output_grid[0]
    loss_fn = YoloLoss(head, cell, config.loss, config.targets.ignore_iou)
    probe = yolo_spec(head, DecodeChoice())
    settings = decode_settings(probe)
    recipe = recipe_of(config)
    validation = validation_samples(config, head, cell, recipe.normalisation, options.validation_skies)
    log(f"{sum(p.numel() for p in net.parameters()):,} parameters; {len(validation)} validation patches; "
        f"device {device}; {options.workers} data workers")

    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    stream = TrainingStream(config, head, cell, recipe.normalisation, segment=segment)
    loader = DataLoader(stream, batch_size=config.batch_size, num_workers=options.workers, collate_fn=collate,
                        pin_memory=on_gpu, prefetch_factor=4 if options.workers else None,
                        persistent_workers=False)
    net.train()
    start = time.perf_counter()
    last_log, last_validation = start, start
    patches_at_log = patches
    running: dict[str, torch.Tensor] = {}
    run_steps = counted = 0
    waited, step_end = 0.0, time.perf_counter()
    for images, targets, corners in loader:
        waited += time.perf_counter() - step_end  # time the GPU may have idled for want of data
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        corners = corners.to(device, non_blocking=True)
        if on_gpu:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = learning_rate(config, step, train_seconds + time.perf_counter() - start)
        for group in optimiser.param_groups:
            group["lr"] = lr
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=on_gpu):
            raw = forward_raw(net, images)
        parts = loss_fn(raw.float(), targets, corners)
        optimiser.zero_grad(set_to_none=True)
        parts.total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimiser.step()
        _update_average(average, net, min(config.ema_decay, (1.0 + step) / (10.0 + step)))
        step += 1
        run_steps += 1
        patches += images.shape[0]
        for key, value in {"loss": parts.total.detach(), **parts.terms}.items():
            running[key] = running.get(key, 0.0) + value
        counted += 1
        now = time.perf_counter()
        done = now - start >= options.minutes * 60.0 or (options.max_steps is not None and run_steps >= options.max_steps)
        if step % options.log_every == 0 or done:
            rate = (patches - patches_at_log) / max(now - last_log, 1e-9)
            means = {k: float(v) / counted for k, v in running.items()}
            wait = waited / max(now - last_log, 1e-9)
            log(f"step {step} | {(train_seconds + now - start) / 60:.2f} min | {rate:.0f} patches/s | "
                f"data wait {100 * wait:.0f}% | lr {lr:.2e} | " + " ".join(f"{k} {v:.4f}" for k, v in means.items()))
            running, counted, last_log, patches_at_log, waited = {}, 0, now, patches, 0.0
            history.append({"step": step, "minutes": (train_seconds + now - start) / 60, "patches_per_s": rate,
                            "data_wait": wait, **means})
        if now - last_validation >= options.validate_every_s or done:
            metrics = validate(average, validation, loss_fn, probe, settings)
            history.append({"step": step, "validation": metrics})
            log(f"validation at step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            last_validation = time.perf_counter()
            start_pause = last_validation
            _save(out / CHECKPOINT, config, net, average, optimiser, step, patches,
                  train_seconds + start_pause - start, segment, history, commands)
            start += time.perf_counter() - start_pause  # checkpoint writing is not training time
        if done:
            break
        step_end = time.perf_counter()
    train_seconds += time.perf_counter() - start
    checkpoint = _save(out / CHECKPOINT, config, net, average, optimiser, step, patches, train_seconds, segment,
                       history, commands)
    log(f"trained {run_steps} steps in this run ({step} in all, {patches:,} patches, "
        f"{train_seconds / 60:.2f} min); checkpoint {checkpoint}")
    result = TrainResult(step, patches, train_seconds, checkpoint, history)
    if options.export:
        result.card = finish(config, average, options, step=step, patches=patches, train_seconds=train_seconds,
                             history=history, commands=commands, device=str(device), log=log)
    return result


def _save(path: Path, config: TrainConfig, net: CiannaNetwork, average: CiannaNetwork, optimiser: Any, step: int,
          patches: int, train_seconds: float, segment: int, history: list, commands: list) -> Path:
    temporary = path.with_suffix(".tmp")
    torch.save({"config": config.to_dict(), "model": net.state_dict(), "average": average.state_dict(),
                "optimiser": optimiser.state_dict(), "step": step, "patches": patches,
                "train_seconds": train_seconds, "segment": segment, "history": history, "commands": commands},
               temporary)
    temporary.replace(path)
    return path


def finish(config: TrainConfig, average: CiannaNetwork, options: RunOptions, *, step: int, patches: int,
           train_seconds: float, history: list, commands: list, device: str,
           log: Callable[[str], None] = print) -> ModelCard:
    """Tune the detection settings on held-out images and export the averaged weights with their card."""
    model_dir = Path(options.model_dir or Path(options.out) / "model")
    model_dir.mkdir(parents=True, exist_ok=True)
    runtime = CiannaNetwork(inference_spec(average, config.inference_patch)).eval()
    runtime.to(next(average.parameters()).device)
    probe_card = export_model(runtime, model_dir, config=config, choice=DecodeChoice(), version="tuning",
                              description="", training_data="", training={})
    seeds = [TUNING_SEED_BASE + k for k in range(options.tuning_images)]
    images = tuning_images(seeds, options.tuning_size, config)
    grid = {"nms_values": options.tuning_nms} if options.tuning_nms else {}
    choice, rows = tune_decoding(runtime, probe_card, images, min_precision=options.min_precision, log=log, **grid)
    chosen = next(r for r in rows if r["threshold"] == choice.threshold and r["nms"] == choice.nms
                  and r["min_peak_snr"] == choice.min_peak_snr)
    log(f"chosen: threshold {choice.threshold} nms {choice.nms} min peak snr {choice.min_peak_snr}: "
        f"precision {chosen['precision']:.3f} "
        f"recall {chosen['recall']:.3f} F1 {chosen['f1']:.3f}")
    (model_dir / "tuning.json").write_text(json.dumps({"chosen": chosen, "candidates": rows}, indent=1) + "\n")
    simulation = {k: v for k, v in SimulationOptions.from_kwargs(dict(config.simulation)).__dict__.items()
                  if v is not None}
    n_params = sum(p.numel() for p in average.parameters())
    prior = prior_training(history) or {"commands": [], "steps": 0, "patches": 0, "train_minutes": 0.0}
    description, training_data = describe(config, n_params, prior["patches"] + patches, simulation)
    validation = [h["validation"] for h in history if "validation" in h]
    training = {
        "framework": f"PyTorch {torch.__version__} (cianna_otf_server.training), bf16 autocast on GPU",
        "commands": [*prior["commands"], *(c for c in commands if c)],
        "seed": config.seed,
        "steps": prior["steps"] + step,
        "patches": prior["patches"] + patches,
        "batch_size": config.batch_size,
        "train_minutes": round(prior["train_minutes"] + train_seconds / 60.0, 2),
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"),
        "optimiser": f"AdamW lr {config.lr:g} (warm-up {config.warmup_steps} steps, cosine to {config.lr_final:g} "
                     f"over {config.schedule_minutes:g} min), weight decay {config.weight_decay:g}, "
                     f"weights averaged (EMA {config.ema_decay})",
        "parameters": n_params,
        "training_patch": config.patch_size,
        "validation_seeds": f"{config.sky_size}x{config.sky_size} skies, seeds 2000000+k",
        "tuning_seeds": seeds,
        "tuning_size": options.tuning_size,
        "tuned_precision": round(chosen["precision"], 4),
        "tuned_recall": round(chosen["recall"], 4),
        "tuned_recall_snr5": round(chosen["recall_snr5"], 4),
        "tuned_min_precision": options.min_precision,
        "recipe": config.recipe,
        "simulation": ({"random_domain": "cianna_otf_server.sky.simulate.random_domain(rng, size=sky_size) per sky",
                        **{k: v for k, v in config.simulation.items() if isinstance(v, (int, float, bool, str))}}
                       if recipe_of(config).randomised else
                       {k: v for k, v in simulation.items() if isinstance(v, (int, float, bool, str))}),
    }
    if "model" in prior:
        training["continued_from"] = {k: prior[k] for k in ("model", "sha256", "steps", "patches", "train_minutes",
                                                            "date", "device")}
    if validation:
        training["final_validation"] = {k: round(v, 4) for k, v in validation[-1].items() if math.isfinite(v)}
    card = export_model(runtime, model_dir, config=config, choice=choice, version=recipe_of(config).version,
                        description=description, training_data=training_data, training=training)
    log(f"exported {card.name} to {model_dir} ({platform.node() or 'this machine'})")
    return card


def describe(config: TrainConfig, n_params: int, patches: int, simulation: dict[str, Any]) -> tuple[str, str]:
    """The card's description and training-data texts, honest about what the network saw."""
    arch = config.architecture
    network = (f"A small member of the SDC1 network family ({n_params:,} parameters: 5x5 stem of {arch.stem} "
               f"filters, 4 stride-2 stages of widths {list(arch.widths)} with {arch.depth} (1x1, 3x3) pairs each, "
               "one group normalisation, the SDC1 YOLO head with 9 priors on a 16-pixel grid)")
    recipe = recipe_of(config)
    if recipe.domain.input == "snr":
        low, high = recipe.domain.beam_pixels_range or (0.0, 0.0)
        description = (
            "Demonstration YOLO-CIANNA detector for radio continuum images of any survey. It reads the image in "
            "signal-to-noise units (image minus background over the local rms of the pipeline's noise map), so "
            "the brightness unit, depth and telescope do not matter, and it was trained on beams spanning "
            f"{low:g}-{high:g} pixels (other images are resampled so that the beam spans "
            f"{recipe.domain.beam_pixels:g}). {network} that predicts per box an objectness, the integrated flux "
            "in units of the local rms times the beam (turned into Jy through the noise map and the image unit), "
            "and the apparent (beam-convolved) shape. Trained from scratch on randomised simulated skies; "
            "its thresholds were tuned on held-out randomised skies. A demonstration, not a science-grade "
            "detector: see the generalisation benchmark in the README for what it does on unseen and real images."
        )
        training_data = (
            f"Simulated skies from cianna_otf_server.sky.simulate (cianna-otf {__version__}), each of a random domain "
            f"drawn by simulate.random_domain: {config.sky_size}x{config.sky_size} px, pixel scales 0.5-10 arcsec, "
            f"beam major axes {low:g}-{high:g} px (axis ratio 0.5-1, any position angle), noise 1e-6 to 1e-2 "
            "Jy/beam correlated like the beam (85%) or white, smooth noise variations and primary-beam rises, "
            "sidelobe spokes and rings around bright sources (half the skies), FR I/FR II-like doubles "
            "(up to 15%), NaN blanks and primary-beam cuts (30%), densities from empty fields to about the "
            "confusion level, point and resolved Gaussian sources with power-law counts up to 2e3-2e4 sigma. "
            f"A fresh sky for every {config.crops_per_sky} patches of {config.patch_size}x{config.patch_size} px "
            f"({patches:,} patches in all). Targets: every true source of peak SNR >= {config.targets.min_snr:g} "
            "(a double is one source); fainter ones are ignored. Never trained on real images, nor on any "
            "image with a beam outside the range above."
        )
        return description, training_data
    description = (
        "Demonstration YOLO-CIANNA detector for SDC1-like radio continuum images (0.6 arcsec pixels, "
        "1.5 arcsec beam, ~3e-7 Jy/beam noise), trained from scratch on skies made by the built-in simulator "
        f"(cianna-otf simulate). {network} that predicts per box an objectness, the integrated flux "
        "density and the intrinsic shape (major and minor axis, position angle). It reads absolute brightness "
        "(Jy/beam) and so only suits images of that beam and depth. Its thresholds were tuned on held-out "
        "simulated images; on real images it is a demonstration, not a science-grade detector."
    )
    opts_text = ", ".join(f"{k}={v}" for k, v in simulation.items())
    training_data = (
        f"Simulated skies from cianna_otf_server.sky.simulate (cianna-otf {__version__}): {config.sky_size}x"
        f"{config.sky_size} px images, a fresh random sky for every {config.crops_per_sky} patches of "
        f"{config.patch_size}x{config.patch_size} px ({patches:,} patches in all), SimulationOptions({opts_text}). "
        f"Targets: every true source of peak SNR >= {config.targets.min_snr:g}; fainter ones are ignored."
    )
    return description, training_data
