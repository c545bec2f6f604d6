"""``defectaug train``: train a learned defect generator on real defect crops.

Registered by ``defectaug/cli.py`` through ``add_train_parser``; also runnable on its own as
``python -m defectaug.training ...``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from defectaug.training.card import training_card
from defectaug.training.data import load_defect_crops
from defectaug.training.trainer import CHECKPOINT_NAME, TRAINERS, TrainConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
    parser.add_argument("--batch-size", type=_positive_int, default=TrainConfig.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="resume from a checkpoint (default: OUT/checkpoint.pt), continuing bit-exactly",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=250, help="steps between checkpoints (0: end only)"
    )
    parser.add_argument(
        "--sample-every", type=int, default=250, help="steps between sample grids (0: end only)"
    )
    parser.add_argument(
        "--time-budget-min",
        type=float,
        default=None,
        help="stop (and export) after this many minutes of training even if --iters is not reached",
    )
    parser.add_argument(
        "--width", type=_positive_int, default=None, help="feature channels at full resolution"
    )
    parser.add_argument(
        "--max-width", type=_positive_int, default=None, help="cap on feature channels"
    )
    parser.add_argument(
        "--latent-dim", type=_positive_int, default=None, help="size of the style code z"
    )
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="Adam learning rate")
    parser.add_argument(
        "--adversarial-weight",
        type=float,
        default=TrainConfig.adversarial_weight,
        help="weight of the adversarial term in the generator/encoder loss",
    )
    parser.add_argument(
        "--adversarial-warmup",
        type=int,
        default=TrainConfig.adversarial_warmup,
        help="steps over which the adversarial weight ramps up from 0",
    )
    parser.add_argument(
        "--margin", type=int, default=4, help="pixels of context around each defect region"
    )
    parser.add_argument(
        "--min-area", type=int, default=16, help="drop defect regions smaller than this (px)"
    )
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_train)
    return parser


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on an ``argparse`` sub-parser collection (``defectaug train``)."""
    parser = subparsers.add_parser(
        "train",
        help="train a learned defect generator on real defect crops",
        description="Train a learned defect generator on real defect crops.",
    )
    return configure_train_parser(parser)


def run_train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    types = [name.strip() for name in args.types.split(",") if name.strip()]
    if not types:
        raise SystemExit("--types: expected at least one defect type")
    architecture = {
        key: value
        for key, value in (
            ("width", args.width),
            ("max_width", args.max_width),
            ("latent_dim", args.latent_dim),
        )
        if value is not None
    }
    config = TrainConfig(
        iterations=args.iters,
        batch_size=args.batch_size,
        seed=args.seed,
        lr=args.lr,
        adversarial_weight=args.adversarial_weight,
        adversarial_warmup=args.adversarial_warmup,
        architecture=architecture,
    )
    out = Path(args.out)
    crops = load_defect_crops(
        args.data,
        split=args.split,
        types=types,
        layer_size=args.layer_size,
        margin=args.margin,
        min_area=args.min_area,
    )
    print(
        f"training crops: {len(crops)} "
        f"({', '.join(f'{k} {v}' for k, v in crops.counts().items())})",
        file=sys.stderr,
    )
    trainer = TRAINERS[args.arch](crops, config, device=args.device)
    if args.resume is not None:
        trainer.resume(Path(args.resume) if args.resume else out / CHECKPOINT_NAME)
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
    generator = trainer.export_generator()
    # Data loading and export included; wall_time_s counts the training steps only.
    summary["total_wall_time_s"] = time.perf_counter() - started
    generator.save_pretrained(out, card=training_card(generator, summary))
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        f"done: {summary['iterations']} iterations in {summary['wall_time_s'] / 60:.1f} min; "
        f"load with defectaug.load_generator({str(out)!r})",
        file=sys.stderr,
    )
    return 0
