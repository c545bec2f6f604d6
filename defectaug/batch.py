"""Batched defect injection and the torch renderer of a :class:`~defectaug.plan.Plan`.

``inject_defects(images [B, C, H, W], ...)`` synthesises defects for a whole batch at once on the
batch's device — layer sampling, placement warps and compositing all run there — and returns
the images, the exact defect masks and a per-image label. :class:`DefectInjector` is its
``nn.Module`` form (kornia-augmentation style) for GPU training loops: move it with ``.to("cuda")``
and call it on batches straight from the data loader.

Injection has three stages: :func:`~defectaug.plan.draw_plan` makes every random choice (which
images, which type, where, how big, the layers' seeds); :func:`render_plan` lays the plan out on
the images (layers sampled, or painted as relief maps and shaded with the pixels they land on,
then warped into place); :func:`composite_visible` composites the layout and labels what visibly
changed. :func:`plan_defects` is the first two. The compiled renderer of
:mod:`defectaug.per_sample` reads the same plans.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectaug._checks import check_choice, check_probability
from defectaug._io import to_uint8, to_unit_batch
from defectaug._seeding import (
    SeedLike,
    as_generator,
    as_seed,
    check_seed,
    mix_seed,
    stream_identity,
)
from defectaug.generators.base import DefectGenerator
from defectaug.generators.procedural import ProceduralGenerator
from defectaug.generators.relief import _ALPHA, bright_sign, shade_relief
from defectaug.labels import (
    BACKGROUND,
    check_label_map,
    check_mask_mode,
    class_masks,
    remap_labels,
)
from defectaug.layer import (
    MASK_THRESHOLD,
    MIN_VISIBLE_PIXELS,
    TELL_MARGIN,
    VISIBILITY,
    DefectLayer,
)
from defectaug.placement import (
    CountArg,
    PlacementOptions,
    Placements,
    RangeArg,
    RoiArg,
    WarpedLayers,
    crop_windows,
    layer_backgrounds,
    layer_geometry,
    resolve_roi,
    warp_layer,
    warp_relief,
)
from defectaug.plan import NO_DEFECT, Plan, draw_plan, paint_side

if TYPE_CHECKING:
    from defectaug.per_sample import LayerReservoir, SampledReservoir
    from defectaug.placement.geometry import LayerGeometry

BlendMode = Literal["alpha", "poisson", "improved_poisson"]
BLEND_MODES: tuple[str, ...] = ("alpha", "poisson", "improved_poisson")

DEFAULT_SCALE: tuple[float, float] = (0.1, 0.3)
DEFAULT_ROTATION: tuple[float, float] = (-180.0, 180.0)
DEFAULT_ASPECT: tuple[float, float] = (0.75, 4.0 / 3.0)


class InjectionResult(NamedTuple):
    """What :func:`inject_defects` returns (unpacks as ``images, masks, labels``).

    Attributes:
        images: ``[B, C, H, W]``, the images with defects, in the input's dtype.
        masks: ``[B, 1, H, W]`` bool, exactly the pixels a defect visibly changed (some channel by
            more than ``VISIBILITY``, 8/255; see :func:`settle_composite`); with
            ``mask_mode="class"`` int64, those pixels holding the defect's class id (index in
            ``defect_types`` + 1, or its ``label_map`` class) and 0 elsewhere.
        labels: ``[B]`` int64, index in ``defect_types`` of each image's defect type (or its
            ``label_map`` class), or ``NO_DEFECT`` (-1) for images left untouched, including
            images whose defects all ended up invisible (below the visibility floor; such images
            come back unchanged). See :mod:`defectaug.labels`.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor


class CallSeeds:
    """Per-call seeds for a component that is called many times, possibly in several processes.

    With ``seed=None`` every call draws from torch's global generator (which the ``DataLoader``
    already seeds per worker). With an int seed, call ``k`` uses ``mix_seed(seed, k, worker id,
    the DataLoader's base seed, distributed rank)``: workers and ranks never repeat each other,
    each epoch draws new defects, and the whole stream is reproducible once the ``DataLoader``'s
    own randomness is (its ``generator=`` argument or ``torch.manual_seed``). A
    ``torch.Generator`` gives the int seed by one draw of it (:func:`~defectaug._seeding.as_seed`).
    """

    def __init__(self, seed: SeedLike) -> None:
        self.seed = None if seed is None else as_seed(seed)
        self.calls = 0

    def next(self) -> int | None:
        if self.seed is None:
            return None
        value = mix_seed(self.seed, self.calls, *stream_identity())
        self.calls += 1
        return value


def resolve_generator(
    generator: str | DefectGenerator, device: torch.device | str | None = None
) -> DefectGenerator:
    """A ``DefectGenerator`` from an instance, a registry name, a folder or a Hub id."""
    if isinstance(generator, DefectGenerator):
        resolved = generator
    elif isinstance(generator, str):
        from defectaug.generators import load_generator

        resolved = load_generator(generator, device=device)
    else:
        raise TypeError(
            f"generator: expected a DefectGenerator, a registered name, a folder or a Hub id, "
            f"got {type(generator).__name__}"
        )
    if resolved.needs_reference:
        raise ValueError(
            f"generator: {type(resolved).__name__} needs reference defect crops for every sample, "
            "which defect injection cannot supply; pick a generator that samples on its own"
        )
    return resolved


