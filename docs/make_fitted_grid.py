"""Fit procedural defects to real training defects, ship the cards, draw docs/fitted_vs_real.png.

Usage (from the repository root)::

    uv run --locked python docs/make_fitted_grid.py [--data ../shared/data] [--no-cards]

Per class, one row of real training defects (crops around each defect) and, under it, one row of
fitted synthetic defects on normal training images (same crop rule). Fits use training data only:
magnetic tile ``train``; BSData pitting: the first 80 % of pitting images by sorted name. Writes
``pretrained_cards/procedural-magnetic-tile`` and ``pretrained_cards/procedural-bsdata-pitting``
unless ``--no-cards``, and prints the refitted statistics of the synthetic defects next to the
real ones.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from defectaug import inject_defects
from defectaug.datasets import load_image, load_mask, read_defect_dataset
from defectaug.fitting import FittedGenerator, fit_defects, measure_image

ROOT = Path(__file__).resolve().parent.parent
TILE = 88
PER_ROW = 8
MAGNETIC_CITATION = (
    "Magnetic tile defect data: public GitHub repository `abin24/Magnetic-tile-defect-datasets.`. "
    'Cite: Y. Huang, C. Qiu, K. Yuan, "Surface defect saliency of magnetic tile", The Visual '
    "Computer 36 (2020) 85-96. The repository has no license file and welcomes use with a "
    "citation: treat it as research data. Fitted on the `train` split only (the `test` split was "
    "never read)."
)
BSDATA_CITATION = (
    "BSData (ball-screw drive spindle surfaces): public GitHub repository `2Obe/BSData`, "
    "license CC BY-SA 4.0; these statistics are shared alike under CC BY-SA 4.0. Cite: T. "
    'Schlagenhauf, M. Landwehr, "Industrial machine tool component surface defect dataset", '
    'Data in Brief 39 (2021) 107643. "Train" here = the first 80 % of the `pitting/` images '
    "by sorted file name; the remaining 20 % were not read."
)


def crop_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Square box around a defect: its box grown by 40 % + 6 px, clipped to the image."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    cy, cx = (ys.min() + ys.max()) / 2.0, (xs.min() + xs.max()) / 2.0
    half = max(ys.max() - ys.min(), xs.max() - xs.min()) * 0.7 + 6
    half = min(half, min(height, width) / 2.0)
    top = int(np.clip(cy - half, 0, height - 2 * half))
    left = int(np.clip(cx - half, 0, width - 2 * half))
    return top, left, top + int(2 * half), left + int(2 * half)


def tile(image: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    top, left, bottom, right = crop_box(mask)
    array = image[:, top:bottom, left:right].permute(1, 2, 0).numpy()
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
    return cv2.resize((array * 255).astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_AREA)


def real_tiles(records, name: str, channels: int) -> list[np.ndarray]:
    """Up to PER_ROW real defects, spread evenly over the class's records (BSData's names
    order pits by wear: the first ones are all the smallest and faintest)."""
    masked = [r for r in records if r.label == name and r.mask is not None]
    picks = [masked[int(i)] for i in np.linspace(0, len(masked) - 1, 2 * PER_ROW)]
    tiles = []
    for record in dict.fromkeys(picks):
        mask = load_mask(record.mask)[0].numpy()
        if mask.any() and len(tiles) < PER_ROW:
            tiles.append(tile(load_image(record.image, channels), mask))
    return tiles


def synthetic_tiles(
    generator: FittedGenerator, name: str, normals, channels: int, seed: int
) -> tuple[list[np.ndarray], list[dict]]:
    tiles, stats = [], []
    shares = generator.side_shares(name)
    sides = [s for s, share in sorted(shares.items(), key=lambda kv: -kv[1]) if share > 0]
    for index, record in enumerate(normals[:PER_ROW]):
        image = load_image(record.image, channels)[None]
        # Edge classes: alternate the image sides in proportion to the real ones.
        side = None
        if generator.class_map[name].startswith("edge") and sides:
            draw = (index + 0.5) / PER_ROW
            cumulative = 0.0
            for candidate in sides:
                cumulative += shares[candidate]
                if draw <= cumulative:
                    side = candidate
                    break
            side = side or sides[0]
        placement = generator.placement(name, side=side)
        placement["count"] = 1
        out = inject_defects(image, name, generator, seed=seed + index, **placement)
        mask = out.masks[0, 0].cpu().numpy() >= 0.5
        if mask.any():
            tiles.append(tile(out.images[0].cpu(), mask))
            # One defect per image: its main region (a faint shading's mask can have a few
            # specks beside it, which would swamp a median over regions).
            regions = measure_image(out.images[0].cpu(), out.masks[0].cpu())
            if regions:
                stats.append(max(regions, key=lambda r: r["long_px"] * r["width_px"]))
    return tiles, stats


def label_tile(text: str) -> np.ndarray:
    canvas = np.full((TILE, TILE, 3), 255, np.uint8)
    for row, part in enumerate(text.split("\n")):
        cv2.putText(canvas, part, (3, 20 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    return canvas


def row(text: str, tiles: list[np.ndarray]) -> np.ndarray:
    tiles = tiles + [np.full((TILE, TILE, 3), 230, np.uint8)] * (PER_ROW - len(tiles))
    spaced = [np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]
    head = np.pad(label_tile(text), ((2, 2), (2, 2), (0, 0)), constant_values=255)
    return np.concatenate([head, *spaced], axis=1)


def median(values: list[float]) -> float:
    return float(np.nanmedian(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = os.environ.get("DEFECTAUG_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--data", default=default)
    parser.add_argument("--no-cards", action="store_true")
    args = parser.parse_args()
    data = Path(args.data)
    rows = []

    tile_root = data / "magnetic_tile"
    train = read_defect_dataset(tile_root, "train")
    tile_fit = fit_defects(train)
    tile_fit.source = "magnetic_tile train split (abin24/Magnetic-tile-defect-datasets.)"
    tile_gen = FittedGenerator(tile_fit)
    normals = [r for r in train if r.label == "good"][::37]

    pits = [r for r in read_defect_dataset(data / "bsdata") if r.label == "pitting"]
    pits = sorted(pits, key=lambda r: r.image.name)
    pit_train = pits[: int(0.8 * len(pits))]
    pit_fit = fit_defects(pit_train, classes="pitting")
    pit_fit.source = (
        f"BSData pitting, first 80 % by sorted name ({len(pit_train)} of {len(pits)} images)"
    )
    pit_gen = FittedGenerator(pit_fit)
    unannotated = [r for r in read_defect_dataset(data / "bsdata") if r.label == "unannotated"]

    if not args.no_cards:
        cards = ROOT / "pretrained_cards"
        tile_gen.save_pretrained(
            cards / "procedural-magnetic-tile",
            license="other",
            datasets=["abin24/Magnetic-tile-defect-datasets."],
            description="Procedural defects fitted to the five magnetic tile defect classes.",
            citation=MAGNETIC_CITATION,
        )
        pit_gen.save_pretrained(
            cards / "procedural-bsdata-pitting",
            license="cc-by-sa-4.0",
            datasets=["2Obe/BSData"],
            description="Procedural pitting fitted to BSData ball-screw drive pitting.",
            citation=BSDATA_CITATION,
        )

    jobs = [(tile_gen, tile_fit, train, normals, 1, n) for n in tile_gen.defect_types]
    jobs.append((pit_gen, pit_fit, pit_train, unannotated[::71], 3, "pitting"))
    keys = ("size", "contrast", "delta", "width_px", "blur_px", "visible")
    print(f"medians of {', '.join(keys)} (delta: absolute change; visible: share of the mask")
    print("in the visible core). class | painter | real | synthetic")
    for index, (gen, fit, records, normal, channels, name) in enumerate(jobs):
        rows.append(row(f"{name}\nreal", real_tiles(records, name, channels)))
        tiles, stats = synthetic_tiles(gen, name, normal, channels, seed=100 * index)
        rows.append(row(f"{name}\nfitted\n{gen.class_map[name]}", tiles))
        real = fit.classes[name]
        real_text = " ".join(f"{real[key][2]:+.3f}" for key in keys)
        synthetic_text = " ".join(f"{median([s[key] for s in stats]):+.3f}" for key in keys)
        print(f"{name} | {gen.class_map[name]} | {real_text} | {synthetic_text}")
    grid = np.concatenate(rows, axis=0)
    out = ROOT / "docs" / "fitted_vs_real.png"
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {out} ({grid.shape[1]}x{grid.shape[0]})")
    torch.set_num_threads(1)


if __name__ == "__main__":
    main()
