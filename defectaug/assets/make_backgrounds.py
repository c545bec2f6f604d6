"""Make the small defect-free sample surfaces shipped for ``defectaug demo``.

Every image is drawn procedurally from a fixed seed (no photographs, no third-party data), so the
files are ours to redistribute under the project's license and can be rebuilt bit for bit::

    uv run python -m defectaug.assets.make_backgrounds

Surfaces: brushed metal, woven fabric, glazed tiles, a grey cast surface (single channel) and a
machined washer on a dark table (an object image, for ``roi="auto"``). Each is 256 x 256 and
stays well under 100 KB (JPEG for the colour textures, PNG for the grey one).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

SIZE = 256
FOLDER = Path(__file__).resolve().parent / "backgrounds"


def _smooth_noise(rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((SIZE, SIZE)), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def brushed_metal(rng: np.random.Generator) -> np.ndarray:
    streaks = _smooth_noise(rng, (0.6, 40.0))
    grain = _smooth_noise(rng, (0.8, 0.8))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    sheen = 0.08 * np.cos(2.5 * (xx - 0.3)) + 0.05 * yy
    level = 0.58 + 0.045 * streaks + 0.012 * grain + sheen
    tint = np.array([0.97, 0.99, 1.03])
    return level[..., None] * tint


def woven_fabric(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    period = 8.0
    warp = 0.5 + 0.5 * np.cos(2 * np.pi * xx / period)
    weft = 0.5 + 0.5 * np.cos(2 * np.pi * yy / period)
    over = (np.floor(xx / period) + np.floor(yy / period)) % 2
    weave = np.where(over == 0, warp * (0.6 + 0.4 * weft), weft * (0.6 + 0.4 * warp))
    fibres = _smooth_noise(rng, (0.7, 0.7))
    slub = _smooth_noise(rng, (12.0, 12.0))
    level = 0.55 + 0.18 * weave + 0.03 * fibres + 0.04 * slub
    colour = np.array([0.78, 0.66, 0.50]) / 0.66
    return level[..., None] * colour


def glazed_tiles(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    tile = 128
    grout = (np.minimum(xx % tile, tile - xx % tile) < 3) | (
        np.minimum(yy % tile, tile - yy % tile) < 3
    )
    shade = rng.uniform(-0.04, 0.04, size=(SIZE // tile, SIZE // tile))
    per_tile = shade[(yy // tile).astype(int), (xx // tile).astype(int)]
    glaze = 0.015 * _smooth_noise(rng, (1.0, 1.0)) + 0.02 * _smooth_noise(rng, (20.0, 20.0))
    speckle = (rng.random((SIZE, SIZE)) < 0.004) * -0.15
    base = np.array([0.80, 0.84, 0.86])
    surface = base + (per_tile + glaze + ndimage.gaussian_filter(speckle, 0.7))[..., None]
    grout_colour = np.array([0.45, 0.44, 0.42]) + 0.03 * _smooth_noise(rng, (1.0, 1.0))[..., None]
    soft_grout = ndimage.gaussian_filter(grout.astype(np.float64), 0.8)[..., None]
    return surface * (1 - soft_grout) + grout_colour * soft_grout


def cast_surface(rng: np.random.Generator) -> np.ndarray:
    pores = ndimage.gaussian_filter((rng.random((SIZE, SIZE)) < 0.004).astype(np.float64), 0.8)
    level = (
        0.42
        + 0.05 * _smooth_noise(rng, (30.0, 30.0))
        + 0.03 * _smooth_noise(rng, (2.0, 2.0))
        + 0.02 * _smooth_noise(rng, (0.7, 0.7))
        - 0.5 * pores
    )
    return level


def washer_on_table(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    radius = np.hypot(yy - SIZE / 2 + 6, xx - SIZE / 2 + 4)
    ring = (radius < 96) & (radius > 34)
    soft_ring = ndimage.gaussian_filter(ring.astype(np.float64), 1.2)
    angle = np.arctan2(yy - SIZE / 2, xx - SIZE / 2)
    turning = 0.03 * np.sin(radius * 1.7) + 0.05 * np.cos(angle - 0.6)
    metal = 0.66 + turning + 0.015 * _smooth_noise(rng, (0.8, 0.8))
    table = 0.14 + 0.02 * _smooth_noise(rng, (6.0, 6.0)) + 0.01 * _smooth_noise(rng, (0.8, 0.8))
    level = metal * soft_ring + table * (1 - soft_ring)
    return level[..., None] * np.array([1.0, 1.0, 1.02])


SURFACES: dict[str, tuple[Callable[[np.random.Generator], np.ndarray], str]] = {
    "brushed_metal": (brushed_metal, ".jpg"),
    "woven_fabric": (woven_fabric, ".jpg"),
    "glazed_tiles": (glazed_tiles, ".jpg"),
    "cast_surface": (cast_surface, ".png"),
    "washer": (washer_on_table, ".jpg"),
}


def main(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (name, (make, suffix)) in enumerate(SURFACES.items()):
        array = make(np.random.default_rng(1000 + index))
        pixels = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
        path = folder / f"{name}{suffix}"
        image = Image.fromarray(pixels, mode="L" if pixels.ndim == 2 else "RGB")
        if suffix == ".jpg":
            image.save(path, quality=88, optimize=True)
        else:
            image.save(path, optimize=True)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in main():
        print(f"{written_path.name}: {written_path.stat().st_size / 1024:.1f} KB")
