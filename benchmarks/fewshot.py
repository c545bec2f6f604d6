"""Few-shot track: a defect segmenter trained on k real defect images per class, with and without
synthetic defects.

    uv run --group bench python -m benchmarks.fewshot --quick --shots 10
    uv run --group bench python -m benchmarks.fewshot --shots 10     # the committed run

The regime the library is for: hundreds of normal parts, a handful of real defects. Every arm
trains the same U-Net as the anomaly track (``benchmarks.anomaly``) with the same optimiser,
budget, crops and view order for a seed. Each batch holds ``real_per_batch`` of the seed's k real
defect images (flipped, cropped around a defect pixel half of the time) and normal images; the
arms differ only in what happens to the normal images:

- ``real`` (the baseline): nothing, they are defect-free negatives;
- ``real+bank``: with probability ``synthetic_p``, a defect of a ``DefectBank`` built from the
  seed's k shots, each class placed by the bank's own placement (``bank.placement(class)``:
  the location prior, size and count of the shots' defects, edge classes on an image edge);
- ``real+fitted``: a ``FittedGenerator`` fitted on the seed's k shots (``fit_defects``), each
  class at its fitted placement (size, orientation, count, location prior, edge side);
- ``real+<generator>:<blend>[:scale=lo-hi]``: a generator that needs no real defects (as in the
  anomaly track);
- ``real+perlin-anomalib``: the peer, anomalib's ``PerlinAnomalyGenerator`` (no texture source:
  the DTD dataset cannot be downloaded here);
- ``real+card:<name or folder>``: a learned generator card (``load_generator``), each class
  placed as the bank of the seed's shots places it (where, how large and how many the shots'
  defects were), so the card and the bank differ only in the layers.

So ``bank`` and ``fitted`` see exactly the k shots the segmenter sees; a card saw the defects it
was trained on (its card says which: usually the whole training split, more than k); the others
see no real defect at all. A seed fixes the k-shot subset (``stratified_subset``), the
initialisation, the normal images, flips and crops of every step and which normal images receive a
synthetic defect.

Selection is on validation only: a stratified share of the training split (normals and defects)
is held out before the shots are drawn; the checkpoint with the best validation pixel AP is scored
on the test split once. Metrics: pixel AP, pixel AUROC, pixel F1 at probability 0.5, and image
AUROC from the maximum of the smoothed map; overall and per class. Every arm's difference to
``real`` gets a 95 % bootstrap CI over the paired seeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import anomaly
from benchmarks import downstream_data as data_lib
from benchmarks.downstream_data import ImageSet
from benchmarks.downstream_models import TinyUNet
from benchmarks.recording import git_commit, portable_command
from defectaug import inject_defects, load_generator
from defectaug._seeding import mix_seed
from defectaug.datasets import GOOD_LABEL, DefectRecord
from defectaug.evaluation import PixelCounts, pixel_counts
from defectaug.generators.base import DefectGenerator

BASELINE_ARM = "real"
#: Arms ``real+card:<name or folder>`` add a learned generator card's defects.
CARD_PREFIX = "card:"
DEFAULT_ARMS = (
    BASELINE_ARM,
    "real+bank",
    "real+fitted",
    "real+cutpaste:alpha:scale=0.3-0.8",
    f"real+{anomaly.PEER_ARM}",
)
METRICS = (*anomaly.METRICS, "pixel_f1")


@dataclass(frozen=True)
class Budget:
    seeds: int
    steps: int
    batch_size: int
    real_per_batch: int
    crop: int
    eval_every: int


QUICK = Budget(seeds=1, steps=200, batch_size=16, real_per_batch=4, crop=64, eval_every=100)
FULL = Budget(seeds=5, steps=800, batch_size=16, real_per_batch=4, crop=64, eval_every=100)


def log(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


# ---------------------------------------------------------------------------------------- data
@dataclass
class Splits:
    normals: torch.Tensor  # [N, 1, S, S] training normals (validation share removed)
    pool: ImageSet  # training defect images with a mask: each seed's shots come from here
    pool_records: list[DefectRecord]
    validation: ImageSet  # held-out normals and defects of the training split
    test: ImageSet
    classes: tuple[str, ...]


def load_splits(args: argparse.Namespace) -> Splits:
    train_records, test_records, classes = anomaly.read_records(args)
    good = classes.index(GOOD_LABEL)
    # Defect images without a mask can neither be shots nor scored per pixel.
    usable = [r for r in train_records if r.label == GOOD_LABEL or r.mask is not None]
    train = data_lib.load_image_set(usable, classes, args.image_size)
    kept, validation = data_lib.carve_validation(train, args.val_fraction, args.val_seed)
    normals = kept.images[kept.labels == good]
    pool = kept.subset(torch.nonzero(kept.labels != good).flatten())
    by_path = {str(r.image): r for r in usable}
    test = data_lib.load_image_set(test_records, classes, args.image_size)
    records = [by_path[path] for path in pool.paths]
    return Splits(normals, pool, records, validation, anomaly.scored_images(test), classes)


def shot_index(pool: ImageSet, shots: int | None, seed: int) -> torch.Tensor:
    """The seed's k shots per class: the same subset for every arm of the seed (the classifier
    of ``benchmarks.downstream --shots`` draws its shots with the same function)."""
    return data_lib.shot_index(pool, shots, seed)


# ------------------------------------------------------------------------------------- sources
def per_class_source(
    generator: DefectGenerator, placements: dict[str, dict[str, Any]]
) -> anomaly.Synthesizer:
    """Each image gets one class (uniform), placed with that class's ``inject_defects`` keywords."""
    types = list(placements)

    def synthesize(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = torch.Generator().manual_seed(seed)
        choice = torch.randint(len(types), (len(images),), generator=rng)
        out, masks = images.clone(), torch.zeros_like(images, dtype=torch.bool)
        for number, name in enumerate(types):
            members = torch.nonzero(choice == number).flatten()
            if len(members):
                result = inject_defects(
                    images[members],
                    name,
                    generator,
                    seed=mix_seed(seed, number),
                    **placements[name],
                )
                out[members], masks[members] = result.images, result.masks
        return out, masks

    return synthesize


def make_source(arm: str, shot_records: Sequence[DefectRecord]) -> anomaly.Synthesizer | None:
    if arm == BASELINE_ARM:
        return None
    source = arm.removeprefix("real+")
    if source == "bank":
        return per_class_source(*data_lib.bank_generator(shot_records))
    if source == "fitted":
        return per_class_source(*data_lib.fitted_generator(shot_records))
    if source.startswith(CARD_PREFIX):
        card = load_card(source)
        _, placements = data_lib.bank_generator(shot_records)
        return per_class_source(
            card, {name: placements[name] for name in card.defect_types if name in placements}
        )
    return anomaly.make_source(source)


@functools.cache
def load_card(source: str) -> DefectGenerator:
    """The learned card of a ``card:<name or folder>`` source, loaded once per process (the arm's
    check and every seed share it; sampling does not change it)."""
    name = source.removeprefix(CARD_PREFIX)
    try:
        return load_generator(name)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"arms: real+{source}: the card could not be loaded: {error}") from None


