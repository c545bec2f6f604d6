"""Where, how large and how many real defects are: the placement statistics that the fitted
generator (:mod:`defectaug.fitting`) and the bank (:class:`~defectaug.generators.DefectBank`)
share, so both place a class by the same rules.

A region is on an edge when its box lies within :func:`edge_tolerance` of an image side (its
nearest one is the side it touches); a class is an edge class when at least ``EDGE_SHARE`` of its
regions are. Where a class's defects go is a smoothed histogram of their normalised centroids
(:func:`location_prior`); placements draw centres from it through a :class:`LocationRoi`, for
edge classes a band along one side with the layer turned by ``SIDE_ROTATION``
(:func:`edge_placement`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Quantile levels stored for every per-defect statistic.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Cells per side of the location prior.
PRIOR_CELLS = 16
SIDES = ("top", "bottom", "left", "right")
#: Share of a class's regions on an image edge from which the class is an edge class.
EDGE_SHARE = 0.5
#: Rotation (degrees, counter-clockwise) that turns an edge layer's top side to face a side.
SIDE_ROTATION = {"top": 0.0, "bottom": 180.0, "left": 90.0, "right": -90.0}


def quantiles(values: Sequence[float]) -> list[float]:
    """The ``QUANTILES`` of the finite ``values`` (all zeros when there is none)."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return [0.0] * len(QUANTILES)
    return [round(float(q), 6) for q in np.quantile(finite, QUANTILES)]


def region_site(region: np.ndarray) -> tuple[float, float, dict[str, int]]:
    """Normalised centroid ``(row, column)`` in [0, 1] of a bool ``[H, W]`` region and the gap
    (px) between its box and each image side, keyed in ``SIDES`` order."""
    height, width = region.shape
    ys, xs = np.nonzero(region)
    gaps = {
        "top": int(ys.min()),
        "bottom": height - 1 - int(ys.max()),
        "left": int(xs.min()),
        "right": width - 1 - int(xs.max()),
    }
    return float(ys.mean()) / max(height - 1, 1), float(xs.mean()) / max(width - 1, 1), gaps


def edge_tolerance(short: float) -> float:
    """Largest gap (px) to a side at which a region of an image with shorter side ``short``
    touches that side: masks drawn by hand stop a pixel or a few short of the border."""
    return max(2.0, 0.03 * short)


def side_shares(sides: Sequence[str]) -> dict[str, float]:
    """Share of each image side among ``sides``, the sides that on-edge regions touch."""
    total = len(sides)
    return {s: round(sides.count(s) / total, 6) if total else 0.0 for s in SIDES}


def location_prior(points: Sequence[tuple[float, float]]) -> list[list[float]]:
    """A ``PRIOR_CELLS``-square histogram of normalised centroids, smoothed, with a floor."""
    # scipy on first use: the bank imports this module with the generators.
    from scipy import ndimage

    grid = np.zeros((PRIOR_CELLS, PRIOR_CELLS), dtype=np.float64)
    for cy, cx in points:
        row = min(int(cy * PRIOR_CELLS), PRIOR_CELLS - 1)
        col = min(int(cx * PRIOR_CELLS), PRIOR_CELLS - 1)
        grid[row, col] += 1.0
    # Few defects: smooth by about one cell and keep a 10 % uniform floor, so a location next to
    # a seen one is plausible but an unseen corner is not ruled out entirely.
    grid = ndimage.gaussian_filter(grid, sigma=1.0, mode="nearest")
    grid = 0.9 * grid / max(grid.sum(), 1e-12) + 0.1 / grid.size
    grid /= grid.sum()
    return [[round(float(v), 6) for v in row] for row in grid]


def scale_range(size: Sequence[float], fill: float = 1.0) -> tuple[float, float]:
    """The placement ``scale`` range of a class whose defect boxes (longer side over the image's
    shorter side) have the quantiles ``size``, for layers the defect fills ``fill`` of.

    Sizes are drawn uniformly in the range: its quartiles are the real ones (its middle then
    lies between the real median and upper quartile). The range between the outer quantiles
    would put most defects at twice the real median size: sizes are skewed, a few large
    defects stretch it.
    """
    spread = size[3] - size[1]
    low, high = max(size[1] - 0.5 * spread, size[0]), size[3] + 0.5 * spread
    return round(max(low / fill, 0.01), 4), round(max(high / fill, 0.012), 4)


def count_range(count: Sequence[float]) -> tuple[int, int]:
    """Defects per image between the quartiles ``count[1]`` and ``count[3]`` of the real counts."""
    return max(1, int(np.floor(count[1]))), max(1, int(np.ceil(count[3])))


def check_side(side: str | None) -> None:
    if side is not None and side not in SIDES:
        raise ValueError(f"side: expected None or one of {', '.join(SIDES)}, got {side!r}")


def check_placement_request(
    class_name: str, classes: Sequence[str], side: str | None = None
) -> None:
    """``ValueError`` unless ``class_name`` is one of ``classes`` and ``side`` ``None`` or one
    of ``SIDES`` (the arguments of a generator's ``placement``)."""
    if class_name not in classes:
        raise ValueError(f"class_name: expected one of {', '.join(classes)}, got {class_name!r}")
    check_side(side)


def edge_placement(
    placement: Mapping[str, Any],
    prior: list[list[float]],
    shares: Mapping[str, float],
    side: str | None = None,
) -> dict[str, Any]:
    """``placement`` for a layer whose top side is a part's edge, put against image ``side``
    (default: the side most real on-edge defects touch): a band ROI along it, the rotation
    that turns the top side to it, and a ``scale`` of at most 1 (a larger layer cannot sit
    flush against the border)."""
    check_side(side)
    if side is None:
        side = max(SIDES, key=lambda s: shares[s])
    low, high = placement["scale"]
    angle = SIDE_ROTATION[side]
    return dict(placement) | {
        "scale": (round(min(low, 1.0), 4), round(min(high, 1.0), 4)),
        "rotation": (angle, angle),
        "roi": LocationRoi(prior, side=side),
    }


@dataclass
class LocationRoi:
    """``images -> bool [1, 1, H, W]``: where defects of one class may be centred.

    Built from a location prior (cells at least ``threshold`` times the uniform density). For
    edge classes (``side`` set) it is a band of ``band`` px along that image side, restricted to
    the prior's marginal along the side: a centre in the band puts the layer's box flush against
    the border (placement moves boxes inside the image).
    """

    prior: list[list[float]]
    side: str | None = None
    band: int = 2
    threshold: float = 0.5

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        grid = torch.tensor(self.prior, dtype=torch.float32)
        if self.side is None:
            density = grid
        else:
            # The prior's marginal along the side, spread over the band's length.
            axis = 1 if self.side in ("top", "bottom") else 0
            marginal = grid.sum(dim=1 - axis)
            density = (marginal[None, :] if axis == 1 else marginal[:, None]) / grid.shape[0]
        # Relative to a uniform density over the cells `density` has (a marginal has one row).
        density = density / density.sum() * density.numel()
        keep = density >= self.threshold
        keep = keep | (density == density.max())
        mask = F.interpolate(keep.float()[None, None], size=(height, width), mode="nearest").bool()
        if self.side is not None:
            band = torch.zeros(height, width, dtype=torch.bool)
            depth = max(1, min(self.band, height, width))
            if self.side == "top":
                band[:depth] = True
            elif self.side == "bottom":
                band[-depth:] = True
            elif self.side == "left":
                band[:, :depth] = True
            else:
                band[:, -depth:] = True
            mask = mask & band
        return mask.to(images.device)
