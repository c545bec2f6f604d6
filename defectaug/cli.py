"""The ``defectaug`` command line.

- ``defectaug demo --out DIR``: every defect type with every blend mode on the shipped sample
  surfaces, as PNG grids (background | result | mask overlay) plus ``summary.txt``; offline, in
  seconds on a CPU.
- ``defectaug synth --backgrounds DIR --out DIR --n N --types ...``: an MVTec-AD-style synthetic
  dataset (``<split>/<type>/<stem>.png``, ``ground_truth/<type>/<stem>_mask.png``,
  ``manifest.csv``); rerunning into the same folder resumes where it stopped.
- ``defectaug train ...``: registered when :mod:`defectaug.training.cli` is available.

Bad paths and options end with a one-line ``defectaug <command>: error: ...`` and exit code 2
(set ``DEFECTAUG_DEBUG=1`` for the full traceback).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import defectaug
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


class CommandError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


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
    out = Path(args.out)
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
            grid.save(path)
            written.append(path)
            lines.append(f"  -> {path.name} ({time.perf_counter() - blend_started:.2f} s)")
    progress.close()
    elapsed = time.perf_counter() - started
    lines += ["", f"{len(written)} grid(s) written in {elapsed:.1f} s:"] + [
        f"  {p.name}" for p in written
    ]
    (out / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
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
        return index, self.dataset.synthesize(index)


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write atomically, so an interrupted run never leaves a truncated file that looks done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    Image.fromarray(array).save(partial, format="PNG")
    os.replace(partial, path)


def _read_manifest(path: Path) -> dict[int, dict[str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {int(row["index"]): row for row in csv.DictReader(handle) if row.get("index")}


def _write_manifest(path: Path, rows: dict[int, dict[str, Any]]) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        for index in sorted(rows):
            writer.writerow(rows[index])
    os.replace(partial, path)


def run_synth(args: argparse.Namespace) -> int:
    backgrounds = Path(args.backgrounds)
    if not backgrounds.is_dir():
        raise CommandError(f"--backgrounds: folder not found: {backgrounds}")
    if not list_images(backgrounds):
        raise CommandError(f"--backgrounds: no images found in {backgrounds}")
    if args.n < 1:
        raise CommandError(f"--n: expected a positive number of images, got {args.n}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out: not a folder: {out}")
    from defectaug.generators import load_generator

    overrides = dict(args.generator_arg or [])
    try:
        generator = load_generator(args.generator, **overrides)
    except (FileNotFoundError, ValueError, KeyError, OSError, TypeError) as error:
        raise CommandError(f"--generator: {_message(error)}") from None
    dataset = SyntheticDefectDataset(
        backgrounds,
        generator,
        _split_names(args.types) or None,
        length=args.n,
        seed=args.seed,
        blend=args.blend,
        count=args.count,
        scale=args.scale,
        roi=None if args.roi == "none" else args.roi,
        to_grayscale=args.to_grayscale,
        to_rgb=args.to_rgb,
    )
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
        "split": args.split,
    }
    config_path = out / CONFIG_NAME
    if config_path.is_file():
        previous = json.loads(config_path.read_text(encoding="utf-8"))
        changed = sorted(key for key in settings if previous.get(key) != settings[key])
        if changed:
            raise CommandError(
                f"--out: {out} holds a dataset made with other settings ({', '.join(changed)}); "
                "use a new folder or the same settings to resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    manifest_path = out / "manifest.csv"
    rows = {
        index: row
        for index, row in _read_manifest(manifest_path).items()
        if index < args.n and (out / row["image"]).is_file() and (out / row["mask"]).is_file()
    }
    missing = [index for index in range(args.n) if index not in rows]
    skipped = args.n - len(missing)
    loader = DataLoader(
        _IndexedItems(dataset, missing), batch_size=None, num_workers=args.workers, collate_fn=None
    )
    progress = tqdm(
        total=args.n, initial=skipped, desc="synth", unit="image", disable=args.no_progress
    )
    started = time.perf_counter()
    for done, (index, item) in enumerate(loader, start=1):
        stem = f"{index:06d}"
        type_name = item["type_name"]
        image_path = Path(args.split) / type_name / f"{stem}.png"
        mask_path = Path("ground_truth") / type_name / f"{stem}_mask.png"
        image = to_uint8(item["image"])
        pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        mask = item["mask"][0].numpy()
        _save_png(mask.astype(np.uint8) * 255, out / mask_path)
        _save_png(pixels, out / image_path)
        height, width = mask.shape
        rows[index] = {
            "image": image_path.as_posix(),
            "label": type_name,
            "split": args.split,
            "mask": mask_path.as_posix(),
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
        progress.update()
        if done % 50 == 0:
            _write_manifest(manifest_path, rows)
    progress.close()
    _write_manifest(manifest_path, rows)
    elapsed = time.perf_counter() - started
    print(
        f"wrote {len(missing)} image(s) ({skipped} already there) to {out} in {elapsed:.1f} s; "
        f"manifest: {manifest_path}"
    )
    return 0


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
    if pair[0] < 1 or pair[0] > pair[1]:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return pair


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
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return str(text).splitlines()[0] if str(text) else type(error).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="defectaug",
        description="Synthesize realistic defects with exact pixel masks.",
    )
    parser.add_argument("--version", action="version", version=f"defectaug {defectaug.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="show every defect type and blend mode on the shipped sample surfaces",
        description="Write PNG grids (background | result | mask overlay) and summary.txt.",
    )
    demo.add_argument("--out", required=True, help="output folder")
    demo.add_argument(
        "--size", type=int, default=192, help="side of the demo images in px (default 192)"
    )
    demo.add_argument("--seed", type=int, default=0)
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
    synth.add_argument("--blend", choices=BLEND_MODES, default="alpha")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--count", type=_count, default=(1, 1), help="defects per image: N or MIN-MAX"
    )
    synth.add_argument(
        "--scale",
        type=_scale,
        default=(0.1, 0.3),
        help="layer size / shorter image side: F or MIN,MAX",
    )
    synth.add_argument(
        "--roi", choices=("none", "auto"), default="none", help="auto: only on the object"
    )
    synth.add_argument(
        "--split", default="test", help="folder for the images (MVTec-AD keeps defects in test)"
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

    if importlib.util.find_spec("defectaug.training.cli") is not None:
        add_train_parser = getattr(
            importlib.import_module("defectaug.training.cli"), "add_train_parser", None
        )
        if add_train_parser is not None:
            add_train_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, NotADirectoryError, KeyError, ValueError) as error:
        if os.environ.get("DEFECTAUG_DEBUG"):
            raise
        print(f"defectaug {args.command}: error: {_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
