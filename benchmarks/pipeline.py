"""Throughput of a torchvision training pipeline with and without ``DefectInject``.

Run (CPU; uses CUDA too when present)::

    uv run --group bench python -m benchmarks.pipeline           # anomalib peer rows included
    uv run python -m benchmarks.pipeline --quick                 # a smoke run
    uv run python -m benchmarks.pipeline --sections calls        # only the per-call table

What is measured (``--sections``, comma-separated; all by default):

1. Loader groups (``target``, ``generators``, ``blends``, ``peer``), in samples per second: the
   data pipeline of a classifier at 224 px, in a ``DataLoader`` with 2 worker processes
   (``--workers``) and batches of 32: decode a 512 x 512 JPEG (``torchvision.io.decode_jpeg``),
   ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToDtype(float32, scale=True)``. This
   base is then run with a defect step inserted after the flip, always at ``p=1`` unless the
   row says otherwise. Each group is measured on its own with its own base row (rows of one run
   disturb each other, see :func:`row_groups`):

   - ``target``: base, ``DefectInject`` of the six procedural types with alpha blending, and a
     second copy of the base, whose ratio shows the run's spread;
   - ``generators``: base, ``DefectInject`` with a ``DefectBank`` of the magnetic-tile training
     defects (``--bank-data``, read by ``load_generator(folder, split="train")``; the row says
     "data not found" without it) and with the shipped learned card
     ``dcdgan-magnetic-tile-64``, both alpha;
   - ``blends``: base, procedural alpha at ``p=0.3`` (a typical training setting) and the two
     Poisson blends;
   - ``peer``: base and anomalib's ``PerlinAnomalyGenerator`` (DRAEM-style Perlin-noise
     anomalies, the common "synthetic anomaly" augmentation) on the same images, when anomalib
     is importable (``--group bench``); the row says "not installed" otherwise.

   The ratio column is each row's time per sample over its group's base (see below), next to
   the bar of issue #14 (:data:`LOADER_BARS`) and whether the row meets it.
2. ``stages``: where a worker's time per sample goes. One process, ``torch.set_num_threads(1)``,
   runs the base pipeline and the defect rows of ``target`` and ``generators`` item by item, as
   a worker does, timing each stage's CPU time (decode + crop + flip, the defect step, ToDtype),
   in interleaved rounds after a warm-up round; the last column times the same defect step in
   the same rounds, as many calls on one fixed image in a tight loop (no decoding between
   calls). Medians over rounds, in microseconds per sample.
3. ``calls``: the per-call cost of issue #20, in one process with ``torch.set_num_threads(1)``,
   on one 224 x 224 RGB float image in [0, 1] (a crop of one of the benchmark's JPEGs):
   anomalib's ``PerlinAnomalyGenerator(probability=1.0)`` called as anomalib calls it,
   ``generator(image) -> (augmented, mask)``, against the per-sample entry point a DataLoader
   uses, ``DefectInject(None, p=1, generator=..., blend=...)``, for ``"cutpaste"`` and an
   ``NSAGenerator`` whose pool is the benchmark's JPEG folder (normal surfaces), per blend.
   Rows are timed call by call in interleaved rounds (a new random order each round) after a
   warm-up; the figure is the median call. The speed-up is the peer's median over the row's,
   next to the bars of :data:`CALL_BARS`.
4. ``batched``: ``inject_defects`` on ready ``[64, 3, 224, 224]`` float batches in the main
   process (torch threads = the worker count, so the CPU budget matches), per blend mode; and on
   CUDA when a GPU is present.

Within a loader group the rows are measured interleaved: ``--repeats`` rounds, each running one
epoch of ``samples / repeats`` samples of every row in turn (in a new random order every round),
so load from other jobs on the machine weighs on all rows alike. A row's samples/s is its total
samples over its total time; its ratio is the median, over rounds, of its time per sample over the
base row's in the same round (the min-max column shows the rounds' range): on a shared VM a single
round can hiccup, and the median keeps one such round from swinging the figure. Next to it stands a
95 % confidence interval for that median (:func:`median_interval`, from the rounds' order
statistics, whatever their distribution). A bar is met when the whole interval meets it, not met
when none of it does, and undecided when the interval straddles it: the run cannot tell the row from
the bar, and more rounds (``--repeats``) or a quieter machine are needed. Workers persist
across epochs (``persistent_workers=True``), as in a training run; the first epoch of every loader
is warm-up (worker start, first-call caches, the first painted chunks) and is not timed. The
header prints the date, the commit (marked when ``defectaug/`` or this file differ from it) and
the machine's load average before and after. Numbers depend on the machine and its load; compare
rows of one group, not across runs. Figures of past runs are in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

from benchmarks.recording import REPO_ROOT, git_commit, portable_path
from defectaug.assets import sample_backgrounds
from defectaug.batch import BLEND_MODES, inject_defects
from defectaug.generators import DEFECT_TYPES, NSAGenerator, load_generator
from defectaug.transforms import DefectInject

SOURCE_SIZE = 512
CROP = 224
DEFAULT_BANK_DATA = REPO_ROOT.parent / "shared" / "data" / "magnetic_tile"
LEARNED_CARD = "dcdgan-magnetic-tile-64"
PEER_NAME = "anomalib PerlinAnomalyGenerator"
LOADER_GROUPS = ("target", "generators", "blends", "peer")
SECTIONS = (*LOADER_GROUPS, "stages", "calls", "batched")


@dataclass(frozen=True)
class Bar:
    """An issue's goal for a ratio: ``ratio <= value`` (``at_most``) or ``ratio >= value``."""

    value: float
    at_most: bool = True

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.at_most else ratio >= self.value

    def describe(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.value:.2f}x"

    def verdict(self, ratio: float | None, interval: tuple[float, float] | None = None) -> str:
        """``"<= 1.10x: met"``; ``"<= 1.10x: not measured"`` without a ratio.

        With ``interval`` (the ratio's confidence interval) the bar is met only when the whole
        interval meets it, missed only when none of it does, and ``"undecided"`` otherwise: the
        run cannot tell the row from the bar."""
        if ratio is None:
            outcome = "not measured"
        elif interval is None:
            outcome = "met" if self.met(ratio) else "not met"
        elif self.met(interval[0]) and self.met(interval[1]):
            outcome = "met"
        elif not self.met(interval[0]) and not self.met(interval[1]):
            outcome = "not met"
        else:
            outcome = "undecided"
        return f"{self.describe()}: {outcome}"


