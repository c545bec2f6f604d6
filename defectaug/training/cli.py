"""``defectaug train``: train a learned defect generator on real defect crops;
``defectaug convert-checkpoint``: turn an old pickle checkpoint into the safetensors + JSON one.

Registered by ``defectaug/cli.py`` through ``add_train_parser`` and
``add_convert_checkpoint_parser``; ``train`` also runs on its own as
``python -m defectaug.training ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from defectaug._argparse import HelpFormatter
from defectaug.training import memory
from defectaug.training.card import training_card
from defectaug.training.checkpoint import convert_legacy_checkpoint
from defectaug.training.trainer import (
    CHECKPOINT_NAME,
    CHECKPOINT_TENSORS,
    TRAINERS,
    TrainConfig,
    check_device,
)


def _int(text: str, low: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def _non_negative_int(text: str) -> int:
    return _int(text, 0, "an integer >= 0")


def _every(text: str) -> int:
    return _int(text, 0, "0 (only at the end) or a positive number of steps")


def _float(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "a positive number" if positive else "a number >= 0"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _float(text, positive=True)


def _non_negative_float(text: str) -> float:
    return _float(text, positive=False)


def configure_train_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument(
        "--arch", choices=sorted(TRAINERS), default="dcdgan", help="architecture to train"
    )
    parser.add_argument(
        "--data", required=True, help="dataset root (MVTec-style folders or a manifest.csv)"
    )
    parser.add_argument("--split", default="train", help="split to train on (default: train)")
    parser.add_argument(
        "--types", required=True, help="comma-separated defect types, e.g. crack,fray"
    )
    parser.add_argument(
        "--layer-size", type=_positive_int, default=64, help="side of generated layers (px)"
    )
    parser.add_argument(
        "--out", required=True, help="output folder (checkpoints, samples, final model)"
    )
    parser.add_argument(
        "--iters", type=_positive_int, default=TrainConfig.iterations, help="training steps"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=TrainConfig.batch_size,
        help="crops per step (capped at the number of training crops)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole run")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help=(
            f"resume bit-exactly from a run folder (default: OUT) or its {CHECKPOINT_NAME}; the "
            "settings must match the checkpoint's (--iters may grow)"
        ),
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_every,
        default=250,
        help="steps between checkpoints (0: end only)",
    )
    parser.add_argument(
        "--sample-every", type=_every, default=250, help="steps between sample grids (0: end only)"
    )
    parser.add_argument(
        "--time-budget-min",
        type=_positive_float,
        default=None,
        help="stop (and export) after this many minutes of training even if --iters is not reached",
    )
    parser.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="feature channels at full resolution (default: the architecture's)",
    )
    parser.add_argument(
        "--max-width",
        type=_positive_int,
        default=None,
        help="cap on feature channels (default: the architecture's)",
    )
    parser.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=None,
        help="size of the style code z (default: the architecture's)",
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=TrainConfig.lr, help="Adam learning rate"
    )
    parser.add_argument(
        "--adversarial-weight",
        type=_non_negative_float,
        default=TrainConfig.adversarial_weight,
        help="weight of the adversarial term in the generator/encoder loss",
    )
    parser.add_argument(
        "--adversarial-warmup",
        type=_non_negative_int,
        default=TrainConfig.adversarial_warmup,
        help="steps over which the adversarial weight ramps up from 0",
    )
    parser.add_argument(
        "--gp-weight",
        type=_non_negative_float,
        default=None,
        help="weight of the critic's gradient penalty (WGAN-GP for dcdgan and defectgan, R1 "
        "gamma for dfmgan; default: the architecture's, 10 or dfmgan's 0.0002 * size^2 / batch)",
    )
    parser.add_argument(
        "--margin",
        type=_non_negative_int,
        default=4,
        help="pixels of context around each defect region (dcdgan; defectgan windows get a "
        "border of 8%% of the region's side)",
    )
    parser.add_argument(
        "--min-area",
        type=_non_negative_int,
        default=16,
        help="drop defect regions smaller than this (px)",
    )
    parser.add_argument(
        "--stage",
        type=int,
        choices=(1, 2),
        default=None,
        help="dfmgan only: 1 trains the backbone on the normal images, 2 the defect-aware "
        "blocks on the defects (default 1)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="dfmgan --stage 2 only: the stage-1 run folder (or its checkpoint) to start from",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: torch's own choice)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)
    return parser


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``argparse`` sub-parser collection (``defectaug train``)."""
    parser = subparsers.add_parser(
        "train",
        help="train a learned defect generator on real defect crops",
        description="Train a learned defect generator on real defect crops.",
        formatter_class=HelpFormatter,
    )
    return configure_train_parser(parser)