def resolve_defect_types(
    defect_types: str | Sequence[str] | None, generator: DefectGenerator
) -> tuple[str, ...]:
    """The defect types to draw from, checked against ``generator`` (``None``: all of them)."""
    if defect_types is None:
        names = tuple(generator.defect_types)
    elif isinstance(defect_types, str):
        names = (defect_types,)
    elif isinstance(defect_types, (Sequence, np.ndarray)):
        names = tuple(defect_types)
    else:
        # Sets and other unordered iterables are refused too: the order decides which type a
        # seeded draw picks, and a set's order changes from process to process.
        raise TypeError(
            f"defect_types: expected a type name (str), a sequence of names or None, "
            f"got {defect_types!r}"
        )
    if not names:
        raise ValueError("defect_types: expected at least one defect type")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"defect_types: expected type names (str), got {name!r}")
        if name not in generator.defect_types:
            raise KeyError(
                f"defect_types: unknown defect type {name!r} for {type(generator).__name__}; "
                f"accepted: {', '.join(generator.defect_types)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"defect_types: duplicate names in {list(names)}")
    return names


@functools.cache
def _renders_any_size(generator_type: type[DefectGenerator]) -> bool:
    return "layer_size" in inspect.signature(generator_type._generate).parameters


def render_sides(generator: DefectGenerator, placements: Placements) -> torch.Tensor | None:
    """Per-defect square side to render at, or ``None`` to render at the native ``layer_size``.

    Generators whose ``sample`` takes a ``layer_size=`` option (the procedural one) render each
    defect near the size it is shown at, :func:`~defectaug.plan.paint_side`, so it stays sharp
    and a background patch keeps its full resolution; the side depends on the defect alone, so
    every renderer and every batch renders a defect alike.
    """
    if not _renders_any_size(type(generator)):
        return None
    return torch.tensor([paint_side(size) for size in placements.size.tolist()], dtype=torch.int64)


def paints_relief(generator: DefectGenerator) -> bool:
    """Whether ``generator`` samples by ``paint`` + shade (:class:`ProceduralGenerator` and
    subclasses that keep its ``_generate``): its layers are then rendered from relief maps,
    shaded with the pixels they land on, by both renderers."""
    return (
        isinstance(generator, ProceduralGenerator)
        and type(generator)._generate is ProceduralGenerator._generate
    )


def _merge_warped(parts: list[tuple[torch.Tensor, WarpedLayers]], n: int) -> WarpedLayers:
    """Put per-group canvases back in defect order on one canvas (padding right and bottom)."""
    canvas_h = max(part.layer.size[0] for _, part in parts)
    canvas_w = max(part.layer.size[1] for _, part in parts)
    first = parts[0][1].layer
    channels = first.content.shape[1]
    device, dtype = first.content.device, first.content.dtype
    content = torch.zeros(n, channels, canvas_h, canvas_w, device=device, dtype=dtype)
    alpha = torch.zeros(n, 1, canvas_h, canvas_w, device=device, dtype=dtype)
    labels = torch.zeros(n, dtype=torch.int64, device=first.labels.device)
    offsets = torch.zeros(n, 2, dtype=torch.int64, device=device)
    boxes = torch.zeros(n, 4, dtype=torch.int64, device=device)
    for members, part in parts:
        h, w = part.layer.size
        pad = (0, canvas_w - w, 0, canvas_h - h)
        members = members.to(device)
        content[members] = F.pad(part.layer.content, pad, mode="replicate")
        alpha[members] = F.pad(part.layer.alpha, pad)
        labels[members.to(labels.device)] = part.layer.labels
        offsets[members] = part.offsets
        boxes[members] = part.boxes
    return WarpedLayers(DefectLayer(content, alpha, labels, first.type_names), offsets, boxes)


def _side_groups(sides: list[int]) -> list[tuple[torch.Tensor, int]]:
    """``(members, side)`` per distinct side, in increasing side."""
    return [
        (torch.tensor([i for i, s in enumerate(sides) if s == side], dtype=torch.int64), side)
        for side in sorted(set(sides))
    ]


def _group_seed(placements: Placements) -> int:
    """One seed for a group's layers, from its defects' own seeds (so from the plan alone)."""
    return mix_seed(*placements.layer_seed.tolist())


def _sampled_layers(
    images: torch.Tensor,
    generator: DefectGenerator,
    placements: Placements,
    names: list[str],
    reservoir: SampledReservoir | None = None,
) -> WarpedLayers:
    """Sample one layer per placement (grouped by render size) and warp it into place.

    Layers are sampled in float32 whatever the images' dtype, so float16, float32 and float64
    images get the same layers (a generator's draws depend on the dtype it draws in). With a
    ``reservoir`` they are taken from it in defect order and finished for the patch each lands
    on (``generator.land``) instead of being sampled from the defects' seeds.
    """
    groups = render_groups(generator, placements.size.tolist())
    channels = images.shape[1]
    taken = None
    if reservoir is not None:
        # In defect order, as the compiled renderer takes them.
        sizes = [None] * len(placements)
        for members, layer_size in groups:
            for i in members:
                sizes[i] = layer_size
        taken = [
            reservoir.take(generator.defect_types.index(name), size, channels)
            for name, size in zip(names, sizes, strict=True)
        ]
    parts = []
    for members, layer_size in groups:
        index = torch.tensor(members, dtype=torch.int64)
        chosen = placements.select(index)
        geometry = layer_geometry(chosen, layer_size)
        background = (
            _layer_backgrounds(images, chosen.image_index, geometry)
            if wants_background(generator)
            else None
        )
        if taken is not None:
            layer = generator.land([taken[i] for i in members], channels, background)
            layer = layer.to(device=images.device, dtype=torch.float32)
        else:
            layer = sample_group(
                generator,
                [names[i] for i in members],
                chosen.layer_seed.tolist(),
                layer_size,
                channels,
                images.device,
                background,
            )
        parts.append((index, warp_layer(layer, geometry)))
    return parts[0][1] if len(parts) == 1 else _merge_warped(parts, len(placements))


def render_groups(
    generator: DefectGenerator, sizes: Sequence[float]
) -> list[tuple[list[int], tuple[int, int]]]:
    """The defects shown ``sizes`` px large grouped by the size their layers render at, as
    every renderer groups them: ``(members, (h, w))`` per group, by increasing side (at
    :func:`~defectaug.plan.paint_side` of each size, for generators whose ``sample`` takes a
    ``layer_size=``), or one group at the generator's native ``layer_size``."""
    if not _renders_any_size(type(generator)):
        return [(list(range(len(sizes))), tuple(int(v) for v in generator.layer_size))]
    sides = [paint_side(size) for size in sizes]
    return [(members.tolist(), (side, side)) for members, side in _side_groups(sides)]


def wants_background(generator: DefectGenerator) -> bool:
    """Whether ``generator``'s layers are sampled (or landed) with the image patches they land
    on (``needs_background`` or ``accepts_background``)."""
    return generator.needs_background or getattr(generator, "accepts_background", False)


def sample_group(
    generator: DefectGenerator,
    names: list[str],
    seeds: list[int],
    layer_size: tuple[int, int],
    channels: int,
    device: torch.device,
    background: torch.Tensor | None,
) -> DefectLayer:
    """The layers of one group of :func:`render_groups` (its defects' type ``names`` and layer
    ``seeds``), sampled as every renderer samples them: one ``sample`` call seeded from the
    group's layer seeds, in float32 (so every image dtype gets the same layers), at
    ``layer_size`` for generators that render at any size, with the landing patches
    ``background [n, C, h, w]`` (or ``None``)."""
    return generator.sample(
        len(names),
        names,
        generator=mix_seed(*seeds),
        device=device,
        dtype=torch.float32,
        channels=channels,
        background=background,
        **({"layer_size": layer_size} if _renders_any_size(type(generator)) else {}),
    )


#: Images a uint8 batch's landing patches are resampled from at a time: ``grid_sample`` reads
#: whole images, so they are converted to float a few at a time, never the whole batch.
BACKGROUND_CHUNK = 8


def _layer_backgrounds(
    images: torch.Tensor, image_index: torch.Tensor, geometry: LayerGeometry
) -> torch.Tensor:
    """:func:`~defectaug.placement.layer_backgrounds` in float32 (uint8 read as ``x / 255``)."""
    if images.dtype != torch.uint8:
        return layer_backgrounds(images.to(torch.float32), image_index, geometry)
    parts = []
    for start in range(0, len(image_index), BACKGROUND_CHUNK):
        part = slice(start, start + BACKGROUND_CHUNK)
        sources = _as_unit(images[image_index[part].to(images.device)])
        chunk = replace(geometry, to_image=geometry.to_image[part])
        parts.append(layer_backgrounds(sources, torch.arange(len(sources)), chunk))
    return torch.cat(parts)


def _as_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 ``pixels`` as float32 ``x / 255``; float ones as they are."""
    return pixels.to(torch.float32) / 255.0 if pixels.dtype == torch.uint8 else pixels


def _unit_windows(
    images: torch.Tensor, image_index: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """:func:`~defectaug.placement.crop_windows` of ``images``, a uint8 batch read as ``x / 255``
    (converted window by window)."""
    if images.dtype != torch.uint8:
        return crop_windows(images, image_index, offsets, size)
    # crop_windows masks integer maps with a bitwise and, meant for bool ones.
    _, _, height, width = images.shape
    device = images.device
    image_index, offsets = image_index.to(device), offsets.to(device)
    rows = offsets[:, :1] + torch.arange(size[0], device=device)
    cols = offsets[:, 1:] + torch.arange(size[1], device=device)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None]
    gathered = images[
        image_index[:, None, None],
        :,
        rows.clamp(0, height - 1)[:, :, None],
        cols.clamp(0, width - 1)[:, None, :],
    ]
    return _as_unit(gathered.permute(0, 3, 1, 2)) * inside[:, None]


def _relief_layers(
    images: torch.Tensor,
    generator: ProceduralGenerator,
    placements: Placements,
    names: list[str],
    reservoir: LayerReservoir | None,
) -> WarpedLayers:
    """Relief maps per placement, warped into place and shaded with the pixels under them.

    The maps come from ``reservoir`` (taken in defect order, as the compiled renderer takes them)
    or are painted per render size from the defects' seeds. Shading after the warp, with each
    defect's sign decided by the mean tone under its box (every other pixel), is what the
    compiled renderer does per pixel, so both give the same image for the same maps; where
    defects of one image overlap, a later one is shaded here on the pixels before any defect,
    there on the earlier defect.
    """
    device = images.device
    sizes = placements.size.tolist()
    sides = [paint_side(size) for size in sizes]
    type_indices = [generator.defect_types.index(name) for name in names]
    taken = (
        [reservoir.take(index, side) for index, side in zip(type_indices, sides, strict=True)]
        if reservoir is not None
        else None
    )
    # A uint8 batch is read where the layers land only.
    surface = images if images.dtype in (torch.float64, torch.uint8) else images.to(torch.float32)
    parts = []
    for members, side in _side_groups(sides):
        chosen = placements.select(members)
        geometry = layer_geometry(chosen, (side, side))
        labels = torch.tensor([type_indices[i] for i in members.tolist()], dtype=torch.int64)
        if taken is not None:
            layers = [taken[i] for i in members.tolist()]
            planes = torch.from_numpy(np.stack([layer.planes for layer in layers])).to(device)
            scalars = torch.tensor(
                [[layer.tint, layer.bright_draw, layer.bright_probability] for layer in layers],
                dtype=torch.float32,
                device=device,
            )
            tint, draw, probability = scalars.unbind(1)
        else:
            maps = generator.paint(
                labels,
                generator=as_generator(_group_seed(chosen), device),
                layer_size=(side, side),
                device=device,
            )
            planes, tint = maps.planes, maps.tint
            draw, probability = maps.bright_draw, maps.bright_probability
        warped = warp_relief(planes.to(torch.float32), geometry)
        tone = torch.stack(
            [
                _as_unit(surface[image, :, y0:y1:2, x0:x1:2]).mean()
                for image, (x0, y0, x1, y1) in zip(
                    chosen.image_index.tolist(), geometry.boxes.tolist(), strict=True
                )
            ]
        )
        sign = bright_sign(draw, probability, tone.to(draw.dtype))
        under = _unit_windows(surface, chosen.image_index, geometry.offsets, geometry.canvas_size)
        content = shade_relief(warped.to(under.dtype), under, sign, tint)
        alpha = warped[:, _ALPHA : _ALPHA + 1].clamp(0.0, 1.0).to(content.dtype)
        layer = DefectLayer(content, alpha, labels.to(device), generator.defect_types)
        parts.append(
            (members, WarpedLayers(layer, geometry.offsets.to(device), geometry.boxes.to(device)))
        )
    return parts[0][1] if len(parts) == 1 else _merge_warped(parts, len(placements))


def check_blend(blend: str) -> str:
    """``blend`` if it is one of :data:`BLEND_MODES`."""
    return check_choice(blend, BLEND_MODES, "blend")


#: The options each blend takes (``blend_options``), with their defaults: the guidance ``mode``
#: of :func:`~defectaug.compositing.poisson_blend` and, for ``improved_poisson``, the ``band``
#: of :func:`~defectaug.compositing.improved_poisson_blend`.
BLEND_OPTIONS: dict[str, dict[str, Any]] = {
    "alpha": {},
    "poisson": {"mode": "normal"},
    "improved_poisson": {"mode": "mixed", "band": 5},
}


def check_blend_options(blend: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``blend``'s options: its defaults (``BLEND_OPTIONS``) updated with ``options``, checked."""
    defaults = BLEND_OPTIONS[check_blend(blend)]
    given = dict(options or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        accepted = ", ".join(defaults) or "none"
        raise ValueError(
            f"blend_options: unknown option(s) {', '.join(unknown)} for blend={blend!r}; "
            f"accepted: {accepted}"
        )
    from defectaug.compositing.poisson import check_band, check_mode

    merged = {**defaults, **given}
    if "mode" in merged:
        check_mode(merged["mode"])
    if "band" in merged:
        check_band(merged["band"])
    return merged


@dataclass(frozen=True)
class DefectPlan:
    """A :class:`~defectaug.plan.Plan` laid out by the torch renderer (:func:`render_plan`),
    ready to composite onto the images it was laid out on.

    Attributes:
        labels: ``[B]`` int64, index in ``defect_types`` of each image's defect type (one type per
            image, shared by all its defects), or ``NO_DEFECT``.
        defect_types: the type names ``labels`` index.
        placements: the placement draws (``N`` defects).
        warped: the placed layers (``None`` when no image received a defect).
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)``, tight box of each defect's mask in the image
            (all zeros when its mask ended up empty).
        image_size: ``(H, W)`` the plan was drawn for.
        drawn: the plan itself.
    """

    labels: torch.Tensor
    defect_types: tuple[str, ...]
    placements: Placements
    warped: WarpedLayers | None
    boxes: torch.Tensor
    image_size: tuple[int, int]
    drawn: Plan | None = field(default=None, compare=False, repr=False)

    @property
    def applied(self) -> torch.Tensor:
        """``[B]`` bool: images that receive at least one defect."""
        return self.labels != NO_DEFECT


def plan_defects(
    images: torch.Tensor,
    defect_types: Sequence[str],
    generator: DefectGenerator,
    *,
    p: float = 1.0,
    count: CountArg = (1, 1),
    scale: RangeArg = DEFAULT_SCALE,
    rotation: RangeArg = DEFAULT_ROTATION,
    aspect: RangeArg = DEFAULT_ASPECT,
    min_size: int = 8,
    roi: RoiArg = None,
    confine: bool = True,
    seed: SeedLike = None,
) -> DefectPlan:
    """Draw every random choice for defects on ``images [B, C, H, W]`` (see :func:`inject_defects`)
    and lay it out: :func:`~defectaug.plan.draw_plan`, then :func:`render_plan`."""
    options = PlacementOptions.check(
        count=count,
        scale=scale,
        rotation=rotation,
        aspect=aspect,
        min_size=min_size,
        roi=roi,
        confine=confine,
    )
    batch, _, height, width = images.shape
    plan = draw_plan(
        options,
        defect_types,
        batch,
        (height, width),
        seed,
        p=p,
        roi=lambda: resolve_roi(roi, _as_unit(images) if _reads_images(roi) else images),
    )
    return render_plan(images, plan, generator, confine=confine)


def _reads_images(roi: RoiArg) -> bool:
    """Whether ``roi`` is computed from the images' pixels (``"auto"`` or a callable)."""
    return isinstance(roi, str) or callable(roi)


def _check_fits(images: torch.Tensor, batch_size: int, image_size: tuple[int, int]) -> None:
    if images.shape[0] != batch_size or tuple(images.shape[-2:]) != image_size:
        raise ValueError(
            f"images: the plan was drawn for {batch_size} image(s) of size "
            f"{image_size[0]}x{image_size[1]}, got {tuple(images.shape)}"
        )


def render_plan(
    images: torch.Tensor,
    plan: Plan,
    generator: DefectGenerator,
    *,
    confine: bool = True,
    reservoir: LayerReservoir | SampledReservoir | None = None,
) -> DefectPlan:
    """Lay ``plan`` out on ``images [B, C, H, W]`` for the torch renderer, on their device.

    Each defect's layer is placed with :func:`~defectaug.plan.layer_box`. Procedural generators
    (:func:`paints_relief`) give relief maps, taken from ``reservoir`` (a ``LayerReservoir``)
    when one is given (as the compiled renderer does) or painted from the defects' seeds,
    shaded with the image pixels each lands on; other generators sample layers from the
    defects' seeds, or take them from ``reservoir`` (a ``SampledReservoir``, for generators
    that ``samples_ahead``), with the image patch each layer will cover when they take a
    ``background`` (``needs_background`` or ``accepts_background``; :func:`layer_backgrounds`).
    With ``confine`` and a region of interest in the plan, each defect's alpha is cut to it.
    Layers are drawn in float32 on the images' device: the layout is the same for every dtype
    on one device. uint8 images are read as ``x / 255`` where the layers land only.
    """
    _check_fits(images, plan.batch_size, plan.image_size)
    placements = plan.placements
    labels = plan.labels(images.device)
    if not plan.defects:
        boxes = torch.zeros(0, 4, dtype=torch.int64, device=images.device)
        return DefectPlan(labels, plan.defect_types, placements, None, boxes, plan.image_size, plan)
    names = [plan.defect_types[plan.type_index[defect.image]] for defect in plan.defects]
    if paints_relief(generator):
        warped = _relief_layers(images, generator, placements, names, reservoir)
    else:
        warped = _sampled_layers(images, generator, placements, names, reservoir)
    if plan.roi is not None and confine:
        inside = crop_windows(plan.roi, placements.image_index, warped.offsets, warped.layer.size)
        confined_alpha = warped.layer.alpha * inside.to(warped.layer.alpha.dtype)
        warped = WarpedLayers(
            DefectLayer(
                warped.layer.content, confined_alpha, warped.layer.labels, warped.layer.type_names
            ),
            warped.offsets,
            warped.boxes,
        )
    tight = warped.layer.bounding_box(MASK_THRESHOLD)
    shift = warped.offsets[:, [1, 0, 1, 0]]
    nonempty = (tight[:, 2] > tight[:, 0])[:, None]
    boxes = torch.where(nonempty, tight + shift, torch.zeros_like(tight))
    return DefectPlan(labels, plan.defect_types, placements, warped, boxes, plan.image_size, plan)


class VisibleComposite(NamedTuple):
    """What :func:`composite_visible` returns.

    Attributes:
        images: ``[B, C, H, W]`` the settled composite.
        masks: ``[B, 1, H, W]`` bool, the pixels the defects visibly changed.
        labels: ``[B]`` the plan's labels, ``NO_DEFECT`` where nothing visibly changed.
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` per defect, the tight box of the mask pixels
            in the region that defect changed (all zeros when it shows nowhere).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """``mask [B, 1, H, W]`` bool grown by one pixel (3 x 3 square)."""
    return F.max_pool2d(mask.to(torch.float32), 3, stride=1, padding=1) > 0


def settle_composite(
    before: torch.Tensor, after: torch.Tensor, levels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Make a composite agree with its label mask: ``(images, masks [B, 1, H, W] bool)``.

    The one definition of a defect's label mask, shared by every path (the per-sample path runs
    the same rule compiled, :func:`defectaug._kernels.settle_window`):

    * the mask is where some channel of ``after`` differs from ``before`` by more than
      ``VISIBILITY`` (8/255), plus one-pixel holes whose four neighbours are in it;
    * an image whose mask has fewer than ``MIN_VISIBLE_PIXELS`` pixels is returned as ``before``
      with an empty mask (its defects are invisible);
    * no tells: pixels within 1 px (chessboard) of the mask keep their change (below
      ``VISIBILITY``), at 2 px (``TELL_MARGIN``) half of it, and farther ones are restored to
      ``before``.

    ``levels=255`` measures the composite as the 8-bit image it will be stored as: ``after`` is
    rounded to multiples of 1/255 first (``before`` must already be).
    """
    if levels is not None:
        after = torch.round(after * levels) / levels
    delta = after - before
    change = delta.abs().amax(1, keepdim=True)
    if levels is None:
        mask = change > VISIBILITY
    else:
        # Compared in whole levels: in floats a change of exactly 8 / 255 lands on either side.
        mask = torch.round(change * levels) > round(VISIBILITY * levels, 6)
    holes = torch.zeros_like(mask)
    holes[..., 1:-1, 1:-1] = (
        mask[..., :-2, 1:-1] & mask[..., 2:, 1:-1] & mask[..., 1:-1, :-2] & mask[..., 1:-1, 2:]
    )
    mask = mask | holes
    shown = mask.sum(dim=(1, 2, 3)) >= MIN_VISIBLE_PIXELS
    mask = mask & shown.view(-1, 1, 1, 1)
    near = _dilate(mask)
    reach = near
    for _ in range(TELL_MARGIN - 1):
        reach = _dilate(reach)
    fading = reach & ~near
    half = before + 0.5 * delta
    if levels is not None:
        half = torch.round(half * levels) / levels
    out = torch.where(near, after, torch.where(fading, half, before))
    return out, mask


#: Pixels the ``"poisson"`` blend solves beyond the defect's mask (alpha >= 0.5): the fade of its
#: soft edge, so the guidance gradients at the edge, and with them its contrast, are kept.
POISSON_MARGIN = 3

#: A Poisson-blended defect keeps at least this share of its alpha-blended contrast (mean signed
#: change under its mask); one that kept less is mixed with the alpha blend until it does.
KEPT_CONTRAST = 0.6


def _mean_change(
    image: torch.Tensor, under: torch.Tensor, core: torch.Tensor, offsets: torch.Tensor, size
) -> torch.Tensor:
    """Per item, the mean of ``image`` minus ``under`` (its window) over ``core [n, 1, h, w]``."""
    window = crop_windows(image, torch.arange(len(image), device=image.device), offsets, size)
    # float32 sums: a float16 sum passes 65504 (its largest value) on a ~150x150 RGB defect.
    weight = core.to(torch.float32)
    total = ((window - under).float() * weight).sum(dim=(1, 2, 3))
    return total / (weight.sum(dim=(1, 2, 3)) * image.shape[1]).clamp_min(1.0)


def _blend_masks(alpha: torch.Tensor, blend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A Poisson blend's ``(core, mask it solves with)``, bool ``[n, 1, h, w]``, from the layers'
    ``alpha``: the core for ``"improved_poisson"``, grown by ``POISSON_MARGIN`` for ``"poisson"``.
    """
    # A faint layer (a thin scratch shrunk a lot) may peak below MASK_THRESHOLD and still show
    # under alpha blending: its core is then where it reaches half its peak, else both blends
    # would solve over nothing and erase it.
    peak = alpha.amax(dim=(1, 2, 3), keepdim=True)
    core = (alpha >= (0.5 * peak).clamp(max=MASK_THRESHOLD)) & (alpha > 0)
    if blend != "poisson":
        return core, core
    footprint = core
    for _ in range(POISSON_MARGIN):
        footprint = _dilate(footprint)
    return core, footprint


def _blend_round(
    background: torch.Tensor,
    content: torch.Tensor,
    alpha: torch.Tensor,
    offsets: torch.Tensor,
    size: tuple[int, int],
    blend: str,
    options: Mapping[str, Any],
) -> torch.Tensor:
    """One defect per image of ``background``, composited with ``blend`` and its ``options``
    (before settling)."""
    from defectaug import compositing

    alpha_blended = compositing.alpha_composite(background, content, alpha, offsets)
    if blend == "alpha":
        return alpha_blended
    index = torch.arange(len(background), device=background.device)
    under = crop_windows(background, index, offsets, size)
    # The soft composite is the source of both Poisson blends: the procedural generator's raw
    # content carries the defect's shape in alpha alone (a spot's content is darkened everywhere),
    # so guiding by it would blend the defect away.
    soft = under + (content - under) * alpha
    core, solved = _blend_masks(alpha, blend)
    if blend == "poisson":
        blended = compositing.poisson_blend(background, soft, solved, offsets, **options)
    else:
        # Keep the soft composite inside the mask, not the raw content: the mask's rim sits
        # at alpha 0.5, and a full-strength rim leaves a step the band smears into a halo.
        blended = compositing.improved_poisson_blend(background, soft, solved, offsets, **options)
    # Keep the defect's contrast: a dark spot stays a dark spot.
    wanted = _mean_change(alpha_blended, under, core, offsets, size)
    kept = _mean_change(blended, under, core, offsets, size)
    lost = (kept * wanted.sign() < KEPT_CONTRAST * wanted.abs()) & (wanted != 0)
    if bool(lost.any()):
        share = ((KEPT_CONTRAST * wanted - kept) / (wanted - kept)).clamp(0.0, 1.0)
        share = torch.where(lost, share, torch.zeros_like(share)).view(-1, 1, 1, 1)
        share = share.to(blended.dtype)
        blended = blended + (alpha_blended - blended) * share
    return blended


def composite_visible(
    images: torch.Tensor,
    plan: DefectPlan,
    blend: str = "alpha",
    levels: int | None = None,
    blend_options: Mapping[str, Any] | None = None,
) -> VisibleComposite:
    """Composite ``plan`` onto ``images [B, C, H, W]``, settle it and label what shows.

    Defects of one image are composited in draw order (later ones over earlier ones); the result
    is then settled (:func:`settle_composite`), so the masks are exactly what visibly changed and
    nothing changes farther than ``TELL_MARGIN`` px from them. Images the plan leaves untouched,
    or whose defects all end up invisible, come back unchanged with ``NO_DEFECT``. Poisson blends
    solve over a rectangle around each defect, so they also ease the tone just around it, as
    seamless cloning does; where that eases the defect's own contrast below ``KEPT_CONTRAST`` of
    the alpha blend's, the alpha blend is mixed back in. ``levels=255``: see
    :func:`settle_composite`. ``blend_options``: see :data:`BLEND_OPTIONS`.

    uint8 ``images`` (``x`` standing for ``x / 255``) are measured at ``levels=255`` and come
    back as uint8, converted to float only in a window around each image's defects.
    """
    options = check_blend_options(blend, blend_options)
    _check_fits(images, plan.placements.batch_size, plan.image_size)
    if images.dtype == torch.uint8:
        if levels not in (None, 255):
            raise ValueError(f"levels: a uint8 batch is measured in 255 levels, got {levels!r}")
        return _composite_regions(images, plan, blend, options)
    batch, _, height, width = images.shape
    device = images.device
    if plan.warped is None:
        masks = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        boxes = torch.zeros(0, 4, dtype=torch.int64, device=device)
        return VisibleComposite(images, masks, plan.labels.to(device), boxes)
    layer = plan.warped.layer.to(device=device, dtype=images.dtype)
    offsets = plan.warped.offsets.to(device)
    image_index = plan.placements.image_index.to(device)
    rows = torch.arange(height, device=device).expand(batch, height)
    cols = torch.arange(width, device=device).expand(batch, width)
    out, reach_rows, reach_cols = _blend_rounds(
        images, plan, layer, offsets, image_index, (rows, cols), blend, options
    )
    out, masks = settle_composite(images, out, levels)
    shown = masks.flatten(1).any(dim=1)
    labels = torch.where(shown, plan.labels.to(device), NO_DEFECT)
    boxes = _visible_boxes(masks, image_index, reach_rows, reach_cols)
    return VisibleComposite(out, masks, labels, boxes)


def _blend_rounds(
    images: torch.Tensor,
    plan: DefectPlan,
    layer: DefectLayer,
    offsets: torch.Tensor,
    slots: torch.Tensor,
    spans: tuple[torch.Tensor, torch.Tensor],
    blend: str,
    options: Mapping[str, Any],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite the plan's placed ``layer`` onto ``images``, defect ``i`` at ``offsets[i]`` on
    image ``slots[i]``, in draw order (later defects over earlier ones), before settling.

    Returns the composite and, per defect, the image rows ``[N, H]`` and columns ``[N, W]`` it
    changed (its reach, for its box), ``spans`` holding the image row and column of each row and
    column of each of ``images``.
    """
    rows, cols = spans
    height, width = plan.image_size
    device = images.device
    reach_rows = torch.zeros(len(slots), height, dtype=torch.bool, device=device)
    reach_cols = torch.zeros(len(slots), width, dtype=torch.bool, device=device)
    out = images
    rank = plan.placements.rank.to(device)
    for round_rank in range(int(plan.placements.rank.max()) + 1):
        chosen = (rank == round_rank).nonzero()[:, 0]
        targets = slots[chosen]
        # Each image appears at most once per round and targets are sorted, so a full round
        # is all of images in order.
        full = len(targets) == len(images)
        background = out if full else out[targets]
        blended = _blend_round(
            background,
            layer.content[chosen],
            layer.alpha[chosen],
            offsets[chosen],
            layer.size,
            blend,
            options,
        )
        changed = (blended != background).any(dim=1)
        reach_rows[chosen[:, None], rows[targets]] = changed.any(dim=2)
        reach_cols[chosen[:, None], cols[targets]] = changed.any(dim=1)
        out = blended if full else out.index_copy(0, targets, blended)
    return out, reach_rows, reach_cols


def _reach(
    alpha: torch.Tensor,
    offsets: torch.Tensor,
    blend: str,
    options: Mapping[str, Any],
    image_size: tuple[int, int],
) -> list[tuple[int, int, int, int]]:
    """Per placed layer, the image rows and columns ``(row0, row1, col0, col1)`` (ends excluded,
    inside the image) its blend reads or changes: its canvas and, for the Poisson blends, the
    region they solve in."""
    from defectaug.compositing.improved import band_windows
    from defectaug.compositing.poisson import solved_rectangles

    height, width = image_size
    canvas_h, canvas_w = alpha.shape[-2:]
    corners = [(top, left) for top, left in offsets.tolist()]
    boxes = [(top, top + canvas_h, left, left + canvas_w) for top, left in corners]
    if blend != "alpha":
        solved = _blend_masks(alpha, blend)[1][:, 0]
        solves = (
            solved_rectangles(solved, corners, image_size)
            if blend == "poisson"
            else band_windows(solved, corners, image_size, options["band"])
        )
        boxes = [
            box if other is None else _union(box, other)
            for box, other in zip(boxes, solves, strict=True)
        ]
    return [(max(r0, 0), min(r1, height), max(c0, 0), min(c1, width)) for r0, r1, c0, c1 in boxes]


def _union(
    first: tuple[int, int, int, int], second: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """The box ``(row0, row1, col0, col1)`` around both boxes."""
    return (
        min(first[0], second[0]),
        max(first[1], second[1]),
        min(first[2], second[2]),
        max(first[3], second[3]),
    )


def _composite_regions(
    images: torch.Tensor, plan: DefectPlan, blend: str, options: Mapping[str, Any]
) -> VisibleComposite:
    """:func:`composite_visible` of a uint8 batch at ``levels=255``, in float over windows only.

    Each image with defects gets one window around everything its defects' blends read or change
    (:func:`_reach`), plus the ``TELL_MARGIN`` settling looks at; all windows take the largest
    one's size, so each round's defects are still blended in one call, and are shifted to lie in
    the image. The blends then compute exactly what they do on the whole image: a window's edge
    is either the image's edge or beyond the regions they read, which are all they clip to. Every
    pixel outside the windows is left unchanged by the rule anyway, so the result is that of the
    whole image converted to float, bit for bit, with the input's bytes copied everywhere else.
    """
    batch, _, height, width = images.shape
    device = images.device
    out = images.clone()
    masks = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
    if plan.warped is None:
        boxes = torch.zeros(0, 4, dtype=torch.int64, device=device)
        return VisibleComposite(out, masks, plan.labels.to(device), boxes)
    layer = plan.warped.layer.to(device=device, dtype=torch.float32)
    offsets = plan.warped.offsets.to(device)
    image_index = plan.placements.image_index.to(device)
    holders = sorted(set(image_index.tolist()))
    regions = dict.fromkeys(holders)
    reach = _reach(layer.alpha, offsets, blend, options, (height, width))
    for image, box in zip(image_index.tolist(), reach, strict=True):
        regions[image] = box if regions[image] is None else _union(regions[image], box)
    windows = {
        image: (
            max(r0 - TELL_MARGIN, 0),
            min(r1 + TELL_MARGIN, height),
            max(c0 - TELL_MARGIN, 0),
            min(c1 + TELL_MARGIN, width),
        )
        for image, (r0, r1, c0, c1) in regions.items()
    }
    size = (
        max(r1 - r0 for r0, r1, _, _ in windows.values()),
        max(c1 - c0 for _, _, c0, c1 in windows.values()),
    )
    corners = torch.tensor(
        [
            (min(windows[image][0], height - size[0]), min(windows[image][2], width - size[1]))
            for image in holders
        ],
        dtype=torch.int64,
        device=device,
    )
    slot_of = torch.full((batch,), -1, dtype=torch.int64, device=device)
    slot_of[holders] = torch.arange(len(holders), device=device)
    slots = slot_of[image_index]
    before = _unit_windows(images, torch.tensor(holders, device=device), corners, size)
    local = offsets - corners[slots]

    rows = corners[:, :1] + torch.arange(size[0], device=device)
    cols = corners[:, 1:] + torch.arange(size[1], device=device)
    after, reach_rows, reach_cols = _blend_rounds(
        before, plan, layer, local, slots, (rows, cols), blend, options
    )
    settled, window_masks = settle_composite(before, after, 255)
    settled = to_uint8(settled)
    for slot, (image, (top, left)) in enumerate(zip(holders, corners.tolist(), strict=True)):
        window = (image, slice(None), slice(top, top + size[0]), slice(left, left + size[1]))
        out[window] = settled[slot]
        masks[window] = window_masks[slot]
    shown = masks.flatten(1).any(dim=1)
    labels = torch.where(shown, plan.labels.to(device), NO_DEFECT)
    boxes = _visible_boxes(masks, image_index, reach_rows, reach_cols)
    return VisibleComposite(out, masks, labels, boxes)


def _extent(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``occupied [N, L]``, its first and one-past-last ``True`` (``(0, 0)`` if none)."""
    length = occupied.shape[1]
    index = torch.arange(length, device=occupied.device)
    first = torch.where(occupied, index, length).amin(dim=1)
    stop = torch.where(occupied, index + 1, 0).amax(dim=1)
    empty = ~occupied.any(dim=1)
    return first.masked_fill(empty, 0), stop.masked_fill(empty, 0)


def _visible_boxes(
    masks: torch.Tensor,
    image_index: torch.Tensor,
    reach_rows: torch.Tensor,
    reach_cols: torch.Tensor,
) -> torch.Tensor:
    """Per defect, the tight box ``[N, 4]`` of its image's mask pixels in the rows and columns it
    changed (``reach_rows [N, H]`` x ``reach_cols [N, W]``); zeros where there are none.

    Each defect is looked at in the window its reach spans only (its canvas window, and for the
    Poisson blends the solved rectangle, which can stick out of it), so the memory is that of the
    windows, not ``N`` image-sized maps.
    """
    height, width = masks.shape[-2:]
    device = masks.device
    top, bottom = _extent(reach_rows)
    left, right = _extent(reach_cols)
    span_h = max(int((bottom - top).max()), 1)
    span_w = max(int((right - left).max()), 1)
    rows = top[:, None] + torch.arange(span_h, device=device)
    cols = left[:, None] + torch.arange(span_w, device=device)
    rows_in = reach_rows.gather(1, rows.clamp(max=height - 1)) & (rows < height)
    cols_in = reach_cols.gather(1, cols.clamp(max=width - 1)) & (cols < width)
    window = crop_windows(masks, image_index, torch.stack([top, left], dim=1), (span_h, span_w))
    own = window[:, 0] & rows_in[:, :, None] & cols_in[:, None, :]
    x0, x1 = _extent(own.any(dim=1))
    y0, y1 = _extent(own.any(dim=2))
    nonempty = x1 > x0
    boxes = torch.stack([x0 + left, y0 + top, x1 + left, y1 + top], dim=1)
    return torch.where(nonempty[:, None], boxes, torch.zeros_like(boxes))


def composite_plan(
    images: torch.Tensor,
    plan: DefectPlan,
    blend: str = "alpha",
    levels: int | None = None,
    blend_options: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Composite ``plan`` onto ``images [B, C, H, W]`` and return the new images.

    The images of :func:`composite_visible` (settled: see there).
    """
    return composite_visible(images, plan, blend, levels, blend_options).images


def apply_plan(
    images: torch.Tensor,
    plan: DefectPlan,
    blend: str = "alpha",
    blend_options: Mapping[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`composite_plan` plus the defect masks: ``(images, masks [B, 1, H, W] bool)``.

    The masks are what visibly changed (:func:`settle_composite`), not the layers' alpha.
    """
    result = composite_visible(images, plan, blend, blend_options=blend_options)
    return result.images, result.masks


_BATCH_HINT = (
    "scale [0, 255] float batches by 1 / 255 (uint8 batches are taken as they are) and inject "
    "before normalising"
)


class _Labelling(NamedTuple):
    """The requested types, ``label_map`` and ``mask_mode`` of an injection, checked."""

    defect_types: tuple[str, ...]
    label_map: dict[str, int] | None
    mask_mode: str

    @classmethod
    def check(cls, defect_types: tuple[str, ...], label_map: Any, mask_mode: Any) -> _Labelling:
        mode = check_mask_mode(mask_mode)
        reserved = {NO_DEFECT: "the 'no defect' label"}
        if mode == "class":
            reserved[BACKGROUND] = "the background of class masks"
        return cls(defect_types, check_label_map(label_map, defect_types, reserved=reserved), mode)


def _injected(
    images: torch.Tensor,
    plan: DefectPlan,
    blend: str,
    blend_options: Mapping[str, Any] | None,
    labelling: _Labelling,
) -> InjectionResult:
    result = composite_visible(images, plan, blend, None, blend_options)
    types, label_map, mask_mode = labelling
    masks = result.masks
    if mask_mode == "class":
        masks = class_masks(masks, result.labels, types, label_map)
    return InjectionResult(result.images, masks, remap_labels(result.labels, types, label_map))


def inject_defects(
    images: torch.Tensor,
    defect_types: str | Sequence[str] | None = None,
    generator: str | DefectGenerator = "procedural",
    *,
    p: float = 1.0,
    blend: BlendMode = "alpha",
    blend_options: Mapping[str, Any] | None = None,
    count: CountArg = (1, 1),
    scale: RangeArg = DEFAULT_SCALE,
    rotation: RangeArg = DEFAULT_ROTATION,
    aspect: RangeArg = DEFAULT_ASPECT,
    min_size: int = 8,
    roi: RoiArg = None,
    confine: bool = True,
    seed: SeedLike = None,
    label_map: Mapping[str, int] | None = None,
    mask_mode: str = "binary",
) -> InjectionResult:
    """Put synthetic defects on a batch of images, on the batch's device.

    Arguments follow the entry points' one convention (as :class:`DefectInjector`,
    :class:`~defectaug.transforms.DefectInject` and
    :class:`~defectaug.dataset.SyntheticDefectDataset`): ``images, defect_types, generator``
    positionally, the rest by keyword; labels and masks as :mod:`defectaug.labels` states.

    Args:
        images: ``[B, C, H, W]``, C = 1 or 3: float in [0, 1], or uint8, which stays uint8: only
            a window around each image's defects is converted to float32 (``x / 255``),
            composited, measured as 8-bit levels (``levels=255`` of :func:`settle_composite`) and
            rounded back; every other pixel keeps the input's byte. The result is, bit for bit,
            that of the batch's float32 copy at 8-bit levels. A callable or ``"auto"`` ``roi``
            is given the batch as float.
        defect_types: type name(s) to draw from (default: all of the generator's). Each image gets
            one type, drawn uniformly, shared by all of its defects.
        generator: a ``DefectGenerator`` or a name / folder / Hub id for ``load_generator``.
        p: probability that an image receives defects.
        blend: ``"alpha"`` (alpha compositing), ``"poisson"`` (seamless gradient-domain blend) or
            ``"improved_poisson"`` (Poisson blend with a feathered band, less colour bleeding).
        blend_options: options of the blend (:data:`BLEND_OPTIONS`: ``mode`` of both Poisson
            blends, ``"normal"`` or ``"mixed"``; ``band`` of ``"improved_poisson"``).
        count: defects per image, an int or an inclusive ``(min, max)`` range.
        scale: longer side of each defect layer as a fraction of the image's shorter side.
        rotation: range of rotation angles in degrees.
        aspect: range of width/height stretch factors (log-uniform).
        min_size: smallest defect in pixels; smaller images raise ``ValueError``.
        roi: where defects may land: ``None`` (anywhere), a mask, a callable ``images -> mask``, or
            ``"auto"`` (foreground estimate for object images).
        confine: with an ROI, cut each defect to it (its mask never leaves the ROI).
        seed: int or ``torch.Generator`` (one draw of it) for a reproducible result; ``None``
            draws from torch's global generator. The placements depend on the seed, each
            image's index and the options alone, not on the images' dtype or device nor on
            ``blend`` (:func:`~defectaug.plan.draw_plan`).
        label_map: ``{type: class}``: the label (and class-mask id) of each type instead of its
            index in ``defect_types`` (:mod:`defectaug.labels`); -1 stays "no defect", so no
            type may map to it (nor to 0 with ``mask_mode="class"``, the background).
        mask_mode: ``"binary"`` (bool masks) or ``"class"`` (int64 masks holding each defect's
            class id, 0 the background).

    Returns:
        ``InjectionResult(images, masks, labels)``: see its fields. Inputs are not modified.
    """
    images = to_unit_batch(images, "images", _BATCH_HINT)
    options = check_blend_options(blend, blend_options)
    defect_generator = resolve_generator(generator, device=images.device)
    types = resolve_defect_types(defect_types, defect_generator)
    labelling = _Labelling.check(types, label_map, mask_mode)
    seed = check_seed(seed)
    plan = plan_defects(
        images,
        types,
        defect_generator,
        p=check_probability(p),
        count=count,
        scale=scale,
        rotation=rotation,
        aspect=aspect,
        min_size=min_size,
        roi=roi,
        confine=confine,
        seed=seed,
    )
    return _injected(images, plan, blend, options, labelling)


class DefectInjector(nn.Module):
    """``nn.Module`` form of :func:`inject_defects` for batches on any device.

    The defect generator is a submodule, so ``DefectInjector(...).to("cuda")`` moves learned
    generators' weights too. ``forward(images)`` returns ``InjectionResult(images, masks, labels)``.
    With ``seed`` set (an int, or a ``torch.Generator`` that gives one by a single draw), call
    ``k`` is seeded from ``(seed, k)`` (plus worker / rank, see :class:`CallSeeds`); ``None``
    draws from torch's global generator; ``forward(images, seed=...)`` overrides the seed for one
    call. The arguments are :func:`inject_defects`' (``label_map``, ``mask_mode`` too).
    """

    def __init__(
        self,
        defect_types: str | Sequence[str] | None = None,
        generator: str | DefectGenerator = "procedural",
        *,
        p: float = 1.0,
        blend: BlendMode = "alpha",
        blend_options: Mapping[str, Any] | None = None,
        count: CountArg = (1, 1),
        scale: RangeArg = DEFAULT_SCALE,
        rotation: RangeArg = DEFAULT_ROTATION,
        aspect: RangeArg = DEFAULT_ASPECT,
        min_size: int = 8,
        roi: RoiArg = None,
        confine: bool = True,
        seed: SeedLike = None,
        label_map: Mapping[str, int] | None = None,
        mask_mode: str = "binary",
    ) -> None:
        super().__init__()
        self.generator = resolve_generator(generator)
        self.defect_types = resolve_defect_types(defect_types, self.generator)
        self.blend = check_blend(blend)
        self.blend_options = check_blend_options(blend, blend_options)
        self.p = check_probability(p)
        self.placement = PlacementOptions.check(
            count=count,
            scale=scale,
            rotation=rotation,
            aspect=aspect,
            min_size=min_size,
            roi=roi,
            confine=confine,
        )
        self._seeds = CallSeeds(seed)
        self.labelling = _Labelling.check(self.defect_types, label_map, mask_mode)

    @property
    def label_map(self) -> dict[str, int] | None:
        return self.labelling.label_map

    @property
    def mask_mode(self) -> str:
        return self.labelling.mask_mode

    def forward(self, images: torch.Tensor, seed: SeedLike = None) -> InjectionResult:
        images = to_unit_batch(images, "images", _BATCH_HINT)
        seed = check_seed(seed)
        plan = plan_defects(
            images,
            self.defect_types,
            self.generator,
            p=self.p,
            seed=seed if seed is not None else self._seeds.next(),
            **self.placement.keywords(),
        )
        return _injected(images, plan, self.blend, self.blend_options, self.labelling)

    def extra_repr(self) -> str:
        return (
            f"defect_types={list(self.defect_types)}, "
            f"generator={type(self.generator).__name__}, p={self.p}, blend={self.blend!r}"
        )