def check_arm(arm: str) -> None:
    if arm == BASELINE_ARM or arm in ("real+bank", "real+fitted"):
        return
    if not arm.startswith("real+"):
        raise ValueError(
            f"arms: unknown arm {arm!r}; expected {BASELINE_ARM!r}, 'real+bank', 'real+fitted' "
            f"or real+<anomaly-track source> (e.g. real+cutpaste:alpha, real+{anomaly.PEER_ARM})"
        )
    source = arm.removeprefix("real+")
    if source.startswith(CARD_PREFIX):
        load_card(source)
    elif source != anomaly.PEER_ARM:
        anomaly.make_source(source)


# ------------------------------------------------------------------------------------ training
def step_views(
    splits: Splits, shots: ImageSet, step: int, seed: int, budget: Budget
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's real defect images, normal images, crop corners and synthetic coins: a function
    of (seed, step) and the shots only, so every arm of a seed sees the same views."""
    rng = torch.Generator().manual_seed(mix_seed(seed, step))
    side = splits.normals.shape[-1]
    real = torch.randint(len(shots), (budget.real_per_batch,), generator=rng)
    normal_count = budget.batch_size - budget.real_per_batch
    normal = torch.randint(len(splits.normals), (normal_count,), generator=rng)
    images = torch.cat([shots.images[real], splits.normals[normal]])
    blank = torch.zeros_like(splits.normals[normal], dtype=torch.bool)
    masks = torch.cat([shots.masks[real], blank])
    flips = torch.rand(budget.batch_size, 2, generator=rng) < 0.5
    for axis, dim in ((0, -1), (1, -2)):
        images[flips[:, axis]] = images[flips[:, axis]].flip(dim)
        masks[flips[:, axis]] = masks[flips[:, axis]].flip(dim)
    corners = torch.randint(side - budget.crop + 1, (budget.batch_size, 2), generator=rng)
    centred = torch.rand(budget.real_per_batch, generator=rng) < 0.5
    for i in range(budget.real_per_batch):
        pixels = torch.nonzero(masks[i, 0])
        if centred[i] and len(pixels):
            # Small defects would rarely fall in a random crop: centre half of them on one.
            y, x = pixels[int(torch.randint(len(pixels), (1,), generator=rng))].tolist()
            corners[i, 0] = min(max(y - budget.crop // 2, 0), side - budget.crop)
            corners[i, 1] = min(max(x - budget.crop // 2, 0), side - budget.crop)
    coins = torch.rand(normal_count, generator=rng)
    return images, masks, corners, coins


def score(maps: torch.Tensor, data: ImageSet) -> dict[str, Any]:
    """The anomaly track's metrics plus pixel F1 at probability 0.5, overall and per class."""
    result = anomaly.score(maps, data)
    good = data.classes.index(GOOD_LABEL)
    predicted = maps > 0.5
    for group in result:
        select = (
            torch.ones(len(data), dtype=torch.bool)
            if group == "all"
            else (data.labels == data.classes.index(group)) | (data.labels == good)
        )
        counts = PixelCounts() + pixel_counts(predicted[select], data.masks[select])
        result[group]["pixel_f1"] = counts.f1
    return result


def train_arm(
    arm: str, splits: Splits, shots: int | None, seed: int, budget: Budget, synthetic_p: float
) -> dict[str, Any]:
    start = time.perf_counter()
    index = shot_index(splits.pool, shots, seed)
    shot_set = splits.pool.subset(index)
    synthesize = make_source(arm, [splits.pool_records[i] for i in index.tolist()])
    torch.manual_seed(seed)
    model = TinyUNet(widths=(16, 32, 64, 128))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, budget.steps)
    curve: list[dict[str, float]] = []
    best_ap, best_state, best_step = -1.0, None, 0
    for step in range(1, budget.steps + 1):
        images, masks, corners, coins = step_views(splits, shot_set, step, seed, budget)
        if synthesize is not None:
            chosen = torch.nonzero(coins < synthetic_p).flatten() + budget.real_per_batch
            if len(chosen):
                images[chosen], masks[chosen] = synthesize(
                    images[chosen], mix_seed(seed, 10_000 + step)
                )
        logits = model(anomaly.crop(images, corners, budget.crop))
        loss = anomaly.segmentation_loss(logits, anomaly.crop(masks, corners, budget.crop))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % budget.eval_every == 0 or step == budget.steps:
            val = score(anomaly.anomaly_maps(model, splits.validation.images), splits.validation)
            curve.append({"step": step, "loss": loss.item(), **val["all"]})
            if val["all"]["pixel_ap"] > best_ap:
                best_ap, best_step = val["all"]["pixel_ap"], step
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            log(f"{arm} k={shots} seed {seed} step {step}: loss {loss.item():.3f} {val['all']}")
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "arm": arm,
        "seed": seed,
        "shots": shots,
        "shot_counts": shot_set.class_counts(),
        "best_step": best_step,
        "val_pixel_ap": best_ap,
        "curve": curve,
        "test": score(anomaly.anomaly_maps(model, splits.test.images), splits.test),
        "train_s": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------- reports
