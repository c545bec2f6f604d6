"""Downstream benchmark: does training with synthetic defects make a better inspection model?

    uv run python -m benchmarks.downstream            # full run -> benchmarks/results/
    uv run python -m benchmarks.downstream --quick    # <= 15 min on 2 CPU cores, 1 seed
    uv run python -m benchmarks.downstream --validation --quick   # tuning: scores on a val split

Protocol (see benchmarks/README.md, section "Downstream benchmark"):

- Classification of ``good`` + every defect class with the ImageNet-pretrained EfficientNet-Lite0
  (grayscale replicated to 3 channels, ``--image-size`` px). Arms with the same budget (same number
  of training views, optimisation steps and batch size): ``none`` (no augmentation, natural class
  frequencies), ``traditional`` (flips, small rotations, brightness/contrast jitter, classes drawn
  equally = minority oversampling), ``synthetic:<generator>`` (traditional + the train set joined
  with ``SyntheticDefectDataset`` images of that generator via ``ConcatDataset``, classes drawn
  equally) and ``synthetic+grl:<generator>`` (the same data, plus a ``GRLSourceHead`` on the pooled
  features learning real vs synthetic through a gradient reversal layer).
- Segmentation with a tiny U-Net on the defect images (real, + synthetic image/mask pairs), same
  arms; pixel F1 / IoU pooled over the evaluation defects.
- Realism: KID / FID (``defectaug.metrics``) of each generator's synthetic training images against
  the real defect images of the evaluation split.

Generators: ``procedural`` (with a class -> type map), ``bank`` (a ``DefectBank`` of the training
images' own defects, each class placed by the bank's location prior: ``bank.placement(class)``)
and every shipped learned card (``list_generators()``) whose defect types are class names; on
request also ``fitted`` (a ``FittedGenerator`` fitted on the training defects, each class at its
fitted placement) and ``cutpaste`` (self-supervised, no real defect; every defect
class at scale 0.3-0.8). Hyper-parameters are chosen with ``--validation`` (a stratified split
carved from the training data), never on the test split.

Few-shot mode (``--shots k``): per seed, the classifier trains on k real defect images per class
of the training split and all its ``good`` images (``stratified_subset``, the same subset for every
arm of the seed; a ``--validation`` split is carved first). ``bank`` and ``fitted`` are built per
seed from those shots only, and every generator's placement sizes come from the shots' masks;
procedural and cutpaste see no real defect; learned cards were trained outside the run (the report
says so). Synthetic images per class are capped at the class's real count (k), so real and
synthetic stay about 1:1 within a class. Results go to ``downstream_k<k>.*``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from benchmarks import downstream_data as data_lib
from benchmarks import recording
from benchmarks.downstream_data import ImageSet, TraditionalAugment, parse_shots
from benchmarks.downstream_models import TinyUNet, lite0_classifier
from benchmarks.recording import git_output, portable_command, portable_path
from defectaug._seeding import mix_seed
from defectaug.datasets import DefectRecord, read_defect_dataset
from defectaug.evaluation import (
    PixelCounts,
    bootstrap_ci,
    confusion_matrix,
    effect_verdict,
    error_rate,
    macro_f1,
    per_class_f1,
    pixel_counts,
    relative_error_reduction,
)
from defectaug.generators import ProceduralGenerator, list_generators, list_pretrained
from defectaug.generators.base import DefectGenerator
from defectaug.generators.registry import load_generator
from defectaug.heads import GRLSourceHead, attach_source_head

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "magnetic_tile"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
BASELINE_ARM = "traditional"
#: Generators built from real defect records: the training split's, or (``--shots k``) each seed's
#: shots.
RECORD_GENERATORS = ("bank", "fitted")
#: Generators that see no real defect at all (their placement sizes still come from real masks,
#: except cutpaste's, which is fixed).
NO_REAL_DEFECT_GENERATORS = ("procedural", "cutpaste")
#: The few-shot track's cutpaste placement (``cutpaste:alpha:scale=0.3-0.8``), for every class.
CUTPASTE_SCALE = (0.3, 0.8)


@dataclass(frozen=True)
class Settings:
    """Sizes of one run; ``--quick`` and the full run differ only here."""

    seeds: int
    views: int
    steps: int
    batch_size: int
    seg_seeds: int
    seg_steps: int
    seg_batch_size: int
    synthetic_per_class: int
    realism_samples: int


FULL = Settings(
    seeds=3,
    views=512,
    steps=200,
    batch_size=32,
    seg_seeds=2,
    seg_steps=100,
    seg_batch_size=16,
    synthetic_per_class=24,
    realism_samples=100,
)
QUICK = Settings(
    seeds=1,
    views=192,
    steps=60,
    batch_size=32,
    seg_seeds=1,
    seg_steps=40,
    seg_batch_size=16,
    synthetic_per_class=24,
    realism_samples=40,
)


@dataclass(frozen=True)
class Arm:
    name: str
    augment: bool
    balanced: bool
    generator: str | None = None
    grl: bool = False


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------------------- setup
def float_list(text: str) -> list[float]:
    """``"1e-3,3e-3"`` -> ``[0.001, 0.003]`` (a grid to compare on the validation split)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Downstream benchmark: classification / segmentation with synthetic defects",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train-data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-data", type=Path, default=None, help="default: --train-data")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer steps (<= 15 min)")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="join the JSON results of runs made in parts into --out/downstream.* (no training)",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="tuning mode: carve a stratified validation split out of the training data, train "
        "on the rest and score on it (the test split is not read)",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--val-seed", type=int, default=0)
    parser.add_argument(
        "--shots",
        default="all",
        help="real defect images kept per class of the training split, per seed (all good images "
        "are kept): a number, or 'all'",
    )
    parser.add_argument(
        "--generators",
        default="auto",
        help="comma-separated generator names, or 'auto' (procedural, bank, learned cards); "
        "also 'fitted' and 'cutpaste'",
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument(
        "--frozen-blocks",
        type=int,
        default=16,
        help="MBConv blocks of EfficientNet-Lite0 kept frozen (16 = all; the 1x1 head "
        "convolution and the classifier are always trained)",
    )
    parser.add_argument(
        "--lr", type=float_list, default=[3e-3], help="classifier learning rate(s), comma-separated"
    )
    parser.add_argument("--seg-lr", type=float_list, default=[3e-3], help="U-Net learning rate(s)")
    parser.add_argument("--seg-crop", type=int, default=64, help="U-Net training crop side")
    parser.add_argument(
        "--grl-weight", type=float_list, default=[1.0], help="final reversal weight(s)"
    )
    parser.add_argument(
        "--arms", default="all", help="comma-separated arm names to run (default: all)"
    )
    parser.add_argument("--skip-classification", action="store_true")
    parser.add_argument(
        "--seg-grl",
        action="store_true",
        help="also train the segmenter with a source head (arm 4); off by default to save time",
    )
    parser.add_argument("--skip-segmentation", action="store_true")
    parser.add_argument("--skip-realism", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (on a shared 2-core machine one thread is several times faster "
        "for these small networks than two)",
    )
    for name in Settings.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    overrides = {
        name: getattr(args, name)
        for name in Settings.__dataclass_fields__
        if getattr(args, name) is not None
    }
    for name, value in overrides.items():
        if value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    args.settings = Settings(**{**base.__dict__, **overrides})
    if args.image_size % 32:
        parser.error(f"--image-size: expected a multiple of 32, got {args.image_size}")
    if args.seg_crop % 8 or args.seg_crop > args.image_size:
        parser.error("--seg-crop: expected a multiple of 8 no larger than --image-size")
    args.test_data = args.test_data or args.train_data
    try:
        args.shots = parse_shots(args.shots)
    except ValueError as error:
        parser.error(str(error))
    return args


@dataclass
class Splits:
    train: ImageSet
    evaluation: ImageSet
    train_records: list[DefectRecord]
    description: dict[str, Any]


def load_splits(args: argparse.Namespace) -> Splits:
    train_records = read_defect_dataset(args.train_data, split=args.train_split or None)
    classes = data_lib.class_names(train_records)
    train = data_lib.load_image_set(train_records, classes, args.image_size)
    if args.validation:
        train, evaluation = data_lib.carve_validation(train, args.val_fraction, args.val_seed)
        kept = set(train.paths)
        train_records = [r for r in train_records if str(r.image) in kept]
        where = (
            f"validation: {args.val_fraction:.0%} of {portable_path(args.train_data)}:"
            f"{args.train_split} per "
            f"class (seed {args.val_seed})"
        )
    else:
        test_records = read_defect_dataset(args.test_data, split=args.test_split or None)
        evaluation = data_lib.load_image_set(test_records, classes, args.image_size)
        where = f"{portable_path(args.test_data)}:{args.test_split}"
    description = dict(
        classes=list(classes),
        train=f"{portable_path(args.train_data)}:{args.train_split}",
        evaluation=where,
        train_counts=train.class_counts(),
        evaluation_counts=evaluation.class_counts(),
    )
    return Splits(train, evaluation, train_records, description)


def record_generator(name: str, records: Sequence[DefectRecord], source: str) -> DefectGenerator:
    """A generator of :data:`RECORD_GENERATORS` learnt from the defects of ``records``."""
    if name == "bank":
        return data_lib.shot_bank(records, source=source)
    if name == "fitted":
        return data_lib.fitted_generator(records)[0]
    raise ValueError(f"not a generator built from records: {name!r}")


def build_generators(
    args: argparse.Namespace, splits: Splits, records: Sequence[DefectRecord] | None = None
) -> tuple[dict[str, DefectGenerator], dict[str, str]]:
    """The generators to compare, and a note for every one that was left out.

    ``bank`` and ``fitted`` learn from ``records`` (default: the training split's; in few-shot
    mode seed 0's shots, rebuilt per seed by :class:`SyntheticData`)."""
    records = splits.train_records if records is None else records
    source = "training split" if args.shots is None else "the seed's shots"
    classes = splits.train.classes
    cards = [name for name in list_generators() if name in set(list_pretrained())]
    wanted = (
        ["procedural", "bank", *cards]
        if args.generators == "auto"
        else [name.strip() for name in args.generators.split(",") if name.strip()]
    )
    generators: dict[str, DefectGenerator] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        try:
            if name == "procedural":
                generator: DefectGenerator = ProceduralGenerator()
            elif name in RECORD_GENERATORS:
                generator = record_generator(name, records, source)
            else:
                generator = load_generator(name)
        except Exception as error:  # a broken card must not sink the other arms
            skipped[name] = f"could not be loaded: {type(error).__name__}: {error}"
            continue
        if not data_lib.generator_class_map(name, generator, classes):
            skipped[name] = (
                f"defect types {list(generator.defect_types)} match none of the classes "
                f"{list(classes)}"
            )
            continue
        generators[name] = generator
    return generators, skipped


def arms_for(generators: Sequence[str]) -> list[Arm]:
    arms = [Arm("none", augment=False, balanced=False), Arm(BASELINE_ARM, True, True)]
    arms += [Arm(f"synthetic:{name}", True, True, generator=name) for name in generators]
    arms += [
        Arm(f"synthetic+grl:{name}", True, True, generator=name, grl=True) for name in generators
    ]
    return arms


# ------------------------------------------------------------------------ synthetic training data
class SyntheticData:
    """Per seed, the real training images (the seed's shots in few-shot mode); per (generator,
    seed), the joined real + synthetic training set, built once, shared by the classification and
    segmentation arms of that seed."""

    def __init__(
        self,
        splits: Splits,
        generators: dict[str, DefectGenerator],
        per_class: int,
        shots: int | None = None,
    ) -> None:
        self.splits = splits
        self.per_class = per_class
        self.shots = shots
        self.backgrounds = splits.train.images[splits.train.labels == 0]
        self._real: dict[int, tuple[torch.Tensor, ImageSet]] = {}
        self._scales: dict[int, dict[str, tuple[float, float]]] = {}
        self._built: dict[tuple[str | None, int], tuple[Any, torch.Tensor]] = {}
        self.use(generators)

    def use(self, generators: dict[str, DefectGenerator]) -> None:
        """Compare ``generators`` (in few-shot mode, bank and fitted learnt from seed 0's shots,
        as :func:`build_generators` builds them from :meth:`shot_records` ``(0)``)."""
        self.generators = generators
        self._learnt: dict[tuple[str, int], DefectGenerator] = {}
        if self.shots is not None:
            self._learnt.update(
                ((name, 0), generators[name]) for name in RECORD_GENERATORS if name in generators
            )

    @property
    def scales(self) -> dict[str, tuple[float, float]]:
        """Placement size range per class (seed 0's shots in few-shot mode)."""
        return self.placement_scales(0)

    def shot_index(self, seed: int) -> torch.Tensor:
        """Indices into ``splits.train`` of the seed's real training images."""
        return self._real_for(seed)[0]

    def real(self, seed: int) -> ImageSet:
        """The seed's real training images: the whole training split, or its k shots per defect
        class and every good image."""
        return self._real_for(seed)[1]

    def _real_for(self, seed: int) -> tuple[torch.Tensor, ImageSet]:
        key = 0 if self.shots is None else seed
        if key not in self._real:
            train = self.splits.train
            if self.shots is None:
                self._real[key] = (torch.arange(len(train)), train)
            else:
                index = data_lib.shot_index(train, self.shots, seed)
                self._real[key] = (index, train.subset(index))
        return self._real[key]

    def shot_records(self, seed: int) -> list[DefectRecord]:
        """The records of the seed's real training images."""
        by_path = {str(r.image): r for r in self.splits.train_records}
        return [by_path[path] for path in self.real(seed).paths]

    def placement_scales(self, seed: int) -> dict[str, tuple[float, float]]:
        """Per class, the placement size range from the masks the seed's arms may see."""
        key = 0 if self.shots is None else seed
        if key not in self._scales:
            self._scales[key] = data_lib.defect_scale_ranges(self.real(seed))
        return self._scales[key]

    def generator(self, name: str, seed: int) -> DefectGenerator:
        """``name``'s generator for ``seed``: bank and fitted learn from the seed's shots."""
        if self.shots is None or name not in RECORD_GENERATORS:
            return self.generators[name]
        if (name, seed) not in self._learnt:
            self._learnt[(name, seed)] = record_generator(
                name, self.shot_records(seed), "the seed's shots"
            )
        return self._learnt[(name, seed)]

    def placements(self, name: str, seed: int) -> dict[str, dict[str, Any]]:
        """Per class, the ``SyntheticDefectDataset`` placement keywords of ``name``'s images."""
        class_map = self.class_map(name, seed)
        if name in RECORD_GENERATORS:
            # Placed as their real defects were: location prior, size, count, edge side.
            learnt = self.generator(name, seed)
            return {c: learnt.placement(t) for c, t in class_map.items()}  # type: ignore[attr-defined]
        if name == "cutpaste":
            return {c: {"scale": CUTPASTE_SCALE} for c in class_map}
        scales = self.placement_scales(seed)
        return {c: {"scale": scales[c]} for c in class_map if c in scales}

    def class_maps(self) -> dict[str, dict[str, str]]:
        """Every generator's class map (seed 0's in few-shot mode)."""
        return {name: self.class_map(name, 0) for name in self.generators}

    def class_map(self, name: str, seed: int) -> dict[str, str]:
        generator = self.generator(name, seed)
        return data_lib.generator_class_map(name, generator, self.splits.train.classes)

    def synthetic_counts(self, name: str, seed: int) -> dict[str, int]:
        """Synthetic images per class: enough to reach the largest class, at most
        ``per_class``, and in few-shot mode at most the class's real count (about 1:1)."""
        real = self.real(seed)
        counts = data_lib.synthetic_counts(real, list(self.class_map(name, seed)))
        counts = {c: min(n, self.per_class) for c, n in counts.items()}
        if self.shots is not None:
            have = real.class_counts()
            counts = {c: min(n, have[c]) for c, n in counts.items()}
        return counts

    def training_set(self, generator: str | None, seed: int) -> tuple[Any, torch.Tensor]:
        key = (generator, seed)
        if key not in self._built:
            synthetic = []
            real = self.real(seed)
            if generator is not None:
                synthetic = data_lib.synthetic_sets(
                    self.generator(generator, seed),
                    self.class_map(generator, seed),
                    self.synthetic_counts(generator, seed),
                    self.backgrounds,
                    real.classes,
                    self.placement_scales(seed),
                    seed=mix_seed(seed, sum(map(ord, generator))),
                    placements=self.placements(generator, seed),
                )
            self._built[key] = data_lib.training_set(real, synthetic)
        return self._built[key]


# --------------------------------------------------------------------------------- classification
@dataclass
class ClassifierContext:
    args: argparse.Namespace
    splits: Splits
    synthetic: SyntheticData
    evaluation_features: torch.Tensor = field(init=False)
    real_features: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.trunk, _ = lite0_classifier(
            len(self.splits.train.classes), self.args.image_size, self.args.frozen_blocks
        )
        self.evaluation_features = self.features(self.splits.evaluation.images)
        self.real_features = self.features(self.splits.train.images)

    def features(self, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
        return torch.cat([self.trunk(chunk) for chunk in images.split(batch)])


def view_pool(
    context: ClassifierContext, arm: Arm, seed: int, settings: Settings
) -> dict[str, torch.Tensor]:
    """The arm's training views: trunk features, labels and sources of ``settings.views`` items."""
    rng = torch.Generator().manual_seed(mix_seed(seed, 1))
    if not arm.augment:
        # Unaugmented views are the training images themselves: reuse their cached features.
        real = context.synthetic.real(seed)
        index = data_lib.draw_items(real.labels, settings.views, arm.balanced, rng)
        return dict(
            features=context.real_features[context.synthetic.shot_index(seed)][index],
            label=real.labels[index],
            source=torch.zeros(len(index), dtype=torch.long),
        )
    dataset, labels = context.synthetic.training_set(arm.generator, seed)
    index = data_lib.draw_items(labels, settings.views, arm.balanced, rng)
    augment = TraditionalAugment()
    parts: dict[str, list[torch.Tensor]] = {"features": [], "label": [], "source": []}
    for chunk in index.split(64):
        items = data_lib.collate_items(dataset, chunk)
        images, _ = augment(items["image"], items["mask"], rng)
        parts["features"].append(context.features(images))
        parts["label"].append(items["label"])
        parts["source"].append(items["source"])
    return {key: torch.cat(values) for key, values in parts.items()}


def train_classifier(
    context: ClassifierContext,
    arm: Arm,
    pool: dict[str, torch.Tensor],
    seed: int,
    lr: float,
    grl_weight: float,
) -> dict[str, Any]:
    args, settings = context.args, context.args.settings
    torch.manual_seed(mix_seed(seed, 2))
    classes = context.splits.train.classes
    _, top = lite0_classifier(len(classes), args.image_size, args.frozen_blocks)
    model: torch.nn.Module = top
    if arm.grl:
        model = attach_source_head(top, total_steps=settings.steps, max_weight=grl_weight)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    order_rng = torch.Generator().manual_seed(mix_seed(seed, 3))
    order = torch.empty(0, dtype=torch.long)
    model.train()
    source_losses = []
    for _ in range(settings.steps):
        if len(order) < settings.batch_size:
            order = torch.cat([order, torch.randperm(len(pool["label"]), generator=order_rng)])
        batch, order = order[: settings.batch_size], order[settings.batch_size :]
        features, labels = pool["features"][batch], pool["label"][batch]
        if arm.grl:
            class_logits, source_logits = model(features)
            source = model.head.loss(source_logits, pool["source"][batch])
            loss = F.cross_entropy(class_logits, labels) + source
            source_losses.append(source.item())
        else:
            loss = F.cross_entropy(model(features), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if arm.grl:
            model.head.step()
    top.eval()
    with torch.no_grad():
        predictions = torch.cat(
            [top(chunk).argmax(1) for chunk in context.evaluation_features.split(128)]
        )
    matrix = confusion_matrix(predictions, context.splits.evaluation.labels, len(classes))
    result = dict(
        error=error_rate(matrix),
        macro_f1=macro_f1(matrix),
        per_class_f1={
            name: None if math.isnan(value) else value
            for name, value in zip(classes, per_class_f1(matrix).tolist(), strict=True)
        },
        confusion=matrix.tolist(),
        synthetic_share=float(pool["source"].float().mean()),
    )
    if source_losses:
        result["final_source_loss"] = statistics.fmean(source_losses[-10:])
    return result


# ---------------------------------------------------------------------------------- segmentation
def segmentation_items(labels: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Indices of the items a segmenter trains on: defect images with a mask (real ones carry
    ``has_mask``; synthetic ones always have one)."""
    return torch.nonzero((labels != 0) & has_mask).flatten()


def random_crops(
    images: torch.Tensor, masks: torch.Tensor, side: int, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``side`` x ``side`` crop per item: half of them around a random defect pixel (small
    defects would otherwise rarely be seen), the rest anywhere."""
    n, _, height, width = images.shape
    out_images, out_masks = [], []
    for i in range(n):
        pixels = torch.nonzero(masks[i, 0])
        if len(pixels) and float(torch.rand(1, generator=rng)) < 0.5:
            pick = pixels[int(torch.randint(len(pixels), (1,), generator=rng))]
            jitter = torch.randint(-side // 4, side // 4 + 1, (2,), generator=rng)
            top = int(pick[0] + jitter[0]) - side // 2
            left = int(pick[1] + jitter[1]) - side // 2
        else:
            top = int(torch.randint(height - side + 1, (1,), generator=rng))
            left = int(torch.randint(width - side + 1, (1,), generator=rng))
        top, left = min(max(top, 0), height - side), min(max(left, 0), width - side)
        out_images.append(images[i, :, top : top + side, left : left + side])
        out_masks.append(masks[i, :, top : top + side, left : left + side])
    return torch.stack(out_images), torch.stack(out_masks)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    intersection = (probability * target).sum()
    return 1.0 - (2.0 * intersection + 1.0) / (probability.sum() + target.sum() + 1.0)


def train_segmenter(
    args: argparse.Namespace,
    splits: Splits,
    synthetic: SyntheticData,
    arm: Arm,
    seed: int,
    lr: float,
    grl_weight: float,
) -> dict[str, Any]:
    settings = args.settings
    torch.manual_seed(mix_seed(seed, 4))
    dataset, labels = synthetic.training_set(arm.generator, seed)
    real = synthetic.real(seed)
    real_count = len(real)
    has_mask = torch.ones(len(labels), dtype=torch.bool)
    has_mask[:real_count] = real.has_mask
    candidates = segmentation_items(labels, has_mask)
    rng = torch.Generator().manual_seed(mix_seed(seed, 5))
    index = candidates[
        data_lib.draw_items(
            labels[candidates], settings.seg_steps * settings.seg_batch_size, arm.balanced, rng
        )
    ]
    model = TinyUNet()
    head = (
        GRLSourceHead(
            model.feature_width,
            hidden=64,
            total_steps=settings.seg_steps,
            max_weight=grl_weight,
        )
        if arm.grl
        else None
    )
    parameters = list(model.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.Adam(parameters, lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.seg_steps)
    augment = TraditionalAugment()
    model.train()
    for batch in index.split(settings.seg_batch_size):
        items = data_lib.collate_items(dataset, batch)
        images, masks = items["image"], items["mask"]
        if arm.augment:
            images, masks = augment(images, masks, rng)
        images, masks = random_crops(images, masks, args.seg_crop, rng)
        logits = model(images)
        target = masks.float()
        loss = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
        if head is not None:
            loss = loss + head.loss(head(model.pooled), items["source"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if head is not None:
            head.step()
    model.eval()
    evaluation = splits.evaluation
    targets = segmentation_items(evaluation.labels, evaluation.has_mask)
    counts = PixelCounts()
    with torch.no_grad():
        for chunk in targets.split(32):
            predicted = model(evaluation.images[chunk]) > 0
            counts = counts + pixel_counts(predicted, evaluation.masks[chunk])
    return dict(
        f1=counts.f1,
        iou=counts.iou,
        counts=dict(tp=counts.true_positive, fp=counts.false_positive, fn=counts.false_negative),
    )


# ------------------------------------------------------------------------------------- realism
def synthetic_samples(
    synthetic: SyntheticData, generator: str, count: int, seed: int = 0
) -> torch.Tensor:
    """``count`` synthetic images of ``generator``, classes taken in turn (seed-0 training data)."""
    dataset, labels = synthetic.training_set(generator, seed)
    real_count = len(synthetic.real(seed))
    by_class = [
        torch.nonzero(labels[real_count:] == c).flatten() + real_count
        for c in torch.unique(labels[real_count:]).tolist()
    ]
    chosen = []
    for position in range(count):
        members = by_class[position % len(by_class)]
        chosen.append(int(members[(position // len(by_class)) % len(members)]))
    return data_lib.collate_items(dataset, torch.tensor(chosen))["image"]


def realism(args: argparse.Namespace, splits: Splits, synthetic: SyntheticData) -> dict[str, Any]:
    from defectaug.metrics import InceptionFeatures, extract_features, fid, kid

    extractor = InceptionFeatures()
    evaluation = splits.evaluation
    real = evaluation.images[evaluation.labels != 0]
    real_features = extract_features(real, extractor)
    train_defects = splits.train.images[splits.train.labels != 0]
    subset = min(50, len(real))
    rows = {}

    def score(features: torch.Tensor) -> dict[str, float]:
        mean, std = kid(features, real_features, subsets=100, subset_size=subset)
        return dict(kid=mean, kid_std=std, fid=fid(features, real_features), n=len(features))

    rows["real train defects (floor)"] = score(extract_features(train_defects, extractor))
    for name in synthetic.generators:
        images = synthetic_samples(synthetic, name, args.settings.realism_samples)
        rows[name] = score(extract_features(images, extractor))
        log(f"realism {name}: KID {rows[name]['kid']:.4f} FID {rows[name]['fid']:.1f}")
    return dict(
        reference=f"{len(real)} real defect images of the evaluation split",
        kid_subset_size=subset,
        rows=rows,
    )


# ------------------------------------------------------------------------------------- reports
def summarise(values: list[float]) -> dict[str, float]:
    return dict(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        runs=len(values),
    )


def summary_table(result: dict[str, Any]) -> str:
    """One row per arm setting: classification scores, and segmentation scores where the same
    setting name was also trained as a segmenter (other segmentation settings get rows of their
    own)."""
    segmentation = result["segmentation_summary"]
    lines = [
        "| arm | error % (mean ± std) | macro-F1 | rel. error reduction vs traditional "
        "| error vs traditional, paired (95 % CI) | verdict | seg pixel F1 | seg IoU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, row in result["summary"].items():
        error, f1 = row["error"], row["macro_f1"]
        reduction = row["relative_error_reduction"]
        paired = row.get("error_vs_traditional")
        if paired is None:
            versus, verdict = "—", "—"
        elif math.isnan(paired["ci"][0]):
            versus, verdict = f"{100 * paired['mean']:+.2f} pt (1 seed)", paired["verdict"]
        else:
            low, high = (100 * bound for bound in paired["ci"])
            versus = f"{100 * paired['mean']:+.2f} pt [{low:+.2f}, {high:+.2f}]"
            verdict = paired["verdict"]
        seg = segmentation.get(arm, {})
        lines.append(
            f"| {arm} | {100 * error['mean']:.2f} ± {100 * error['std']:.2f} "
            f"| {f1['mean']:.3f} ± {f1['std']:.3f} "
            f"| {'—' if reduction is None else f'{100 * reduction:+.1f} %'} "
            f"| {versus} | {verdict} "
            f"| {_mean_std(seg.get('seg_f1'))} | {_mean_std(seg.get('seg_iou'))} |"
        )
    for arm, seg in segmentation.items():
        if arm not in result["summary"]:
            lines.append(
                f"| {arm} | — | — | — | — | — | {_mean_std(seg['seg_f1'])} "
                f"| {_mean_std(seg['seg_iou'])} |"
            )
    return "\n".join(lines)


def _mean_std(row: dict[str, float] | None) -> str:
    return "—" if row is None else f"{row['mean']:.3f} ± {row['std']:.3f}"


def realism_table(realism_result: dict[str, Any]) -> str:
    lines = ["| images | n | KID × 1e3 (mean ± std) | FID |", "|---|---|---|---|"]
    for name, row in realism_result["rows"].items():
        lines.append(
            f"| {name} | {row['n']} | {1e3 * row['kid']:.1f} ± {1e3 * row['kid_std']:.1f} "
            f"| {row['fid']:.1f} |"
        )
    return "\n".join(lines)


def bar_chart(rows: list[tuple[str, float, float]], title: str, unit: str, path: Path) -> None:
    """Horizontal bars (mean) with error bars (± std), drawn with PIL."""
    label_width, bar_width, row_height, margin = 230, 420, 28, 16
    height = margin * 3 + 20 + row_height * len(rows)
    image = Image.new("RGB", (label_width + bar_width + 2 * margin + 70, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, margin), title, fill="black")
    top = margin * 2 + 14
    peak = max(mean + std for _, mean, std in rows) or 1.0
    scale = bar_width / peak
    left = margin + label_width
    for i, (label, mean, std) in enumerate(rows):
        y = top + i * row_height
        colour = (120, 120, 120) if "synthetic" not in label else (60, 110, 180)
        draw.text((margin, y + 7), label, fill="black")
        draw.rectangle([left, y + 4, left + mean * scale, y + row_height - 4], fill=colour)
        low, high = left + (mean - std) * scale, left + (mean + std) * scale
        middle = y + row_height // 2
        draw.line([low, middle, high, middle], fill="black", width=2)
        for x in (low, high):
            draw.line([x, middle - 5, x, middle + 5], fill="black", width=2)
        draw.text((high + 6, y + 7), f"{mean:.2f}{unit}", fill="black")
    draw.line([left, top, left, top + row_height * len(rows)], fill="black")
    image.save(path)


def sample_grids(
    synthetic: SyntheticData, splits: Splits, out: Path, columns: int = 8
) -> list[str]:
    written = []
    train = synthetic.real(0)  # seed 0's shots in few-shot mode
    real = train.images[train.labels != 0]
    pick = torch.linspace(0, len(real) - 1, 2 * columns).round().long()
    grids = {"real-train-defects": real[pick]}
    for name in synthetic.generators:
        grids[name] = synthetic_samples(synthetic, name, 2 * columns)
    for name, images in grids.items():
        path = out / f"samples_{name.replace('/', '_').replace(':', '_')}.png"
        Image.fromarray(data_lib.sample_grid(images, columns)).save(path)
        written.append(path.name)
    return written


def record_failure(arm: Arm, error: Exception) -> str:
    message = f"{type(error).__name__}: {error}"
    log(f"generator {arm.generator} failed in arm {arm.name}; its arms are dropped: {message}")
    traceback.print_exc()
    return f"failed in arm {arm.name}: {message}"


def uncommitted_files() -> list[str]:
    """Library files that differ from the recorded commit (other engineers' work in progress)."""
    status = git_output("status", "--porcelain", "--", "defectaug", "benchmarks/downstream*.py")
    return [] if status is None else status.splitlines()


#: Files whose uncommitted edits change what a downstream run measures.
WATCHED_FILES = (
    "benchmarks/downstream.py",
    "benchmarks/downstream_data.py",
    "benchmarks/downstream_models.py",
    "defectaug/evaluation.py",
)


def git_commit() -> str:
    """The full commit, marked where :data:`WATCHED_FILES` have uncommitted edits."""
    return recording.git_commit(watched=WATCHED_FILES)


# ----------------------------------------------------------------------------------------- main
def variants(
    arm: Arm, lrs: Sequence[float], grl_weights: Sequence[float], lr_label: str
) -> list[tuple[str, float, float]]:
    """``(name, lr, grl_weight)`` of every setting of ``arm`` to train; a grid value appears in the
    name only when the grid has more than one (the reversal weight only for GRL arms)."""
    weights = grl_weights if arm.grl else grl_weights[:1]
    out = []
    for lr in lrs:
        for weight in weights:
            name = arm.name
            if len(lrs) > 1:
                name += f" {lr_label}={lr:g}"
            if arm.grl and len(grl_weights) > 1:
                name += f" grl={weight:g}"
            out.append((name, lr, weight))
    return out


def summarise_runs(
    runs: dict[str, list[dict[str, Any]]], lrs: Sequence[float], lr_label: str
) -> dict[str, Any]:
    """Mean ± std per arm setting, and the relative error reduction against the traditional arm
    trained with the same learning rate."""
    summary = {}
    for name, results in runs.items():
        errors = [r["error"] for r in results]
        suffix = next(
            (f" {lr_label}={lr:g}" for lr in lrs if len(lrs) > 1 and f" {lr_label}={lr:g}" in name),
            "",
        )
        baseline_name = BASELINE_ARM + suffix
        reduction, paired = None, None
        if name != baseline_name and baseline_name in runs:
            baseline = statistics.fmean(r["error"] for r in runs[baseline_name])
            reduction = relative_error_reduction(baseline, statistics.fmean(errors))
            paired = paired_difference(results, runs[baseline_name], "error")
        summary[name] = dict(
            error=summarise(errors),
            macro_f1=summarise([r["macro_f1"] for r in results]),
            relative_error_reduction=reduction,
            error_vs_traditional=paired,
        )
    return summary


def paired_difference(
    results: Sequence[dict[str, Any]], baseline: Sequence[dict[str, Any]], key: str
) -> dict[str, Any] | None:
    """Mean per-seed difference ``arm - baseline`` of ``key`` over the seeds both ran, its 95 %
    bootstrap CI and a verdict (a seed shares the real data, initialisation and view order)."""
    by_seed = {r["seed"]: r[key] for r in baseline}
    diffs = [r[key] - by_seed[r["seed"]] for r in results if r["seed"] in by_seed]
    if not diffs:
        return None
    mean, low, high = bootstrap_ci(diffs, seed=0)
    lower_is_better = key == "error"
    return dict(
        mean=mean,
        ci=[low, high],
        seeds=len(diffs),
        verdict=effect_verdict(low, high, not lower_is_better, seeds=len(diffs)),
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.time()
    # The commit the run starts from: others may commit while it runs.
    commit = git_commit()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = args.settings
    args.out.mkdir(parents=True, exist_ok=True)
    log(f"settings: {settings}")
    splits = load_splits(args)
    log(
        f"data: train {splits.description['train_counts']}, evaluation "
        f"{splits.description['evaluation_counts']}"
    )
    synthetic = SyntheticData(splits, {}, settings.synthetic_per_class, args.shots)
    shot_records = None if args.shots is None else synthetic.shot_records(0)
    generators, skipped = build_generators(args, splits, shot_records)
    for name, reason in skipped.items():
        log(f"generator {name} skipped: {reason}")
    synthetic.use(generators)
    if args.shots is not None:
        log(f"shots: k = {args.shots}, seed 0 trains on {synthetic.real(0).class_counts()}")
    arms = arms_for(list(generators))
    if args.arms != "all":
        wanted = {name.strip() for name in args.arms.split(",")}
        unknown = wanted - {arm.name for arm in arms}
        if unknown:
            raise SystemExit(
                f"--arms: unknown arm(s) {sorted(unknown)}; available: {[a.name for a in arms]}"
            )
        arms = [arm for arm in arms if arm.name in wanted]

    runs: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_classification:
        context = ClassifierContext(args, splits, synthetic)
        log(f"trunk features ready ({time.time() - started:.0f} s)")
    # A generator that fails mid-run (a broken card) loses its arms; the others go on.
    failed: dict[str, str] = {}
    for seed in range(0 if args.skip_classification else settings.seeds):
        pools: dict[tuple[bool, str | None], dict[str, torch.Tensor]] = {}
        for arm in arms:
            if arm.generator in failed:
                continue
            key = (arm.augment, arm.generator)
            try:
                if key not in pools:
                    pools[key] = view_pool(context, arm, seed, settings)
                for name, lr, weight in variants(arm, args.lr, args.grl_weight, "lr"):
                    result = train_classifier(context, arm, pools[key], seed, lr, weight)
                    runs.setdefault(name, []).append(dict(seed=seed, **result))
                    log(
                        f"seed {seed} {name}: error {100 * result['error']:.2f} % macro-F1 "
                        f"{result['macro_f1']:.3f} ({time.time() - started:.0f} s)"
                    )
            except Exception as error:
                if arm.generator is None:
                    raise
                failed[arm.generator] = record_failure(arm, error)

    seg_runs: dict[str, list[dict[str, Any]]] = {}
    if not args.skip_segmentation:
        for seed in range(settings.seg_seeds):
            for arm in (a for a in arms if args.seg_grl or not a.grl):
                if arm.generator in failed:
                    continue
                try:
                    for name, lr, weight in variants(arm, args.seg_lr, args.grl_weight, "seg_lr"):
                        result = train_segmenter(args, splits, synthetic, arm, seed, lr, weight)
                        seg_runs.setdefault(name, []).append(dict(seed=seed, **result))
                        log(
                            f"seed {seed} {name}: seg F1 {result['f1']:.3f} IoU "
                            f"{result['iou']:.3f} ({time.time() - started:.0f} s)"
                        )
                except Exception as error:
                    if arm.generator is None:
                        raise
                    failed[arm.generator] = record_failure(arm, error)

    class_maps = synthetic.class_maps()
    for name in failed:
        synthetic.generators.pop(name, None)
        for results in (runs, seg_runs):
            for key in [k for k in results if k.split(" ")[0].split(":", 1)[-1] == name]:
                del results[key]
    realism_result = None if args.skip_realism else realism(args, splits, synthetic)
    summary = summarise_runs(runs, args.lr, "lr") if runs else {}
    seg_summary = {
        name: dict(
            seg_f1=summarise([r["f1"] for r in results]),
            seg_iou=summarise([r["iou"] for r in results]),
        )
        for name, results in seg_runs.items()
    }
    wall = time.time() - started
    result_shots = shot_counts(synthetic, settings, args)
    result = dict(
        date_utc=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        started_utc=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        git_commit=commit,
        wall_time_s=round(wall, 1),
        mode=("validation" if args.validation else "test") + (" quick" if args.quick else ""),
        machine=f"{platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        command=portable_command(" ".join(["python -m benchmarks.downstream", *sys.argv[1:]])),
        settings=settings.__dict__,
        hyper_parameters=dict(
            lr=args.lr,
            seg_lr=args.seg_lr,
            frozen_blocks=args.frozen_blocks,
            grl_weight=args.grl_weight,
            image_size=args.image_size,
            seg_crop=args.seg_crop,
        ),
        data=splits.description,
        shots=args.shots,
        shot_counts=result_shots,
        synthetic_per_class_rule=synthetic_rule(args.shots, settings.synthetic_per_class),
        generators={
            name: dict(
                class_map=class_maps[name],
                kind=type(generator).__name__,
                real_defects_seen=real_defects_seen(name, args.shots),
            )
            for name, generator in generators.items()
        },
        skipped_generators=skipped,
        failed_generators=failed,
        uncommitted_library_files=uncommitted_files(),
        placement_scales=synthetic.scales
        if args.shots is None
        else {seed: synthetic.placement_scales(int(seed.split()[1])) for seed in result_shots},
        summary=summary,
        segmentation_summary=seg_summary,
        classification_runs=runs,
        segmentation_runs=seg_runs,
        realism=realism_result,
    )
    stem = (
        "downstream"
        + ("" if args.shots is None else f"_k{args.shots}")
        + ("_validation" if args.validation else "")
        + ("_quick" if args.quick else "")
    )
    write_reports(result, args.out, stem, sample_grids(synthetic, splits, args.out))
    log(f"done in {wall:.0f} s -> {args.out}")
    return result


def shot_counts(
    synthetic: SyntheticData, settings: Settings, args: argparse.Namespace
) -> dict[str, dict[str, int]]:
    """Real training images per class of every seed that trained (one entry without shots)."""
    if args.shots is None:
        return {"all seeds": synthetic.real(0).class_counts()}
    seeds = max(
        0 if args.skip_classification else settings.seeds,
        0 if args.skip_segmentation else settings.seg_seeds,
        1,
    )
    return {f"seed {seed}": synthetic.real(seed).class_counts() for seed in range(seeds)}


def synthetic_rule(shots: int | None, per_class: int) -> str:
    """How many synthetic images each mapped class gets."""
    rule = (
        f"synthetic images per defect class = min(good count - real count of the class, "
        f"{per_class} (--synthetic-per-class)"
    )
    if shots is None:
        return rule + ")"
    return (
        rule + ", real count of the class): with k shots at most k per class, so real and "
        "synthetic are about 1:1 within each defect class (classes are drawn equally)"
    )


def real_defects_seen(name: str, shots: int | None) -> str:
    """Which real defects a generator learnt from, for the report."""
    if name in RECORD_GENERATORS:
        return "the whole training split" if shots is None else "only the seed's shots"
    if name in NO_REAL_DEFECT_GENERATORS:
        return "none"
    return (
        "a learned card trained outside this run (on its own training data, e.g. a full train "
        "split)" + ("" if shots is None else ": MORE than the shots")
    )


def merge_results(paths: Sequence[Path], out: Path, stem: str = "downstream") -> dict[str, Any]:
    """Join runs made in parts (e.g. classification and segmentation in two processes, or a
    learned card's arms run once the card exists) into one result; summaries are recomputed.

    Where parts hold the same arm or realism row, the later part wins (a re-run replaces it).
    The parts must share data, settings and hyper-parameters; their sample grids are copied.
    """
    parts = [json.loads(Path(path).read_text()) for path in paths]
    base = parts[0]
    for part in parts[1:]:
        for key in ("data", "settings", "hyper_parameters", "mode", "shots"):
            if part.get(key) != base.get(key):
                raise SystemExit(f"--merge: {key} differs between {paths[0]} and another part")
    merged = dict(base)
    merged["classification_runs"], merged["segmentation_runs"] = {}, {}
    merged["generators"], merged["failed_generators"] = {}, {}
    rows: dict[str, Any] = {}
    for part in parts:
        merged["classification_runs"].update(part["classification_runs"])
        merged["segmentation_runs"].update(part["segmentation_runs"])
        merged["generators"].update(part["generators"])
        merged["failed_generators"].update(part["failed_generators"])
        rows.update((part["realism"] or {}).get("rows", {}))
        if part["realism"] and merged["realism"] is None:
            merged["realism"] = dict(part["realism"])
    if merged["realism"] is not None:
        merged["realism"]["rows"] = rows
    merged["skipped_generators"] = {
        name: reason
        for part in parts
        for name, reason in part["skipped_generators"].items()
        if name not in merged["generators"]
    }
    merged["summary"] = summarise_runs(
        merged["classification_runs"], merged["hyper_parameters"]["lr"], "lr"
    )
    merged["segmentation_summary"] = {
        name: dict(
            seg_f1=summarise([r["f1"] for r in results]),
            seg_iou=summarise([r["iou"] for r in results]),
        )
        for name, results in merged["segmentation_runs"].items()
    }
    merged["parts"] = [
        dict(
            command=part["command"],
            wall_time_s=part["wall_time_s"],
            started_utc=part["started_utc"],
            git_commit=part["git_commit"],
        )
        for part in parts
    ]
    starts = [datetime.fromisoformat(part["started_utc"]) for part in parts]
    ends = [
        start.timestamp() + part["wall_time_s"] for start, part in zip(starts, parts, strict=True)
    ]
    merged["wall_time_s"] = round(max(ends) - min(s.timestamp() for s in starts), 1)
    merged["command"] = "python -m benchmarks.downstream --merge " + " ".join(
        portable_path(path) for path in paths
    )
    merged["date_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out.mkdir(parents=True, exist_ok=True)
    grids: list[str] = []
    for path in paths:
        for grid in sorted(Path(path).parent.glob("samples_*.png")):
            if grid.parent.resolve() != out.resolve():
                shutil.copyfile(grid, out / grid.name)
            if grid.name not in grids:
                grids.append(grid.name)
    write_reports(merged, out, stem, grids)
    return merged


def write_reports(result: dict[str, Any], out: Path, stem: str, grids: Sequence[str]) -> None:
    """``<stem>.json``, ``<stem>.md`` and the bar charts in ``out``."""
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    rows = [
        (arm, 100 * row["error"]["mean"], 100 * row["error"]["std"])
        for arm, row in result["summary"].items()
    ]
    if rows:
        bar_chart(
            rows,
            f"Classification error % ({result['mode']}, mean ± std over "
            f"{result['settings']['seeds']} seed(s))",
            " %",
            out / f"{stem}_error.png",
        )
    seg_rows = [
        (arm, row["seg_f1"]["mean"], row["seg_f1"]["std"])
        for arm, row in result["segmentation_summary"].items()
    ]
    if seg_rows:
        bar_chart(seg_rows, "Segmentation pixel F1 (mean ± std)", "", out / f"{stem}_seg_f1.png")
    shots = result.get("shots")
    lines = [
        f"# Downstream benchmark ({result['mode']}"
        + ("" if shots is None else f", k = {shots} real defect images per class")
        + ")",
        "",
        f"{result['date_utc']}, commit `{result['git_commit']}`, wall time "
        f"{result['wall_time_s'] / 60:.1f} min ({result['machine']}).",
        f"Command: `{result['command']}`.",
        *[
            f"Part: `{part['command']}` ({part['wall_time_s'] / 60:.1f} min, started "
            f"{part['started_utc']})."
            for part in result.get("parts", [])
        ],
        f"Train: {result['data']['train']} {result['data']['train_counts']}; evaluation: "
        f"{result['data']['evaluation']} {result['data']['evaluation_counts']}.",
        *few_shot_lines(result),
        "",
        summary_table(result),
        "",
    ]
    if result["realism"]:
        lines += [
            f"Realism against {result['realism']['reference']} (KID subsets of "
            f"{result['realism']['kid_subset_size']}):",
            "",
            realism_table(result["realism"]),
            "",
        ]
    if result["skipped_generators"]:
        lines += [f"- skipped {k}: {v}" for k, v in result["skipped_generators"].items()] + [""]
    if result["failed_generators"]:
        lines += [f"- FAILED {k}: {v}" for k, v in result["failed_generators"].items()] + [""]
    lines += [f"![error per arm]({stem}_error.png)", ""]
    if seg_rows:
        lines += [f"![segmentation F1 per arm]({stem}_seg_f1.png)", ""]
    lines += [f"Samples: {', '.join(grids)}", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))


def few_shot_lines(result: dict[str, Any]) -> list[str]:
    """The report header's few-shot paragraph: shots per class, what each generator saw and the
    synthetic share (nothing for a run on the whole training split)."""
    shots = result.get("shots")
    if shots is None:
        return []
    counts = "; ".join(
        f"{seed}: " + ", ".join(f"{name} {n}" for name, n in per_class.items())
        for seed, per_class in result["shot_counts"].items()
    )
    seen = result["generators"]
    more = [name for name, row in seen.items() if "MORE" in row.get("real_defects_seen", "")]
    return [
        "",
        f"Few-shot: every arm of a seed trains on the same k = {shots} real defect images per "
        "class of the training split (`stratified_subset`) and all its good images; arms are "
        f"paired by seed. Real training images per seed: {counts}.",
        "Real defects each generator learnt from: "
        + "; ".join(f"`{name}`: {row.get('real_defects_seen', '?')}" for name, row in seen.items())
        + ". Placement sizes come from the seed's shots' masks"
        + "".join(
            f"; {name}: {note}"
            for name, note in (
                ("bank", "its own placement (the shots' defects' location prior, size and count)"),
                ("fitted", "its fitted placement"),
                (
                    "cutpaste",
                    f"fixed scale {CUTPASTE_SCALE[0]}-{CUTPASTE_SCALE[1]} for every class (the "
                    "same kind of image for every class: it can only teach defect vs good)",
                ),
            )
            if name in seen
        )
        + ".",
        (
            "Generators that saw MORE real defects than the shots: "
            + ", ".join(f"`{name}`" for name in more)
            + "."
            if more
            else "No generator saw more real defects than the shots."
        ),
        f"Synthetic share: {result.get('synthetic_per_class_rule', '?')}.",
    ]


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        return merge_results(args.merge, args.out)
    return run(args)


if __name__ == "__main__":
    main()
