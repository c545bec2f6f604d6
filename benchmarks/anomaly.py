"""Anomaly track: a defect segmenter trained with no real defects at all.

    uv run --group bench python -m benchmarks.anomaly --quick     # one seed, short training
    uv run --group bench python -m benchmarks.anomaly             # the committed run
    uv run --group bench python -m benchmarks.anomaly --samples-only --arms A B   # look first

The setting most inspection teams start in: normal images only. A discriminative U-Net (the
second half of DRAEM) learns to segment synthetic anomalies pasted on normal training images, and
is scored on the *real* defects and good images of the evaluation split. Every arm uses the same
network, optimiser, budget, crops and view order for a seed; only the anomaly source differs:

- ``<generator>:<blend>``: a defectaug generator that needs no real defects (``procedural``, all
  its types; the self-supervised ``cutpaste``, ``nsa`` and ``texture``), at the library's default
  placement (or ``:scale=<low>-<high>``, the layer side over the image side), composited by
  ``blend``;
- ``<arm>+<arm>[+...]``: a mixture, each image's anomaly from one of the arms, drawn per image;
- ``perlin-anomalib`` (the peer): anomalib's ``PerlinAnomalyGenerator``, as DRAEM / DSR / GLASS
  use it. It gets no texture source (the DTD dataset cannot be downloaded here), so it fills its
  Perlin masks with its built-in noise.

Model selection is on a validation split, never on the test split: a stratified share of the
training normals is held out, and the training split's own defect images (never trained on in
this track) are the validation anomalies. The checkpoint with the best validation pixel AP is
scored on the test split once. Metrics: pixel AP and pixel AUROC over every pixel of the test
images (good images' pixels are negatives), image AUROC from the maximum of the smoothed map;
overall and per defect class (that class's images against all good images). Seeds are paired,
and every arm's difference to the peer gets a 95 % bootstrap CI over seeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks import downstream_data as data_lib
from benchmarks.downstream_data import ImageSet
from benchmarks.downstream_models import TinyUNet
from benchmarks.recording import git_commit, joined_commands, portable_command, portable_path
from defectaug import inject_defects
from defectaug._seeding import mix_seed
from defectaug.datasets import GOOD_LABEL, DefectRecord
from defectaug.evaluation import average_precision, bootstrap_ci, effect_verdict, roc_auc

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "magnetic_tile"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
PEER_ARM = "perlin-anomalib"
#: defectaug's generators that need no real defects.
GENERATORS = ("procedural", "cutpaste", "nsa", "texture")
DEFECTAUG_ARMS = (
    "procedural:alpha",
    "procedural:poisson",
    "cutpaste:alpha",
    "nsa:poisson",
    "texture:alpha",
)
METRICS = ("pixel_ap", "pixel_auroc", "image_auroc")
#: Side of the smoothing window before an image's map is reduced to its maximum (DRAEM does the
#: same: a single hot pixel should not decide the image score).
IMAGE_SCORE_WINDOW = 5

Synthesizer = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Budget:
    seeds: int
    steps: int
    batch_size: int
    crop: int
    eval_every: int


QUICK = Budget(seeds=1, steps=300, batch_size=16, crop=64, eval_every=100)
FULL = Budget(seeds=5, steps=800, batch_size=16, crop=64, eval_every=100)


def log(message: str) -> None:
    print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


# ------------------------------------------------------------------------------------- sources
def defectaug_source(
    generator: str, blend: str, scale: tuple[float, float] | None = None
) -> Synthesizer:
    """A defectaug generator, one defect per image, at the library's default placement or at the
    given ``scale`` range (layer side over the image side)."""
    placement = {} if scale is None else {"scale": scale}

    def synthesize(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        result = inject_defects(images, None, generator, blend=blend, p=1.0, seed=seed, **placement)
        return result.images, result.masks

    return synthesize


def perlin_source() -> Synthesizer:
    try:
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
    except ImportError as error:  # pragma: no cover - depends on the bench group
        raise RuntimeError(
            "the peer arm needs anomalib: run with `uv run --group bench ...`"
        ) from error
    peer = PerlinAnomalyGenerator(anomaly_source_path=None, probability=1.0)

    def synthesize(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        # anomalib draws from torch's global generator; fork it so the arm is reproducible and
        # leaves the other arms' streams alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
            augmented, masks = peer(rgb)
        if images.shape[1] == 1:
            augmented = augmented.mean(dim=1, keepdim=True)
        return augmented.clamp(0, 1), masks > 0.5

    return synthesize


def mixed_source(sources: Sequence[Synthesizer]) -> Synthesizer:
    """Each image of a batch gets its anomaly from one of ``sources``, chosen uniformly per image
    from the seed (a mixture, as ``v2.RandomChoice`` over ``DefectInject`` transforms gives)."""

    def synthesize(images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        draw = torch.Generator().manual_seed(mix_seed(seed, 0))
        choice = torch.randint(len(sources), (images.shape[0],), generator=draw)
        # Every image is drawn to exactly one source, so every row below is written.
        augmented = torch.empty_like(images)
        masks = torch.empty((images.shape[0], 1, *images.shape[-2:]), dtype=torch.bool)
        for number, source in enumerate(sources):
            chosen = torch.nonzero(choice == number).flatten()
            if chosen.numel():
                augmented[chosen], masks[chosen] = source(
                    images[chosen], mix_seed(seed, 1 + number)
                )
        return augmented, masks

    return synthesize


def make_source(arm: str) -> Synthesizer:
    if "+" in arm:
        return mixed_source([make_source(part) for part in arm.split("+")])
    if arm == PEER_ARM:
        return perlin_source()
    generator, _, rest = arm.partition(":")
    blend, _, scale_text = rest.partition(":scale=")
    scale = None
    if scale_text:
        low, _, high = scale_text.partition("-")
        try:
            scale = (float(low), float(high))
        except ValueError:
            scale = None
        if scale is None or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(
                f"arms: {arm!r}: expected scale=<low>-<high> with 0 < low <= high <= 1"
            )
    if generator not in GENERATORS or blend not in ("alpha", "poisson", "improved_poisson"):
        raise ValueError(
            f"arms: unknown arm {arm!r}; expected <generator>:<blend>[:scale=<low>-<high>] with a "
            f"generator among {list(GENERATORS)} and blend alpha, poisson or improved_poisson, "
            f"or {PEER_ARM!r}; arms joined by '+' make a mixture"
        )
    return defectaug_source(generator, blend, scale)


# ---------------------------------------------------------------------------------------- data
@dataclass
class Splits:
    train_normals: torch.Tensor  # [N, 1, S, S]
    validation: ImageSet  # held-out normals + the training split's defect images
    test: ImageSet | None  # None when it was not read (``--samples-only``)
    classes: tuple[str, ...]


def read_records(
    args: argparse.Namespace,
) -> tuple[list[DefectRecord], list[DefectRecord], tuple[str, ...]]:
    """The training and test records, and the class names of both."""
    train_records = data_lib.read_split(args.train_data, args.train_split)
    test_records = data_lib.read_split(args.test_data or args.train_data, args.test_split)
    return train_records, test_records, data_lib.class_names([*train_records, *test_records])


def scored_images(data: ImageSet) -> ImageSet:
    """The images that can be scored per pixel: good ones (all background by definition) and
    defect images with a mask file."""
    good = data.classes.index(GOOD_LABEL)
    return data.subset(torch.nonzero((data.labels == good) | data.has_mask).flatten())


def load_splits(args: argparse.Namespace, with_test: bool = True) -> Splits:
    """The training normals, the validation set and (``with_test``) the scored test images."""
    train_records, test_records, classes = read_records(args)
    train = data_lib.load_image_set(train_records, classes, args.image_size)
    good = classes.index(GOOD_LABEL)
    normals = train.subset(torch.nonzero(train.labels == good).flatten())
    kept, held_out = data_lib.carve_validation(normals, args.val_fraction, args.val_seed)
    anomalies = train.subset(torch.nonzero((train.labels != good) & train.has_mask).flatten())
    validation = ImageSet(
        torch.cat([held_out.images, anomalies.images]),
        torch.cat([held_out.labels, anomalies.labels]),
        torch.cat([held_out.masks, anomalies.masks]),
        torch.cat([held_out.has_mask, anomalies.has_mask]),
        classes,
        [*held_out.paths, *anomalies.paths],
    )
    test = None
    if with_test:
        test = scored_images(data_lib.load_image_set(test_records, classes, args.image_size))
    return Splits(kept.images, validation, test, classes)


def training_views(
    normals: torch.Tensor, step: int, seed: int, budget: Budget
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step's normal images and crop corners: a function of (seed, step) only, so every arm of
    a seed sees the same images in the same order and crops."""
    rng = torch.Generator().manual_seed(mix_seed(seed, step))
    index = torch.randint(len(normals), (budget.batch_size,), generator=rng)
    side = normals.shape[-1]
    corners = torch.randint(side - budget.crop + 1, (budget.batch_size, 2), generator=rng)
    flips = torch.rand(budget.batch_size, 2, generator=rng) < 0.5
    images = normals[index].clone()
    images[flips[:, 0]] = images[flips[:, 0]].flip(-1)
    images[flips[:, 1]] = images[flips[:, 1]].flip(-2)
    return images, corners