def write_reports(result: dict[str, Any], out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    anomaly.learning_curves(result, out / f"{stem}_curves.png")
    shots = "all" if result["shots"] is None else result["shots"]
    shot_counts = ", ".join(
        f"{name} {count}" for name, count in result["shot_counts"].items() if name != GOOD_LABEL
    )
    has_cards = any(arm.startswith(f"real+{CARD_PREFIX}") for arm in result["arms"])
    card_note = (
        "`real+card:` arms saw the defects their card was trained on (more than k: see the card); "
        if has_cards
        else ""
    )
    lines = [
        f"# Few-shot track ({result['dataset']}, k = {shots} real defect images per class)",
        "",
        anomaly.run_line(result),
        "",
        f"Shots per class: {shot_counts}. `real+bank` and `real+fitted` are built from the "
        f"seed's shots; {card_note}the other synthetic sources see no real defect.",
        "",
        "Test split, all classes (mean over seeds; difference to `real` paired by seed):",
        "",
        anomaly.table(result, baseline=BASELINE_ARM, metrics=METRICS),
        "",
        "Per class (pixel AP / image AUROC, mean over seeds):",
        "",
        anomaly.per_class_table(result),
        "",
        f"Learning curves (validation pixel AP): `{stem}_curves.png`.",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--train-data", type=Path, default=anomaly.DEFAULT_DATA)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-data", type=Path, default=None, help="default: --train-data")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--out", type=Path, default=anomaly.DEFAULT_OUT / "fewshot")
    parser.add_argument("--stem", default=None, help="default: <dataset>_k<shots>")
    parser.add_argument(
        "--shots", default="10", help="real defect images kept per class: a number or 'all'"
    )
    parser.add_argument("--quick", action="store_true", help="one seed, 200 steps")
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help=f"default: {' '.join(DEFAULT_ARMS)}; with --merge: the arms to keep, in this order",
    )
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--synthetic-p",
        type=float,
        default=0.5,
        help="probability that a normal training image receives a synthetic defect",
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--val-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--merge", nargs="+", type=Path, default=None, help="join earlier result JSONs"
    )
    for name in Budget.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args(argv)
    args.keep_arms = args.arms
    args.arms = args.arms or list(DEFAULT_ARMS)
    if args.shots == "all":
        args.shots = None
    else:
        try:
            args.shots = int(args.shots)
        except ValueError:
            parser.error(f"--shots: expected a positive integer or 'all', got {args.shots!r}")
        if args.shots < 1:
            parser.error(f"--shots: expected a positive integer or 'all', got {args.shots}")
    base = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in Budget.__dataclass_fields__ if getattr(args, k)}
    args.budget = Budget(**{**base.__dict__, **overrides})
    if not 0 < args.budget.real_per_batch < args.budget.batch_size:
        parser.error("--real-per-batch: expected at least 1 and fewer than --batch-size")
    if args.budget.crop > args.image_size or args.budget.crop % 8:
        parser.error("--crop: expected a multiple of 8 no larger than --image-size")
    if not 0.0 <= args.synthetic_p <= 1.0:
        parser.error(f"--synthetic-p: expected a probability in [0, 1], got {args.synthetic_p}")
    for arm in args.arms:
        try:
            check_arm(arm)
        except ValueError as error:
            parser.error(str(error))
    if args.stem is None:
        args.stem = f"{args.train_data.name}_k{'all' if args.shots is None else args.shots}"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        result = anomaly.merge_results(
            args.merge,
            args.out,
            args.stem,
            args.keep_arms,
            baseline=BASELINE_ARM,
            writer=write_reports,
        )
        print(anomaly.table(result, baseline=BASELINE_ARM, metrics=METRICS))
        return result
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    splits = load_splits(args)
    log(
        f"{len(splits.normals)} training normals, {len(splits.pool)} defect images to draw shots "
        f"from; validation {len(splits.validation)}; test {len(splits.test)}"
    )
    command = portable_command(
        " ".join(["uv run --group bench python -m benchmarks.fewshot", *sys.argv[1:]])
    )
    commit = git_commit(short=True)  # the commit the run starts from
    runs: list[dict[str, Any]] = []
    planned = [(seed, arm) for seed in anomaly.run_seeds(args) for arm in args.arms]
    result: dict[str, Any] = {}
    for seed, arm in planned:
        runs.append(train_arm(arm, splits, args.shots, seed, args.budget, args.synthetic_p))
        log(f"{arm} seed {seed}: test {runs[-1]['test']['all']}")
        # Written after every run: a long run stopped early still leaves its complete seeds.
        result = {
            **anomaly.run_record(args, command, commit),
            "budget": f"shots {'all' if args.shots is None else args.shots}, "
            + ", ".join(f"{k} {v}" for k, v in args.budget.__dict__.items())
            + f", synthetic_p {args.synthetic_p}, image {args.image_size} px",
            "shots": args.shots,
            "shot_counts": runs[0]["shot_counts"],
            "arms": args.arms,
            "runs": runs,
            "complete": len(runs) == len(planned),
            "effects": anomaly.paired_effects(runs, args.arms, BASELINE_ARM, METRICS),
            "wall_s": time.perf_counter() - started,
            "samples": [],
        }
        write_reports(result, args.out, args.stem)
    print(anomaly.table(result, baseline=BASELINE_ARM, metrics=METRICS))
    return result


if __name__ == "__main__":
    main()
