"""The ``defectaug`` command line.

- ``defectaug demo --out DIR``: every defect type with every blend mode on the shipped sample
  surfaces, as PNG grids (background | result | mask overlay) plus ``summary.txt``; offline, in
  seconds on a CPU.
- ``defectaug synth --backgrounds DIR --out DIR --n N --types ...``: an MVTec-AD-style synthetic
  dataset (``<split>/<type>/<stem>.png``, ``ground_truth/<type>/<stem>_mask.png``,
  ``manifest.csv``); rerunning into the same folder resumes where it stopped, and a rerun with a
  smaller ``--n`` removes the numbered images and masks beyond it. ``--split`` is one folder name
  inside ``--out``; every background is decoded once before anything is written.
  ``--format mvtec`` adds MVTec-AD's ``train/good`` and ``test/good`` (the backgrounds);
  ``--format coco`` writes ``images/``, ``masks/`` and ``annotations.json`` (one instance per
  placed defect, uncompressed RLE or polygons); ``--format yolo`` writes ``images/``, ``labels/``
  (polygon rows) and ``data.yaml``. ``--shard INDEX/COUNT`` writes only items ``i`` with
  ``i % COUNT == INDEX`` and its own ``manifest.shard-*.csv``: shards (Slurm array tasks,
  Kubernetes job pods, ...) write disjoint files into one folder (or apart, then copied
  together), and a final run without ``--shard`` merges them, writing only what is missing,
  into exactly what one unsharded run writes.
- ``defectaug restore IN OUT --card PATH``: repaint defective images as normal with a generator
  that restores (a ``defectgan`` card); writes ``OUT/<name>.png`` (restored) and
  ``OUT/<name>_map.png`` (where it repainted: a defect map) per image of ``IN`` (a
  file or a folder, recursive).
- ``defectaug train ...``: registered when :mod:`defectaug.training.cli` is available.

Bad paths and options, unreadable inputs and failed writes (read-only folder, disk full) end with
a one-line ``defectaug <command>: error: ...`` naming the argument or file, and exit code 2 (set
``DEFECTAUG_DEBUG=1`` for the full traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import defectaug
from defectaug._argparse import HelpFormatter
from defectaug._io import to_uint8
from defectaug.batch import BLEND_MODES, inject_defects
from defectaug.dataset import SyntheticDefectDataset, list_images, read_image

#: Generators the demo shows, in order; those that cannot be loaded here are listed as skipped.
DEMO_GENERATORS: list[str] = ["procedural", "dcdgan-magnetic-tile-64"]
#: Shipped backgrounds that are object images: the demo places defects with ``roi="auto"``.
OBJECT_BACKGROUNDS = ("washer",)
MANIFEST_COLUMNS = (
    "image",
    "label",
    "split",
    "mask",
    "width",
    "height",
    "defect_area_frac",
    "mask_empty",
    "n_defects",
    "background",
    "index",
)
CONFIG_NAME = "synth_config.json"
MASK_FOLDER = "ground_truth"
#: Bounds on what the options may ask for: every one of them sizes an allocation or a folder.
DEMO_SIZE_RANGE = (16, 1024)
#: Item stems are six digits (``000123``), so names sort in index order up to this many items.
MAX_ITEMS = 1_000_000
MAX_DEFECTS_PER_IMAGE = 64
MAX_WORKERS = 64
# Names of the numbered files ``synth`` writes (and of its interrupted ``.partial`` writes); only
# such files are ever removed from an output folder.
_IMAGE_NAME = re.compile(r"^(\d{6})\.png(\.partial)?$")
_MASK_NAME = re.compile(r"^(\d{6})_mask\.png(\.partial)?$")
_LABEL_NAME = re.compile(r"^(\d{6})\.txt(\.partial)?$")
_SHARD_MANIFEST = re.compile(r"^manifest\.shard-\d{5}-of-\d{5}\.csv$")
#: ``--format`` values: the default ``folder`` layout (``<split>/<type>/``, ``ground_truth/``),
#: the full MVTec-AD layout (plus ``train/good``, ``test/good``), COCO instance segmentation
#: (``images/``, ``annotations.json``) and YOLO segmentation (``images/``, ``labels/``).
FORMATS = ("folder", "mvtec", "coco", "yolo")
GOOD = "good"
COCO_NAME = "annotations.json"
YOLO_NAME = "data.yaml"
#: Values of settings that older versions did not record (their folders resume unchanged).
_SETTING_DEFAULTS: dict[str, Any] = {
    "format": "folder",
    "test_good": None,
    "coco_segmentation": None,
}


class CommandError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed write (read-only folder, disk full, a file in the way) as one line naming it."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or _message(error)
        raise CommandError(f"--out: cannot write {path}: {reason}") from None


# --------------------------------------------------------------------------------------- demo
def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[C, H, W]`` float -> ``[H, W, 3]`` uint8 (grey repeated)."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return to_uint8(rgb).permute(1, 2, 0).numpy()


def _overlay(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The result with the mask tinted red and its outline drawn in full red."""
    rgb = _to_uint8(image).astype(np.float32)
    inside = mask[0].numpy()
    padded = np.pad(inside, 1)
    eroded = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    red = np.array([255.0, 30.0, 30.0])
    rgb[inside] = 0.55 * rgb[inside] + 0.45 * red
    rgb[inside & ~eroded] = red
    return rgb.round().astype(np.uint8)