#: Confidence of the interval given for a loader row's median ratio.
MEDIAN_CONFIDENCE = 0.95


def median_interval(values: Sequence[float]) -> tuple[float, float]:
    """A distribution-free confidence interval for the median of ``values``: the order
    statistics ``k`` and ``n + 1 - k`` (1-based, sorted), ``k`` the largest with
    ``P(Binomial(n, 1/2) < k) <= (1 - MEDIAN_CONFIDENCE) / 2``, so it holds the true median with
    at least ``MEDIAN_CONFIDENCE`` (whatever the rounds' distribution, if they are independent).
    Under 6 values no interval reaches 95 %: the whole range is returned."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1.0 - MEDIAN_CONFIDENCE) / 2.0
    k, below = 0, 0.0  # below: P(Binomial(n, 1/2) < k + 1)
    while k < n // 2:
        below += math.comb(n, k) / 2.0**n
        if below > tail:
            break
        k += 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


#: Issue #14's bars: time per sample over the base pipeline's, 2 workers, 224 px, p=1.
LOADER_BARS = {
    "procedural alpha": Bar(1.10),
    "bank alpha": Bar(1.15),
    "dcdgan alpha": Bar(1.15),
    "poisson": Bar(1.3),
    "improved_poisson": Bar(1.5),
}
#: Issue #20's bars: the peer's time per call over defectaug's (how many times faster), 1 thread.
CALL_BARS = {"alpha": Bar(10.0, at_most=False), "poisson": Bar(3.0, at_most=False)}


# ---------------------------------------------------------------------------------- inputs


def make_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` 512 x 512 RGB JPEGs cut from the shipped surfaces (varied crops and flips)."""
    generator = torch.Generator().manual_seed(0)
    surfaces = [Image.open(path).convert("RGB") for path in sample_backgrounds()]
    paths = []
    for index in range(count):
        surface = surfaces[index % len(surfaces)]
        zoom = 2 + float(torch.rand(1, generator=generator)) * 2
        side = int(surface.width * zoom)
        large = surface.resize((side, side), Image.Resampling.BICUBIC)
        left, top = (
            int(v) for v in torch.randint(0, side - SOURCE_SIZE + 1, (2,), generator=generator)
        )
        tile = large.crop((left, top, left + SOURCE_SIZE, top + SOURCE_SIZE))
        if index % 2:
            tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"{index:04d}.jpg"
        tile.save(path, quality=90)
        paths.append(path)
    return paths


