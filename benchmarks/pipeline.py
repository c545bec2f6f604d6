"""Throughput of a torchvision training pipeline with and without ``DefectInject``.

Run (CPU; uses CUDA too when present)::

    uv run python -m benchmarks.pipeline            # about 6-7 minutes on 2 cores
    uv run python -m benchmarks.pipeline --quick    # a smoke run

What is measured, in samples per second:

1. The data pipeline of a classifier at 224 px, in a ``DataLoader`` with 2 worker processes
   (``--workers``) and batches of 32: decode a 512 x 512 JPEG (``torchvision.io.decode_jpeg``),
   ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``, ``ToDtype(float32, scale=True)``. This
   base is then run with ``DefectInject(all six procedural types)`` inserted after the flip. The
   rows come in two groups, each measured on its own with its own base row (rows of one run
   disturb each other, see :func:`row_groups`): the target's group is base, ``alpha, p=1`` and a
   second copy of the base, whose ratio shows the run's spread; the other group is base,
   ``alpha, p=0.3`` (a typical training setting) and the two Poisson blends at ``p=1``. The ratio
   column is each row's time per sample over its group's base (see below); the target is
   ``alpha, p=1`` <= 1.15.
2. The peer: anomalib's ``PerlinAnomalyGenerator`` (DRAEM-style Perlin-noise anomalies, the
   common "synthetic anomaly" augmentation) in the target's group, when anomalib is importable;
   the row says "not installed" otherwise (it is not a defectaug dependency).
3. The batched path, ``inject_defects`` on ready ``[64, 3, 224, 224]`` float batches in the main
   process (torch threads = the worker count, so the CPU budget matches), per blend mode; and on
   CUDA when a GPU is present.

Within a group the loader rows are measured interleaved: ``--repeats`` rounds, each running one
epoch of ``samples / repeats`` samples of every row in turn (in a new random order every round),
so load from other jobs on the machine weighs on all rows alike. A row's samples/s is its total
samples over its total time; its ratio is the median, over rounds, of its time per sample over the
base row's in the same round (the min-max column shows the rounds' range): on a shared VM a round
can hiccup (one epoch of an identical base row once took 1.69x the other's), and the median keeps
one such round from swinging the figure. Workers persist across epochs
(``persistent_workers=True``), as in a training run; the first epoch of every loader is warm-up
(worker start, first-call caches, the first painted chunks) and is not timed. The header prints
the machine's load average before and after. Numbers depend on the machine and its load; compare
rows of one group, not across runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import decode_jpeg, read_file
from torchvision.transforms import v2

from defectaug.assets import sample_backgrounds
from defectaug.batch import BLEND_MODES, inject_defects
from defectaug.generators import DEFECT_TYPES
from defectaug.transforms import DefectInject

SOURCE_SIZE = 512
CROP = 224


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


class PerlinPeer:
    """anomalib's ``PerlinAnomalyGenerator`` as a v2-style step on uint8 images (mask dropped)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        augmented, _ = self.generator(image.float().div(255))
        return tv_tensors.Image((augmented.clamp(0, 1) * 255).round().to(torch.uint8))


