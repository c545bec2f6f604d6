"""Procedural defects: parametric scratches, spots, cracks, stains, uneven regions and pit clusters.

Everything is drawn in torch, vectorised over the batch (loops only run over a handful of stroke
segments or pits), on any device and fully driven by the ``torch.Generator`` passed to ``sample``.

Each defect is painted as two maps on the layer grid:

- ``alpha`` in [0, 1], its soft coverage: about 0.5 on the visible outline (so ``layer.mask()``
  follows what one sees), soft over roughly one pixel at the edge of thin strokes and wider for
  blobs, and faded to 0 near the layer border so a composited layer never shows its box;
- a signed *relief* in [-1, 1]: -1 is black, 0 the surface tone, +1 white. Content is the surface
  tone darkened (``tone * (1 + relief)``) or brightened (``tone + (1 - tone) * relief``), with a
  fine texture on top. The luminance is replicated over three channels (stains may be tinted).

The surface tone is, in order of preference: ``background`` given to ``sample`` with the layer's
own size (the image patch the layer will cover: content then keeps that patch's texture), else the
mean colour of each ``background`` image, else ``base_color`` given to ``sample``, else a grey level
drawn from ``base_level``.

Sizes in the parameter dataclasses are fractions of the layer's shorter side ``S``, so a layer
rendered larger keeps the same look at a finer resolution. Every ``(low, high)`` pair is a uniform
range drawn per item; a pair with ``low == high`` fixes the value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer

DEFECT_TYPES = ("scratch", "spot", "crack", "stain", "uneven", "pit")
Range = tuple[float, float]


def _range(default: Range, low: float, high: float, doc: str) -> Any:
    return field(default=default, metadata={"bounds": (low, high), "doc": doc})


def _chance(default: float, doc: str) -> Any:
    return field(default=default, metadata={"bounds": (0.0, 1.0), "doc": doc})


@dataclass(frozen=True)
class _Params:
    """Shared fields; subclasses add their own. Values are validated against field bounds."""

    opacity: Range = _range((0.85, 1.0), 0.5, 1.0, "peak alpha inside the defect")
    contrast: Range = _range((0.35, 0.75), 0.0, 1.0, "relief strength of the defect's core")
    bright_probability: float = _chance(0.15, "chance the defect is brighter")
    texture: Range = _range((0.03, 0.12), 0.0, 0.5, "amplitude of the content's fine grain")

    @classmethod
    def describe(cls) -> str:
        """A Markdown table of the parameters: default, allowed bounds and meaning."""
        rows = [f"{cls.__name__} | default | bounds | meaning", "---|---|---|---"]
        for spec in dataclasses.fields(cls):
            low, high = spec.metadata["bounds"]
            rows.append(f"{spec.name} | {spec.default} | [{low}, {high}] | {spec.metadata['doc']}")
        return "\n".join(rows)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            low, high = spec.metadata["bounds"]
            where = f"{type(self).__name__}.{spec.name}"
            if isinstance(spec.default, tuple):
                pair = isinstance(value, tuple) and len(value) == 2
                if not pair or not all(isinstance(v, (int, float)) for v in value):
                    raise ValueError(
                        f"{where}: expected a (low, high) pair of numbers, got {value!r}"
                    )
                if not (low <= value[0] <= value[1] <= high):
                    raise ValueError(
                        f"{where}: expected {low} <= low <= high <= {high}, got {value!r}"
                    )
            elif not isinstance(value, (int, float)) or not (low <= value <= high):
                raise ValueError(f"{where}: expected a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class ScratchParams(_Params):
    """Thin curved strokes (cubic Bezier) with tapered ends and an optional bright edge."""

    count: Range = _range((1, 2), 1, 4, "strokes per layer (integers)")
    length: Range = _range((0.45, 0.95), 0.05, 1.4, "stroke length, fraction of S")
    width: Range = _range((0.016, 0.035), 0.005, 0.2, "stroke width, fraction of S (>= 1 px used)")
    curvature: Range = _range(
        (0.0, 0.25), 0.0, 1.0, "bend of the control points, fraction of length"
    )
    width_jitter: Range = _range((0.0, 0.4), 0.0, 1.0, "relative width variation along the stroke")
    contrast: Range = _range((0.35, 0.75), 0.0, 1.0, "relief strength of the stroke's core")
    fade: Range = _range((0.1, 0.6), 0.0, 1.0, "relative strength dips along the stroke")
    highlight: Range = _range((0.0, 0.5), 0.0, 1.0, "brightness of a highlight edge on one side")
    highlight_probability: float = _chance(0.5, "chance of a highlight edge")
    heading: Range = _range(
        (0.0, math.pi), -2 * math.pi, 2 * math.pi, "stroke direction in the layer (radians)"
    )


@dataclass(frozen=True)
class CrackParams(_Params):
    """Jagged thin dark paths (random walks) with side branches."""

    contrast: Range = _range((0.5, 0.85), 0.0, 1.0, "relief strength of the crack's core")
    bright_probability: float = _chance(0.0, "chance the defect is brighter")
    length: Range = _range((0.5, 0.95), 0.05, 1.4, "main path length, fraction of S")
    width: Range = _range((0.014, 0.028), 0.005, 0.2, "path width, fraction of S (>= 1 px used)")
    jaggedness: Range = _range((0.3, 0.7), 0.0, 1.5, "heading change per step (radians, std)")
    width_jitter: Range = _range((0.2, 0.6), 0.0, 1.0, "relative width variation along the path")
    fade: Range = _range((0.0, 0.4), 0.0, 1.0, "relative strength dips along the path")
    branches: Range = _range((0, 2), 0, 3, "side branches (integers)")
    branch_length: Range = _range((0.2, 0.45), 0.05, 1.0, "branch length, fraction of main")
    heading: Range = _range(
        (0.0, 2 * math.pi), -2 * math.pi, 2 * math.pi, "main path direction in the layer (radians)"
    )


@dataclass(frozen=True)
class SpotParams(_Params):
    """Dark or bright blobs: a noise-modulated ellipse with a soft edge."""

    contrast: Range = _range((0.25, 0.6), 0.0, 1.0, "relief strength at the centre")
    bright_probability: float = _chance(0.2, "chance the defect is brighter")
    radius: Range = _range((0.07, 0.22), 0.01, 0.5, "mean radius, fraction of S")
    aspect: Range = _range((0.55, 1.0), 0.1, 1.0, "minor / major axis")
    irregularity: Range = _range((0.1, 0.4), 0.0, 1.0, "noise on the outline, fraction of radius")
    softness: Range = _range((0.08, 0.35), 0.0, 1.0, "edge width, fraction of radius")
    core: Range = _range((0.0, 0.5), 0.0, 1.0, "how much darker the centre is than the rim")
    mottling: Range = _range((0.1, 0.35), 0.0, 1.0, "low-frequency variation of the relief")


@dataclass(frozen=True)
class StainParams(_Params):
    """Faint irregular regions with a darker rim; tinted brown/rust on 3-channel output."""

    opacity: Range = _range((0.7, 0.9), 0.5, 1.0, "peak alpha inside the stain")
    contrast: Range = _range((0.12, 0.3), 0.0, 1.0, "relief strength inside")
    bright_probability: float = _chance(0.15, "chance the defect is brighter")
    radius: Range = _range((0.22, 0.4), 0.05, 0.5, "mean radius, fraction of S")
    aspect: Range = _range((0.5, 1.0), 0.1, 1.0, "minor / major axis")
    irregularity: Range = _range((0.15, 0.4), 0.0, 1.0, "noise on the outline, fraction of radius")
    softness: Range = _range((0.08, 0.25), 0.0, 1.0, "edge width, fraction of radius")
    rim: Range = _range((0.05, 0.45), 0.0, 1.0, "extra relief along the outline (coffee ring)")
    mottling: Range = _range((0.1, 0.4), 0.0, 1.0, "low-frequency variation of the relief")
    tint: Range = _range((0.0, 0.5), 0.0, 1.0, "brown/rust tint on 3-channel output")


@dataclass(frozen=True)
class UnevenParams(_Params):
    """Large regions of shifted, shaded brightness cut by an irregular, mostly straight edge."""

    opacity: Range = _range((0.65, 0.85), 0.5, 1.0, "peak alpha inside the region")
    contrast: Range = _range((0.1, 0.3), 0.0, 1.0, "mean relief of the region")
    bright_probability: float = _chance(0.5, "chance the defect is brighter")
    texture: Range = _range((0.03, 0.1), 0.0, 0.5, "amplitude of the content's fine grain")
    vignette: Range = _range((0.25, 0.4), 0.05, 0.5, "fade-out width at the layer border, of S/2")
    cut: Range = _range((-0.2, 0.1), -0.5, 0.5, "offset of the straight edge from the centre")
    irregularity: Range = _range((0.02, 0.08), 0.0, 0.3, "noise on the edge, fraction of S")
    softness: Range = _range((0.02, 0.06), 0.0, 0.3, "edge width, fraction of S")
    shading: Range = _range((0.2, 0.6), 0.0, 1.0, "relief gradient and mottling across the region")


@dataclass(frozen=True)
class PitParams(_Params):
    """Clusters of small round pits with a dark hollow and a lit rim."""

    contrast: Range = _range((0.45, 0.85), 0.0, 1.0, "relief strength of a pit's hollow")
    bright_probability: float = _chance(0.0, "chance the defect is brighter")
    count: Range = _range((2, 9), 1, 16, "pits per cluster (integers)")
    radius: Range = _range((0.018, 0.05), 0.005, 0.2, "pit radius, fraction of S (>= 0.7 px)")
    spread: Range = _range((0.06, 0.22), 0.0, 0.4, "cluster scatter (std), fraction of S")
    rim: Range = _range((0.0, 0.5), 0.0, 1.0, "brightness of the rim facing the light")


@dataclass(frozen=True)
class EdgeChipParams(_Params):
    """A piece broken out of a part's edge, anchored on the layer's top side (row 0).

    The outline is a profile of half-widths down from the edge: ``neck`` of the widest at the
    edge, widest at ``belly`` of the depth, closing in a half-ellipse at ``depth``. A chip
    (widest at the edge) is the default; :class:`EdgePatchParams` makes pear-shaped patches.
    Place the layer with its top side on the image border (``rotation`` turns that side).
    """

    contrast: Range = _range((0.3, 0.6), 0.0, 1.0, "relief strength inside")
    bright_probability: float = _chance(0.0, "chance the defect is brighter")
    depth: Range = _range((0.45, 0.9), 0.05, 1.0, "reach from the edge, fraction of layer height")
    width: Range = _range((0.6, 0.95), 0.05, 1.0, "widest extent, fraction of layer width")
    belly: Range = _range((0.0, 0.15), 0.0, 0.9, "where it is widest, fraction of the depth")
    neck: Range = _range((0.7, 1.0), 0.05, 1.0, "width at the edge, fraction of the widest")
    point: Range = _range((0.0, 0.3), 0.0, 1.0, "0: rounded tip, 1: straight wedge to a point")
    irregularity: Range = _range((0.05, 0.2), 0.0, 0.6, "noise on the outline, of the half-width")
    softness: Range = _range((0.01, 0.04), 0.0, 0.3, "edge width, fraction of S")
    mottling: Range = _range((0.1, 0.3), 0.0, 1.0, "low-frequency variation of the relief")
    lean: Range = _range(
        (0.0, 0.0), 0.0, 75.0, "tilt of the axis from the edge normal, degrees (either way)"
    )
    corner: Range = _range((0.0, 0.0), 0.0, 1.0, "0: elliptic far end, 1: squarer (superellipse)")
    gradient: Range = _range((0.0, 0.0), 0.0, 1.0, "relief fading from the edge to the far end")


@dataclass(frozen=True)
class EdgePatchParams(EdgeChipParams):
    """A large patch grown from a part's edge (pear-shaped by default): see EdgeChipParams."""

    depth: Range = _range((0.75, 0.95), 0.05, 1.0, "reach from the edge, fraction of layer height")
    width: Range = _range((0.45, 0.7), 0.05, 1.0, "widest extent, fraction of layer width")
    belly: Range = _range((0.45, 0.7), 0.0, 0.9, "where it is widest, fraction of the depth")
    neck: Range = _range((0.3, 0.6), 0.05, 1.0, "width at the edge, fraction of the widest")