def _grid(
    rows: list[tuple[str, list[np.ndarray]]], columns: Sequence[str], title: str
) -> Image.Image:
    """Tiles in a labelled grid: one row per entry, a header naming the columns."""
    font = ImageFont.load_default()
    tile_h, tile_w = rows[0][1][0].shape[:2]
    label_w, header_h, gap = 96, 34, 4
    width = label_w + len(columns) * (tile_w + gap)
    height = header_h + len(rows) * (tile_h + gap)
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), title, fill=(0, 0, 0), font=font)
    for column, name in enumerate(columns):
        draw.text((label_w + column * (tile_w + gap) + 4, 20), name, fill=(60, 60, 60), font=font)
    for row, (label, tiles) in enumerate(rows):
        top = header_h + row * (tile_h + gap)
        for line, text in enumerate(label.split("\n")):
            draw.text((6, top + tile_h // 2 - 8 + 12 * line), text, fill=(0, 0, 0), font=font)
        for column, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (label_w + column * (tile_w + gap), top))
    return canvas


def _load_demo_backgrounds(size: int) -> list[tuple[str, torch.Tensor]]:
    from defectaug.assets import sample_backgrounds

    backgrounds = []
    for path in sample_backgrounds():
        image = read_image(path)
        image = torch.nn.functional.interpolate(
            image, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        ).clamp(0, 1)
        backgrounds.append((path.stem, image))
    if not backgrounds:
        raise CommandError("no shipped sample backgrounds found (defectaug/assets/backgrounds)")
    return backgrounds


def _load_demo_generator(name: str) -> tuple[Any, str | None]:
    from defectaug.generators import load_generator

    try:
        return load_generator(name), None
    except (FileNotFoundError, ValueError, KeyError, OSError, RuntimeError, ImportError) as error:
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def run_demo(args: argparse.Namespace) -> int:
    low, high = DEMO_SIZE_RANGE
    if not low <= args.size <= high:
        raise CommandError(f"--size: expected a side of {low} to {high} px, got {args.size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out: not a folder: {out}")
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
    backgrounds = _load_demo_backgrounds(args.size)
    blends = _split_names(args.blends) or list(BLEND_MODES)
    for blend in blends:
        if blend not in BLEND_MODES:
            raise CommandError(
                f"--blends: unknown blend mode {blend!r}; accepted: {', '.join(BLEND_MODES)}"
            )
    names = _split_names(args.generators) or DEMO_GENERATORS
    loaded = [(name, *_load_demo_generator(name)) for name in names]
    usable = [(name, generator) for name, generator, _ in loaded if generator is not None]
    if not usable:
        raise CommandError(
            "no demo generator could be loaded: " + "; ".join(f"{n}: {e}" for n, _, e in loaded)
        )

    started = time.perf_counter()
    lines = [
        f"defectaug {defectaug.__version__} demo",
        f"torch {torch.__version__}, Python {platform.python_version()}, device cpu, "
        f"image size {args.size}x{args.size}, seed {args.seed}",
        f"backgrounds (shipped, procedural): {', '.join(name for name, _ in backgrounds)}; "
        f"object images placed with roi='auto': {', '.join(OBJECT_BACKGROUNDS)}",
        "",
    ]
    for name, _, error in loaded:
        if error is not None:
            lines.append(f"generator {name}: skipped ({error})")
    total = sum(len(_demo_types(generator, args.types)) * len(blends) for _, generator in usable)
    progress = tqdm(total=total, desc="demo", unit="image", disable=args.no_progress)
    written = []
    for name, generator in usable:
        types = _demo_types(generator, args.types)
        if not types:
            lines.append(f"generator {name}: skipped (it has none of the requested types)")
            continue
        lines.append(f"generator {name} ({type(generator).__name__}, types: {', '.join(types)})")
        for blend in blends:
            rows = []
            blend_started = time.perf_counter()
            for row, defect_type in enumerate(types):
                background_name, background = backgrounds[row % len(backgrounds)]
                if generator.channels == 1 and background.shape[1] == 3:
                    background = background.mean(1, keepdim=True)
                elif generator.channels == 3 and background.shape[1] == 1:
                    background = background.expand(-1, 3, -1, -1)
                result = inject_defects(
                    background,
                    defect_type,
                    generator,
                    blend=blend,
                    scale=(0.25, 0.4),
                    roi="auto" if background_name in OBJECT_BACKGROUNDS else None,
                    seed=args.seed + row,
                )
                mask = result.masks[0]
                change = (result.images[0] - background[0]).abs().amax(0)
                area = float(mask.float().mean())
                mean_change = float(change[mask[0]].mean()) if mask.any() else 0.0
                lines.append(
                    f"  {blend:<16} {defect_type:<10} on {background_name:<14} "
                    f"mask {area * 100:5.2f} % of the image, mean change inside {mean_change:.3f}"
                )
                rows.append(
                    (
                        f"{defect_type}\n{background_name}",
                        [
                            _to_uint8(background[0]),
                            _to_uint8(result.images[0]),
                            _overlay(result.images[0], mask),
                        ],
                    )
                )
                progress.update()
            grid = _grid(rows, ("background", "result", "mask overlay"), f"{name} - blend: {blend}")
            path = out / f"{name}_{blend}.png"
            _save_atomically(path, functools.partial(grid.save, format="PNG"))
            written.append(path)
            lines.append(f"  -> {path.name} ({time.perf_counter() - blend_started:.2f} s)")
    progress.close()
    elapsed = time.perf_counter() - started
    lines += ["", f"{len(written)} grid(s) written in {elapsed:.1f} s:"] + [
        f"  {p.name}" for p in written
    ]
    summary = "\n".join(lines) + "\n"
    _save_atomically(
        out / "summary.txt", lambda partial: partial.write_text(summary, encoding="utf-8")
    )
    print(f"wrote {len(written)} grids and summary.txt to {out} in {elapsed:.1f} s")
    return 0


def _demo_types(generator: Any, requested: str | None) -> list[str]:
    names = _split_names(requested)
    if not names:
        return list(generator.defect_types)
    return [name for name in names if name in generator.defect_types]


# -------------------------------------------------------------------------------------- synth
class _IndexedItems(Dataset):
    """``(index, synthesised item)`` for the missing indices of a synthetic dataset."""

    def __init__(self, dataset: SyntheticDefectDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[int, dict[str, Any]]:
        index = self.indices[position]
        try:
            return index, self.dataset.synthesize(index)
        except OSError as error:
            # PIL's "image file is truncated" names no file; at least name the item.
            raise ValueError(f"item {index}: {_message(error)}") from error


def _save_atomically(
    path: Path, write: Callable[[Path], object], partial_suffix: str = ".partial"
) -> None:
    """``write(<path>.partial)`` then rename: an interrupted or failed write (disk full) never
    leaves a truncated file that looks done; the partial file is removed on failure.
    ``partial_suffix`` lets shards sharing one folder write the same file without racing."""
    partial = path.with_name(path.name + partial_suffix)
    with _writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(partial)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise


def _save_png(array: np.ndarray, path: Path) -> None:
    _save_atomically(path, functools.partial(Image.fromarray(array).save, format="PNG"))


def _save_text(text: str, path: Path, partial_suffix: str = ".partial") -> None:
    _save_atomically(
        path, lambda partial: partial.write_text(text, encoding="utf-8"), partial_suffix
    )


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where ``synth`` puts things for one ``--format`` (see :data:`FORMATS`)."""

    format: str
    split: str
    coco_segmentation: str = "rle"
    test_good: float = 0.0

    def item_paths(self, type_name: str, index: int) -> tuple[str, str]:
        """Where item ``index`` and its annotation file go, relative to ``--out``: the mask PNG
        (folder, mvtec, coco) or the YOLO label file."""
        stem = f"{index:06d}"
        if self.format in ("folder", "mvtec"):
            return (
                f"{self.split}/{type_name}/{stem}.png",
                f"{MASK_FOLDER}/{type_name}/{stem}_mask.png",
            )
        if self.format == "coco":
            return f"images/{stem}.png", f"masks/{stem}_mask.png"
        return f"images/{stem}.png", f"labels/{stem}.txt"

    def numbered_folders(self, types: Sequence[str]) -> list[tuple[str, re.Pattern[str]]]:
        """The folders of numbered item files, with the names this layout writes there."""
        if self.format in ("folder", "mvtec"):
            return [
                pair
                for name in types
                for pair in (
                    (f"{self.split}/{name}", _IMAGE_NAME),
                    (f"{MASK_FOLDER}/{name}", _MASK_NAME),
                )
            ]
        if self.format == "coco":
            return [("images", _IMAGE_NAME), ("masks", _MASK_NAME)]
        return [("images", _IMAGE_NAME), ("labels", _LABEL_NAME)]

    @property
    def columns(self) -> tuple[str, ...]:
        # COCO groups mask pixels into one instance per placed defect: it needs each defect's box.
        return (*MANIFEST_COLUMNS, "boxes") if self.format == "coco" else MANIFEST_COLUMNS


@dataclasses.dataclass(frozen=True)
class _Shard:
    """``--shard INDEX/COUNT``: this run writes the items ``i`` with ``i % COUNT == INDEX``."""

    index: int = 0
    count: int = 1

    def owns(self, index: int) -> bool:
        return index % self.count == self.index

    @property
    def sharded(self) -> bool:
        return self.count > 1

    @property
    def manifest_name(self) -> str:
        return f"manifest.shard-{self.index:05d}-of-{self.count:05d}.csv"

    @property
    def partial_suffix(self) -> str:
        # Shards sharing a folder all write synth_config.json / data.yaml: distinct partial
        # files keep one shard's rename from swallowing another's half-written file.
        return f".shard-{self.index}.partial" if self.sharded else ".partial"


def _read_manifest(path: Path, layout: _Layout, types: Sequence[str]) -> dict[int, dict[str, str]]:
    """The rows of an earlier run, keyed by index. A row this tool would not have written (a bad
    index, a path outside its layout) is an error naming the file and line: the manifest decides
    which images are kept, so a damaged one must not be guessed around."""
    if not path.is_file():
        return {}
    rows: dict[int, dict[str, str]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            needed = ("image", "label", "mask", "index") + (
                ("boxes",) if layout.format == "coco" else ()
            )
            missing = [c for c in needed if c not in (reader.fieldnames or [])]
            if missing:
                raise CommandError(
                    f"--out: {path}: not a synth manifest (no column {', '.join(missing)}); "
                    "delete it and rerun to remake the dataset"
                )
            for row in reader:
                problem = _manifest_row_problem(row, layout, types)
                if problem:
                    raise CommandError(
                        f"--out: {path}: line {reader.line_num}: {problem}; delete the manifest "
                        "and rerun to remake the dataset"
                    )
                rows[int(row["index"])] = row
    except (csv.Error, UnicodeDecodeError) as error:
        raise CommandError(
            f"--out: {path}: not a readable CSV file ({_message(error)}); delete it and rerun "
            "to remake the dataset"
        ) from None
    return rows


def _manifest_row_problem(row: dict[str, Any], layout: _Layout, types: Sequence[str]) -> str | None:
    text = row.get("index")
    if not (isinstance(text, str) and text.isascii() and text.isdigit()) or int(text) >= MAX_ITEMS:
        return f"index {text!r} is not a whole number below {MAX_ITEMS}"
    label = row.get("label")
    if label not in types:
        return f"label {label!r} is not one of this dataset's types ({', '.join(types)})"
    image, mask = layout.item_paths(label, int(text))
    if (row.get("image"), row.get("mask")) != (image, mask):
        return (
            f"item {int(text)} lists image {row.get('image')!r} and mask {row.get('mask')!r}, "
            f"expected {image!r} and {mask!r}"
        )
    if layout.format == "coco" and _parse_boxes(row.get("boxes")) is None:
        return (
            f"item {int(text)}: boxes {row.get('boxes')!r} is not a JSON list of [x0, y0, x1, y1]"
        )
    return None


def _parse_boxes(text: Any) -> list[list[int]] | None:
    try:
        boxes = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        return None
    if not isinstance(boxes, list) or not all(
        isinstance(box, list) and len(box) == 4 and all(type(v) is int for v in box)
        for box in boxes
    ):
        return None
    return boxes


def _write_manifest(
    path: Path, rows: dict[int, dict[str, Any]], columns: Sequence[str] = MANIFEST_COLUMNS
) -> None:
    def write(partial: Path) -> None:
        with partial.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for index in sorted(rows):
                writer.writerow(rows[index])

    _save_atomically(path, write)


def _check_split(split: str) -> None:
    """``--split`` is one folder name inside ``--out``: never a path that leaves it."""
    if (
        not split
        or split in (".", "..", MASK_FOLDER)
        or any(sep in split for sep in ("/", "\\", os.sep))
        or Path(split).is_absolute()
        or split != split.strip()
    ):
        raise CommandError(
            f"--split: expected one folder name inside --out (such as test or train, not "
            f"{MASK_FOLDER}), got {split!r}"
        )


def _resolve_layout(args: argparse.Namespace) -> _Layout:
    """The layout ``--format`` asks for, with the options that only some formats take."""
    fmt = args.format
    if fmt == "folder":
        split = "test" if args.split is None else args.split
        _check_split(split)
    elif fmt == "mvtec":
        if args.split not in (None, "test"):
            raise CommandError(
                f"--split: the mvtec format keeps defects in test (MVTec-AD's layout), got "
                f"{args.split!r}; leave --split out"
            )
        split = "test"
    else:
        if args.split is not None:
            raise CommandError(
                f"--split: the {fmt} format keeps every image in images/; leave --split out "
                f"(got {args.split!r})"
            )
        split = "images"
    if args.test_good is not None and fmt != "mvtec":
        raise CommandError(f"--test-good: only the mvtec format has test/good, not {fmt}")
    test_good = 0.2 if args.test_good is None else args.test_good
    if not 0.0 <= test_good < 1.0:
        raise CommandError(
            f"--test-good: expected a fraction of the backgrounds in [0, 1), got {test_good}"
        )
    if args.coco_segmentation is not None and fmt != "coco":
        raise CommandError(f"--coco-segmentation: only for --format coco, not {fmt}")
    return _Layout(fmt, split, args.coco_segmentation or "rle", test_good)


def _stale_outputs(
    out: Path, layout: _Layout, types: Sequence[str], n: int, shard: _Shard = _Shard()
) -> list[Path]:
    """This shard's numbered images and annotation files of an earlier, larger run (index >= n)
    and its interrupted ``.partial`` writes, in this tool's own layout. Nothing else in ``--out``
    is ever listed: not other shards' files, which may still be being written."""
    found = []
    for name, pattern in layout.numbered_folders(types):
        folder = out / name
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.iterdir():
            match = pattern.match(path.name)
            if (
                match
                and shard.owns(int(match.group(1)))
                and (match.group(2) or int(match.group(1)) >= n)
                and path.is_file()
                and not path.is_symlink()
            ):
                found.append(path)
    return sorted(found)


# ---------------------------------------------------------------- mvtec: the good images
def _good_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Background indices for ``test/good`` and ``train/good``: a seeded shuffle, the first
    ``round(fraction * count)`` (at most ``count - 1``: training keeps one) to test."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = min(round(fraction * count), count - 1)
    return sorted(order[:held_out]), sorted(order[held_out:])


def _write_good(
    out: Path, dataset: SyntheticDefectDataset, layout: _Layout, seed: int, shard: _Shard
) -> tuple[int, list[Path]]:
    """MVTec-AD's normal images: the backgrounds, converted as the defect images are (channels,
    8 bits), as ``train/good/NNNNNN.png`` and ``test/good/NNNNNN.png``. Numbered files past the
    current count (a changed ``--test-good``) and interrupted writes are removed. Returns the
    number written and the files removed."""
    test_good, train_good = _good_split(len(dataset.backgrounds), layout.test_good, seed)
    written, removed = 0, []
    for split, indices in (("test", test_good), ("train", train_good)):
        folder = out / split / GOOD
        if folder.is_dir() and not folder.is_symlink():
            for path in sorted(folder.iterdir()):
                match = _IMAGE_NAME.match(path.name)
                position = int(match.group(1)) if match else -1
                if (
                    match
                    and shard.owns(position)
                    and (match.group(2) or position >= len(indices))
                    and path.is_file()
                    and not path.is_symlink()
                ):
                    with _writing(path):
                        path.unlink()
                    removed.append(path)
        for position, background in enumerate(indices):
            path = folder / f"{position:06d}.png"
            if not shard.owns(position) or path.is_file():
                continue
            try:
                image = to_uint8(dataset.load_background(background)[0])
            except (OSError, ValueError) as error:
                raise CommandError(f"--backgrounds: {_message(error)}") from None
            pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
            _save_png(pixels, path)
            written += 1
    return written, removed


# -------------------------------------------------------------- coco / yolo annotations
def _instances(mask: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """The defect instances of one item's mask ``[H, W]`` bool: its 8-connected components, each
    given to the placed defect whose box (exclusive ends) holds most of its pixels, so a defect
    that shows as several pieces stays one instance. A component outside every box (none should
    be) is an instance of its own."""
    import cv2

    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    groups: dict[int, np.ndarray] = {}
    for component in range(1, count):
        pixels = labels == component
        rows, cols = np.nonzero(pixels)
        inside = [
            int(((cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)).sum())
            for x0, y0, x1, y1 in boxes
        ]
        key = int(np.argmax(inside)) if inside and max(inside) > 0 else len(boxes) + component
        groups[key] = groups[key] | pixels if key in groups else pixels
    return [groups[key] for key in sorted(groups)]


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer outlines of ``mask [H, W]`` bool as flat ``[x1, y1, x2, y2, ...]`` in pixel-edge
    coordinates (pixel ``(r, c)`` spans ``[c, c + 1] x [r, r + 1]``). Contours run through the
    boundary pixels' centres; a piece too thin for an outline with area (a one-pixel line or dot)
    becomes its bounding rectangle. Holes are not represented: polygons approximate the mask,
    COCO's RLE (the default) is exact."""
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = []
    for contour in contours:
        if len(contour) >= 3 and cv2.contourArea(contour) > 0:
            polygons.append([round(float(v) + 0.5, 2) for v in contour[:, 0, :].ravel()])
        else:
            x, y, w, h = cv2.boundingRect(contour)
            polygons.append([float(v) for v in (x, y, x + w, y, x + w, y + h, x, y + h)])
    return polygons


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed RLE of ``mask [H, W]``: run lengths in column-major order, starting
    with a run of zeros."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.uint8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _yolo_rows(mask: np.ndarray, class_id: int) -> str:
    """YOLO segmentation label text: ``class x1 y1 x2 y2 ...`` (normalised by the image size),
    one row per outline of ``mask``."""
    height, width = mask.shape
    lines = []
    for polygon in _polygons(mask):
        xy = np.asarray(polygon).reshape(-1, 2) / np.array([width, height])
        lines.append(f"{class_id} " + " ".join(f"{v:.6f}" for v in xy.clip(0, 1).ravel()))
    return "\n".join(lines) + "\n"


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 127
    except OSError as error:
        raise CommandError(f"--out: cannot read {path}: {_message(error)}") from None


def _coco(
    out: Path,
    rows: dict[int, dict[str, Any]],
    dataset: SyntheticDefectDataset,
    layout: _Layout,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The COCO instance-segmentation JSON of ``rows``, from the masks on disk (so a resumed or
    merged dataset gets the same file as one written in one go). Image ids are item indices;
    category ids are ``class_to_idx + 1`` (COCO keeps 0 for the background)."""
    images, annotations = [], []
    for index in sorted(rows):
        row = rows[index]
        mask = _read_mask(out / row["mask"])
        height, width = mask.shape
        images.append(
            {"id": index, "file_name": Path(row["image"]).name, "width": width, "height": height}
        )
        category = dataset.class_to_idx[row["label"]] + 1
        for instance in _instances(mask, _parse_boxes(row["boxes"]) or []):
            rows_, cols = np.nonzero(instance)
            x0, y0 = int(cols.min()), int(rows_.min())
            segmentation: Any = (
                _rle(instance) if layout.coco_segmentation == "rle" else _polygons(instance)
            )
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index,
                    "category_id": category,
                    "segmentation": segmentation,
                    "area": int(instance.sum()),
                    "bbox": [x0, y0, int(cols.max()) + 1 - x0, int(rows_.max()) + 1 - y0],
                    "iscrowd": 0,
                }
            )
    return {
        # No date or path: shards merged anywhere give the same bytes as one machine.
        "info": {
            "description": f"defectaug synth: generator {settings['generator']}, "
            f"seed {settings['seed']}, blend {settings['blend']}",
            "version": defectaug.__version__,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": class_id + 1, "name": name, "supercategory": "defect"}
            for name, class_id in sorted(dataset.class_to_idx.items(), key=lambda kv: kv[1])
        ],
    }


def _yolo_yaml(dataset: SyntheticDefectDataset) -> str:
    names = sorted(dataset.class_to_idx.items(), key=lambda kv: kv[1])
    lines = [
        "# YOLO segmentation dataset written by defectaug synth. Every item is in images/ (labels",
        "# in labels/); split it into train / val lists as your trainer expects. No 'path' key:",
        "# the folders resolve next to this file.",
        "train: images",
        "val: images",
        "names:",
        # JSON strings are valid YAML scalars: any type name is quoted safely.
        *(f"  {class_id}: {json.dumps(name)}" for name, class_id in names),
    ]
    return "\n".join(lines) + "\n"


def _write_item(
    out: Path,
    layout: _Layout,
    dataset: SyntheticDefectDataset,
    index: int,
    item: dict[str, Any],
    backgrounds: Path,
) -> dict[str, Any]:
    """Write item ``index`` in ``layout`` and return its manifest row."""
    type_name = item["type_name"]
    image_path, second_path = layout.item_paths(type_name, index)
    image = to_uint8(item["image"])
    pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
    mask = item["mask"][0].numpy()
    # The annotation file first, the image last: an image on disk means its item is complete.
    if layout.format == "yolo":
        _save_text(_yolo_rows(mask, dataset.class_to_idx[type_name]), out / second_path)
    else:
        _save_png(mask.astype(np.uint8) * 255, out / second_path)
    _save_png(pixels, out / image_path)
    height, width = mask.shape
    row = {
        "image": image_path,
        "label": type_name,
        "split": layout.split,
        "mask": second_path,
        "width": width,
        "height": height,
        "defect_area_frac": f"{float(mask.mean()):.6f}",
        "mask_empty": int(not mask.any()),
        "n_defects": len(item["boxes"]),
        "background": Path(dataset.backgrounds[item["background_index"]])
        .relative_to(backgrounds)
        .as_posix(),
        "index": index,
    }
    if layout.format == "coco":
        row["boxes"] = json.dumps(item["boxes"].tolist(), separators=(",", ":"))
    return row


def run_synth(args: argparse.Namespace) -> int:
    backgrounds = Path(args.backgrounds)
    if not backgrounds.is_dir():
        raise CommandError(f"--backgrounds: folder not found: {backgrounds}")
    images = list_images(backgrounds)
    if not images:
        raise CommandError(f"--backgrounds: no images found in {backgrounds}")
    if not 1 <= args.n <= MAX_ITEMS:
        raise CommandError(
            f"--n: expected a positive number of images up to {MAX_ITEMS}, got {args.n}"
        )
    if not 0 <= args.workers <= MAX_WORKERS:
        raise CommandError(
            f"--workers: expected 0 to {MAX_WORKERS} worker processes, got {args.workers}"
        )
    layout = _resolve_layout(args)
    shard = args.shard or _Shard()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out: not a folder: {out}")
    from defectaug.generators import load_generator

    overrides = dict(args.generator_arg or [])
    try:
        generator = load_generator(args.generator, **overrides)
    except (FileNotFoundError, ValueError, KeyError, OSError, TypeError) as error:
        raise CommandError(f"--generator: {_message(error)}") from None
    try:
        dataset = SyntheticDefectDataset(
            backgrounds,
            _split_names(args.types) or None,
            generator,
            length=args.n,
            seed=args.seed,
            blend=args.blend,
            count=args.count,
            scale=args.scale,
            roi=None if args.roi == "none" else args.roi,
            to_grayscale=args.to_grayscale,
            to_rgb=args.to_rgb,
        )
    except OSError as error:
        # The constructor reads the first background to learn the channel count; PIL's
        # "image file is truncated" does not say which file that was.
        where = error.filename or images[0]
        raise CommandError(f"--backgrounds: cannot read {where}: {_message(error)}") from None
    for type_name in dataset.defect_types:
        if type_name in (".", "..") or any(sep in type_name for sep in ("/", "\\", os.sep)):
            raise CommandError(
                f"--types: {type_name!r} cannot be a folder name inside --out; rename the type"
            )
        if layout.format == "mvtec" and type_name == GOOD:
            raise CommandError(
                f"--types: {GOOD!r} is MVTec-AD's folder of normal images; rename the type"
            )
    # Every background is decoded once before anything is written: a damaged file fails here,
    # named, rather than as an anonymous error after hours of output.
    try:
        dataset.check()
    except ValueError as error:
        message = _message(error)
        raise CommandError(f"--backgrounds: {message.removeprefix('backgrounds: ')}") from None
    settings = {
        "backgrounds": str(backgrounds.resolve()),
        "generator": args.generator,
        "generator_args": overrides,
        "types": list(dataset.defect_types),
        "seed": args.seed,
        "blend": args.blend,
        "count": list(args.count),
        "scale": list(args.scale),
        "roi": args.roi,
        "to_grayscale": args.to_grayscale,
        "to_rgb": args.to_rgb,
        "split": layout.split,
    }
    # Only other formats record their options: a folder-format dataset's settings file is what
    # earlier versions wrote, so their folders resume as before.
    if layout.format != "folder":
        settings["format"] = layout.format
    if layout.format == "mvtec":
        settings["test_good"] = layout.test_good
    if layout.format == "coco":
        settings["coco_segmentation"] = layout.coco_segmentation
    if layout.format == "yolo":
        # Its label files hold class ids (each type's index in --types), so a resumed folder
        # must keep them; folders written before they were recorded used the sorted types.
        settings["class_ids"] = dict(dataset.class_to_idx)
    config_path = out / CONFIG_NAME
    manifest_path = out / "manifest.csv"
    shard_manifests = (
        sorted(p for p in out.iterdir() if _SHARD_MANIFEST.match(p.name)) if out.is_dir() else []
    )
    earlier_run = config_path.is_file()
    if earlier_run:
        previous = _read_settings(config_path)
        defaults = dict(_SETTING_DEFAULTS)
        if previous.get("format") == "yolo":
            sorted_types = sorted(previous.get("types") or [])
            defaults["class_ids"] = {name: index for index, name in enumerate(sorted_types)}
        keys = set(settings) | set(defaults)
        changed = sorted(
            key
            for key in keys
            if previous.get(key, defaults.get(key)) != settings.get(key, defaults.get(key))
        )
        if changed:
            raise CommandError(
                f"--out: {out} holds a dataset made with other settings ({', '.join(changed)}); "
                "use a new folder or the same settings to resume"
            )
    elif manifest_path.exists() or shard_manifests:
        found = manifest_path if manifest_path.exists() else shard_manifests[0]
        raise CommandError(
            f"--out: {out} holds a {found.name} but no {CONFIG_NAME}, so it is not a "
            "dataset this command made; use a new folder"
        )
    # A shard reads the merged manifest (if any) and its own; the unsharded run reads every
    # shard's manifest too, which is how shards written apart merge into one dataset.
    sources = [manifest_path] + ([out / shard.manifest_name] if shard.sharded else shard_manifests)
    kept: dict[int, dict[str, str]] = {}
    for source in sources:
        kept.update(_read_manifest(source, layout, dataset.defect_types))
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
    _save_text(json.dumps(settings, indent=2) + "\n", config_path, shard.partial_suffix)

    # A rerun with a smaller --n removes the images the manifest will no longer list (only the
    # numbered files of this layout), so the folder and its manifest agree.
    stale = _stale_outputs(out, layout, dataset.defect_types, args.n, shard) if earlier_run else []
    for path in stale:
        with _writing(path):
            path.unlink()
    good_written = 0
    if layout.format == "mvtec":
        good_written, good_removed = _write_good(out, dataset, layout, args.seed, shard)
        stale += good_removed
    mine = [index for index in range(args.n) if shard.owns(index)]
    rows = {
        index: row
        for index, row in kept.items()
        if index < args.n
        and shard.owns(index)
        and (out / row["image"]).is_file()
        and (out / row["mask"]).is_file()
    }
    missing = [index for index in mine if index not in rows]
    skipped = len(mine) - len(missing)
    written_manifest = out / shard.manifest_name if shard.sharded else manifest_path
    loader = DataLoader(
        _IndexedItems(dataset, missing), batch_size=None, num_workers=args.workers, collate_fn=None
    )
    progress = tqdm(
        total=len(mine), initial=skipped, desc="synth", unit="image", disable=args.no_progress
    )
    started = time.perf_counter()
    for done, (index, item) in enumerate(loader, start=1):
        rows[index] = _write_item(out, layout, dataset, index, item, backgrounds)
        progress.update()
        if done % 50 == 0:
            _write_manifest(written_manifest, rows, layout.columns)
    progress.close()
    _write_manifest(written_manifest, rows, layout.columns)
    extra = []
    if layout.format == "yolo":
        _save_text(_yolo_yaml(dataset), out / YOLO_NAME, shard.partial_suffix)
        extra.append(YOLO_NAME)
    if not shard.sharded:
        if layout.format == "coco":
            coco = _coco(out, rows, dataset, layout, settings)
            _save_text(json.dumps(coco, separators=(",", ":")) + "\n", out / COCO_NAME)
            extra.append(COCO_NAME)
        # Merged: the shards' manifests are now in manifest.csv, so the folder is exactly what
        # one unsharded run writes.
        for path in shard_manifests:
            with _writing(path):
                path.unlink(missing_ok=True)
    elapsed = time.perf_counter() - started
    removed = f"; removed {len(stale)} stale file(s)" if stale else ""
    good = f"; {good_written} good image(s)" if layout.format == "mvtec" else ""
    merged = f"; merged {len(shard_manifests)} shard manifest(s)" if shard_manifests else ""
    where = f"shard {shard.index}/{shard.count}: " if shard.sharded else ""
    also = f", {', '.join(extra)}" if extra else ""
    print(
        f"{where}wrote {len(missing)} image(s) ({skipped} already there{removed}{good}{merged}) "
        f"to {out} in {elapsed:.1f} s; manifest: {written_manifest}{also}"
    )
    return 0


# ------------------------------------------------------------------------------------ restore
def run_restore(args: argparse.Namespace) -> int:
    source = Path(args.input)
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise CommandError(f"IN: no images found in {source}")
        names = [path.relative_to(source).with_suffix("") for path in paths]
    elif source.is_file():
        paths, names = [source], [Path(source.stem)]
    else:
        raise CommandError(f"IN: no such file or folder: {source}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"OUT: not a folder: {out}")
    from defectaug.generators import load_generator

    try:
        generator = load_generator(args.card)
    except (FileNotFoundError, ValueError, KeyError, OSError, TypeError) as error:
        raise CommandError(f"--card: {_message(error)}") from None
    if not callable(getattr(generator, "restore", None)):
        raise CommandError(
            f"--card: {args.card} is a {type(generator).__name__}, which cannot restore images; "
            "expected a generator with restore() (a defectgan card)"
        )
    for path, name in tqdm(
        list(zip(paths, names, strict=True)), disable=args.no_progress, unit="image"
    ):
        image = read_image(path)
        restored, defect_map = generator.restore(image, generator=args.seed)
        target = out / name
        with _writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            _save_png(
                to_uint8(restored[0]).permute(1, 2, 0).squeeze(-1).numpy(),
                target.with_name(target.name + ".png"),
            )
            _save_png(
                to_uint8(defect_map[0, 0]).numpy(), target.with_name(target.name + "_map.png")
            )
    print(f"restored {len(paths)} image(s) into {out}", file=sys.stderr)
    return 0


def _read_settings(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CommandError(
            f"--out: {path}: not valid JSON ({_message(error)}); delete the folder's "
            f"{CONFIG_NAME} and manifest.csv to remake the dataset, or use a new folder"
        ) from None
    if not isinstance(settings, dict):
        raise CommandError(
            f"--out: {path}: expected a JSON object of settings, got {type(settings).__name__}"
        )
    return settings


# ------------------------------------------------------------------------------------- parser
def _split_names(value: str | Sequence[str] | None) -> list[str]:
    if not value:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    return [name.strip() for part in parts for name in part.split(",") if name.strip()]


def _count(text: str) -> tuple[int, int]:
    try:
        low, _, high = text.partition("-")
        pair = (int(low), int(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None
    if pair[0] < 1 or pair[0] > pair[1] or pair[1] > MAX_DEFECTS_PER_IMAGE:
        raise argparse.ArgumentTypeError(
            f"expected 1 <= MIN <= MAX <= {MAX_DEFECTS_PER_IMAGE}, got {text!r}"
        )
    return pair


def _shard(text: str) -> _Shard:
    index, separator, count = text.partition("/")
    try:
        shard = _Shard(int(index), int(count))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected INDEX/COUNT such as 0/4, got {text!r}"
        ) from None
    if not separator or not 0 <= shard.index < shard.count <= MAX_ITEMS:
        raise argparse.ArgumentTypeError(
            f"expected INDEX/COUNT with 0 <= INDEX < COUNT (INDEX counts from 0), got {text!r}"
        )
    return shard


def _key_value(text: str) -> tuple[str, Any]:
    key, separator, raw = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _scale(text: str) -> tuple[float, float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected F or MIN,MAX, got {text!r}") from None
    if len(values) not in (1, 2) or not 0 < values[0] <= values[-1]:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {text!r}")
    return (values[0], values[-1])


def _message(error: BaseException) -> str:
    """One line for ``error``: an ``OSError`` names its file, a DataLoader worker's re-raised
    error gives the original one's last line instead of "Caught ... in DataLoader worker"."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Caught ") and "Original Traceback" in text:
        return lines[-1]
    return lines[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defectaug",
        description="Synthesize realistic defects with exact pixel masks.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"defectaug {defectaug.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="show every defect type and blend mode on the shipped sample surfaces",
        description="Write PNG grids (background | result | mask overlay) and summary.txt.",
        formatter_class=HelpFormatter,
    )
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument("--size", type=int, default=192, help="side of the demo images in px")
    demo.add_argument("--seed", type=int, default=0, help="seed of row 0 (row i uses seed + i)")
    demo.add_argument("--types", nargs="+", default=None, help="only these defect types")
    demo.add_argument(
        "--blends", nargs="+", default=None, help=f"blend modes (default: {' '.join(BLEND_MODES)})"
    )
    demo.add_argument(
        "--generators",
        nargs="+",
        default=None,
        help=f"generators to show (default: {' '.join(DEMO_GENERATORS)})",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=run_demo)

    synth = commands.add_parser(
        "synth",
        help="write an MVTec-AD-style synthetic defect dataset",
        description=(
            "Composite synthetic defects onto the images of a folder and write "
            "<out>/<split>/<type>/<stem>.png, <out>/ground_truth/<type>/<stem>_mask.png and "
            "<out>/manifest.csv. Item i depends only on (seed, i); rerunning resumes."
        ),
        formatter_class=HelpFormatter,
    )
    synth.add_argument(
        "--backgrounds", required=True, help="folder of defect-free images (recursive)"
    )
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--n", type=int, required=True, help="number of images")
    synth.add_argument(
        "--types", nargs="+", default=None, help="defect types (default: all of the generator's)"
    )
    synth.add_argument(
        "--generator",
        default="procedural",
        help="registered name, dataset folder (real-defect bank) or Hub id",
    )
    synth.add_argument(
        "--generator-arg",
        type=_key_value,
        action="append",
        metavar="KEY=VALUE",
        help="option for load_generator (JSON values), e.g. split=train for a dataset folder",
    )
    synth.add_argument("--blend", choices=BLEND_MODES, default="alpha", help="blend mode")
    synth.add_argument("--seed", type=int, default=0, help="item i depends only on (seed, i)")
    synth.add_argument(
        "--count", type=_count, default=(1, 1), help="defects per image: N or MIN-MAX (default: 1)"
    )
    synth.add_argument(
        "--scale",
        type=_scale,
        default=(0.1, 0.3),
        help="layer size / shorter image side: F or MIN,MAX (default: 0.1,0.3)",
    )
    synth.add_argument(
        "--roi", choices=("none", "auto"), default="none", help="auto: only on the object"
    )
    synth.add_argument(
        "--split",
        default=None,
        help="folder format only: folder for the images (default test, as MVTec-AD)",
    )
    synth.add_argument(
        "--format",
        choices=FORMATS,
        default="folder",
        help="folder: <split>/<type>/ + ground_truth/ (default); mvtec: the full MVTec-AD layout "
        "(train/good, test/good, test/<type>, ground_truth/<type>); coco: images/, masks/ and "
        "annotations.json (instance segmentation); yolo: images/, labels/ and data.yaml",
    )
    synth.add_argument(
        "--test-good",
        type=float,
        default=None,
        metavar="FRACTION",
        help="mvtec: fraction of the backgrounds put in test/good instead of train/good "
        "(default 0.2)",
    )
    synth.add_argument(
        "--coco-segmentation",
        choices=("rle", "polygon"),
        default=None,
        help="coco: rle (uncompressed, exact; default) or polygon (outlines, approximate)",
    )
    synth.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="INDEX/COUNT",
        help="write only items i with i %% COUNT == INDEX (0-based), e.g. --shard "
        "$SLURM_ARRAY_TASK_ID/8; merge by rerunning without --shard in the folder holding "
        "every shard's output",
    )
    conversion = synth.add_mutually_exclusive_group()
    conversion.add_argument(
        "--to-grayscale", action="store_true", help="convert backgrounds to 1 channel"
    )
    conversion.add_argument(
        "--to-rgb", action="store_true", help="convert backgrounds to 3 channels"
    )
    synth.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    synth.add_argument("--no-progress", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    restore = commands.add_parser(
        "restore",
        help="repaint defective images as normal with a restoring generator (defectgan)",
        description=(
            "Restore each image of IN (a file or a folder, recursive) with the generator's "
            "restore(): write OUT/<name>.png (the restored image) and OUT/<name>_map.png (where "
            "it repainted, 255 = fully)."
        ),
        formatter_class=HelpFormatter,
    )
    restore.add_argument("input", metavar="IN", help="an image file or a folder of images")
    restore.add_argument("out", metavar="OUT", help="output folder")
    restore.add_argument(
        "--card", required=True, help="generator folder, shipped card name or Hub id (defectgan)"
    )
    restore.add_argument("--seed", type=int, default=0, help="seed of the generator's noise")
    restore.add_argument("--no-progress", action="store_true", help="no progress bar")
    restore.set_defaults(func=run_restore)

    if importlib.util.find_spec("defectaug.training.cli") is not None:
        add_train_parser = getattr(
            importlib.import_module("defectaug.training.cli"), "add_train_parser", None
        )
        if add_train_parser is not None:
            add_train_parser(commands)
        add_convert_parser = getattr(
            importlib.import_module("defectaug.training.cli"), "add_convert_checkpoint_parser", None
        )
        if add_convert_parser is not None:
            add_convert_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (
        CommandError,
        OSError,  # unreadable or unwritable files, disk full (named by _message)
        ValueError,
        KeyError,
        RuntimeError,  # torch: devices, out of memory
        MemoryError,
        FloatingPointError,  # train: the run diverged (its checkpoint is kept)
        csv.Error,
        Image.DecompressionBombError,
    ) as error:
        if os.environ.get("DEFECTAUG_DEBUG"):
            raise
        print(f"defectaug {args.command}: error: {_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
