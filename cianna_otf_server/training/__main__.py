"""``python -m cianna_otf_server.training``: train, resume, or export the demo YOLO-CIANNA model.

Examples::

    python -m cianna_otf_server.training --out runs/demo --seed 1 --minutes 8 --device cuda
    python -m cianna_otf_server.training --out runs/demo --minutes 6 --device cuda --resume runs/demo/checkpoint.pt
    python -m cianna_otf_server.training --out runs/demo --resume runs/demo/checkpoint.pt --export-only
    python -m cianna_otf_server.training --out runs/more --init-weights cianna_otf_server/models/builtin/yolo-demo.dat \
        --lr 5e-4 --minutes 8 --device cuda
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ._config import RECIPES, TrainConfig, recipe_of


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cianna_otf_server.training",
                                     description="Train the demo YOLO-CIANNA model on simulated skies.")
    parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoint, log and model")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="snr",
                        help="what the network reads: 'snr' (signal-to-noise, randomised skies: yolo-demo 2) or "
                        "'absolute' (Jy/beam, SDC1-like skies: yolo-demo 1); a resumed run keeps its checkpoint's")
    parser.add_argument("--seed", type=int, default=1, help="seed of the weights and of the training skies (a resumed run keeps its checkpoint's)")
    parser.add_argument("--minutes", type=float, default=5.0, help="training time of this run")
    parser.add_argument("--schedule-minutes", type=float, default=None,
                        help="training time over all runs that the learning-rate schedule spans (default: --minutes; "
                             "a resumed run keeps its checkpoint's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--resume", type=Path, default=None, help="checkpoint to continue from")
    parser.add_argument("--init-weights", type=Path, default=None, metavar="MODEL.dat",
                        help="start from the weights of a model (its card beside it), e.g. the shipped yolo-demo, "
                             "with a fresh optimiser and schedule; the new card counts the earlier training too")
    parser.add_argument("--workers", type=int, default=None, help="data worker processes (default: CPUs - 2)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW)")
    parser.add_argument("--crops-per-sky", type=int, default=None, dest="crops_per_sky",
                        help="training patches cut from each simulated sky (default 24)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop this run after so many steps")
    parser.add_argument("--validate-every", type=float, default=60.0, help="seconds between validations")
    parser.add_argument("--no-export", action="store_true", help="only train and checkpoint")
    parser.add_argument("--export-only", action="store_true", help="with --resume: tune and export, no training")
    parser.add_argument("--model-dir", type=Path, default=None, help="where the model goes (default: OUT/model)")
    parser.add_argument("--tuning-images", type=int, default=3, help="held-out images for the thresholds")
    parser.add_argument("--tuning-size", type=int, default=2048, help="side of the held-out images, pixels")
    parser.add_argument("--tuning-nms", type=float, nargs="+", default=None, metavar="T",
                        help="NMS thresholds tried by the tuning (default -0.3 -0.15 0 0.15)")
    parser.add_argument("--min-precision", type=float, default=0.95, help="precision the thresholds must reach")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse at once what would otherwise fail minutes later, or silently mean something else."""
    for name in ("minutes", "schedule_minutes", "batch_size", "lr", "max_steps", "validate_every", "workers",
                 "tuning_size", "crops_per_sky"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, not {value}")
    if args.tuning_images < 0:
        parser.error(f"--tuning-images must be 0 or more, not {args.tuning_images}")
    if args.resume is not None and not args.resume.is_file():
        parser.error(f"--resume: no checkpoint at {args.resume}")
    if args.init_weights is not None:
        if args.resume is not None:
            parser.error("--init-weights starts a new run; a resumed one has its weights in its checkpoint")
        if not args.init_weights.is_file() or not args.init_weights.with_suffix(".toml").is_file():
            parser.error(f"--init-weights: needs a model file and its card beside it, not {args.init_weights}")
    if args.export_only and args.resume is None:
        parser.error("--export-only needs --resume CHECKPOINT")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this PyTorch sees no CUDA GPU")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    from ._train import RunOptions, finish, load_checkpoint, train
    from ._model import build_network, demo_spec

    command = "python -m cianna_otf_server.training " + shlex.join(sys.argv[1:] if argv is None else argv)
    options = RunOptions(
        out=args.out, device=args.device, minutes=args.minutes, resume=args.resume,
        init_weights=args.init_weights,
        workers=args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 2),
        max_steps=args.max_steps, validate_every_s=args.validate_every, export=not args.no_export,
        model_dir=args.model_dir, tuning_images=args.tuning_images, tuning_size=args.tuning_size,
        tuning_nms=tuple(args.tuning_nms) if args.tuning_nms else None,
        min_precision=args.min_precision,
        command=command,
    )
    if args.export_only:
        state = load_checkpoint(args.resume)
        config = TrainConfig.from_dict(state["config"])
        spec = demo_spec(config.architecture, config.patch_size, seed=config.seed,
                         objectness_max=recipe_of(config).objectness_max)
        average = build_network(spec, args.device)
        average.load_state_dict(state["average"])
        finish(config, average, options, step=state["step"], patches=state["patches"],
               train_seconds=state["train_seconds"], history=state["history"], commands=[*state["commands"], command],
               device=args.device)
        return 0
    config = TrainConfig(seed=args.seed, recipe=args.recipe)
    changes = {}
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.crops_per_sky is not None:
        changes["crops_per_sky"] = args.crops_per_sky
    changes["schedule_minutes"] = args.schedule_minutes or args.minutes
    config = replace(config, **changes)
    train(config, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