@dataclass(frozen=True)
class EdgeShadeParams(EdgeChipParams):
    """A faint shading band along a part's edge (uneven brightness): see EdgeChipParams."""

    contrast: Range = _range((0.05, 0.2), 0.0, 1.0, "relief strength inside")
    bright_probability: float = _chance(0.5, "chance the defect is brighter")
    depth: Range = _range((0.15, 0.45), 0.05, 1.0, "reach from the edge, fraction of layer height")
    width: Range = _range((0.85, 1.0), 0.05, 1.0, "widest extent, fraction of layer width")
    belly: Range = _range((0.0, 0.0), 0.0, 0.9, "where it is widest, fraction of the depth")
    neck: Range = _range((1.0, 1.0), 0.05, 1.0, "width at the edge, fraction of the widest")
    point: Range = _range((0.0, 0.0), 0.0, 1.0, "0: rounded tip, 1: straight wedge to a point")
    irregularity: Range = _range((0.05, 0.15), 0.0, 0.6, "noise on the outline, of the half-width")
    softness: Range = _range((0.01, 0.03), 0.0, 0.3, "edge width, fraction of S")
    mottling: Range = _range((0.2, 0.4), 0.0, 1.0, "low-frequency variation of the relief")
    corner: Range = _range((0.5, 1.0), 0.0, 1.0, "0: elliptic far end, 1: squarer (superellipse)")
    gradient: Range = _range((0.2, 0.6), 0.0, 1.0, "relief fading from the edge to the far end")


