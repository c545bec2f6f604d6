"""What a placement draws: the checked placement options, and :func:`sample_placements`.

An injection's placement options (``count``, ``scale``, ``rotation``, ``aspect``, ``min_size``,
``roi``, ``confine``) are checked once, into :class:`PlacementOptions`;
:func:`~defectaug.plan.draw_plan` draws from them, and :func:`sample_placements` gives those draws
as tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, fields

import torch

from defectaug._checks import as_range, check_int
from defectaug._seeding import SeedLike
from defectaug.placement.roi import RoiArg
from defectaug.plan import Placements, check_image_size, draw_plan

RangeArg = float | tuple[float, float]
CountArg = int | tuple[int, int]


#: Upper bound of ``count``: far above any real part, low enough to bound a batch's layers.
MAX_DEFECTS_PER_IMAGE = 256


def as_count_range(count: CountArg) -> tuple[int, int]:
    """``count`` as an inclusive ``(min, max)`` pair of non-negative ints."""
    if isinstance(count, int) and not isinstance(count, bool):
        pair = (count, count)
    elif (
        isinstance(count, (tuple, list))
        and len(count) == 2
        and all(isinstance(c, int) and not isinstance(c, bool) for c in count)
    ):
        pair = (count[0], count[1])
    else:
        raise TypeError(
            f"count: expected an int or an inclusive (min, max) pair of ints, got {count!r}"
        )
    if pair[0] < 0 or pair[0] > pair[1] or pair[1] < 1:
        raise ValueError(f"count: expected 0 <= min <= max and max >= 1, got {count!r}")
    if pair[1] > MAX_DEFECTS_PER_IMAGE:
        # Each defect is a layer the size of its box: the count sizes an allocation.
        raise ValueError(f"count: at most {MAX_DEFECTS_PER_IMAGE} defects per image, got {count!r}")
    return pair


@dataclass(frozen=True)
class PlacementRanges:
    """Validated draw ranges of :func:`sample_placements`."""

    count: tuple[int, int]
    scale: tuple[float, float]
    rotation: tuple[float, float]
    aspect: tuple[float, float]

    @functools.cached_property
    def log_aspect(self) -> tuple[float, float]:
        """The aspect range as log-stretch, the scale it is drawn uniformly in."""
        return (math.log(self.aspect[0]), math.log(self.aspect[1]))


def check_placement_ranges(
    count: CountArg, scale: RangeArg, rotation: RangeArg, aspect: RangeArg, min_size: int
) -> PlacementRanges:
    """Validate the placement options shared by every injection path, naming the bad argument."""
    check_int(min_size, "min_size", 1)
    count_range = as_count_range(count)
    scale_range = as_range(scale, "scale", low=0.0)
    if scale_range[1] <= 0:
        raise ValueError(
            f"scale: expected a positive fraction of the image's shorter side, got {scale!r}"
        )
    rotation_range = as_range(rotation, "rotation")
    aspect_range = as_range(aspect, "aspect")
    if aspect_range[0] <= 0:
        raise ValueError(f"aspect: expected positive stretch factors, got {aspect!r}")
    return PlacementRanges(
        count=count_range, scale=scale_range, rotation=rotation_range, aspect=aspect_range
    )


@dataclass(frozen=True)
class PlacementOptions(PlacementRanges):
    """An injector's placement options, validated once when it is built.

    The fields are the placement keywords of :func:`defectaug.inject_defects` in checked form;
    :meth:`keywords` hands them on to :func:`~defectaug.batch.plan_defects`.
    """

    min_size: int
    roi: RoiArg
    confine: bool

    @classmethod
    def check(
        cls,
        *,
        count: CountArg,
        scale: RangeArg,
        rotation: RangeArg,
        aspect: RangeArg,
        min_size: int,
        roi: RoiArg,
        confine: bool,
    ) -> PlacementOptions:
        ranges = check_placement_ranges(count, scale, rotation, aspect, min_size)
        return cls(
            ranges.count, ranges.scale, ranges.rotation, ranges.aspect, int(min_size), roi, confine
        )

    def keywords(self) -> dict[str, object]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def sample_placements(
    batch_size: int,
    image_size: tuple[int, int],
    *,
    count: CountArg = (1, 1),
    scale: RangeArg = (0.1, 0.3),
    rotation: RangeArg = (-180.0, 180.0),
    aspect: RangeArg = (0.75, 4.0 / 3.0),
    min_size: int = 8,
    roi: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    generator: SeedLike = None,
) -> Placements:
    """Draw where defects go on ``batch_size`` images of ``image_size``.

    The placements of :func:`~defectaug.plan.draw_plan` (the same draws), without its mirroring:
    for placing layers as they are.

    Args:
        batch_size: number of images ``B``.
        image_size: ``(H, W)``.
        count: defects per image, an int or an inclusive ``(min, max)`` range drawn uniformly.
        scale: longer side of a defect layer as a fraction of the image's shorter side, drawn
            uniformly in this range (a number fixes it).
        rotation: degrees, drawn uniformly in this range.
        aspect: width/height stretch, drawn log-uniformly in this range (``1`` disables it).
        min_size: no defect is smaller than this many pixels; an image whose shorter side is below
            it raises ``ValueError``.
        roi: bool ``[B, 1, H, W]``: centres are drawn uniformly among its pixels (``None``:
            the whole image).
        active: bool ``[B]``: images that receive defects (default: all).
        generator: int seed or ``torch.Generator`` for every draw.
    """
    ranges = check_placement_ranges(count, scale, rotation, aspect, min_size)
    options = PlacementOptions(
        ranges.count, ranges.scale, ranges.rotation, ranges.aspect, int(min_size), None, False
    )
    check_image_size(image_size, min_size)
    plan = draw_plan(options, ("defect",), batch_size, image_size, generator, roi=roi)
    kept = plan.placements
    if active is not None:
        kept = kept.select(active.to("cpu", torch.bool)[kept.image_index])
    return dataclasses.replace(kept, mirror=None)
