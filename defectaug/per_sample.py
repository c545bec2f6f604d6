"""The compiled CPU renderer of a :class:`~defectaug.plan.Plan`, for data-loader workers.

A data-loader worker transforms one image at a time, where the torch renderer
(:func:`defectaug.batch.render_plan` / :func:`~defectaug.batch.composite_plan`) spends most of
its time in per-operation overhead on tiny tensors. This renderer reads the same plan (so the
defects land on the same pixels: :func:`~defectaug.plan.layer_box`) and gives the same look, but

- paints layers ahead in chunks (:class:`LayerReservoir`): ``ProceduralGenerator.paint`` draws a
  chunk of one type at one size at once, and each layer serves ``USES_PER_LAYER`` samples (each
  with its own scale, rotation, aspect, mirroring, place and surface). Layers are kept as tone-free
  relief maps (:class:`~defectaug.generators.relief.ReliefMaps`) and shaded with the very
  pixels they land on, so a chunk suits any image. Generators of content + alpha layers that
  opt in (``samples_ahead``: the bank, learned cards) get the same from
  :class:`SampledReservoir`: one ``sample_ahead`` call per chunk, each layer finished for the
  patch it lands on in compiled passes (``land_planes``, what ``land`` gives) and composited
  with the alpha blend. ``DefectInject`` hands the same reservoir to the torch renderer when it
  renders (other devices, dtypes, blends), so both use the same layers. Generators whose layers
  are made from the image they land on (``samples_per_call``: ``cutpaste``, ``nsa``,
  ``texture``) cannot be sampled ahead: their layers are sampled for each plan with the torch
  renderer's own ``sample`` calls (:func:`defectaug.batch.sample_group`: the same seeds, and
  the same landing patches, read in one compiled pass each), then placed and composited, with
  every blend, as sampled layers are;
- places each layer in one compiled call (:func:`defectaug._kernels.place_relief` /
  :func:`~defectaug._kernels.place_box`: ``layer_box``'s own arithmetic, compiled), and
  resamples, shades and alpha-composites a sample's layers in one compiled call, one pass over
  each box (:func:`~defectaug._kernels.composite_defects`), written straight into the output (a
  uint8 image stays uint8);
- for ``blend="poisson"`` and ``"improved_poisson"`` (and their ``blend_options``) runs the torch
  renderer's steps (``defectaug.batch._blend_round``) over each defect's own small region
  (:mod:`defectaug._poisson_kernels`): the soft composite as source, the core and its footprint,
  the solve over :func:`~defectaug.compositing.poisson.blend_rectangle`'s rectangle (a DST-I)
  or over the improved blend's band (conjugate gradients), and the alpha blend mixed back in
  where a defect kept less than ``KEPT_CONTRAST`` of its contrast. The defects are blended in
  draw order in floats on the window they reach, and written into the output once (a uint8
  image is rounded once, as the torch renderer rounds its float composite);
- settles the result over the defects' reaches (:func:`defectaug._kernels.settle_levels`): the
  label mask is what visibly changed (``VISIBILITY``), and changes farther than ``TELL_MARGIN`` px
  from it are undone, the same rule as :func:`defectaug.batch.settle_composite`. The compositing
  pass records how much each pixel it writes changed, so settling reads the image again only
  where it restores a pixel.

It renders every blend of relief layers and of layers sampled per call (the alpha blend of
layers sampled ahead) onto PIL images and CPU tensors of dtype uint8, float32 or float64 that
need no gradient (:func:`takes_fast_path`); ``DefectInject`` sends anything else to the torch
renderer. For one plan and the same layers both renderers give the same label mask, and images
that differ by float rounding (one level of a uint8 image). numba (and, for the Poisson blends,
scipy) is imported on the first render, not with this module.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import torch

from defectaug._io import UNIT_RANGE_TOLERANCE, as_chw, check_unit_range
from defectaug._lazy import compiled_kernels as _kernels
from defectaug._lazy import poisson_kernels as _poisson
from defectaug._seeding import mix_seed, stream_identity
from defectaug.batch import (
    _renders_any_size,
    check_blend_options,
    paints_relief,
    render_groups,
    sample_group,
    wants_background,
)
from defectaug.generators.base import AheadLayer, DefectGenerator, Landing
from defectaug.generators.relief import ReliefMaps
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY
from defectaug.plan import Plan, PlannedDefect, paint_side

#: Elements (``side ** 2 * layers``) one chunk aims at: big enough to amortise the per-op cost
#: of painting, small enough to keep a worker's reservoir to a few MB.
CHUNK_PIXELS = 1 << 17
MAX_CHUNK = 32


#: Layers in the first chunk of a type and size; each later chunk doubles, up to the full length.
FIRST_CHUNK = 4

#: Samples each painted layer serves. Painting a layer costs 0.04-0.8 ms at 23-64 px (spots and
#: stains least, scratches, cracks and pits most), the rest of a sample about 0.1 ms, so painting
#: would dominate a sample's cost if layers were not reused. Every use draws its own scale,
#: rotation, aspect, mirroring, place and surface, and uses of one layer are a chunk (up to 32
#: samples of its type and size) apart. A painting call also costs some 2 ms whatever its
#: length (the stroke and pit painters run a few hundred small torch operations), and a loader
#: worker of a few thousand samples spreads them over two dozen types and sizes, so it mostly
#: pays first chunks: at 16 uses each of them paints a second chunk it barely uses, at 32 the
#: first one lasts (``benchmarks.pipeline``: 8 measured 1.17x there, 16 1.14x-1.18x).
USES_PER_LAYER = 32


def chunk_length(side: int, chunk: int) -> int:
    """Layers in chunk number ``chunk`` of one type at ``side``.

    Chunks grow geometrically: a short-lived worker (or a rare size) paints few layers it never
    uses, a long-lived one soon paints full chunks.
    """
    return _chunk_length(side * side, chunk)


def _chunk_length(pixels: int, chunk: int) -> int:
    full = max(FIRST_CHUNK, min(MAX_CHUNK, CHUNK_PIXELS // pixels))
    return min(full, FIRST_CHUNK << min(chunk, 8))


class LayerReservoir:
    """Relief maps painted ahead in chunks, one type and one side per chunk.

    A chunk of ``n`` layers serves ``n * uses`` samples, cycling through its layers (``uses``:
    the generator's ``uses_per_layer``, else ``USES_PER_LAYER``).
    With an int ``seed``, chunk ``k`` of ``(type, side)`` is painted from
    ``mix_seed(seed, worker id, loader base seed, rank, type, side, k)``, so the stream of layers
    is reproducible and workers never share layers; with ``None`` chunk seeds come from torch's
    global generator. Pickling keeps only the positions (chunks are repainted on demand), so a
    copy continues exactly where the original was.
    """

    def __init__(self, generator: Any, seed: int | None) -> None:
        self.generator = generator
        self.seed = seed
        self.uses = getattr(generator, "uses_per_layer", None) or USES_PER_LAYER
        self._positions: dict[tuple[int, ...], tuple[int, int]] = {}
        self._chunks: dict[tuple[int, ...], list[Any]] = {}
        self._identity: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_chunks"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _chunk_seed(self, *key_and_chunk: int) -> int:
        if self.seed is None:
            return int(torch.randint(0, 2**62, (1,)).item())
        return mix_seed(self.seed, *self._identity, *key_and_chunk)

    def take(self, type_index: int, side: int) -> PaintedLayer:
        """The next layer at ``side``; ``type_index`` indexes the generator's ``defect_types``."""
        return self._take((type_index, side), side * side)

    def _take(self, key: tuple[int, ...], pixels: int) -> Any:
        """The next layer of the chunks of ``key`` (layers of ``pixels`` pixels each)."""
        with self._lock:
            identity = stream_identity()
            if identity != self._identity:
                # A forked DataLoader worker inherits the parent's reservoir: start afresh.
                self._identity, self._positions, self._chunks = identity, {}, {}
            chunk, position = self._positions.get(key, (0, 0))
            painted = self._chunks.get(key)
            length = _chunk_length(pixels, chunk)
            if position >= length * self.uses:
                chunk, position, painted = chunk + 1, 0, None
                length = _chunk_length(pixels, chunk)
            if painted is None:
                painted = self._paint(*key, chunk)
                self._chunks[key] = painted
            self._positions[key] = (chunk, position + 1)
            return painted[position % length]

    def _paint(self, type_index: int, side: int, chunk: int) -> list[PaintedLayer]:
        rng = torch.Generator().manual_seed(self._chunk_seed(type_index, side, chunk))
        labels = torch.full((chunk_length(side, chunk),), type_index, dtype=torch.int64)
        maps: ReliefMaps = self.generator.paint(labels, generator=rng, layer_size=(side, side))
        # Per-layer scalars as Python floats: a sample then decides its sign without tensor ops.
        scalars = torch.stack([maps.tint, maps.bright_draw, maps.bright_probability], 1)
        planes = maps.planes.to(torch.float32).numpy()
        return [
            PaintedLayer(layer, *values)
            for layer, values in zip(planes, scalars.tolist(), strict=True)
        ]


class SampledReservoir(LayerReservoir):
    """Content + alpha layers sampled ahead in chunks, for generators that
    :attr:`~defectaug.generators.base.DefectGenerator.samples_ahead` (the bank, learned cards).

    One :meth:`~defectaug.generators.base.DefectGenerator.sample_ahead` call makes a chunk of
    one type at one size (and channel count); each layer serves ``USES_PER_LAYER`` samples (or
    the generator's :attr:`~defectaug.generators.base.DefectGenerator.uses_per_layer`), each
    with its own placement (scale, rotation, aspect, mirroring, place) and finished for the
    patch it lands on (:meth:`~defectaug.generators.base.DefectGenerator.land_planes`), so a
    sample no longer pays a whole generator call. Chunks are seeded, kept per worker and
    pickled as :class:`LayerReservoir`'s (chunk ``k`` of ``(type, h, w, channels)``).
    """

    def take(  # type: ignore[override]
        self, type_index: int, size: tuple[int, int], channels: int
    ) -> AheadLayer:
        """The next layer of ``size`` ``(h, w)`` for ``channels``-channel images."""
        height, width = size
        native = self.generator.native_channels(channels)
        return self._take((type_index, height, width, native), height * width)

    def _paint(  # type: ignore[override]
        self, type_index: int, height: int, width: int, channels: int, chunk: int
    ) -> list[AheadLayer]:
        generator = self.generator
        renders_any_size = _renders_any_size(type(generator))
        return generator.sample_ahead(
            _chunk_length(height * width, chunk),
            generator.defect_types[type_index],
            generator=self._chunk_seed(type_index, height, width, channels, chunk),
            channels=channels,
            layer_size=(height, width) if renders_any_size else None,
        )


def reservoir_for(generator: Any, seed: int | None) -> LayerReservoir | None:
    """The reservoir ``generator``'s layers are taken from in ``DefectInject``: relief maps
    for the procedural generator, sampled layers for generators that sample ahead, else
    ``None`` (every sample calls the generator, e.g. with the image itself as its source:
    :func:`place_sample` does so for generators that :func:`samples_per_call`)."""
    if paints_relief(generator):
        return LayerReservoir(generator, seed)
    if (
        getattr(generator, "samples_ahead", False)
        and not generator.needs_background
        and not generator.needs_reference
    ):
        return SampledReservoir(generator, seed)
    return None


def samples_per_call(generator: Any) -> bool:
    """Whether :func:`place_sample` samples ``generator``'s layers itself, for each plan, as
    :func:`defectaug.batch.render_plan` samples them without a reservoir (the generator's
    ``samples_per_call``: the self-supervised generators, whose layers are made from the image
    they land on)."""
    return (
        bool(getattr(generator, "samples_per_call", False))
        and not generator.needs_reference
        and not paints_relief(generator)
    )


@dataclass(frozen=True, eq=False)
class PaintedLayer:
    """A layer of a reservoir: relief planes ``[4, s, s]`` and its scalars."""

    planes: np.ndarray
    tint: float
    bright_draw: float
    bright_probability: float

    @functools.cached_property
    def blocks(self) -> np.ndarray:
        """``alpha_blocks`` of the planes, for the compiled renderer (once per layer)."""
        return _kernels().alpha_blocks(self.planes)


class PlacedDefect(NamedTuple):
    """One layer placed on an image: the box ``top, left, height, width`` it covers.

    ``planes [4, s, s]`` (the relief maps, low-passed when shrunk a lot) are resampled into the
    box through ``box_to_layer`` when compositing; ``confine`` is the box's region-of-interest
    weights, or an empty array.
    """

    planes: np.ndarray
    blocks: np.ndarray
    box_to_layer: np.ndarray
    confine: np.ndarray
    top: int
    left: int
    height: int
    width: int
    sign: float
    tint: float

    def alpha(self) -> np.ndarray:
        """``[height, width]`` coverage in [0, 1]."""
        return _kernels().warp_alpha(
            self.planes, self.blocks, self.box_to_layer, self.confine, self.height, self.width
        )


class PlacedLayer(NamedTuple):
    """A content + alpha layer (of a :class:`SampledReservoir`, finished for where it lands)
    placed on an image: ``content [C, h, w]`` and ``alpha [h, w]`` are resampled into the box
    ``top, left, height, width`` through ``box_to_layer`` when compositing; ``confine`` as
    :class:`PlacedDefect`'s. Layers of a :class:`SampledReservoir` are composited with the
    alpha blend only; layers sampled for the plan (:func:`samples_per_call`) with every blend."""

    content: np.ndarray
    alpha: np.ndarray
    blocks: np.ndarray
    box_to_layer: np.ndarray
    confine: np.ndarray
    top: int
    left: int
    height: int
    width: int

    def coverage(self) -> np.ndarray:
        """``[height, width]`` coverage in [0, 1] (:meth:`PlacedDefect.alpha`'s)."""
        return _kernels().warp_coverage(
            self.alpha, self.blocks, self.box_to_layer, self.confine, self.height, self.width
        )


_NOT_CONFINED = np.empty((0, 0), dtype=np.float32)
_CPU = torch.device("cpu")
#: The label mask of a plan that changed nothing visibly (shared: never written).
_INVISIBLE = np.zeros((0, 0), dtype=np.uint8)
_INVISIBLE.flags.writeable = False


@dataclass(eq=False)
class SamplePlan:
    """A :class:`~defectaug.plan.Plan` for one image laid out for the compiled renderer: its
    defects (in draw order) with their layers, type and size, and the blend to composite them
    with (``blend``, ``blend_options``: see :func:`place_sample`).

    ``source`` is the image it was laid out on; its composite (:meth:`source_composite`)
    decides the label mask, so mask and image always agree. ``drawn`` is the plan,
    ``source_pixels`` the source's ``[C, H, W]`` view (``as_chw``) and ``source_array`` that
    view's numpy array, kept so the source's composite does not convert it again. Read-only
    once made (not frozen: a frozen dataclass sets each field through ``object.__setattr__``,
    which every transformed sample would pay).
    """

    type_index: int
    defects: tuple[PlacedDefect | PlacedLayer, ...]
    image_size: tuple[int, int]
    source: Any = field(default=None, compare=False, repr=False)
    drawn: Plan | None = field(default=None, compare=False, repr=False)
    blend: str = "alpha"
    blend_options: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    source_pixels: torch.Tensor | None = field(default=None, compare=False, repr=False)
    source_array: np.ndarray | None = field(default=None, compare=False, repr=False)
    # The source's composite, window mask and corner (_composite_source).
    _source_result: list[Any] = field(init=False, compare=False, repr=False)

    @functools.cached_property
    def regions(self) -> tuple[Any, ...] | None:
        """Per defect, where its Poisson blend works (``_poisson_kernels.BlendRegion``; ``None``
        for alpha blending). It depends on the layers alone: every image of the sample shares
        it."""
        if self.blend == "alpha" or not self.defects:
            return None
        poisson = _poisson()
        boxes = [(d.top, d.left, d.height, d.width) for d in self.defects]
        # The torch renderer's canvases group the layers by the size they render at.
        sizes = [
            d.planes.shape[-1] if isinstance(d, PlacedDefect) else d.alpha.shape
            for d in self.defects
        ]
        canvases = poisson.canvases(boxes, sizes)
        return tuple(
            poisson.blend_region(
                defect.alpha() if isinstance(defect, PlacedDefect) else defect.coverage(),
                box,
                canvas,
                self.image_size,
                self.blend,
                self.blend_options.get("band", 0),
            )
            for defect, box, canvas in zip(self.defects, boxes, canvases, strict=True)
        )

    @property
    def reach(self) -> tuple[tuple[int, int, int, int], ...]:
        """Per defect, the window ``top, left, height, width`` holding every pixel it may
        change: its box, and for the Poisson blends the region solved around it."""
        regions = self.regions
        if regions is None:
            return tuple((d.top, d.left, d.height, d.width) for d in self.defects)
        return tuple(region.reach for region in regions)

    def _composite_source(self) -> SamplePlan:
        """Composite the plan onto its source and keep the result, for :attr:`visible`,
        :attr:`mask` and :meth:`source_composite`; returns ``self`` (:func:`place_sample` calls
        it as it lays the plan out: every plan laid out is composited on its source at once)."""
        self._source_result = list(_composite(self.source, self, self.source_pixels))
        return self

    def source_composite(self) -> Any:
        """The source image with the plan composited (computed once; later calls recomposite)."""
        result = self._source_result
        out = result[0]
        if out is None:
            out, _, _ = _composite(self.source, self, self.source_pixels)
        result[0] = None  # handed out once: the caller owns it
        return out

    @property
    def visible(self) -> bool:
        """Whether the defects visibly changed the source (at least ``MIN_VISIBLE_PIXELS``)."""
        return self._source_result[1] is not _INVISIBLE

    @functools.cached_property
    def mask(self) -> torch.Tensor:
        """``[H, W]`` bool: the pixels of the source the defects visibly changed (see module)."""
        _, window, (top, left) = self._source_result
        mask = np.zeros(self.image_size, dtype=bool)
        mask[top : top + window.shape[0], left : left + window.shape[1]] = window != 0
        return torch.from_numpy(mask)


def takes_fast_path(image: Any) -> bool:
    """Whether :func:`place_sample` / :func:`composite_sample` handle ``image`` natively."""
    if isinstance(image, PIL.Image.Image):
        return True
    if not isinstance(image, torch.Tensor):
        return False
    if type(image) is not torch.Tensor:  # tv_tensors pay a dispatch per attribute read
        image = image.as_subclass(torch.Tensor)
    return (
        image.is_cpu
        and image.dtype in (torch.uint8, torch.float32, torch.float64)
        and not image.requires_grad
    )


def place_sample(
    plan: Plan,
    image: Any,
    reservoir: LayerReservoir | SampledReservoir | DefectGenerator,
    confine: bool = True,
    blend: str = "alpha",
    blend_options: Mapping[str, Any] | None = None,
    *,
    pixels: torch.Tensor | None = None,
) -> SamplePlan:
    """Lay out ``plan`` (drawn for one image) on ``image``, which :func:`takes_fast_path`, to
    be composited with ``blend`` and its ``blend_options`` (see
    :func:`defectaug.batch.composite_visible`), and composite it on ``image`` at once: the
    result gives :attr:`SamplePlan.visible`, :attr:`SamplePlan.mask` and
    :meth:`SamplePlan.source_composite`.

    Each defect takes the next layer of its type at :func:`paint_side` of its size from
    ``reservoir`` and is placed with :func:`~defectaug.plan.layer_box`; with ``confine`` and a
    region of interest in the plan its coverage is cut to the ROI. Its sign (dark or bright) is
    decided by the surface's mean tone under its box (every other pixel, before any defect).
    With a :class:`SampledReservoir` (``blend="alpha"`` only) each defect takes the next layer
    of its type at the generator's render size instead, finished for the image patch it lands
    on (``generator.land``), as :func:`defectaug.batch.render_plan` finishes it. With a
    generator that :func:`samples_per_call` (every blend) the layers are sampled for the plan
    from the image patches they land on, as ``render_plan`` samples them without a reservoir.
    ``pixels``: ``as_chw(image)``, when the caller has it.
    """
    # The alpha blend has no options: merging and checking none would be a good part of the
    # Python a sample costs.
    if blend == "alpha" and not blend_options:
        options: dict[str, Any] = {}
    else:
        options = check_blend_options(blend, blend_options)
    if pixels is None:
        pixels = as_chw(image)
    image_size = plan.image_size
    if tuple(pixels.shape[-2:]) != image_size:
        raise ValueError(
            f"image: the plan was drawn for size {image_size}, got {tuple(pixels.shape[-2:])}"
        )
    roi = plan.roi[0, 0].cpu().numpy() if plan.roi is not None and confine else None
    surface = pixels.numpy()
    if isinstance(reservoir, SampledReservoir):
        if blend != "alpha":
            raise ValueError(
                f"blend: the compiled renderer composites sampled layers with blend='alpha' "
                f"only, got {blend!r}; render them with defectaug.batch.render_plan"
            )
        placed = _place_layers(plan, surface, reservoir, roi)
    elif isinstance(reservoir, LayerReservoir):
        placed = _place_reliefs(plan, surface, reservoir, roi)
    elif isinstance(reservoir, DefectGenerator) and samples_per_call(reservoir):
        placed = _sample_layers(plan, surface, reservoir, roi)
    else:
        raise ValueError(
            f"reservoir: the compiled renderer samples the layers of generators that "
            f"samples_per_call only, got {type(reservoir).__name__}; pass its "
            f"reservoir_for(generator, seed), or render with defectaug.batch.render_plan"
        )
    return SamplePlan(
        plan.type_index[0], placed, image_size, image, plan, blend, options, pixels, surface
    )._composite_source()


def _place_reliefs(
    plan: Plan, surface: np.ndarray, reservoir: LayerReservoir, roi: np.ndarray | None
) -> tuple[PlacedDefect, ...]:
    """Take each defect's relief layer from ``reservoir`` and place it on ``surface`` (the image
    ``[C, H, W]``) with :func:`~defectaug._kernels.place_relief`."""
    painted_type = reservoir.generator.defect_types.index(plan.defect_types[plan.type_index[0]])
    scale = 255.0 if surface.dtype == np.uint8 else 1.0
    place_relief = _kernels().place_relief
    placed = []
    for defect in plan.defects:
        layer = reservoir.take(painted_type, paint_side(defect.size))
        planes, blocks, box_to_layer, top, left, box_h, box_w, sign = place_relief(
            surface,
            scale,
            layer.planes,
            layer.blocks,
            defect,
            layer.bright_draw,
            layer.bright_probability,
        )
        confined = _NOT_CONFINED
        if roi is not None:
            confined = np.ascontiguousarray(roi[top : top + box_h, left : left + box_w], np.float32)
        placed.append(
            PlacedDefect(
                planes, blocks, box_to_layer, confined, top, left, box_h, box_w, sign, layer.tint
            )
        )
    return tuple(placed)


def _place_layers(
    plan: Plan, surface: np.ndarray, reservoir: SampledReservoir, roi: np.ndarray | None
) -> tuple[PlacedLayer, ...]:
    """Take each defect's layer from ``reservoir`` and finish it for the patch it lands on, as
    :func:`defectaug.batch.render_plan` does (the same layers, sizes, landing patches and
    anti-aliasing), for :func:`~defectaug._kernels.composite_layer_tracked`. ``surface`` is the
    image ``[C, H, W]``."""
    generator = reservoir.generator
    image_size = plan.image_size
    channels = surface.shape[0]
    name = plan.defect_types[plan.type_index[0]]
    layer_type = generator.defect_types.index(name)
    if _renders_any_size(type(generator)):
        sizes = [(paint_side(defect.size),) * 2 for defect in plan.defects]
    else:
        sizes = [tuple(int(v) for v in generator.layer_size)] * len(plan.defects)
    # All layers first, in draw order, as the torch renderer takes them.
    taken = [reservoir.take(layer_type, size, channels) for size in sizes]
    landed = wants_background(generator)
    scale = 255.0 if surface.dtype == np.uint8 else 1.0
    placed = []
    for defect, size, ahead in zip(plan.defects, sizes, taken, strict=True):
        box = _landing_box(defect, size, image_size)
        landing = None
        if landed:
            landing = Landing(surface, box.to_image, scale, box.taps != 0)
        planes = generator.land_planes(ahead, channels, landing)
        placed.append(_placed_layer(planes, box, roi, channels))
    return tuple(placed)


def _sample_layers(
    plan: Plan, surface: np.ndarray, generator: DefectGenerator, roi: np.ndarray | None
) -> tuple[PlacedLayer, ...]:
    """Sample the plan's layers from ``generator`` as :func:`defectaug.batch.render_plan`
    samples them without a reservoir (:func:`~defectaug.batch.sample_group`: one ``sample``
    call per render size, seeded from the plan, with the patches of the image before any
    defect that the layers land on, read as ``layer_backgrounds`` reads them), and place them
    as :func:`_place_layers` does (``surface``: the image ``[C, H, W]``)."""
    image_size = plan.image_size
    channels = surface.shape[0]
    defects = plan.defects
    name = plan.defect_types[plan.type_index[0]]
    landed = wants_background(generator)
    scale = 255.0 if surface.dtype == np.uint8 else 1.0
    placed: list[Any] = [None] * len(defects)
    for members, size in render_groups(generator, [defect.size for defect in defects]):
        boxes = [_landing_box(defects[i], size, image_size) for i in members]
        background = None
        if landed:
            patches = [Landing(surface, box.to_image, scale, True).patch(size) for box in boxes]
            background = torch.from_numpy(np.stack(patches))
        layer = sample_group(
            generator,
            [name] * len(members),
            [defects[i].layer_seed for i in members],
            size,
            channels,
            _CPU,
            background,
        )
        stacks = torch.cat([layer.content, layer.alpha], 1).numpy()
        for i, box, planes in zip(members, boxes, stacks, strict=True):
            placed[i] = _placed_layer(planes, box, roi, channels)
    return tuple(placed)


class _LandingBox(NamedTuple):
    """Where a layer lands: :func:`defectaug._kernels.place_box`'s numbers."""

    top: int
    left: int
    height: int
    width: int
    to_image: np.ndarray
    box_to_layer: np.ndarray
    taps: int
    sigma: float


def _landing_box(
    defect: PlannedDefect, layer_size: tuple[int, int], image_size: tuple[int, int]
) -> _LandingBox:
    """Where a layer of ``layer_size`` drawn as ``defect`` lands (compiled ``layer_box``)."""
    return _LandingBox(*_kernels().place_box(defect, *layer_size, *image_size))


def _placed_layer(
    planes: np.ndarray, box: _LandingBox, roi: np.ndarray | None, channels: int
) -> PlacedLayer:
    """A content + alpha layer ``planes [channels + 1, h, w]`` placed on ``box``: low-passed
    as ``warp_layer`` low-passes it, its coverage confined to ``roi``."""
    kernels = _kernels()
    if box.taps:
        planes = kernels.blur_planes(planes, box.taps, box.sigma, True)
    alpha = planes[channels]
    confined = _NOT_CONFINED
    if roi is not None:
        confined = np.ascontiguousarray(
            roi[box.top : box.top + box.height, box.left : box.left + box.width], np.float32
        )
    return PlacedLayer(
        planes[:channels],
        alpha,
        kernels.coverage_blocks(alpha),
        box.box_to_layer,
        confined,
        box.top,
        box.left,
        box.height,
        box.width,
    )


def composite_sample(image: Any, plan: SamplePlan) -> Any:
    """A copy of ``image`` (same type, dtype and shape) with the plan's defects composited with
    its blend.

    The result is settled (:func:`~defectaug._kernels.settle_levels`): pixels that changed
    invisibly farther than ``TELL_MARGIN`` px from what visibly changed are left as they were.
    Images outside the fast path (:func:`takes_fast_path`) are composited on a CPU copy (uint8,
    or float32 for other floats) and converted back; no gradient flows through that copy.
    """
    if image is plan.source:
        return plan.source_composite()
    return _composite(image, plan)[0]


def _composite(
    image: Any, plan: SamplePlan, pixels: torch.Tensor | None = None
) -> tuple[Any, np.ndarray, tuple[int, int]]:
    """``composite_sample`` plus the settled mask of the defects' union box and its corner
    (``pixels``: ``as_chw(image)`` when the caller has it)."""
    if pixels is plan.source_pixels:
        # The source was checked (size, dtype, device) when the plan was laid out on it.
        fast, host, before = True, pixels, plan.source_array
    else:
        if pixels is None:
            pixels = as_chw(image)
        if tuple(pixels.shape[-2:]) != plan.image_size:
            raise ValueError(
                f"image: all images of a sample must share one size; got "
                f"{tuple(pixels.shape[-2:])} and {plan.image_size}"
            )
        fast = takes_fast_path(pixels)
        host = pixels
        before = pixels.numpy() if fast else None
    if not fast:  # e.g. a second image of the sample on CUDA, or in half precision
        if pixels.is_floating_point():
            check_unit_range(pixels, "image")
        host = pixels.detach().to(
            "cpu", torch.uint8 if pixels.dtype == torch.uint8 else torch.float32
        )
        before = host.numpy()
    if fast and before.dtype != np.uint8 and before.flags.c_contiguous:
        # The copy and the range check in one pass (the common case: a float tensor).
        composited = np.empty_like(before)
        if not _kernels().copy_within(before, composited, _LOWEST, _HIGHEST):
            check_unit_range(pixels, "image")  # raises: outside [0, 1] or not finite
    else:
        if fast and before.dtype != np.uint8:
            check_unit_range(pixels, "image")
        composited = before.copy(order="K")  # the layout kept, as torch's clone keeps it
    out = torch.from_numpy(composited)
    window, corner = _composite_defects(composited, before, plan)
    if isinstance(image, PIL.Image.Image):
        array = out.permute(1, 2, 0).numpy()
        result = PIL.Image.fromarray(array[..., 0] if array.shape[2] == 1 else array, image.mode)
        return result, window, corner
    if host is not pixels:
        out = out.to(pixels.device, pixels.dtype)
    return (out if out.ndim == image.ndim else out.reshape(image.shape)), window, corner


def _composite_defects(
    out: np.ndarray, before: np.ndarray, plan: SamplePlan
) -> tuple[np.ndarray, tuple[int, int]]:
    """Composite the plan's shaded defects into ``out [C, H, W]`` in place, in draw order, with
    its blend, and settle it.

    ``before`` holds the pixels before compositing. Returns the label mask (uint8 0/1) of the
    union of the defects' reaches (:attr:`SamplePlan.reach`) and that window's ``(top, left)``;
    ``_INVISIBLE`` and ``(0, 0)`` when less than ``MIN_VISIBLE_PIXELS`` changed visibly.
    """
    defects = plan.defects
    if not defects:
        return _INVISIBLE, (0, 0)
    rounded = out.dtype == np.uint8
    scale, threshold = (255.0, _THRESHOLD_8BIT) if rounded else (1.0, _THRESHOLD_FLOAT)
    if plan.blend == "alpha":
        level, top, left, visible = _kernels().composite_defects(
            out, before, defects, threshold, scale, MIN_VISIBLE_PIXELS
        )
    else:
        level, top, left, visible = _blend_defects(out, before, plan, threshold, scale)
    if not visible:
        return _INVISIBLE, (0, 0)
    return level, (top, left)


def _blend_defects(
    out: np.ndarray, before: np.ndarray, plan: SamplePlan, threshold: float, scale: float
) -> tuple[np.ndarray, int, int, int]:
    """:func:`_composite_defects` with a Poisson blend: ``level, top, left, count`` as
    :func:`~defectaug._kernels.composite_defects` returns them, over the union of the defects'
    reaches."""
    defects = plan.defects
    regions = plan.regions
    windows = plan.reach
    top = min(window[0] for window in windows)
    left = min(window[1] for window in windows)
    height = max(window[0] + window[2] for window in windows) - top
    width = max(window[1] + window[3] for window in windows) - left
    # Change levels of the union window, filled as the defects are composited (compositing never
    # writes outside the reaches, so settling their union window is exact).
    level = np.zeros((height, width), dtype=np.uint8)
    row_start, row_stop, col_start, col_stop = height, 0, width, 0
    kernels = _kernels()
    poisson = _poisson()
    # The Poisson blends read one pixel around what they write (a solved rectangle's fixed
    # border) and work in floats on that window only, written back once at the end: a uint8
    # image is rounded once, as the torch renderer rounds its float composite.
    rounded = scale != 1.0
    image_h, image_w = out.shape[1:]
    work_top, work_left = max(top - 1, 0), max(left - 1, 0)
    work_bottom = min(top + height + 1, image_h)
    work_right = min(left + width + 1, image_w)
    work = out[:, work_top:work_bottom, work_left:work_right].astype(np.float64)
    if rounded:
        work /= scale
    precision = np.float64 if out.dtype == np.float64 else np.float32
    for defect, region in zip(defects, regions, strict=True):
        if isinstance(defect, PlacedLayer):
            content = kernels.warp_content(
                defect.content, defect.blocks, defect.box_to_layer, region.alpha
            )
        else:
            # Shaded on the pixels before any defect, as the torch renderer shades its layers.
            content = kernels.shade_content(
                before,
                defect.planes,
                defect.blocks,
                defect.box_to_layer,
                region.alpha,
                defect.top,
                defect.left,
                defect.sign,
                defect.tint,
                scale,
            )
        rows_and_cols = poisson.blend_defect(
            work,
            (work_top, work_left),
            (image_h, image_w),
            (top, left, height, width),
            content,
            (defect.top, defect.left),
            region,
            plan.blend,
            plan.blend_options,
            precision,
        )
        # The union of the parts written.
        row_start = min(row_start, rows_and_cols[0])
        row_stop = max(row_stop, rows_and_cols[1])
        col_start = min(col_start, rows_and_cols[2])
        col_stop = max(col_stop, rows_and_cols[3])
    poisson.store_window(
        work,
        (work_top, work_left),
        out,
        before,
        level,
        top,
        left,
        threshold,
        scale,
        row_start,
        row_stop,
        col_start,
        col_stop,
    )
    count = kernels.settle_levels(
        out,
        before,
        level,
        top,
        left,
        MIN_VISIBLE_PIXELS,
        rounded,
        row_start,
        row_stop,
        col_start,
        col_stop,
    )
    return level, top, left, count


# The float range check_unit_range accepts.
_LOWEST, _HIGHEST = -UNIT_RANGE_TOLERANCE, 1.0 + UNIT_RANGE_TOLERANCE
# The visibility threshold in raw units: 8 for uint8 (8/255), and as a float32 for float images.
_THRESHOLD_8BIT = round(VISIBILITY * 255.0, 6)
_THRESHOLD_FLOAT = float(np.float32(VISIBILITY))