PARAMS_BY_TYPE: dict[str, type[_Params]] = {
    "scratch": ScratchParams,
    "spot": SpotParams,
    "crack": CrackParams,
    "stain": StainParams,
    "uneven": UnevenParams,
    "pit": PitParams,
}
#: Painters not among ``ProceduralGenerator``'s default types, used by fitted generators
#: (``defectaug.fitting``): shapes anchored on a part's edge.
EXTRA_PARAMS_BY_TYPE: dict[str, type[_Params]] = {
    "edge_chip": EdgeChipParams,
    "edge_patch": EdgePatchParams,
    "edge_shade": EdgeShadeParams,
}
#: Every painter type and its parameter class.
PAINTER_PARAMS: dict[str, type[_Params]] = {**PARAMS_BY_TYPE, **EXTRA_PARAMS_BY_TYPE}
#: Types drawn against the layer's top side: that side is not faded out, it is the part's edge.
ANCHORED_TYPES = frozenset({"edge_chip", "edge_patch", "edge_shade"})
RUST = (1.0, 0.78, 0.55)


def _resolve_params(name: str, value: _Params | Mapping[str, Any] | None) -> _Params:
    cls = PAINTER_PARAMS[name]
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"{name}: unknown parameter(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(known))}"
            )
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return cls(**fixed)
    raise TypeError(f"{name}: expected a {cls.__name__} or a mapping of its fields, got {value!r}")


def _check_layer_size(value: Any, name: str = "layer_size") -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in value)
    ):
        raise ValueError(f"{name}: expected an int or an (h, w) pair of ints >= 8, got {value!r}")
    return (int(value[0]), int(value[1]))


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


def bright_sign(
    draw: torch.Tensor, bright_probability: torch.Tensor, surface: torch.Tensor
) -> torch.Tensor:
    """``[n]`` +1 for bright items, -1 for dark ones, from :meth:`_Canvas.bright_draw` draws.

    Bright defects grow rarer on surfaces near white (``surface`` mean tone ``[n]``), where they
    would not show.
    """
    room = ((0.92 - surface) / 0.25).clamp(0.0, 1.0)
    return torch.where(draw < bright_probability * room, 1.0, -1.0)


def _smoothstep(edge0: Any, edge1: Any, value: torch.Tensor) -> torch.Tensor:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order)."""
    t = ((value - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smooth_curve(canvas: _Canvas, points: int, knots: int = 5) -> torch.Tensor:
    """Per-item smooth random values ``[n, points]`` in [0, 1] (linear through random knots)."""
    lattice = torch.rand((canvas.n, 1, knots), generator=canvas.generator, device=canvas.device)
    return F.interpolate(lattice, size=points, mode="linear", align_corners=True)[:, 0]


@dataclass
class _Stroke:
    """Distance field of polylines: per pixel the nearest distance, side and interpolated extras."""

    distance: torch.Tensor
    side: torch.Tensor
    extras: list[torch.Tensor]

    @classmethod
    def from_flat(
        cls,
        distance: torch.Tensor,
        side: torch.Tensor,
        extras: list[torch.Tensor],
        size: tuple[int, int],
    ) -> _Stroke:
        shape = (distance.shape[0], *size)
        return cls(distance.view(shape), side.view(shape), [v.view(shape) for v in extras])


# A packed (distance, segment) key: the float32 bits of the squared distance (monotonic for
# non-negative floats) above 8 bits of segment index, so one integer ``amin`` finds both.
_SEGMENT_BITS = 8
_FAR = torch.iinfo(torch.int64).max


def _polyline_field(
    canvas: _Canvas,
    points: torch.Tensor,
    extras: list[torch.Tensor],
    enabled: torch.Tensor,
    reach: torch.Tensor,
) -> _Stroke:
    """Nearest-segment field of polylines ``points [n, P, 2]`` (y, x) for pixels near them.

    ``extras`` are per-vertex values ``[n, P]`` interpolated at the nearest point. Only pixels
    within ``reach [n]`` px of an item's polyline are evaluated (callers pass the distance past
    which their strokes have faded out); the others, and every pixel of items where ``enabled``
    is False, get an infinite distance, side 0 and extras 0. Each segment is evaluated on the
    window of pixels it can reach only, which at layer sizes is a small part of the layer.
    """
    n, count = points.shape[0], points.shape[1]
    h, w, device = canvas.h, canvas.w, canvas.device
    distance = torch.full((n, h * w), float("inf"), device=device)
    side = torch.zeros(n, h * w, device=device)
    values = [torch.zeros(n, h * w, device=device) for _ in extras]
    active = enabled.nonzero()[:, 0]
    if active.numel() == 0 or count < 2:
        return _Stroke.from_flat(distance, side, values, (h, w))
    m, segments = active.numel(), count - 1
    pts = points[active].float()
    radius = reach[active].float().view(m, 1, 1)
    start, step = pts[:, :-1], pts[:, 1:] - pts[:, :-1]
    inv_length2 = 1.0 / (step * step).sum(2).clamp_min(1e-6)
    low = torch.minimum(pts[:, :-1], pts[:, 1:]) - radius
    extent = float((torch.maximum(pts[:, :-1], pts[:, 1:]) + radius - low).amax())
    window_h, window_w = min(math.ceil(extent) + 2, h), min(math.ceil(extent) + 2, w)
    top = low[..., 0].floor().long().clamp(0, h - window_h)
    left = low[..., 1].floor().long().clamp(0, w - window_w)
    rows = top[..., None] + torch.arange(window_h, device=device)
    cols = left[..., None] + torch.arange(window_w, device=device)
    py = (rows.float() - start[..., 0, None])[..., :, None]
    px = (cols.float() - start[..., 1, None])[..., None, :]
    step_y, step_x = step[..., 0, None, None], step[..., 1, None, None]
    u = (py * step_y + px * step_x).mul_(inv_length2[..., None, None]).clamp_(0.0, 1.0)
    off_y, off_x = py - u * step_y, px - u * step_x
    squared = off_y.mul_(off_y).addcmul_(off_x, off_x)
    segment_index = torch.arange(segments, device=device).view(1, segments, 1, 1)
    key = (squared.view(torch.int32).long() << _SEGMENT_BITS) | segment_index
    key = key.masked_fill_(squared > radius.view(m, 1, 1, 1) ** 2, _FAR)
    where = (rows[..., :, None] * w + cols[..., None, :]).view(m, -1)
    nearest = torch.full((m, h * w), _FAR, dtype=torch.int64, device=device)
    nearest.scatter_reduce_(1, where, key.view(m, -1), reduce="amin")
    found = nearest != _FAR
    segment = (nearest & ((1 << _SEGMENT_BITS) - 1)).masked_fill_(~found, 0)
    near_distance = (nearest >> _SEGMENT_BITS).to(torch.int32).view(torch.float32).sqrt()
    # Where along its nearest segment each pixel projects, and on which side it lies.
    a_y, a_x = start[..., 0].gather(1, segment), start[..., 1].gather(1, segment)
    d_y, d_x = step[..., 0].gather(1, segment), step[..., 1].gather(1, segment)
    pixel_y = torch.arange(h, device=device).repeat_interleave(w).float() - a_y
    pixel_x = torch.arange(w, device=device).repeat(h).float() - a_x
    fraction = ((pixel_y * d_y + pixel_x * d_x) * inv_length2.gather(1, segment)).clamp(0.0, 1.0)
    cross = torch.sign(d_x * pixel_y - d_y * pixel_x)
    distance[active] = torch.where(found, near_distance, float("inf"))
    side[active] = torch.where(found, cross, 0.0)
    for slot, extra in zip(values, extras, strict=True):
        item_extra = extra[active]
        first, last = item_extra.gather(1, segment), item_extra.gather(1, segment + 1)
        slot[active] = torch.where(found, first + fraction * (last - first), 0.0)
    return _Stroke.from_flat(distance, side, values, (h, w))


def _line_coverage(distance: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of a line ``width`` px wide: 0.5 at ``distance == width / 2``."""
    half = width / 2.0
    return _smoothstep(half + 0.75, half - 0.75, distance)


