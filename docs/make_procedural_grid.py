"""Render procedural defects on crops of real normal surfaces into one picture for the README.

    uv run python docs/make_procedural_grid.py --out docs/procedural_grid.png

Rows are the defect types of ``ProceduralGenerator``; columns are crops of normal images from
``magnetic_tile/train/good`` (grayscale) and ``bsdata/unannotated`` (RGB) under ``--data``
(default ``../shared/data``). Each layer is given the image patch it covers as ``background`` so
its tone follows the surface, then alpha-composited. Crops are for illustration only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from defectaug.datasets import load_image  # noqa: E402
from defectaug.generators.procedural import ProceduralGenerator  # noqa: E402


def composite(
    background: torch.Tensor, content: torch.Tensor, alpha: torch.Tensor, top: int, left: int
):
    """``background [C, H, W]`` with ``content``/``alpha`` pasted at ``(top, left)``."""
    try:
        from defectaug.compositing import alpha_composite
    except ImportError:
        out = background.clone()
        h, w = alpha.shape[-2:]
        window = out[:, top : top + h, left : left + w]
        window.mul_(1 - alpha).add_(content * alpha)
        return out
    offset = torch.tensor([[top, left]])
    return alpha_composite(background[None], content[None], alpha[None], offset)[0]


def random_crops(
    paths: list[Path], count: int, size: int, rng: np.random.Generator
) -> list[torch.Tensor]:
    """``count`` crops ``[C, size, size]`` from different images, avoiding dark borders."""
    crops = []
    for path in rng.choice(paths, size=count, replace=False):
        image = load_image(path)
        _, h, w = image.shape
        for _ in range(20):
            top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            crop = image[:, top : top + size, left : left + size]
            if crop.mean() > 0.12:
                break
        crops.append(crop)
    return crops


def render(
    data: Path, out: Path, cell: int = 112, layer: int = 80, columns: int = 4, seed: int = 0
):
    rng = np.random.default_rng(seed)
    tiles = sorted((data / "magnetic_tile" / "train" / "good").glob("*.jpg"))
    spindles = sorted((data / "bsdata" / "unannotated").glob("*.jpg"))
    if not tiles or not spindles:
        raise FileNotFoundError(f"data: expected magnetic_tile and bsdata normals under {data}")
    generator = ProceduralGenerator(layer_size=layer)
    types = generator.defect_types
    label_width, gap = 64, 2
    width = label_width + 2 * columns * (cell + gap)
    sheet = Image.new("RGB", (width, len(types) * (cell + gap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    torch_rng = torch.Generator().manual_seed(seed)
    for row, name in enumerate(types):
        backgrounds = random_crops(tiles, columns, cell, rng) + random_crops(
            spindles, columns, cell, rng
        )
        for column, background in enumerate(backgrounds):
            top = left = (cell - layer) // 2
            patch = background[None, :, top : top + layer, left : left + layer]
            sample = generator.sample(
                1, name, generator=torch_rng, channels=background.shape[0], background=patch
            )
            image = composite(background, sample.content[0], sample.alpha[0], top, left)
            pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            tile = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).convert(
                "RGB"
            )
            x = label_width + column * (cell + gap) + (gap * 4 if column >= columns else 0)
            sheet.paste(tile, (x, row * (cell + gap)))
        draw.text((4, row * (cell + gap) + cell // 2 - 6), name, fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "procedural_grid.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = render(args.data, args.out, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