def add_convert_checkpoint_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``convert-checkpoint`` (``defectaug convert-checkpoint OLD.pt OUT_DIR``)."""
    parser = subparsers.add_parser(
        "convert-checkpoint",
        help="convert an old pickle training checkpoint (checkpoint.pt) to safetensors + JSON",
        description=(
            "Read an old defectaug training checkpoint with torch's weights_only loader (plain "
            f"tensors and containers only; anything else is refused) and write {CHECKPOINT_NAME} "
            f"+ {CHECKPOINT_TENSORS} into OUT_DIR, which `defectaug train --resume` then reads."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("old", metavar="OLD.pt", help="the old checkpoint file")
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="folder to write the checkpoint into (e.g. the run)"
    )
    parser.set_defaults(func=run_convert_checkpoint)
    return parser


def run_convert_checkpoint(args: argparse.Namespace) -> int:
    written = convert_legacy_checkpoint(args.old, args.out_dir)
    print(
        f"wrote {written} and {written.with_name(CHECKPOINT_TENSORS)}; resume with "
        f"defectaug train ... --resume {args.out_dir}",
        file=sys.stderr,
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    types = [name.strip() for name in args.types.split(",") if name.strip()]
    if not types:
        raise ValueError("--types: expected at least one defect type")
    device = check_device(args.device, "--device")
    architecture = {
        key: value
        for key, value in (
            ("width", args.width),
            ("max_width", args.max_width),
            ("latent_dim", args.latent_dim),
        )
        if value is not None
    }
    trainer_class = TRAINERS[args.arch]
    config = TrainConfig(
        iterations=args.iters,
        batch_size=args.batch_size,
        seed=args.seed,
        lr=args.lr,
        adversarial_weight=args.adversarial_weight,
        adversarial_warmup=args.adversarial_warmup,
        gp_weight=args.gp_weight
        if args.gp_weight is not None
        else trainer_class.default_gp_weight(args.layer_size, args.batch_size),
        architecture=architecture,
    )
    cli_options = getattr(trainer_class, "cli_options", None)
    if cli_options is not None:
        options = cli_options(args)
    elif args.stage is not None or args.backbone is not None:
        raise ValueError(f"--stage/--backbone: only --arch dfmgan has stages, not {args.arch}")
    else:
        options = {}
    # Before reading any data: a layer size or width that cannot fit even one item per batch
    # is refused now (channels 1 is the smallest the data can have).
    memory.check_fits(
        trainer_class.memory_estimate(
            config, defect_types=tuple(types), channels=1, layer_size=args.layer_size
        ),
        1,
        args.layer_size,
        device,
    )
    out = Path(args.out)
    crops = trainer_class.load_data(
        args.data,
        split=args.split,
        types=types,
        layer_size=args.layer_size,
        margin=args.margin,
        min_area=args.min_area,
        seed=args.seed,
    )
    print(
        f"training crops: {len(crops)} "
        f"({', '.join(f'{k} {v}' for k, v in crops.counts().items())})",
        file=sys.stderr,
    )
    requested_batch = config.batch_size
    if config.batch_size > len(crops):
        # Items are drawn with replacement, so a larger batch only repeats crops at a memory
        # cost; the summary and checkpoint record the batch actually used.
        print(
            f"--batch-size {config.batch_size} capped at the {len(crops)} training crops",
            file=sys.stderr,
        )
        config = dataclasses.replace(config, batch_size=len(crops))
    trainer = trainer_class(crops, config, device=device, **options)
    if args.resume is not None:
        trainer.resume(Path(args.resume) if args.resume else out)
        print(f"resumed at iteration {trainer.iteration}", file=sys.stderr)
    summary = trainer.fit(
        out,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every,
        time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60.0,
        progress=not args.no_progress,
    )
    argv = getattr(args, "argv", None) or sys.argv[1:]
    if argv[:1] == ["train"]:
        argv = argv[1:]
    command = "defectaug train " + shlex.join(argv)
    summary.update(
        {
            "command": command,
            "device": str(trainer.device),
            "torch_threads": torch.get_num_threads(),
            "crop_counts": crops.counts(),
            "data": str(args.data),
            "split": args.split,
            "margin": args.margin,
            "min_area": args.min_area,
            "train_config": config.to_dict(),
        }
    )
    if requested_batch != config.batch_size:
        summary["batch_size_requested"] = requested_batch
    summary.update(options)
    generator = trainer.export_generator()
    # Data loading and export included; wall_time_s counts the training steps only.
    summary["total_wall_time_s"] = time.perf_counter() - started
    if generator is None:  # a stage that ships no generator (dfmgan stage 1: the backbone)
        next_step = f"continue with --stage 2 --backbone {str(out)!r}"
    else:
        generator.save_pretrained(out, card=training_card(generator, summary))
        next_step = f"load with defectaug.load_generator({str(out)!r})"
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        f"done: {summary['iterations']} iterations in {summary['wall_time_s'] / 60:.1f} min; "
        f"{next_step}",
        file=sys.stderr,
    )
    return 0
