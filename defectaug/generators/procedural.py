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

This module holds the parameter dataclasses and :class:`ProceduralGenerator`. The painters live
beside it: ``_canvas`` (the draws and grids a painter paints with, and how painted elements
stack), ``_strokes`` (scratches and cracks), ``_blobs`` (spots, stains, uneven regions, pits and
the shapes anchored on an edge) and :mod:`~defectaug.generators.relief` (:class:`ReliefMaps`:
painted defects before they meet a surface, and their shading).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from defectaug._checks import check_size

# The painters and relief maps live in their own modules (see the module docs); every name they
# had here is still imported from here as well.
from defectaug.generators._blobs import (  # noqa: F401
    _blob_centre,
    _ellipse_radius,
    _paint_edge,
    _paint_pit,
    _paint_spot,
    _paint_stain,
    _paint_uneven,
)
from defectaug.generators._canvas import (  # noqa: F401
    _Canvas,
    _cubic_resampler,
    _Painted,
    _smooth_curve,
    _smoothstep,
    _with_opacity,
)
from defectaug.generators._strokes import (  # noqa: F401
    _fit_into,
    _paint_crack,
    _paint_scratch,
    _random_walk,
)
from defectaug.generators.base import DefectGenerator, match_channels
from defectaug.generators.relief import (  # noqa: F401
    _ALPHA,
    _FIXED,
    _SIGNED,
    _TEXTURE,
    RUST,
    ReliefMaps,
    bright_sign,
    shade_relief,
)
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
    bend: float = field(
        default=0.08,
        metadata={"bounds": (0.0, 0.5), "doc": "drift of the course per step (radians, std)"},
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
    """``(h, w)`` of a layer: any size >= 8 works, geometry scales with the shorter side."""
    return check_size(value, name, 8)


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
            return match_channels(patch, channels).clamp(0.0, 1.0)
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
