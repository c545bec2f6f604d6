"""The canvas the procedural painters draw on (:mod:`defectaug.generators.procedural`).

A :class:`_Canvas` holds the random draws and the coordinate grids of one group of ``n`` items on
a layer of ``(h, w)``; every painter draws from it, in a fixed order, so a seed gives the same
layers. A painter returns a :class:`_Painted`, and :func:`_with_opacity` turns its coverage into
alpha. Painters with many elements (strokes, pits) stack them in compiled loops
(:mod:`defectaug.generators._paint_kernels`), which take arrays made by :func:`_host` and
:meth:`_Canvas.blank`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from defectaug.generators.procedural import Range


class _Canvas:
    """Random draws and coordinate grids for one group of ``n`` items on a layer of ``(h, w)``."""

    def __init__(
        self,
        n: int,
        h: int,
        w: int,
        generator: torch.Generator,
        device: torch.device,
    ):
        self.n, self.h, self.w = n, h, w
        self.side = float(min(h, w))
        self.generator, self.device = generator, device
        ys = torch.arange(h, device=device, dtype=torch.float32)
        xs = torch.arange(w, device=device, dtype=torch.float32)
        self.y = ys.view(1, h, 1).expand(1, h, w)
        self.x = xs.view(1, 1, w).expand(1, h, w)

    def uniform(self, bounds: Range, *shape: int) -> torch.Tensor:
        low, high = bounds
        draw = torch.rand((self.n, *shape), generator=self.generator, device=self.device)
        return low + (high - low) * draw

    def integers(self, bounds: Range) -> torch.Tensor:
        low, high = int(round(bounds[0])), int(round(bounds[1]))
        return torch.randint(low, high + 1, (self.n,), generator=self.generator, device=self.device)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn((self.n, *shape), generator=self.generator, device=self.device)

    def chance(self, probability: float) -> torch.Tensor:
        return torch.rand(self.n, generator=self.generator, device=self.device) < probability

    def bright_draw(self) -> torch.Tensor:
        """``[n]`` uniform draws that decide, with the surface tone, which items are bright.

        The decision itself waits for the tone (:func:`bright_sign`), so layers can be painted
        before the surface they will land on is known.
        """
        return torch.rand(self.n, generator=self.generator, device=self.device)

    def blank(self, planes: int) -> list[np.ndarray]:
        """``planes`` zeroed float32 arrays ``[n, h, w]`` on the CPU, for the compiled painters."""
        return [np.zeros((self.n, self.h, self.w), np.float32) for _ in range(planes)]

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """A compiled painter's plane as a tensor on the canvas' device."""
        return torch.from_numpy(array).to(self.device)

    def noise(self, cells: float, octaves: int = 1) -> torch.Tensor:
        """Smooth value noise ``[n, h, w]`` in ~[-1, 1], ``cells`` lattice cells across ``S``."""
        total = torch.zeros(self.n, self.h, self.w, device=self.device)
        weight = 0.0
        for octave in range(octaves):
            per_side = cells * 2**octave
            grid_h = max(2, math.ceil(per_side * self.h / self.side) + 1)
            grid_w = max(2, math.ceil(per_side * self.w / self.side) + 1)
            lattice = torch.rand(
                (self.n, 1, grid_h, grid_w), generator=self.generator, device=self.device
            )
            # Bicubic upsampling as two small matrix products (separable): far cheaper than
            # F.interpolate's per-pixel 16-tap gather at layer sizes, same values up to rounding.
            rows = _cubic_resampler(grid_h, self.h, self.device)
            cols = _cubic_resampler(grid_w, self.w, self.device)
            total.add_(rows @ lattice[:, 0] @ cols.T, alpha=0.5**octave)
            weight += 0.5**octave
        return (total / weight * 2.0 - 1.0).clamp(-1.0, 1.0)

    def grain(self) -> torch.Tensor:
        """Fine texture ``[n, h, w]``: mid-frequency noise plus per-pixel noise."""
        pixel = torch.randn((self.n, self.h, self.w), generator=self.generator, device=self.device)
        return 0.6 * self.noise(self.side / 4.0) + 0.4 * pixel.clamp(-2.5, 2.5) / 2.5

    def border_window(self, open_top: bool = False) -> torch.Tensor:
        """``[1, h, w]``: 1 inside, falling to 0 over the outer ``0.06 S`` so layers have no box.

        ``open_top`` keeps the top side at 1: defects anchored on it reach the part's edge.
        """
        margin = max(1.5, 0.06 * self.side)
        top = self.y + margin if open_top else self.y
        to_edge = torch.minimum(
            torch.minimum(top, self.h - 1 - self.y), torch.minimum(self.x, self.w - 1 - self.x)
        )
        return _smoothstep(0.0, margin, to_edge)


@functools.lru_cache(maxsize=256)
def _cubic_resampler(size_in: int, size_out: int, device: torch.device) -> torch.Tensor:
    """``[size_out, size_in]`` matrix of bicubic interpolation (``align_corners=True``).

    Rows hold the weights torch's ``bicubic`` mode uses (cubic convolution, a = -0.75, indices
    clamped at the ends), so ``rows @ lattice @ cols.T`` equals ``F.interpolate`` of the lattice.
    """
    a = -0.75
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    source = torch.arange(size_out, dtype=torch.float64) * scale
    floor = source.floor()
    t = source - floor

    def near(x: torch.Tensor) -> torch.Tensor:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)
    taps = (floor.long()[:, None] + torch.arange(-1, 3)).clamp(0, size_in - 1)
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    matrix.scatter_add_(1, taps, weights)
    return matrix.to(device=device, dtype=torch.float32)


def _host(values: torch.Tensor) -> np.ndarray:
    """``values`` as a contiguous CPU array for the compiled painters: float32, or bool as is."""
    if values.dtype != torch.bool:
        values = values.float()
    return values.detach().cpu().contiguous().numpy()


def _smoothstep(edge0: Any, edge1: Any, value: torch.Tensor) -> torch.Tensor:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order)."""
    t = ((value - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_curve(canvas: _Canvas, points: int, knots: int = 5) -> torch.Tensor:
    """Per-item smooth random values ``[n, points]`` in [0, 1] (linear through random knots)."""
    lattice = torch.rand((canvas.n, 1, knots), generator=canvas.generator, device=canvas.device)
    return F.interpolate(lattice, size=points, mode="linear", align_corners=True)[:, 0]


class _Painted(NamedTuple):
    """What a painter returns. The relief of an item is ``sign * signed + fixed`` (clamped to
    [-1, 1]), where ``sign`` is +1 (bright) or -1 (dark), decided from ``bright_draw`` once the
    surface tone is known (:func:`bright_sign`); ``fixed`` holds parts lit regardless (highlights).
    """

    signed: torch.Tensor  # [n, h, w]
    fixed: torch.Tensor | None  # [n, h, w] or None (no such part)
    coverage: torch.Tensor  # [n, h, w] in [0, 1], 0.5 on the outline
    tint: torch.Tensor  # [n] in [0, 1]
    opacity: torch.Tensor  # [n], peak alpha (applied by ``_with_opacity``)
    bright_draw: torch.Tensor  # [n]


def _with_opacity(coverage: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Alpha from coverage: above the 0.5 outline it is scaled to peak at ``opacity`` [n].

    Below 0.5 coverage passes unchanged, so ``alpha >= 0.5`` (the layer's mask) is exactly the
    painted outline whatever the opacity.
    """
    peak = opacity.view(-1, 1, 1)
    return torch.where(coverage < 0.5, coverage, 0.5 + (coverage - 0.5) * (2.0 * peak - 1.0))