def _fit_into(canvas: _Canvas, points: torch.Tensor, margin: float) -> torch.Tensor:
    """Shrink (about their box centre) and shift ``points [n, K, 2]`` to lie inside the layer."""
    low, high = points.amin(dim=1), points.amax(dim=1)
    extent = (high - low).clamp_min(1e-3)
    room = torch.tensor(
        [canvas.h - 1 - 2 * margin, canvas.w - 1 - 2 * margin], device=canvas.device
    )
    scale = (room / extent).amin(dim=1).clamp(max=1.0).view(-1, 1, 1)
    centre = (low + high) / 2.0
    fitted = (points - centre[:, None]) * scale
    half = extent * scale[:, 0] / 2.0
    slack = (room / 2.0 - half).clamp_min(0.0)
    shift = (canvas.uniform((-1.0, 1.0), 2) * slack * 0.8) + torch.tensor(
        [(canvas.h - 1) / 2.0, (canvas.w - 1) / 2.0], device=canvas.device
    )
    return fitted + shift[:, None]


# ------------------------------------------------------------------------------ painters
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


def _paint_scratch(canvas: _Canvas, p: ScratchParams) -> tuple[torch.Tensor, ...]:
    n, side, samples = canvas.n, canvas.side, 17
    t = torch.linspace(0.0, 1.0, samples, device=canvas.device)
    bernstein = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=1)
    strokes = canvas.integers(p.count)
    bright = canvas.bright_draw()
    contrast = canvas.uniform(p.contrast).view(n, 1, 1)
    highlight = canvas.uniform(p.highlight) * canvas.chance(p.highlight_probability)
    highlight_side = torch.where(canvas.chance(0.5), 1.0, -1.0).view(n, 1, 1)
    heading = canvas.uniform(p.heading)
    alpha_total = torch.zeros(n, canvas.h, canvas.w, device=canvas.device)
    reliefs_total = (torch.zeros_like(alpha_total), torch.zeros_like(alpha_total))
    for stroke in range(int(round(p.count[1]))):
        # Later strokes of one item run roughly parallel, as from one abrasive contact.
        angle = heading + (canvas.uniform((-0.35, 0.35)) if stroke else 0.0)
        direction = torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)
        normal = torch.stack([-direction[:, 1], direction[:, 0]], dim=1)
        length = canvas.uniform(p.length) * side
        bends = (
            canvas.uniform((-1.0, 1.0), 2) * canvas.uniform(p.curvature)[:, None] * length[:, None]
        )
        start = -direction * length[:, None] / 2.0
        control = torch.stack(
            [
                start,
                start + direction * length[:, None] / 3.0 + normal * bends[:, :1],
                start + direction * length[:, None] * 2.0 / 3.0 + normal * bends[:, 1:],
                direction * length[:, None] / 2.0,
            ],
            dim=1,
        )
        curve = torch.einsum("pk,nkd->npd", bernstein, control)
        curve = _fit_into(canvas, curve, margin=0.08 * side)
        base_width = (canvas.uniform(p.width) * side).clamp_min(1.0)[:, None]
        taper = (4.0 * t * (1.0 - t)).clamp_min(0.0) ** 0.35 * 0.7 + 0.3
        jitter = 1.0 + canvas.uniform(p.width_jitter)[:, None] * (
            2.0 * _smooth_curve(canvas, samples) - 1.0
        )
        width = (base_width * taper * jitter).clamp_min(1.0)
        strength = 1.0 - canvas.uniform(p.fade)[:, None] * _smooth_curve(canvas, samples, knots=7)
        # Past this distance the core and the highlight band have faded below 1e-3.
        widest = width.amax(dim=1)
        reach = widest / 2.0 + 3.5 * (0.6 * widest).clamp_min(1.0) + 1.0
        field_ = _polyline_field(canvas, curve, [width, strength], strokes > stroke, reach)
        width_px, strength_px = field_.extras
        coverage = _line_coverage(field_.distance, width_px) * strength_px
        core = torch.exp(-((field_.distance / (width_px / 2.0 + 0.5)) ** 2))
        band_width = (0.6 * width_px).clamp_min(1.0)
        band_centre = width_px / 2.0 + band_width / 2.0
        band = torch.exp(-(((field_.distance - band_centre) / band_width) ** 2))
        band = band * (field_.side == highlight_side) * highlight.view(n, 1, 1) * strength_px
        reliefs = (contrast * core * strength_px, band * (1.0 - core))
        alpha = torch.maximum(coverage, band.clamp(max=1.0) * 1.6).clamp(max=1.0)
        reliefs_total, alpha_total = _over(reliefs_total, alpha_total, reliefs, alpha)
    return _Painted(
        *reliefs_total,
        alpha_total,
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )


