"""Per-image time of defectaug's Poisson blends vs ``cv2.seamlessClone`` and pie-torch.

    uv run --group bench python -m benchmarks.compositing            # full table
    uv run --group bench python -m benchmarks.compositing --quick    # a fast smoke run

Each case pastes a disc-shaped RGB defect (radius ``patch / 2 - 2``) of ``patch`` px onto
``size`` px backgrounds at random places, ``batch`` images at a time. defectaug blends the whole
batch in one call, once on float32 ``[B, 3, H, W]`` backgrounds and once on uint8 ones (uint8 in,
uint8 out: OpenCV's format); OpenCV (uint8, NORMAL_CLONE) and pie-torch (float32, its
Green's-function FFT blend with the Green function precomputed, as its ``CachedPoissonBlender``
does) blend one image at a time. Methods are run in turns and each time is the median of
``--repeats`` runs. Ratios read "times faster than the peer" (> 1: defectaug is faster). The
"(... output copy)" rows time ``backgrounds.clone()``: any blend that returns a new batch of that
dtype pays at least that.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from defectaug.compositing import improved_poisson_blend, poisson_blend

FULL_CASES = ((64, 256), (128, 512), (256, 1024))
QUICK_CASES = ((64, 256), (128, 512))


@dataclass
class Case:
    backgrounds: np.ndarray  # [B, H, W, 3] uint8
    sources: np.ndarray  # [B, h, w, 3] uint8
    mask: np.ndarray  # [h, w] uint8, 255 inside the disc
    offsets: np.ndarray  # [B, 2] (top, left)


def make_case(patch: int, size: int, batch: int, seed: int = 0) -> Case:
    """Textured backgrounds (waves + noise), noisy bright sources and a disc mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    backgrounds = np.empty((batch, size, size, 3), np.uint8)
    for item in range(batch):
        phase = rng.uniform(0, 2 * np.pi, 3).astype(np.float32)
        waves = 120 + 40 * np.sin(xx / 23 + phase[0]) + 25 * np.cos(yy / 17 + phase[1])
        noise = rng.normal(0, 8, (size, size, 3)).astype(np.float32)
        backgrounds[item] = np.clip(waves[..., None] + noise, 0, 255)
    sources = np.clip(rng.normal(170, 30, (batch, patch, patch, 3)), 0, 255).astype(np.uint8)
    radius, centre = patch / 2 - 2, (patch - 1) / 2
    py, px = np.mgrid[:patch, :patch]
    mask = ((((py - centre) ** 2 + (px - centre) ** 2) <= radius**2) * 255).astype(np.uint8)
    offsets = rng.integers(0, size - patch + 1, (batch, 2))
    return Case(backgrounds, sources, mask, offsets)


def seconds(
    run: Callable[[], object], sync: Callable[[], None], clock: Callable[[], float]
) -> float:
    sync()
    start = clock()
    run()
    sync()
    return clock() - start