class JpegImages(Dataset):
    """An ImageFolder-like source: each item decodes one JPEG, then applies ``transform``."""

    def __init__(self, paths: list[Path], length: int, transform: Callable[[Any], Any]) -> None:
        self.paths, self.length, self.transform = paths, length, transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        image = tv_tensors.Image(decode_jpeg(read_file(str(self.paths[index % len(self.paths)]))))
        return self.transform(image)


def call_image(path: Path) -> torch.Tensor:
    """The per-call section's input: the top-left 224 x 224 of one JPEG, float [3, H, W] in
    [0, 1] (what anomalib's generator takes)."""
    return decode_jpeg(read_file(str(path)))[:, :CROP, :CROP].float().div(255).contiguous()


# ---------------------------------------------------------------------------------- sources


class PerlinPeer:
    """anomalib's ``PerlinAnomalyGenerator`` as a v2-style step on uint8 images (mask dropped)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        augmented, _ = self.generator(image.float().div(255))
        return tv_tensors.Image((augmented.clamp(0, 1) * 255).round().to(torch.uint8))


def load_perlin_generator() -> tuple[Any | None, str]:
    """anomalib's ``PerlinAnomalyGenerator(probability=1.0)`` (no texture source folder, as
    DRAEM's default), or ``None`` and why not."""
    for module_name in ("anomalib.data.utils.generators.perlin", "anomalib.data.utils.generators"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        peer_class = getattr(module, "PerlinAnomalyGenerator", None)
        if peer_class is not None:
            return peer_class(probability=1.0), "ok"
    return None, "not installed"


def load_bank(root: Path) -> tuple[Any | None, str]:
    """A ``DefectBank`` of the training split's defects, built the way a user names a dataset
    folder (``load_generator(folder, split="train")``), or ``None`` and why not."""
    if not root.is_dir():
        return None, "data not found"
    try:
        return load_generator(str(root), split="train"), "ok"
    except Exception as error:  # an unreadable dataset must not sink the other rows
        return None, f"data not readable: {type(error).__name__}"


def load_card(name: str) -> tuple[Any | None, str]:
    try:
        return load_generator(name), "ok"
    except Exception as error:  # a broken card must not sink the other rows
        return None, f"could not be loaded: {type(error).__name__}"


@dataclass
class Sources:
    """The generators the rows use; ``None`` where one is unavailable, with the reason."""

    peer: Any | None = None
    peer_status: str = "not installed"
    bank: Any | None = None
    bank_status: str = "data not found"
    card: Any | None = None
    card_status: str = "not loaded"


def load_sources(groups: Sequence[str], bank_data: Path, with_peer: bool) -> Sources:
    """Only what the chosen sections use is loaded (anomalib's import alone takes seconds)."""
    sources = Sources()
    if with_peer:
        sources.peer, sources.peer_status = load_perlin_generator()
    if "generators" in groups:
        sources.bank, sources.bank_status = load_bank(bank_data)
        sources.card, sources.card_status = load_card(LEARNED_CARD)
    return sources


# ---------------------------------------------------------------------------------- loader rows


@dataclass
class LoaderRow:
    """One pipeline: ``step`` is inserted after the flip (``None``: the base pipeline).

    ``missing`` says why the row cannot run (it is printed instead of figures); ``reported``
    marks the peer, whose figures are reported against no bar.
    """

    name: str
    step: Callable[[Any], Any] | None
    bar: Bar | None = None
    missing: str | None = None
    reported: bool = False


@dataclass
class LoaderResult:
    row: LoaderRow
    speed: float | None = None  # samples/s over all rounds
    ratio: float | None = None  # median over rounds of time per sample over the base's
    lowest: float | None = None
    highest: float | None = None
    interval: tuple[float, float] | None = None  # the median's (median_interval)


BASE_ROW = "base pipeline (decode, crop, flip, ToDtype)"


def _optional_row(name: str, generator: Any | None, status: str, bar: Bar) -> LoaderRow:
    if generator is None:
        return LoaderRow(name, None, bar, missing=status)
    return LoaderRow(name, DefectInject(None, p=1.0, generator=generator, seed=0), bar)


def row_groups(sources: Sources, groups: Sequence[str] = LOADER_GROUPS) -> list[list[LoaderRow]]:
    """The loader rows, in groups measured one after the other, each with its own base row first.

    Rows of one interleaved run disturb each other (identical base rows drift apart in a run
    with several ``DefectInject`` rows; ``benchmarks/README.md`` has the figures), so each
    group is small: the target's row runs between two base rows, and the slower rows (real and
    learned generators, the Poisson blends, the peer) in groups of their own.
    """
    built: dict[str, list[LoaderRow]] = {
        "target": [
            LoaderRow(BASE_ROW, None),
            LoaderRow(
                "+ DefectInject procedural alpha, p=1",
                DefectInject(DEFECT_TYPES, p=1.0, seed=0),
                LOADER_BARS["procedural alpha"],
            ),
            # The base again, as its own loader: how far two identical rows of one run drift.
            LoaderRow("base pipeline again (identical row: the run's spread)", None),
        ],
        "generators": [
            LoaderRow(BASE_ROW, None),
            _optional_row(
                "+ DefectInject DefectBank (train-split defects) alpha, p=1",
                sources.bank,
                sources.bank_status,
                LOADER_BARS["bank alpha"],
            ),
            _optional_row(
                f"+ DefectInject {LEARNED_CARD} alpha, p=1",
                sources.card,
                sources.card_status,
                LOADER_BARS["dcdgan alpha"],
            ),
        ],
        "blends": [
            LoaderRow(BASE_ROW, None),
            LoaderRow(
                "+ DefectInject procedural alpha, p=0.3",
                DefectInject(DEFECT_TYPES, p=0.3, seed=0),
            ),
        ]
        + [
            LoaderRow(
                f"+ DefectInject procedural {blend}, p=1",
                DefectInject(DEFECT_TYPES, p=1.0, blend=blend, seed=0),
                LOADER_BARS[blend],
            )
            for blend in BLEND_MODES
            if blend != "alpha"
        ],
        "peer": [
            LoaderRow(BASE_ROW, None),
            LoaderRow(
                f"+ {PEER_NAME} (peer), p=1",
                None if sources.peer is None else PerlinPeer(sources.peer),
                missing=None if sources.peer is not None else sources.peer_status,
                reported=True,
            ),
        ],
    }
    return [built[name] for name in LOADER_GROUPS if name in groups]


def pipeline(step: Callable[[Any], Any] | None) -> v2.Compose:
    steps: list[Callable[[Any], Any]] = [
        v2.RandomResizedCrop(CROP, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if step is not None:
        steps.append(step)
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


def make_loader(
    paths: list[Path], step: Callable[[Any], Any] | None, samples: int, workers: int, batch: int
) -> DataLoader:
    """A loader whose epoch is ``samples`` items; workers persist across epochs, as in training."""
    return DataLoader(
        JpegImages(paths, samples, pipeline(step)),
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


def timed_epoch(loader: DataLoader) -> tuple[int, float]:
    """``(samples, seconds)`` of one pass over ``loader``."""
    started = time.perf_counter()
    counted = sum(images.shape[0] for images in loader)
    return counted, time.perf_counter() - started


def interleaved_throughput(
    paths: list[Path],
    steps: list[Callable[[Any], Any] | None],
    samples: int,
    workers: int,
    batch: int,
    repeats: int,
) -> tuple[list[float], list[list[float]]]:
    """Samples per second of each pipeline, measured in ``repeats`` alternating rounds.

    Also returns each round's seconds per sample of every pipeline (``[round][pipeline]``).
    """
    per_round = max(batch, samples // repeats)
    loaders = [make_loader(paths, step, per_round, workers, batch) for step in steps]
    for loader in loaders:
        # Warm-up, one whole untimed epoch: worker start, first-call caches, the first painted
        # chunks. A partial epoch would leave prefetched batches in flight, and their workers
        # would keep the cores busy during the first timed epochs of the other rows.
        timed_epoch(loader)
    counted = [0] * len(steps)
    seconds = [0.0] * len(steps)
    rounds = []
    order_generator = torch.Generator().manual_seed(0)
    for _ in range(repeats):
        per_sample = [0.0] * len(steps)
        # A new order every round, so no row always runs first or right after the same row.
        for index in torch.randperm(len(loaders), generator=order_generator).tolist():
            count, elapsed = timed_epoch(loaders[index])
            counted[index] += count
            seconds[index] += elapsed
            per_sample[index] = elapsed / count
        rounds.append(per_sample)
    del loaders
    speeds = [count / elapsed for count, elapsed in zip(counted, seconds, strict=True)]
    return speeds, rounds


def group_results(
    rows: list[LoaderRow], speeds: list[float], rounds: list[list[float]]
) -> list[LoaderResult]:
    """One result per row of a group: ``speeds`` and ``rounds`` cover the rows that ran (not
    ``missing``), base first; a ratio is taken round by round against that base."""
    ran = [row for row in rows if row.missing is None]
    by_row: dict[int, LoaderResult] = {}
    for index, (row, speed) in enumerate(zip(ran, speeds, strict=True)):
        ratios = sorted(times[index] / times[0] for times in rounds)
        by_row[id(row)] = LoaderResult(
            row,
            speed,
            statistics.median(ratios),
            ratios[0],
            ratios[-1],
            median_interval(ratios),
        )
    return [by_row.get(id(row), LoaderResult(row)) for row in rows]


def measure_groups(
    groups: list[list[LoaderRow]],
    paths: list[Path],
    samples: int,
    workers: int,
    batch: int,
    repeats: int,
) -> list[LoaderResult]:
    results: list[LoaderResult] = []
    for rows in groups:
        steps = [row.step for row in rows if row.missing is None]
        speeds, rounds = interleaved_throughput(paths, steps, samples, workers, batch, repeats)
        results += group_results(rows, speeds, rounds)
    return results


def bar_cell(
    row: LoaderRow, ratio: float | None, interval: tuple[float, float] | None = None
) -> str:
    if row.reported:
        return "reported (peer)"
    return "-" if row.bar is None else row.bar.verdict(ratio, interval)


def loader_table(results: list[LoaderResult], workers: int) -> list[str]:
    confidence = f"{MEDIAN_CONFIDENCE:.0%}"
    lines = [
        "| data loader pipeline | samples/s | ms/sample (worker) | time vs base "
        f"(median of rounds) | the median's {confidence} interval | rounds (min-max) "
        "| bar (issue #14) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        row = result.row
        if result.speed is None:
            bar = "-" if row.reported or row.bar is None else row.bar.verdict(None)
            lines.append(f"| {row.name} | {row.missing} | - | - | - | - | {bar} |")
            continue
        per_sample = 1000.0 * max(1, workers) / result.speed
        low, high = result.interval or (result.lowest, result.highest)
        lines.append(
            f"| {row.name} | {result.speed:.1f} | {per_sample:.2f} | {result.ratio:.2f}x "
            f"| {low:.2f}-{high:.2f}x | {result.lowest:.2f}-{result.highest:.2f}x "
            f"| {bar_cell(row, result.ratio, result.interval)} |"
        )
    return lines


# ---------------------------------------------------------------------------------- stages

#: The loader groups whose rows the ``stages`` section takes apart.
STAGE_GROUPS = ("target", "generators")


def stage_rows(sources: Sources) -> list[LoaderRow]:
    """The base row, then the rows of :data:`STAGE_GROUPS` that have a bar (their own
    transforms, not the loader groups')."""
    rows = [row for group in row_groups(sources, STAGE_GROUPS) for row in group]
    return [rows[0], *(row for row in rows if row.bar is not None)]


@dataclass
class StageTimes:
    """Median CPU microseconds per sample of one row's stages (``None``: the row did not run)."""

    before: float | None = None  # decode + RandomResizedCrop + flip
    step: float | None = None  # the defect step, in the pipeline
    after: float | None = None  # ToDtype
    alone: float | None = None  # the defect step on one fixed image, in a loop

    @property
    def total(self) -> float | None:
        if self.before is None or self.step is None or self.after is None:
            return None
        return self.before + self.step + self.after


def measure_stages(
    rows: list[LoaderRow], paths: list[Path], samples: int, rounds: int
) -> list[StageTimes]:
    """:class:`StageTimes` of each row (the base first): ``samples / rounds`` items of every row
    per round, rows in a new random order every round, after one untimed round. A row's turn
    runs its items through the pipeline, then as many calls of its step on one fixed image."""
    crop, flip, to_dtype = pipeline(None).transforms
    # A worker's items up to the defect step: decode + crop + flip.
    items = JpegImages(paths, len(paths), v2.Compose([crop, flip]))
    fixed = items[0]
    clock = time.process_time_ns
    per_round = max(1, samples // max(1, rounds))
    ran = [index for index, row in enumerate(rows) if row.missing is None]
    times: dict[int, list[tuple[float, float, float, float]]] = {index: [] for index in ran}
    order_generator = torch.Generator().manual_seed(0)
    served = 0
    for round_index in range(max(1, rounds) + 1):
        for position in torch.randperm(len(ran), generator=order_generator).tolist():
            index = ran[position]
            step = rows[index].step
            spent = [0, 0, 0, 0]
            for item in range(served, served + per_round):
                started = clock()
                image = items[item]
                decoded = clock()
                if step is not None:
                    image = step(image)
                stepped = clock()
                to_dtype(image)
                finished = clock()
                spent[0] += decoded - started
                spent[1] += stepped - decoded
                spent[2] += finished - stepped
            if step is not None:
                started = clock()
                for _ in range(per_round):
                    step(fixed)
                spent[3] = clock() - started
            if round_index > 0:  # the first round is warm-up
                times[index].append(tuple(value / per_round / 1000.0 for value in spent))
        served += per_round
    results = [StageTimes() for _ in rows]
    for index in ran:
        medians = [statistics.median(values) for values in zip(*times[index], strict=True)]
        alone = medians[3] if rows[index].step is not None else None
        results[index] = StageTimes(*medians[:3], alone)
    return results


def stage_table(rows: list[LoaderRow], times: list[StageTimes]) -> list[str]:
    """The ``stages`` table: microseconds per sample; ``vs base`` is the row's total over the
    base row's."""
    lines = [
        "| one worker's pipeline, item by item (1 process, 1 thread, CPU time, median of rounds) "
        "| decode + crop + flip (us) | defect step (us) | ToDtype (us) | total vs base "
        "| the defect step alone, one image in a loop (us) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base_total = times[0].total
    for row, stage in zip(rows, times, strict=True):
        if stage.total is None:
            lines.append(f"| {row.name} | {row.missing} | - | - | - | - |")
            continue
        versus = "-" if base_total is None else f"{stage.total / base_total:.2f}x"
        alone = "-" if stage.alone is None else f"{stage.alone:.0f}"
        lines.append(
            f"| {row.name} | {stage.before:.0f} | {stage.step:.0f} | {stage.after:.0f} "
            f"| {versus} | {alone} |"
        )
    return lines


# ---------------------------------------------------------------------------------- per call


@dataclass
class CallRow:
    """One per-call entry: ``call(image)`` on one ``[3, 224, 224]`` float image."""

    name: str
    call: Callable[[torch.Tensor], Any] | None
    bar: Bar | None = None
    missing: str | None = None
    peer: bool = False


def call_rows(peer: Any | None, peer_status: str, pool: Path) -> list[CallRow]:
    """The peer first, then ``DefectInject`` of ``cutpaste`` and ``nsa`` per blend."""
    rows = [
        CallRow(
            f"{PEER_NAME}(probability=1.0), (augmented, mask) = generator(image)",
            peer,
            missing=None if peer is not None else peer_status,
            peer=True,
        )
    ]
    generators: list[tuple[str, Any]] = [
        ("cutpaste", "cutpaste"),
        ("nsa (pool: the benchmark's JPEG folder)", NSAGenerator(pool=pool)),
    ]
    for label, generator in generators:
        for blend in BLEND_MODES:
            transform = DefectInject(None, p=1.0, generator=generator, blend=blend, seed=0)
            rows.append(
                CallRow(f"DefectInject {label}, {blend}, p=1", transform, CALL_BARS.get(blend))
            )
    return rows


def per_call_ms(
    calls: list[Callable[[torch.Tensor], Any]],
    image: torch.Tensor,
    count: int,
    warmup: int,
    rounds: int,
) -> list[float]:
    """Median milliseconds per call of each callable: ``warmup`` untimed calls each, then
    ``rounds`` rounds of ``count / rounds`` individually timed calls of each, the callables in a
    new random order every round."""
    for call in calls:
        for _ in range(warmup):
            call(image)
    per_round = max(1, count // max(1, rounds))
    times: list[list[float]] = [[] for _ in calls]
    order_generator = torch.Generator().manual_seed(0)
    for _ in range(max(1, rounds)):
        for index in torch.randperm(len(calls), generator=order_generator).tolist():
            call = calls[index]
            for _ in range(per_round):
                started = time.perf_counter()
                call(image)
                times[index].append(time.perf_counter() - started)
    return [1000.0 * statistics.median(values) for values in times]


def call_table(rows: list[CallRow], milliseconds: list[float | None]) -> list[str]:
    """The per-call table; ``milliseconds`` is ``None`` for rows that did not run."""
    peer_ms = next(
        (ms for row, ms in zip(rows, milliseconds, strict=True) if row.peer and ms is not None),
        None,
    )
    lines = [
        "| one call, 224 x 224 RGB float, 1 thread | ms per call (median) "
        "| peer's time / this | bar (issue #20) |",
        "|---|---:|---:|---|",
    ]
    for row, ms in zip(rows, milliseconds, strict=True):
        if ms is None:
            lines.append(f"| {row.name} | {row.missing} | - | - |")
            continue
        if row.peer:
            lines.append(f"| {row.name} | {ms:.3f} | 1.00x | reported (peer) |")
            continue
        speedup = None if peer_ms is None else peer_ms / ms
        speedup_text = "- (no peer)" if speedup is None else f"{speedup:.1f}x"
        bar = "reported" if row.bar is None else row.bar.verdict(speedup)
        lines.append(f"| {row.name} | {ms:.3f} | {speedup_text} | {bar} |")
    return lines


def measure_calls(
    rows: list[CallRow], image: torch.Tensor, count: int, warmup: int, rounds: int
) -> list[float | None]:
    ran = [row for row in rows if row.call is not None]
    measured = iter(per_call_ms([row.call for row in ran], image, count, warmup, rounds))
    return [None if row.call is None else next(measured) for row in rows]


# ---------------------------------------------------------------------------------- batched


def batched_throughput(blend: str, device: str, samples: int, batch: int) -> float:
    images = torch.rand(batch, 3, CROP, CROP, device=device)
    inject_defects(images, DEFECT_TYPES, blend=blend, seed=0)
    if device == "cuda":
        torch.cuda.synchronize()
    rounds = max(1, samples // batch)
    started = time.perf_counter()
    for round_index in range(rounds):
        inject_defects(images, DEFECT_TYPES, blend=blend, seed=round_index + 1)
    if device == "cuda":
        torch.cuda.synchronize()
    return rounds * batch / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------- main


def load_average() -> str:
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def unmet(lines: list[str], outcome: str = "not met") -> list[str]:
    """The first cell of every table line whose bar has ``outcome`` (``"not met"`` or
    ``"undecided"``)."""
    return [line.split(" | ")[0].lstrip("| ") for line in lines if f": {outcome} |" in line]


def parse_sections(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(SECTIONS)}"
        )
    return chosen


def main(argv: list[str] | None = None) -> list[str]:
    """Run the chosen sections and print their tables; also returns the printed lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="timed samples per loader row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8, help="interleaved rounds per row")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per per-call row")
    parser.add_argument("--jpegs", type=int, default=64, help="distinct source JPEGs")
    parser.add_argument(
        "--sections",
        type=parse_sections,
        default=list(SECTIONS),
        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--bank-data",
        type=Path,
        default=DEFAULT_BANK_DATA,
        help="dataset folder whose train split's defects fill the DefectBank row",
    )
    parser.add_argument("--quick", action="store_true", help="128 samples per row (smoke run)")
    args = parser.parse_args(argv)
    samples = 128 if args.quick else args.samples
    repeats = 2 if args.quick else max(1, args.repeats)
    calls = 40 if args.quick else max(1, args.calls)
    sections = args.sections
    groups = [name for name in LOADER_GROUPS if name in sections]
    started = datetime.datetime.now(datetime.timezone.utc)
    commit = git_commit(short=True, watched=["defectaug", "benchmarks/pipeline.py"])
    load_before = load_average()
    threads = max(1, args.workers)

    loader_lines: list[str] = []
    stage_lines: list[str] = []
    call_lines: list[str] = []
    base_speed: float | None = None
    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(Path(folder), max(1, args.jpegs))
        torch.set_num_threads(1)
        stage_groups = list(STAGE_GROUPS) if "stages" in sections else []
        sources = load_sources(
            [*groups, *stage_groups],
            args.bank_data,
            with_peer="peer" in groups or "calls" in sections,
        )
        if groups:
            results = measure_groups(
                row_groups(sources, groups),
                paths,
                samples,
                args.workers,
                args.batch_size,
                repeats,
            )
            loader_lines = loader_table(results, args.workers)
            base_speed = results[0].speed
        if stage_groups:
            rows = stage_rows(sources)
            stage_lines = stage_table(rows, measure_stages(rows, paths, samples, repeats))
        if "calls" in sections:
            rows = call_rows(sources.peer, sources.peer_status, Path(folder))
            milliseconds = measure_calls(
                rows, call_image(paths[0]), calls, warmup=max(5, calls // 10), rounds=5
            )
            call_lines = call_table(rows, milliseconds)

    batched_lines: list[str] = []
    if "batched" in sections:
        torch.set_num_threads(threads)
        batched_lines = [
            f"| batched path (CPU torch threads: {threads}) | samples/s | vs first base loader |",
            "|---|---:|---:|",
        ]
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for blend in BLEND_MODES:
                speed = batched_throughput(blend, device, min(samples, 512), 64)
                versus = "-" if base_speed is None else f"{speed / base_speed:.2f}x"
                batched_lines.append(
                    f"| inject_defects {blend}, batch 64, {device} | {speed:.1f} | {versus} |"
                )

    bank_source = portable_path(args.bank_data)
    printed = [
        f"defectaug pipeline benchmark - {started:%Y-%m-%d %H:%M} UTC, commit {commit}; "
        f"torch {torch.__version__}, Python {platform.python_version()}; "
        f"{args.workers} loader workers, batch {args.batch_size}, {samples} timed samples per "
        f"row in {repeats} interleaved rounds; {calls} timed calls per per-call row; "
        f"{CROP} px from {SOURCE_SIZE} px JPEGs; bank data {bank_source}; load average "
        f"(1/5/15 min) {load_before} before, {load_average()} after, {os.cpu_count()} CPUs",
    ]
    for lines in (loader_lines, stage_lines, call_lines, batched_lines):
        if lines:
            printed += ["", *lines]
    missed = unmet(loader_lines) + unmet(call_lines)
    undecided = unmet(loader_lines, "undecided")
    if loader_lines or call_lines:
        printed += ["", "bars not met: " + ("; ".join(missed) if missed else "none")]
        if undecided:
            printed.append("bars undecided (interval straddles the bar): " + "; ".join(undecided))
    print("\n".join(printed))
    return printed


if __name__ == "__main__":
    main()