def _random_walk(
    canvas: _Canvas,
    start: torch.Tensor,
    heading: torch.Tensor,
    length: torch.Tensor,
    jaggedness: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Polyline ``[n, steps + 1, 2]`` and the course heading at each vertex ``[n, steps + 1]``.

    Each step deviates from a slowly drifting course by ``jaggedness`` (not cumulatively), so the
    path zigzags like a crack instead of curling up like a thread.
    """
    course = heading[:, None] + torch.cumsum(canvas.normal(steps) * 0.08, dim=1)
    headings = course + canvas.normal(steps) * jaggedness[:, None]
    step = (length / steps)[:, None] * (0.7 + 0.6 * canvas.uniform((0.0, 1.0), steps))
    moves = torch.stack([torch.sin(headings), torch.cos(headings)], dim=2) * step[..., None]
    points = torch.cat([start[:, None], start[:, None] + torch.cumsum(moves, dim=1)], dim=1)
    return points, torch.cat([course[:, :1], course], dim=1)


def _paint_crack(canvas: _Canvas, p: CrackParams) -> tuple[torch.Tensor, ...]:
    n, side, steps, branch_steps = canvas.n, canvas.side, 22, 8
    contrast = canvas.uniform(p.contrast).view(n, 1, 1)
    bright = canvas.bright_draw()
    length = canvas.uniform(p.length) * side
    jaggedness = canvas.uniform(p.jaggedness)
    main, headings = _random_walk(
        canvas,
        torch.zeros(n, 2, device=canvas.device),
        canvas.uniform(p.heading),
        length,
        jaggedness,
        steps,
    )
    count = canvas.integers(p.branches)
    paths, enabled = [main], [torch.ones(n, dtype=torch.bool, device=canvas.device)]
    for branch in range(int(round(p.branches[1]))):
        vertex = torch.randint(3, steps - 2, (n,), generator=canvas.generator, device=canvas.device)
        start = main[torch.arange(n, device=canvas.device), vertex]
        turn = canvas.uniform((0.4, 1.1)) * torch.where(canvas.chance(0.5), 1.0, -1.0)
        heading = headings[torch.arange(n, device=canvas.device), vertex] + turn
        walk, _ = _random_walk(
            canvas,
            start,
            heading,
            length * canvas.uniform(p.branch_length),
            jaggedness,
            branch_steps,
        )
        paths.append(walk)
        enabled.append(count > branch)
    # Fit all paths of an item together, counting only the branches it actually has.
    stacked = torch.cat(paths, dim=1)
    masks = torch.cat(
        [e[:, None].expand(-1, path.shape[1]) for e, path in zip(enabled, paths, strict=True)],
        dim=1,
    )
    anchor = main[:, :1].expand_as(stacked)
    fitted = _fit_into(canvas, torch.where(masks[..., None], stacked, anchor), margin=0.08 * side)
    base_width = (canvas.uniform(p.width) * side).clamp_min(1.0)
    width_jitter = canvas.uniform(p.width_jitter)[:, None]
    fade = canvas.uniform(p.fade)[:, None]
    alpha_total = torch.zeros(n, canvas.h, canvas.w, device=canvas.device)
    reliefs_total = (torch.zeros_like(alpha_total),)
    offset = 0
    for index, (path, active) in enumerate(zip(paths, enabled, strict=True)):
        points = fitted[:, offset : offset + path.shape[1]]
        offset += path.shape[1]
        t = torch.linspace(0.0, 1.0, path.shape[1], device=canvas.device)
        # Main path tapers at both tips, branches from their root to their tip.
        taper = (4.0 * t * (1.0 - t)) ** 0.5 if index == 0 else (1.0 - t) ** 0.7
        scale = 1.0 if index == 0 else 0.75
        vertices = path.shape[1]
        jitter = 1.0 + width_jitter * (2.0 * _smooth_curve(canvas, vertices, knots=9) - 1.0)
        width = (base_width[:, None] * scale * (0.45 + 0.55 * taper) * jitter).clamp_min(1.0)
        strength = 1.0 - fade * _smooth_curve(canvas, vertices, knots=7)
        # Past this distance the core has faded below 1e-3.
        reach = 3.0 * (width.amax(dim=1) / 2.0 + 0.6) + 1.0
        field_ = _polyline_field(canvas, points, [width, strength], active, reach)
        width_px, strength_px = field_.extras
        # Fading only lightens the crack: its mask stays one connected path.
        coverage = _line_coverage(field_.distance, width_px)
        core = torch.exp(-((field_.distance / (width_px / 2.0 + 0.6)) ** 2)) * strength_px
        reliefs_total, alpha_total = _over(reliefs_total, alpha_total, (contrast * core,), coverage)
    return _Painted(
        reliefs_total[0],
        None,
        alpha_total,
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )


def _ellipse_radius(
    canvas: _Canvas, centre: torch.Tensor, radius: torch.Tensor, aspect: torch.Tensor
) -> torch.Tensor:
    """Normalised elliptical radius ``[n, h, w]`` (1 on the outline) with a random orientation."""
    angle = canvas.uniform((0.0, math.pi)).view(-1, 1, 1)
    dy = canvas.y - centre[:, 0].view(-1, 1, 1)
    dx = canvas.x - centre[:, 1].view(-1, 1, 1)
    along = dx * torch.cos(angle) + dy * torch.sin(angle)
    across = -dx * torch.sin(angle) + dy * torch.cos(angle)
    major = radius.view(-1, 1, 1) / aspect.sqrt().view(-1, 1, 1)
    minor = radius.view(-1, 1, 1) * aspect.sqrt().view(-1, 1, 1)
    return torch.sqrt((along / major) ** 2 + (across / minor) ** 2)


def _blob_centre(canvas: _Canvas, reach: torch.Tensor) -> torch.Tensor:
    """Centres ``[n, 2]`` keeping a blob of radius ``reach`` px inside the layer when possible."""
    middle = torch.tensor([(canvas.h - 1) / 2.0, (canvas.w - 1) / 2.0], device=canvas.device)
    slack = (middle[None] - reach[:, None] - 0.06 * canvas.side).clamp_min(0.0)
    return middle + canvas.uniform((-1.0, 1.0), 2) * slack


def _paint_spot(canvas: _Canvas, p: SpotParams) -> tuple[torch.Tensor, ...]:
    n = canvas.n
    radius = canvas.uniform(p.radius) * canvas.side
    aspect = canvas.uniform(p.aspect)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1)
    softness = canvas.uniform(p.softness).view(n, 1, 1)
    centre = _blob_centre(canvas, radius / aspect.sqrt() * 1.3)
    outline_noise = canvas.noise(6.0, octaves=2)
    field_ = _ellipse_radius(canvas, centre, radius, aspect) + irregularity * outline_noise
    alpha = _smoothstep(1.0 + softness, 1.0 - softness, field_)
    depth = 1.0 - canvas.uniform(p.core).view(n, 1, 1) * field_.clamp(0.0, 1.0) ** 2
    depth = depth * (1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(8.0, octaves=2))
    bright = canvas.bright_draw()
    relief = canvas.uniform(p.contrast).view(n, 1, 1) * depth
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)


def _paint_stain(canvas: _Canvas, p: StainParams) -> tuple[torch.Tensor, ...]:
    n = canvas.n
    radius = canvas.uniform(p.radius) * canvas.side
    aspect = canvas.uniform(p.aspect)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1)
    softness = canvas.uniform(p.softness).view(n, 1, 1)
    centre = _blob_centre(canvas, radius / aspect.sqrt() * 1.2)
    field_ = _ellipse_radius(canvas, centre, radius, aspect) + irregularity * canvas.noise(
        3.0, octaves=3
    )
    alpha = _smoothstep(1.0 + softness, 1.0 - softness, field_)
    ring = torch.exp(-(((field_ - 0.9) / 0.18) ** 2)) * (0.6 + 0.4 * canvas.noise(6.0, octaves=2))
    rim = canvas.uniform(p.rim).view(n, 1, 1)
    mottle = 1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(5.0, octaves=2)
    relief = (1.0 - rim) * mottle + rim * 2.0 * ring
    bright = canvas.bright_draw()
    relief = (canvas.uniform(p.contrast).view(n, 1, 1) * relief).clamp(-1.0, 1.0)
    return _Painted(relief, None, alpha, canvas.uniform(p.tint), canvas.uniform(p.opacity), bright)


def _paint_uneven(canvas: _Canvas, p: UnevenParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    # The region fills the layer and fades out irregularly towards its border, so its one
    # visible outline is the cut below.
    # Superellipse radius: ~1 at the layer border, with no creases towards the corners.
    across = ((canvas.x - (canvas.w - 1) / 2.0) / (canvas.w / 2.0)).abs() ** 3
    down = ((canvas.y - (canvas.h - 1) / 2.0) / (canvas.h / 2.0)).abs() ** 3
    radius = (across + down) ** (1.0 / 3.0) + 0.2 * canvas.noise(2.5, octaves=2)
    vignette = canvas.uniform(p.vignette).view(n, 1, 1)
    inside = _smoothstep(1.0, 1.0 - 2.0 * vignette, radius)
    # A mostly straight boundary across the layer, as where a grinding pass or coating changes.
    angle = canvas.uniform((0.0, 2 * math.pi)).view(n, 1, 1)
    cut = canvas.uniform(p.cut).view(n, 1, 1) * side
    signed = (canvas.x - (canvas.w - 1) / 2.0) * torch.cos(angle) + (
        canvas.y - (canvas.h - 1) / 2.0
    ) * torch.sin(angle)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1) * side
    signed = signed - cut + irregularity * canvas.noise(4.0, octaves=3)
    softness = (canvas.uniform(p.softness) * side).clamp_min(0.8).view(n, 1, 1)
    alpha = inside * _smoothstep(-softness, softness, signed)
    shading = canvas.uniform(p.shading).view(n, 1, 1)
    gradient = (signed / side).clamp(0.0, 1.0)
    variation = shading * (0.6 * canvas.noise(2.0, octaves=2) + 0.8 * gradient - 0.3)
    bright = canvas.bright_draw()
    relief = canvas.uniform(p.contrast).view(n, 1, 1)
    relief = (relief * (1.0 + variation)).clamp(-1.0, 1.0)
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)


def _paint_pit(canvas: _Canvas, p: PitParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    count = canvas.integers(p.count)
    spread = canvas.uniform(p.spread) * side
    reach = spread * 2.0 + p.radius[1] * side
    centre = _blob_centre(canvas, reach)
    light = canvas.uniform((0.0, 2 * math.pi)).view(n, 1, 1)
    contrast = canvas.uniform(p.contrast).view(n, 1, 1)
    rim = canvas.uniform(p.rim).view(n, 1, 1)
    bright = canvas.bright_draw()
    alpha_total = torch.zeros(n, canvas.h, canvas.w, device=canvas.device)
    reliefs_total = (torch.zeros_like(alpha_total), torch.zeros_like(alpha_total))
    limit = torch.tensor([canvas.h - 1, canvas.w - 1], device=canvas.device) - 0.08 * side
    roughness = 1.0 + 0.2 * canvas.noise(10.0)
    # A pit only shows within a few radii of its centre (roughness shortens distances by at most
    # 0.8): each pit is painted on that window of the items that have it, not the whole layer.
    reach = (3.0 * (p.radius[1] * side + 0.5) + 0.6) / 0.8 + 1.0
    window_h, window_w = (
        min(2 * math.ceil(reach) + 2, canvas.h),
        min(2 * math.ceil(reach) + 2, canvas.w),
    )
    steps_h = torch.arange(window_h, device=canvas.device)
    steps_w = torch.arange(window_w, device=canvas.device)
    for pit in range(int(round(p.count[1]))):
        offset = canvas.normal(2) * spread[:, None]
        position = torch.maximum(
            torch.minimum(centre + offset, limit), limit.new_tensor(0.08 * side)
        )
        radius = (canvas.uniform(p.radius) * side).clamp_min(0.7).view(n, 1, 1)
        items = (count > pit).nonzero()[:, 0]
        if items.numel() == 0:
            continue
        where = position[items]
        top = (where[:, 0] - window_h / 2.0).round().long().clamp(0, canvas.h - window_h)
        left = (where[:, 1] - window_w / 2.0).round().long().clamp(0, canvas.w - window_w)
        rows = (top[:, None] + steps_h)[:, :, None]
        cols = (left[:, None] + steps_w)[:, None, :]
        window = (items[:, None, None], rows, cols)
        dy = rows - where[:, 0].view(-1, 1, 1)
        dx = cols - where[:, 1].view(-1, 1, 1)
        distance = torch.sqrt(dy * dy + dx * dx) * roughness[window]
        radius_i, light_i = radius[items], light[items]
        hollow = _smoothstep(radius_i + 0.7, radius_i - 0.7, distance)
        depth = torch.exp(-((distance / (radius_i + 0.5)) ** 2))
        facing = (dx * torch.cos(light_i) + dy * torch.sin(light_i)) / distance.clamp_min(1e-3)
        lit_rim = torch.exp(-(((distance - radius_i - 0.6) / 0.8) ** 2)) * facing.clamp_min(0.0)
        lit_rim = lit_rim * rim[items]
        reliefs = (contrast[items] * depth, lit_rim * (1.0 - hollow))
        alpha = torch.maximum(hollow, lit_rim * 1.6).clamp(max=1.0)
        below = tuple(total[window] for total in reliefs_total)
        mixed, combined = _over(below, alpha_total[window], reliefs, alpha)
        alpha_total[window] = combined
        for total, part in zip(reliefs_total, mixed, strict=True):
            total[window] = part
    return _Painted(
        *reliefs_total,
        alpha_total,
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )


def _paint_edge(canvas: _Canvas, p: EdgeChipParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    depth = (canvas.uniform(p.depth) * (canvas.h - 1)).clamp_min(2.0).view(n, 1, 1)
    half = (canvas.uniform(p.width) * (canvas.w - 1) / 2.0).clamp_min(1.5).view(n, 1, 1)
    belly = canvas.uniform(p.belly).view(n, 1, 1)
    neck = canvas.uniform(p.neck).view(n, 1, 1)
    # Along the edge the shape sits anywhere its widest part still fits in the layer.
    place = canvas.uniform((0.0, 1.0)).view(n, 1, 1)
    # A leaning shape is sheared sideways (by ``shear`` px per row), its tip shortened so the
    # whole shape still fits across the layer.
    shear = torch.zeros(n, 1, 1, device=canvas.device)
    if p.lean[1] > 0.0:
        lean = torch.deg2rad(canvas.uniform(p.lean)).view(n, 1, 1)
        sign = torch.where(canvas.chance(0.5), 1.0, -1.0).view(n, 1, 1)
        slope = torch.tan(lean)
        room = ((canvas.w - 1) - 2.0 * half).clamp_min(1.0)
        depth = torch.minimum(depth, (room / slope.clamp_min(1e-3)).clamp_min(2.0))
        shear = sign * slope
    offset = shear * depth
    low = half + (-offset).clamp_min(0.0)
    high = (canvas.w - 1) - half - offset.clamp_min(0.0)
    centre = torch.where(high >= low, low + place * (high - low), (low + high) / 2.0)
    t = canvas.y / depth
    # Half-width profile down from the edge: rising from ``neck`` to 1 at ``belly`` along a
    # quarter ellipse, then closing along another one (a superellipse for ``corner`` > 0) at
    # ``depth``.
    rise = ((belly - t) / belly.clamp_min(1e-3)).clamp(max=1.0)
    before = neck + (1.0 - neck) * (1.0 - rise**2).clamp_min(0.0).sqrt()
    u = ((t - belly) / (1.0 - belly).clamp_min(1e-3)).clamp(0.0, 1.0)
    point = canvas.uniform(p.point).view(n, 1, 1)
    if p.corner[1] > 0.0:
        power = 2.0 + 6.0 * canvas.uniform(p.corner).view(n, 1, 1)
        rounded = (1.0 - u**power).clamp_min(0.0) ** (1.0 / power)
    else:
        rounded = (1.0 - u**2).sqrt()
    after = (1.0 - point) * rounded + point * (1.0 - u)
    after = torch.where(t > 1.0, torch.zeros_like(after), after)
    profile = torch.where(t < belly, before, after)
    # Normalised lateral distance minus the profile: < 0 inside; a tip closing below ``depth``
    # is measured along the depth too, so the outline stays soft there. The outline noise is
    # relative to the local half-width (and below it), so the axis always stays inside and
    # a thin or tapering shape does not break into islands.
    lateral = (canvas.x - centre - shear * canvas.y).abs() / half
    beyond = ((t - 1.0) * depth / half).clamp_min(0.0)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1)
    field_ = lateral - profile * (1.0 - irregularity * canvas.noise(5.0, octaves=2)) + beyond
    soft = (canvas.uniform(p.softness).view(n, 1, 1) * side + 0.75) / half
    alpha = _smoothstep(soft, -soft, field_)
    mottle = 1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(6.0, octaves=2)
    if p.gradient[1] > 0.0:
        mottle = mottle * (1.0 - canvas.uniform(p.gradient).view(n, 1, 1) * t.clamp(0.0, 1.0))
    relief = (canvas.uniform(p.contrast).view(n, 1, 1) * mottle).clamp(0.0, 1.0)
    bright = canvas.bright_draw()
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)


def _with_opacity(coverage: torch.Tensor, opacity: torch.Tensor) -> torch.Tensor:
    """Alpha from coverage: above the 0.5 outline it is scaled to peak at ``opacity`` [n].

    Below 0.5 coverage passes unchanged, so ``alpha >= 0.5`` (the layer's mask) is exactly the
    painted outline whatever the opacity.
    """
    peak = opacity.view(-1, 1, 1)
    return torch.where(coverage < 0.5, coverage, 0.5 + (coverage - 0.5) * (2.0 * peak - 1.0))


def _over(
    reliefs_below: tuple[torch.Tensor, ...],
    alpha_below: torch.Tensor,
    reliefs: tuple[torch.Tensor, ...],
    alpha: torch.Tensor,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Stack one painted element over another (premultiplied "over" on each relief part)."""
    combined = alpha + alpha_below * (1.0 - alpha)
    norm = combined.clamp_min(1e-6)
    mixed = tuple(
        (relief * alpha + below * alpha_below * (1.0 - alpha)) / norm
        for relief, below in zip(reliefs, reliefs_below, strict=True)
    )
    return mixed, combined


_PAINTERS = {
    "scratch": _paint_scratch,
    "spot": _paint_spot,
    "crack": _paint_crack,
    "stain": _paint_stain,
    "uneven": _paint_uneven,
    "pit": _paint_pit,
    "edge_chip": _paint_edge,
    "edge_patch": _paint_edge,
    "edge_shade": _paint_edge,
}


#: Plane order of ``ReliefMaps.planes``.
_SIGNED, _FIXED, _TEXTURE, _ALPHA = 0, 1, 2, 3


class ReliefMaps(NamedTuple):
    """Painted defects before they meet a surface (``ProceduralGenerator.paint``).

    Attributes:
        planes: ``[n, 4, h, w]``: the relief part whose sign the surface decides (dark or bright
            defect), the relief part lit regardless (highlights, lit rims), the fine texture
            (already scaled) and the alpha. Being one tensor, all four warp in one resampling.
        tint: ``[n]`` rust tint strength (3-channel output).
        bright_draw: ``[n]`` uniform draws that, with the tone, pick bright or dark
            (:func:`bright_sign`).
        bright_probability: ``[n]`` chance of a bright defect of each item's type.
    """

    planes: torch.Tensor
    tint: torch.Tensor
    bright_draw: torch.Tensor
    bright_probability: torch.Tensor

    @property
    def alpha(self) -> torch.Tensor:
        """``[n, 1, h, w]`` coverage in [0, 1]."""
        return self.planes[:, _ALPHA : _ALPHA + 1]

    def shade(self, tone: torch.Tensor) -> torch.Tensor:
        """Content ``[n, C, h, w]`` on surface ``tone`` (``[n, C, 1, 1]`` or ``[n, C, h, w]``)."""
        sign = bright_sign(self.bright_draw, self.bright_probability, tone.mean(dim=(1, 2, 3)))
        return shade_relief(self.planes, tone, sign, self.tint)


def shade_relief(
    planes: torch.Tensor,
    tone: torch.Tensor,
    sign: torch.Tensor | float,
    tint: torch.Tensor | float,
) -> torch.Tensor:
    """Content ``[n, C, h, w]`` in [0, 1] from :class:`ReliefMaps` planes on a surface ``tone``.

    The relief (``sign * signed + fixed``, in [-1, 1]) darkens the tone towards black or lightens
    it towards white, the texture modulates it, and a tint (3 channels) browns strong relief.
    ``sign`` and ``tint`` are ``[n]`` or, for one item, floats; ``tone`` is ``[n, C, h, w]`` or
    broadcastable to it. (The per-sample path of ``DefectInject`` does the same per pixel in
    :func:`defectaug._kernels.composite_relief`.)
    """
    n = planes.shape[0]
    if isinstance(sign, torch.Tensor):
        sign = sign.view(n, 1, 1, 1)
    relief = planes[:, _SIGNED : _SIGNED + 1] * sign
    relief = (relief + planes[:, _FIXED : _FIXED + 1]).clamp(-1.0, 1.0)
    shaded = torch.where(relief < 0, tone * (1.0 + relief), tone + (1.0 - tone) * relief)
    content = shaded * (1.0 + planes[:, _TEXTURE : _TEXTURE + 1])
    tinted = bool((tint > 0).any()) if isinstance(tint, torch.Tensor) else tint > 0
    if content.shape[1] == 3 and tinted:
        rust = torch.tensor(RUST, device=planes.device, dtype=planes.dtype).view(1, 3, 1, 1)
        if isinstance(tint, torch.Tensor):
            tint = tint.view(n, 1, 1, 1)
        strength = tint * relief.abs().clamp(max=1.0) * 3.0
        content = content * (1.0 - strength.clamp(max=1.0) * (1.0 - rust))
    return content.clamp(0.0, 1.0)


class ProceduralGenerator(DefectGenerator):
    """Parametric defects that need no data or weights: the embedded default generator.

    Args:
        layer_size: native ``(h, w)`` (or one int) of the layers; ``sample(..., layer_size=...)``
            overrides it per call. Any size >= 8 works: geometry scales with the shorter side.
        base_level: range of the grey surface tone used when ``sample`` gets no ``background``
            and no ``base_color``.
        scratch, spot, crack, stain, uneven, pit: a ``<Type>Params`` instance or a mapping of
            field overrides (e.g. ``scratch={"width": (0.02, 0.05)}``); see each dataclass for
            the parameters, their meaning and their allowed bounds.

    ``sample`` options (besides the base ``DefectGenerator.sample`` arguments):
        background: ``[n, C, H, W]`` in [0, 1], optional. With ``(H, W)`` equal to the layer size
            it is the image patch each layer will cover: content is that patch shaded, so the
            defect keeps the surface's texture and tone. Any other size: each image's mean colour
            sets the surface tone.
        base_color: surface tone when no background is given: a float, or ``[n]`` / ``[n, C]``.
        layer_size: ``(h, w)`` for this call.
    """

    defect_types = DEFECT_TYPES
    channels = "any"
    #: ``background`` is optional for this generator: passing it matches the image's tone.
    accepts_background: ClassVar[bool] = True

    def __init__(
        self,
        layer_size: int | tuple[int, int] = (64, 64),
        *,
        base_level: tuple[float, float] = (0.3, 0.6),
        scratch: ScratchParams | Mapping[str, Any] | None = None,
        spot: SpotParams | Mapping[str, Any] | None = None,
        crack: CrackParams | Mapping[str, Any] | None = None,
        stain: StainParams | Mapping[str, Any] | None = None,
        uneven: UnevenParams | Mapping[str, Any] | None = None,
        pit: PitParams | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.layer_size = _check_layer_size(layer_size)
        if (
            not isinstance(base_level, (tuple, list))
            or len(base_level) != 2
            or not 0.0 <= base_level[0] <= base_level[1] <= 1.0
        ):
            raise ValueError(f"base_level: expected 0 <= low <= high <= 1, got {base_level!r}")
        self.base_level = (float(base_level[0]), float(base_level[1]))
        given = {"scratch": scratch, "spot": spot, "crack": crack, "stain": stain}
        given |= {"uneven": uneven, "pit": pit}
        self.params: dict[str, _Params] = {
            name: _resolve_params(name, value) for name, value in given.items()
        }
        # Lets .to(device) set the default device of sample(), as with parametric generators.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None = None,
        base_color: float | torch.Tensor | None = None,
        **options: Any,
    ) -> DefectLayer:
        if options:
            raise TypeError(
                f"options: unknown sample option(s) {', '.join(sorted(options))} for "
                "ProceduralGenerator; accepted: layer_size, base_color"
            )
        if reference is not None:
            raise ValueError("reference: ProceduralGenerator does not use reference crops")
        h, w = self.layer_size if layer_size is None else _check_layer_size(layer_size)
        n = labels.shape[0]
        tone = self._surface_tone(n, h, w, channels, background, base_color, generator, device)
        maps = self.paint(labels, generator=generator, layer_size=(h, w), device=device)
        return DefectLayer(
            maps.shade(tone).to(dtype),
            maps.alpha.to(dtype),
            labels.to(torch.int64),
            self.defect_types,
        )

    def painter_type(self, defect_type: str) -> str:
        """The painter (a key of ``PARAMS_BY_TYPE``) that draws ``defect_type``: its own name here;
        subclasses with their own type names (``FittedGenerator``) map them to painters."""
        return defect_type

    def paint(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        layer_size: tuple[int, int],
        device: torch.device | str | None = None,
    ) -> ReliefMaps:
        """Paint defects ``labels [n]`` (type indices) without a surface: :class:`ReliefMaps`.

        ``sample`` is ``paint`` followed by :meth:`ReliefMaps.shade` with the surface tone, so the
        maps can be drawn ahead (in chunks, say) and shaded later with the very pixels a defect
        lands on. ``layer_size`` is ``(h, w)``; draws come from ``generator`` alone.
        """
        h, w = _check_layer_size(layer_size)
        device = torch.device(device) if device is not None else self._device_anchor.device
        labels = labels.to(device)
        n = labels.shape[0]
        planes = torch.zeros(n, 4, h, w, device=device)
        tint, grain = torch.zeros(n, device=device), torch.zeros(n, device=device)
        bright_draw = torch.zeros(n, device=device)
        bright_probability = torch.zeros(n, device=device)
        # Fixed type order so a given label vector always consumes the generator identically.
        for index, name in enumerate(self.defect_types):
            members = (labels == index).nonzero().flatten()
            if members.numel() == 0:
                continue
            canvas = _Canvas(members.numel(), h, w, generator, device)
            params = self.params[name]
            painter = self.painter_type(name)
            painted = _PAINTERS[painter](canvas, params)
            planes[members, _SIGNED] = painted.signed
            if painted.fixed is not None:
                planes[members, _FIXED] = painted.fixed
            window = canvas.border_window(open_top=painter in ANCHORED_TYPES)
            alpha = _with_opacity(painted.coverage * window, painted.opacity)
            planes[members, _ALPHA] = alpha.clamp(0.0, 1.0)
            tint[members] = painted.tint
            bright_draw[members] = painted.bright_draw
            bright_probability[members] = params.bright_probability
            grain[members] = canvas.uniform(params.texture)
        planes[:, _TEXTURE] = _Canvas(n, h, w, generator, device).grain() * grain.view(n, 1, 1)
        return ReliefMaps(planes, tint, bright_draw, bright_probability)

    def _surface_tone(
        self,
        n: int,
        h: int,
        w: int,
        channels: int,
        background: torch.Tensor | None,
        base_color: float | torch.Tensor | None,
        generator: torch.Generator,
        device: torch.device,
    ) -> torch.Tensor:
        """Surface tone ``[n, C, 1, 1]``, or ``[n, C, h, w]`` for a layer-sized background patch."""
        if background is not None:
            if base_color is not None:
                raise ValueError("base_color: give either background or base_color, not both")
            if not background.is_floating_point() or background.shape[1] not in (1, 3):
                raise ValueError(
                    "background: expected a float [n, 1 or 3, H, W] tensor in [0, 1], got "
                    f"shape {tuple(background.shape)} and dtype {background.dtype}"
                )
            patch = background.to(device=device, dtype=torch.float32)
            if patch.shape[-2:] != (h, w):
                patch = patch.mean(dim=(2, 3), keepdim=True)
            return _match_channels(patch, channels).clamp(0.0, 1.0)
        if base_color is None:
            low, high = self.base_level
            level = low + (high - low) * torch.rand(n, generator=generator, device=device)
            return level.view(n, 1, 1, 1).expand(n, channels, 1, 1)
        color = torch.as_tensor(base_color, dtype=torch.float32, device=device)
        if color.ndim == 0:
            color = color.expand(n)
        if color.ndim == 1 and color.shape[0] == n:
            color = color[:, None]
        if color.ndim != 2 or color.shape[0] != n or color.shape[1] not in (1, channels):
            raise ValueError(
                f"base_color: expected a float, [n={n}] or [n={n}, C={channels}] values, got shape "
                f"{tuple(color.shape)}"
            )
        if not bool(((color >= 0) & (color <= 1)).all()):
            raise ValueError("base_color: expected values in [0, 1]")
        return color.expand(n, channels)[:, :, None, None]


def _match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    if images.shape[1] == channels:
        return images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
        return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    return images.expand(-1, 3, -1, -1)