def opencv_runner(case: Case) -> Callable[[], object]:
    ys, xs = np.nonzero(case.mask)
    # seamlessClone centres the mask's bounding box on the given point.
    box_centre = ((ys.min() + ys.max() + 1) // 2, (xs.min() + xs.max() + 1) // 2)
    centres = [(int(left + box_centre[1]), int(top + box_centre[0])) for top, left in case.offsets]

    def run() -> None:
        for background, source, centre in zip(case.backgrounds, case.sources, centres, strict=True):
            # seamlessClone writes into its mask argument: give it a fresh one each call.
            cv2.seamlessClone(source, background, case.mask.copy(), centre, cv2.NORMAL_CLONE)

    return run


def pietorch_runner(case: Case, device: torch.device) -> Callable[[], object] | None:
    try:
        import pietorch
    except ImportError:
        return None
    backgrounds = torch.from_numpy(case.backgrounds).permute(0, 3, 1, 2).float().div(255).to(device)
    sources = torch.from_numpy(case.sources).permute(0, 3, 1, 2).float().div(255).to(device)
    mask = torch.from_numpy(case.mask > 0).float().to(device)
    green = pietorch.construct_green_function(sources.shape[1:], channels_dim=0, requires_pad=True)
    green = green.to(device)
    corners = [torch.tensor([int(top), int(left)]) for top, left in case.offsets]

    def run() -> None:
        for background, source, corner in zip(backgrounds, sources, corners, strict=True):
            # blend() zeroes the mask's edges in place: give it a fresh one each call.
            pietorch.blend(background, source, mask.clone(), corner, False, 0, green)

    return run


def batched_backgrounds(case: Case, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 3, H, W]`` backgrounds: uint8 as they are, float32 scaled to [0, 1]."""
    backgrounds = torch.from_numpy(case.backgrounds).permute(0, 3, 1, 2).contiguous().to(device)
    return backgrounds if dtype == torch.uint8 else backgrounds.to(dtype).div(255)


def output_copy_runner(
    case: Case, device: torch.device, dtype: torch.dtype
) -> Callable[[], object]:
    """The floor under any blend that returns a new image of ``dtype``: copying the backgrounds."""
    return batched_backgrounds(case, device, dtype).clone


def defectaug_runner(
    case: Case, device: torch.device, blend: Callable[..., torch.Tensor], dtype: torch.dtype
) -> Callable[[], object]:
    backgrounds = batched_backgrounds(case, device, dtype)
    sources = torch.from_numpy(case.sources).permute(0, 3, 1, 2).float().div(255).to(device)
    batch = backgrounds.shape[0]
    mask = torch.from_numpy(case.mask > 0)[None, None].expand(batch, 1, -1, -1).to(device)
    offsets = torch.from_numpy(case.offsets).to(device)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return blend(backgrounds, sources, mask, offsets)

    return run


def measure(args: argparse.Namespace, device: torch.device) -> list[dict]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    rows = []
    cases = QUICK_CASES if args.quick else FULL_CASES
    batches = (1, 8) if args.quick else (1, 32)
    for patch, size in cases:
        for batch in batches:
            case = make_case(patch, size, batch)
            runners = {}
            for dtype, label in ((torch.float32, "float32"), (torch.uint8, "uint8")):
                for blend in (poisson_blend, improved_poisson_blend):
                    runners[f"{blend.__name__} {label}"] = defectaug_runner(
                        case, device, blend, dtype
                    )
                runners[f"({label} output copy)"] = output_copy_runner(case, device, dtype)
            runners["pie-torch"] = pietorch_runner(case, device)
            if device.type == "cpu":
                runners["cv2.seamlessClone"] = opencv_runner(case)
            runners = {name: run for name, run in runners.items() if run is not None}
            for run in runners.values():  # warm-up: caches, first-touch allocations
                run()
                sync()
            times = {name: [] for name in runners}
            for _ in range(args.repeats):  # in turns, so that load drifts hit every method alike
                for name, run in runners.items():
                    times[name].append(seconds(run, sync, clock))
            for name, samples in times.items():
                rows.append(
                    {
                        "device": device.type,
                        "case": f"{patch} on {size}",
                        "batch": batch,
                        "method": name,
                        "ms": 1e3 * statistics.median(samples) / batch,
                    }
                )
    return rows


def print_table(rows: list[dict]) -> None:
    reference = {(r["device"], r["case"], r["batch"], r["method"]): r["ms"] for r in rows}
    header = f"{'device':6} {'patch on bg':12} {'batch':>5}  {'method':30} {'ms/image':>9}  "
    header += f"{'vs cv2':>8}  {'vs pie-torch':>12}"
    print(header)
    print("-" * len(header))
    for row in rows:
        key = (row["device"], row["case"], row["batch"])
        ratios = []
        for peer in ("cv2.seamlessClone", "pie-torch"):
            peer_ms = reference.get((*key, peer))
            own = row["method"].startswith(("poisson_blend", "improved_poisson_blend"))
            ratios.append(f"{peer_ms / row['ms']:.1f}x" if own and peer_ms else "")
        print(
            f"{row['device']:6} {row['case']:12} {row['batch']:>5}  {row['method']:30} "
            f"{row['ms']:>9.3f}  {ratios[0]:>8}  {ratios[1]:>12}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two sizes, batch 1 and 8, 2 repeats")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch and OpenCV")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (5)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA rows")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall-clock time, or this process's CPU time (steadier on a shared machine)",
    )
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {platform.processor() or 'cpu'}, "
        f"{os.cpu_count()} cores, {args.threads} threads, {args.clock} clock, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows = measure(args, torch.device("cpu"))
    if torch.cuda.is_available() and not args.no_cuda:
        rows += measure(args, torch.device("cuda"))
    print_table(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