def load_perlin_peer() -> tuple[PerlinPeer | None, str]:
    for module_name in ("anomalib.data.utils.generators.perlin", "anomalib.data.utils.generators"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        peer_class = getattr(module, "PerlinAnomalyGenerator", None)
        if peer_class is not None:
            return PerlinPeer(peer_class(probability=1.0)), "ok"
    return None, "not installed"


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


def load_average() -> str:
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


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


BASE_ROW = "base pipeline (decode, crop, flip, ToDtype)"


def row_groups(peer: Callable[[Any], Any] | None) -> list[list[tuple[str, Any]]]:
    """The loader rows, in groups measured one after the other, each with its own base row.

    Rows of one interleaved run disturb each other: in runs with several ``DefectInject`` rows,
    two identical base rows drifted 10-12 % apart, against 1.5 % in a run of base, alpha, base.
    So the target's row runs in a group of its own, between two base rows, and the others in a
    second group.
    """
    target = [
        (BASE_ROW, None),
        ("+ DefectInject alpha, p=1", DefectInject(DEFECT_TYPES, p=1.0, seed=0)),
        # The base again, as its own loader: how far two identical rows of one run drift apart.
        ("base pipeline again (identical row: the run's spread)", None),
    ]
    if peer is not None:
        target.append(("+ anomalib PerlinAnomalyGenerator (peer)", peer))
    others = [
        (BASE_ROW, None),
        ("+ DefectInject alpha, p=0.3", DefectInject(DEFECT_TYPES, p=0.3, seed=0)),
    ] + [
        (f"+ DefectInject {blend}, p=1", DefectInject(DEFECT_TYPES, p=1.0, blend=blend, seed=0))
        for blend in BLEND_MODES
        if blend != "alpha"
    ]
    return [target, others]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096, help="timed samples per loader row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=8, help="interleaved rounds per row")
    parser.add_argument("--quick", action="store_true", help="128 samples per row (smoke run)")
    args = parser.parse_args(argv)
    samples = 128 if args.quick else args.samples
    repeats = 2 if args.quick else max(1, args.repeats)
    load_before = load_average()

    with tempfile.TemporaryDirectory() as folder:
        paths = make_jpegs(Path(folder), 64)
        torch.set_num_threads(1)
        peer, status = load_perlin_peer()
        # (name, samples/s, median ratio to the base, lowest and highest round's ratio)
        rows: list[tuple[str, float, float, float, float]] = []
        for group in row_groups(peer):
            names = [name for name, _ in group]
            speeds, rounds = interleaved_throughput(
                paths, [step for _, step in group], samples, args.workers, args.batch_size, repeats
            )
            # Ratios are taken round by round, within a group, against its own first (base) row.
            for index, (name, speed) in enumerate(zip(names, speeds, strict=True)):
                ratios = sorted(times[index] / times[0] for times in rounds)
                rows.append((name, speed, statistics.median(ratios), ratios[0], ratios[-1]))
        base = rows[0][1]
        alpha_ratio = rows[1][2]

    torch.set_num_threads(max(1, args.workers))
    batched = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for blend in BLEND_MODES:
            speed = batched_throughput(blend, device, min(samples, 512), 64)
            batched.append((f"inject_defects {blend}, batch 64, {device}", speed))

    print(
        f"defectaug pipeline benchmark - torch {torch.__version__}, "
        f"Python {platform.python_version()}, "
        f"{args.workers} loader workers, batch {args.batch_size}, {samples} timed samples per row "
        f"in {repeats} interleaved rounds, {CROP} px from {SOURCE_SIZE} px JPEGs; load average "
        f"(1/5/15 min) {load_before} before, {load_average()} after, {os.cpu_count()} CPUs"
    )
    print()
    print(
        "| data loader pipeline | samples/s | ms/sample (worker) | time vs base "
        "(median of rounds) | rounds (min-max) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, speed, ratio, lowest, highest in rows:
        per_sample = 1000.0 * args.workers / speed
        print(
            f"| {name} | {speed:.1f} | {per_sample:.2f} | {ratio:.2f}x "
            f"| {lowest:.2f}-{highest:.2f}x |"
        )
    if peer is None:
        print(f"| + anomalib PerlinAnomalyGenerator (peer) | {status} | - | - | - |")
    print()
    threads = max(1, args.workers)
    print(f"| batched path (CPU torch threads: {threads}) | samples/s | vs base loader |")
    print("|---|---:|---:|")
    for name, speed in batched:
        print(f"| {name} | {speed:.1f} | {speed / base:.2f}x |")
    verdict = "met" if alpha_ratio <= 1.15 else "not met"
    print()
    print(
        "target: DefectInject alpha (p=1) <= 1.15x the base time per sample: "
        f"{alpha_ratio:.2f}x ({verdict})"
    )


if __name__ == "__main__":
    main()