def crop(batch: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    return torch.stack(
        [
            item[:, y : y + size, x : x + size]
            for item, (y, x) in zip(batch, corners.tolist(), strict=True)
        ]
    )


# ------------------------------------------------------------------------------------ training
def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Focal BCE (DRAEM's choice: anomalies are a few percent of the pixels) plus soft Dice."""
    target = target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    focal = ((1 - torch.exp(-bce)) ** 2 * bce).mean()
    probability = logits.sigmoid()
    overlap = (probability * target).sum()
    dice = 1 - (2 * overlap + 1) / (probability.sum() + target.sum() + 1)
    return focal + dice


@torch.no_grad()
def anomaly_maps(model: TinyUNet, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    model.eval()
    maps = torch.cat(
        [model(images[i : i + batch_size]).sigmoid() for i in range(0, len(images), batch_size)]
    )
    model.train()
    return maps


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    smooth = F.avg_pool2d(maps, IMAGE_SCORE_WINDOW, stride=1, padding=IMAGE_SCORE_WINDOW // 2)
    return smooth.flatten(1).amax(dim=1)


def score(maps: torch.Tensor, data: ImageSet) -> dict[str, Any]:
    """Pixel AP / AUROC and image AUROC, overall and per defect class (vs all good images)."""
    good = data.classes.index(GOOD_LABEL)
    images = image_scores(maps)
    is_defect = data.labels != good

    def metrics(select: torch.Tensor) -> dict[str, float]:
        return {
            "pixel_ap": average_precision(maps[select].flatten(), data.masks[select].flatten()),
            "pixel_auroc": roc_auc(maps[select].flatten(), data.masks[select].flatten()),
            "image_auroc": roc_auc(images[select], is_defect[select]),
        }

    result: dict[str, Any] = {"all": metrics(torch.ones_like(is_defect))}
    for label, name in enumerate(data.classes):
        members = data.labels == label
        if label == good or not bool(data.masks[members].any()):
            continue
        result[name] = metrics(members | ~is_defect)
    return result


def train_arm(arm: str, splits: Splits, seed: int, budget: Budget, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = TinyUNet(widths=(16, 32, 64, 128))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, budget.steps)
    synthesize = make_source(arm)
    curve: list[dict[str, float]] = []
    best_ap, best_state, best_step = -1.0, None, 0
    start = time.perf_counter()
    for step in range(1, budget.steps + 1):
        normals, corners = training_views(splits.train_normals, step, seed, budget)
        augmented, masks = synthesize(normals, mix_seed(seed, 10_000 + step))
        images, targets = crop(augmented, corners, budget.crop), crop(masks, corners, budget.crop)
        loss = segmentation_loss(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % budget.eval_every == 0 or step == budget.steps:
            val = score(anomaly_maps(model, splits.validation.images), splits.validation)["all"]
            curve.append({"step": step, "loss": loss.item(), **val})
            if val["pixel_ap"] > best_ap:
                best_ap, best_step = val["pixel_ap"], step
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            log(f"{arm} seed {seed} step {step}: loss {loss.item():.3f} val {val}")
    assert best_state is not None
    if splits.test is None:
        raise ValueError("splits: the test split was not read (load_splits(with_test=False))")
    model.load_state_dict(best_state)
    test = score(anomaly_maps(model, splits.test.images), splits.test)
    return {
        "arm": arm,
        "seed": seed,
        "best_step": best_step,
        "val_pixel_ap": best_ap,
        "curve": curve,
        "test": test,
        "train_s": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------- reports
def paired_effects(
    runs: Sequence[dict[str, Any]],
    arms: Sequence[str],
    baseline: str = PEER_ARM,
    metrics: Sequence[str] = METRICS,
) -> dict[str, Any]:
    """Per arm and metric: mean over seeds, and the mean paired difference to ``baseline`` with
    its 95 % bootstrap CI (only seeds where both arms ran)."""
    by_arm = {arm: {r["seed"]: r["test"] for r in runs if r["arm"] == arm} for arm in arms}
    effects: dict[str, Any] = {}
    for arm in arms:
        row: dict[str, Any] = {}
        for group in sorted({g for tests in by_arm[arm].values() for g in tests}):
            for metric in metrics:
                values = [t[group][metric] for t in by_arm[arm].values() if group in t]
                entry: dict[str, Any] = {"mean": float(np.mean(values)), "n": len(values)}
                if arm != baseline:
                    diffs = [
                        t[group][metric] - by_arm[baseline][s][group][metric]
                        for s, t in by_arm[arm].items()
                        if s in by_arm.get(baseline, {}) and group in t
                    ]
                    if len(diffs) >= 2:
                        mean, low, high = bootstrap_ci(diffs, seed=0)
                        entry |= {"diff": mean, "ci": [low, high]}
                        entry["verdict"] = effect_verdict(
                            low, high, higher_is_better=True, seeds=len(diffs)
                        )
                    elif diffs:
                        entry |= {"diff": diffs[0], "ci": None, "verdict": "one seed"}
                row[f"{group}/{metric}"] = entry
        effects[arm] = row
    return effects


METRIC_TITLES = {
    "pixel_ap": "pixel AP",
    "pixel_auroc": "pixel AUROC",
    "image_auroc": "image AUROC",
    "pixel_f1": "pixel F1 @ 0.5",
}


def table(
    result: dict[str, Any],
    group: str = "all",
    baseline: str = PEER_ARM,
    metrics: Sequence[str] = METRICS,
) -> str:
    arms = result["arms"]
    name = "peer" if baseline == PEER_ARM else f"`{baseline}`"
    lines = [
        "| source | "
        + " | ".join(METRIC_TITLES[m] for m in metrics)
        + f" | pixel AP vs {name} (95 % CI) | verdict |",
        "| --- |" + " ---: |" * len(metrics) + " ---: | --- |",
    ]
    for arm in arms:
        row = result["effects"][arm]
        cells = [
            f"{row[f'{group}/{m}']['mean']:.3f}" if f"{group}/{m}" in row else "-" for m in metrics
        ]
        ap = row.get(f"{group}/pixel_ap", {})
        if arm == baseline:
            versus, verdict = f"({'peer' if baseline == PEER_ARM else 'baseline'})", ""
        elif ap.get("ci"):
            versus = f"{ap['diff']:+.3f} [{ap['ci'][0]:+.3f}, {ap['ci'][1]:+.3f}]"
            verdict = ap["verdict"]
        elif "diff" in ap:
            versus, verdict = f"{ap['diff']:+.3f}", ap["verdict"]
        else:
            versus, verdict = "-", ""
        lines.append(f"| {arm} | {' | '.join(cells)} | {versus} | {verdict} |")
    return "\n".join(lines)


def per_class_table(result: dict[str, Any]) -> str:
    groups = sorted({k.split("/")[0] for row in result["effects"].values() for k in row} - {"all"})
    lines = [
        "| source | " + " | ".join(f"{g} AP / img AUROC" for g in groups) + " |",
        "| --- |" + " ---: |" * len(groups),
    ]
    for arm in result["arms"]:
        row = result["effects"][arm]
        cells = []
        for g in groups:
            ap, auroc = row.get(f"{g}/pixel_ap"), row.get(f"{g}/image_auroc")
            cells.append(f"{ap['mean']:.3f} / {auroc['mean']:.2f}" if ap and auroc else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def learning_curves(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One colour per arm (its seeds share it), so arms stay apart however many there are.
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab10" if len(result["arms"]) <= 10 else "tab20")
    for number, arm in enumerate(result["arms"]):
        runs = [run for run in result["runs"] if run["arm"] == arm]
        label = f"{arm} ({len(runs)} seed{'' if len(runs) == 1 else 's'})"
        for index, run in enumerate(runs):
            steps = [point["step"] for point in run["curve"]]
            axis.plot(
                steps,
                [point["pixel_ap"] for point in run["curve"]],
                color=colours(number),
                alpha=0.8,
                label=label if index == 0 else None,
            )
    axis.set_xlabel("step")
    axis.set_ylabel("validation pixel AP")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def sample_grid(splits: Splits, arms: Sequence[str], path: Path, columns: int = 6) -> None:
    """Row 1: real validation defects; then each arm's synthetic training images, mask outline
    in red. Saved beside the tables so realism can be judged by eye."""
    good = splits.classes.index(GOOD_LABEL)
    defects = torch.nonzero(splits.validation.labels != good).flatten()
    columns = min(columns, len(defects), len(splits.train_normals))
    pick = defects[torch.linspace(0, len(defects) - 1, columns).round().long()]
    rows = [(splits.validation.images[pick], splits.validation.masks[pick])]
    normals = splits.train_normals[:columns]
    for arm in arms:
        rows.append(make_source(arm)(normals, 7))
    tiles = []
    for images, masks in rows:
        rgb = images.expand(-1, 3, -1, -1).clone()
        edge = masks.float() - (-F.max_pool2d(-masks.float(), 3, 1, 1))
        rgb[:, 0][edge[:, 0] > 0] = 1.0
        rgb[:, 1:][edge.expand(-1, 2, -1, -1) > 0] = 0.0
        tiles.append(torch.cat(list(torch.cat([images.expand(-1, 3, -1, -1), rgb], dim=2)), dim=2))
    grid = torch.cat(tiles, dim=1)
    Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def run_record(args: argparse.Namespace, command: str, commit: str) -> dict[str, str]:
    """What a result records of its run: data, command, date, starting commit and machine."""
    return {
        "dataset": portable_path(args.train_data),
        "command": command.strip(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "machine": f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}",
    }


def run_line(result: dict[str, Any]) -> str:
    """A report's line on how its figures were made."""
    return (
        f"`{result['command']}` — {result['date']}, commit {result['commit']}, "
        f"{result['machine']}; {result['budget']}; wall {result['wall_s'] / 60:.1f} min"
        + ("." if result.get("complete", True) else " (stopped early: the seeds listed ran).")
        + "".join(f"\n{line}" for line in part_lines(result))
    )


def write_reports(result: dict[str, Any], out: Path, stem: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    learning_curves(result, out / f"{stem}_curves.png")
    lines = [
        f"# Anomaly track ({result['dataset']}): segmenter trained on normals + synthetic only",
        "",
        run_line(result),
        "",
        "Test split, all classes (mean over seeds; difference to the peer paired by seed):",
        "",
        table(result),
        "",
        "Per class (pixel AP / image AUROC, mean over seeds):",
        "",
        per_class_table(result),
        "",
        f"Learning curves (validation): `{stem}_curves.png`; samples (real defects on top, "
        f"then one row per arm): {', '.join(f'`{name}`' for name in result['samples'])}.",
    ]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--test-data", type=Path, default=None, help="default: --train-data")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--stem", default="anomaly")
    parser.add_argument("--quick", action="store_true", help="one seed, 300 steps")
    parser.add_argument(
        "--samples-only",
        action="store_true",
        help="draw the sample grid of --arms (<stem>_samples.png) and train nothing",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        default=None,
        help=f"default: {' '.join([*DEFECTAUG_ARMS, PEER_ARM])}; "
        "with --merge: the arms to keep, in this order",
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--val-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds run are first-seed .. first-seed + seeds - 1 (a run split over processes)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        help="join the runs of earlier result JSONs (same data and budget) into one report",
    )
    for name in ("seeds", "steps", "batch_size", "crop", "eval_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    args = parser.parse_args(argv)
    args.keep_arms = args.arms
    args.arms = args.arms or [*DEFECTAUG_ARMS, PEER_ARM]
    base = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in Budget.__dataclass_fields__ if getattr(args, k)}
    args.budget = Budget(**{**base.__dict__, **overrides})
    if args.budget.crop > args.image_size or args.budget.crop % 8:
        parser.error("--crop: expected a multiple of 8 no larger than --image-size")
    if args.image_size % 8:
        parser.error("--image-size: expected a multiple of 8 (the U-Net pools three times)")
    for arm in args.arms:
        if arm != PEER_ARM:
            try:
                make_source(arm)
            except ValueError as error:
                parser.error(str(error))
    return args


def run_seeds(args: argparse.Namespace) -> range:
    """The seeds a run trains: ``--seeds`` of them from ``--first-seed`` on (a run split over
    processes, joined with ``--merge``)."""
    return range(args.first_seed, args.first_seed + args.budget.seeds)


def merge_results(
    paths: Sequence[Path],
    out: Path,
    stem: str,
    keep: Sequence[str] | None = None,
    baseline: str = PEER_ARM,
    writer: Callable[[dict[str, Any], Path, str], None] | None = None,
) -> dict[str, Any]:
    """One report from runs made in parts (e.g. the peer and the defectaug arms on different
    days); a later part's run of the same (arm, seed) replaces an earlier one. ``keep`` limits
    the report to those arms, in that order (e.g. to leave out rows measured before a library
    change); without it the arms come in the order the parts list them.

    The report lists its ``parts`` (:func:`report_parts`) that ran a kept arm: a merged report
    given again counts as the parts it was made of, each part once, so its wall time is not
    counted twice."""
    parts = [json.loads(path.read_text()) for path in paths]
    # Each part once (by command, commit and date), and only parts that ran a kept arm.
    unique = {_part_key(part): part for report in parts for part in report_parts(report)}
    made_of = [part for part in unique.values() if keep is None or set(part["arms"]) & set(keep)]
    # Parts may run different seeds (e.g. two processes side by side); the rest must agree.
    budgets = {re.sub(r"seeds \d+, ", "", part["budget"]) for part in parts}
    datasets = {part["dataset"] for part in parts}
    if len(budgets) != 1 or len(datasets) != 1:
        raise ValueError(
            f"merge: the parts differ in data or budget: {sorted(datasets)}, {sorted(budgets)}"
        )
    runs = {
        (run["arm"], run["seed"]): run
        for part in parts
        for run in part["runs"]
        if keep is None or run["arm"] in keep
    }
    arms = list(dict.fromkeys(arm for part in parts for arm in part["arms"]))
    if keep is not None:
        arms = [arm for arm in dict.fromkeys(keep) if arm in arms]
    if baseline == PEER_ARM:
        arms = [arm for arm in arms if arm != PEER_ARM] + [PEER_ARM] * (PEER_ARM in arms)
    metrics = sorted({m for run in runs.values() for m in run["test"]["all"]}, key=_metric_order)
    seeds = len({run["seed"] for run in runs.values()})
    result = {
        **parts[-1],
        "budget": re.sub(r"seeds \d+", f"seeds {seeds}", parts[-1]["budget"]),
        "command": joined_commands([part["command"] for part in made_of]),
        "commit": _listed_once(made_of, "commit"),
        "date": _listed_once(made_of, "date"),
        "wall_s": sum(part["wall_s"] for part in made_of),
        "parts": made_of,
        # One grid of every arm (``--samples-only`` with the merged report's stem) stands for
        # the parts' grids.
        "samples": [f"{stem}_samples.png"]
        if (out / f"{stem}_samples.png").exists()
        else list(dict.fromkeys(name for part in parts for name in part["samples"])),
        "arms": arms,
        "runs": list(runs.values()),
        "complete": all(part.get("complete", True) for part in parts),
        "effects": paired_effects(list(runs.values()), arms, baseline, metrics),
    }
    (writer or write_reports)(result, out, stem)
    return result


#: What :func:`report_parts` copies from a report that ran as one part (it adds ``seeds``).
PART_KEYS = ("command", "commit", "date", "wall_s", "arms")


def report_parts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs ``report`` was made of, each with its ``PART_KEYS`` and ``seeds``: a merged
    report's ``parts``, else the report itself (``seeds``: those it ran)."""
    if "parts" in report:
        return report["parts"]
    seeds = sorted({run["seed"] for run in report["runs"]})
    return [{key: report[key] for key in PART_KEYS} | {"seeds": seeds}]


def _part_key(part: dict[str, Any]) -> tuple[str, str, str]:
    return part["command"], part["commit"], part["date"]


def part_lines(result: dict[str, Any]) -> list[str]:
    """A report's parts, one line each with its wall time (none for a report of one part)."""
    parts = result.get("parts", [])
    if len(parts) < 2:
        return []
    return [
        f"- `{part['command']}` ({', '.join(part['arms'])}; seed{'s' * (len(part['seeds']) > 1)} "
        f"{', '.join(map(str, part['seeds']))}): {part['date']}, commit {part['commit']}, "
        f"wall {part['wall_s'] / 60:.1f} min"
        for part in parts
    ]


def _listed_once(parts: Sequence[dict[str, Any]], key: str) -> str:
    """The parts' ``key`` values, each once; a comma-joined list (a merged report from before
    reports listed their parts) counts as its items."""
    return ", ".join(dict.fromkeys(item for part in parts for item in part[key].split(", ")))


def _metric_order(metric: str) -> int:
    return list(METRIC_TITLES).index(metric)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        result = merge_results(args.merge, args.out, args.stem, args.keep_arms)
        print(table(result))
        return result
    started = time.perf_counter()
    # Drawing samples looks at training data only: the test split is not even decoded.
    splits = load_splits(args, with_test=not args.samples_only)
    tested = "not read" if splits.test is None else f"{len(splits.test)} images"
    log(
        f"{len(splits.train_normals)} training normals; validation {len(splits.validation)} "
        f"images; test {tested}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    sample_grid(splits, args.arms, args.out / f"{args.stem}_samples.png")
    if args.samples_only:
        return {"samples": [f"{args.stem}_samples.png"]}
    command = portable_command(
        " ".join(["uv run --group bench python -m benchmarks.anomaly", *sys.argv[1:]])
    )
    # The commit the run starts from: others may commit while it runs.
    commit = git_commit(short=True)
    runs: list[dict[str, Any]] = []
    planned = [(seed, arm) for seed in run_seeds(args) for arm in args.arms]
    for seed, arm in planned:
        runs.append(train_arm(arm, splits, seed, args.budget, args.threads))
        log(f"{arm} seed {seed}: test {runs[-1]['test']['all']}")
        # Written after every run: a long run stopped early still leaves its complete seeds.
        result = {
            **run_record(args, command, commit),
            "budget": ", ".join(f"{k} {v}" for k, v in args.budget.__dict__.items())
            + f", image {args.image_size} px",
            "arms": args.arms,
            "runs": runs,
            "complete": len(runs) == len(planned),
            "effects": paired_effects(runs, args.arms),
            "wall_s": time.perf_counter() - started,
            "samples": [f"{args.stem}_samples.png"],
        }
        write_reports(result, args.out, args.stem)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
