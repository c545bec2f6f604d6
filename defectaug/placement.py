"""Where and how a defect layer lands on an image.

The draws are the plan's (:func:`defectaug.plan.draw_plan`); this module turns them into pixels:

1. :func:`sample_placements` gives the plan's placement draws as tensors: per image how many
   defects it receives and, per defect, its size (a fraction of the image's shorter side),
   rotation, aspect jitter and a centre inside a region of interest (ROI).
2. :func:`layer_geometry` places each layer with :func:`defectaug.plan.layer_box` (scale,
   stretch, rotation about the layer centre as kornia's ``get_rotation_matrix2d``; the box holds
   the rotated layer, so corners are never cut, and lies inside the image) on a tight canvas
   shared by a group of layers. It needs only the layer size, so it runs before the layers are
   generated: :func:`layer_backgrounds` can hand a generator the exact image patch each layer will
   cover (in the layer's frame), and the defect keeps the surface's texture.
3. :func:`warp_layer` resamples generated layers into their canvases (bilinear ``grid_sample``
   with the affine map, as kornia's ``warp_affine``; content and alpha share it);
   :func:`warp_relief` does the same for procedural relief maps, as the compiled renderer reads
   them.

:func:`crop_windows` reads image-sized maps (such as the ROI) under each placed canvas, used to
confine a defect's alpha to the ROI. ROIs (:func:`resolve_roi`): ``None`` (whole image), a mask
tensor, a callable ``images -> mask`` or ``"auto"`` for :func:`estimate_foreground`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import kornia
import torch
import torch.nn.functional as F

from defectaug._seeding import SeedLike
from defectaug.layer import DefectLayer
from defectaug.plan import Placements, PlannedDefect, check_image_size, draw_plan, layer_box

RangeArg = float | tuple[float, float]
CountArg = int | tuple[int, int]
RoiArg = torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | Literal["auto"] | None


def as_range(
    value: RangeArg, name: str, *, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """A ``(min, max)`` pair from a number or a pair, checked against optional bounds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair = (float(value), float(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (float(value[0]), float(value[1]))
    else:
        raise TypeError(f"{name}: expected a number or a (min, max) pair, got {value!r}")
    if not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"{name}: expected finite (min, max) with min <= max, got {value!r}")
    if (low is not None and pair[0] < low) or (high is not None and pair[1] > high):
        raise ValueError(f"{name}: expected values in [{low}, {high}], got {value!r}")
    return pair


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
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
        raise ValueError(f"min_size: expected a positive int, got {min_size!r}")
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
            ranges.count, ranges.scale, ranges.rotation, ranges.aspect, min_size, roi, confine
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
        ranges.count, ranges.scale, ranges.rotation, ranges.aspect, min_size, None, False
    )
    check_image_size(image_size, min_size)
    plan = draw_plan(options, ("defect",), batch_size, image_size, generator, roi=roi)
    kept = plan.placements
    if active is not None:
        kept = kept.select(active.to("cpu", torch.bool)[kept.image_index])
    return dataclasses.replace(kept, mirror=None)


@dataclass(frozen=True)
class LayerGeometry:
    """How each placed layer maps into the image; computed before the layers are generated.

    Attributes:
        to_image: ``[N, 2, 3]`` float64 affine maps from layer pixel ``(x, y)`` to image pixels.
        canvas_size: ``(Hc, Wc)`` of the shared canvas every layer is warped into.
        offsets: ``[N, 2]`` int64 ``(top, left)`` of each canvas in the image (may be negative:
            only the empty margin around a smaller layer hangs over the border).
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` (exclusive ends) of each layer's own
            rotated box in the image; always inside the image.
        zoom: ``[N]`` float64, the smaller of each layer's x / y scale factors.
        layer_size: ``(h, w)`` of the layers it was computed for.
    """

    to_image: torch.Tensor
    canvas_size: tuple[int, int]
    offsets: torch.Tensor
    boxes: torch.Tensor
    zoom: torch.Tensor
    layer_size: tuple[int, int]

    def to_canvas(self) -> torch.Tensor:
        """``[N, 2, 3]`` maps from layer pixels to each layer's canvas pixels."""
        matrix = self.to_image.clone()
        matrix[:, 0, 2] -= self.offsets[:, 1].to(matrix)
        matrix[:, 1, 2] -= self.offsets[:, 0].to(matrix)
        return matrix


def layer_geometry(placements: Placements, layer_size: tuple[int, int]) -> LayerGeometry:
    """Where layers of ``layer_size`` go for ``placements``: :func:`~defectaug.plan.layer_box`
    of each, on one canvas that holds the largest box."""
    n = len(placements)
    mirror = placements.mirror.tolist() if placements.mirror is not None else [False] * n
    boxes = [
        layer_box(
            PlannedDefect(0, 0, size, angle, aspect, (centre_y, centre_x), flip, 0),
            layer_size,
            placements.image_size,
        )
        for size, angle, aspect, (centre_y, centre_x), flip in zip(
            placements.size.tolist(),
            placements.angle.tolist(),
            placements.aspect.tolist(),
            placements.center.tolist(),
            mirror,
            strict=True,
        )
    ]
    top = torch.tensor([box.top for box in boxes], dtype=torch.int64)
    left = torch.tensor([box.left for box in boxes], dtype=torch.int64)
    own_h = torch.tensor([box.height for box in boxes], dtype=torch.int64)
    own_w = torch.tensor([box.width for box in boxes], dtype=torch.int64)
    canvas_h = int(own_h.max()) if n else 1
    canvas_w = int(own_w.max()) if n else 1
    pad_top, pad_left = (canvas_h - own_h) // 2, (canvas_w - own_w) // 2
    return LayerGeometry(
        to_image=torch.tensor([box.to_image for box in boxes], dtype=torch.float64).view(n, 2, 3),
        canvas_size=(canvas_h, canvas_w),
        offsets=torch.stack([top - pad_top, left - pad_left], 1),
        boxes=torch.stack([left, top, left + own_w, top + own_h], 1),
        zoom=torch.tensor([box.zoom for box in boxes], dtype=torch.float64),
        layer_size=tuple(layer_size),
    )


def _homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=matrix.dtype).expand(matrix.shape[0], 1, 3)
    return torch.cat([matrix, bottom], dim=1)


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _sample_affine(
    source: torch.Tensor,
    output_to_source: torch.Tensor,
    size: tuple[int, int],
    padding_mode: str,
) -> torch.Tensor:
    """Bilinear resampling of ``source [N, C, h, w]`` onto a ``size`` grid.

    ``output_to_source [N, 2, 3]`` maps output pixel ``(x, y)`` to source pixel coordinates.
    This is what kornia's ``warp_affine`` does (its matrix is the inverse map), written directly
    on ``affine_grid`` / ``grid_sample`` because at layer sizes kornia's per-call matrix
    normalisation costs about five times the sampling itself.
    """
    n, channels, source_h, source_w = source.shape
    out_h, out_w = size
    pixels_to_unit = torch.tensor(
        [[2.0 / max(source_w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(source_h - 1, 1), -1.0]],
        dtype=torch.float64,
    )
    unit_to_pixels = torch.tensor(
        [[(out_w - 1) / 2, 0.0, (out_w - 1) / 2], [0.0, (out_h - 1) / 2, (out_h - 1) / 2]],
        dtype=torch.float64,
    )
    theta = (
        _homogeneous(pixels_to_unit[None])
        @ _homogeneous(output_to_source.double().cpu())
        @ _homogeneous(unit_to_pixels[None])
    )[:, :2]
    # A float16 / bfloat16 grid misplaces samples by a sizeable fraction of a pixel on images
    # a few hundred px wide (CPU grid_sample even returns NaN there): resample in float32.
    dtype = source.dtype
    if dtype in _HALF_DTYPES:
        source = source.float()
    grid = F.affine_grid(
        theta.to(device=source.device, dtype=source.dtype),
        [n, channels, out_h, out_w],
        align_corners=True,
    )
    return F.grid_sample(
        source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    ).to(dtype)


def layer_backgrounds(
    images: torch.Tensor, image_index: torch.Tensor, geometry: LayerGeometry
) -> torch.Tensor:
    """The image patch each layer will cover, resampled into the layer's own frame.

    Returns ``[N, C, h, w]``: pixel ``(y, x)`` is the image pixel that layer pixel ``(y, x)`` will
    land on, so a generator that shades this patch produces content whose texture lines up with
    the image once warped back.
    """
    dtype = images.dtype
    if dtype in _HALF_DTYPES:
        # Converted here, before the expand: converting the expanded view would copy the image
        # once per layer.
        images = images.float()
    if images.shape[0] == 1:
        sources = images.expand(len(image_index), -1, -1, -1)
    else:
        sources = images[image_index.to(images.device)]
    return _sample_affine(sources, geometry.to_image, geometry.layer_size, "border").to(dtype)


@dataclass(frozen=True)
class WarpedLayers:
    """Layers resampled to their placements, all on one shared canvas.

    Attributes:
        layer: ``DefectLayer`` of ``[N, C, Hc, Wc]`` canvases.
        offsets: ``[N, 2]`` int64 ``(top, left)`` of each canvas in the image.
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` of each layer's own box in the image.
    """

    layer: DefectLayer
    offsets: torch.Tensor
    boxes: torch.Tensor


def antialias(stack: torch.Tensor, zoom: Sequence[float], border_type: str) -> torch.Tensor:
    """``stack [n, P, h, w]`` with the items that shrink by more than 2x (``zoom < 0.5``)
    low-passed, so thin structures don't alias away when warped.

    Item ``i`` is blurred with sigma ``(1 / zoom[i] - 1) / 2`` and a kernel reaching 3 sigma
    (at most the layer's shorter side); the others are returned as they are. Every renderer
    low-passes through here, so a layer shrinks alike whichever renders it.
    """
    h, w = stack.shape[-2:]
    widest = (min(h, w) - 1) // 2 * 2 + 1
    groups: dict[int, list[tuple[int, float]]] = {}
    for item, value in enumerate(zoom):
        sigma = (1.0 / value - 1.0) / 2.0
        kernel = min(2 * math.ceil(3 * sigma) + 1, widest)
        if sigma >= 0.5 and kernel >= 3:
            groups.setdefault(kernel, []).append((item, sigma))
    out = stack
    for kernel, members in groups.items():
        sigmas = torch.tensor(
            [[sigma, sigma] for _, sigma in members], dtype=stack.dtype, device=stack.device
        )
        if len(members) == len(stack):
            return kornia.filters.gaussian_blur2d(
                stack, (kernel, kernel), sigmas, border_type=border_type
            )
        index = torch.tensor([item for item, _ in members], device=stack.device)
        if out is stack:
            out = stack.clone()
        out[index] = kornia.filters.gaussian_blur2d(
            stack[index], (kernel, kernel), sigmas, border_type=border_type
        )
    return out


def warp_layer(layer: DefectLayer, geometry: LayerGeometry) -> WarpedLayers:
    """Warp ``layer`` (one item per placement) into its canvas (bilinear, as ``warp_affine``).

    Content and alpha share the matrix and one warp; content is continued by border replication
    (no dark fringe where alpha fades out), alpha is zero outside the layer. Layers shrinking by
    more than 2x are low-passed first.
    """
    n = geometry.to_image.shape[0]
    if len(layer) != n:
        raise ValueError(f"layer: expected {n} items (one per placement), got {len(layer)}")
    if n == 0:
        raise ValueError("geometry: no layer to warp (every image drew a count of 0)")
    if layer.size != geometry.layer_size:
        raise ValueError(
            f"layer: size {layer.size} differs from the size {geometry.layer_size} the geometry "
            "was computed for"
        )
    device = layer.content.device
    smoothed = antialias(
        torch.cat([layer.content, layer.alpha], dim=1), geometry.zoom.tolist(), "replicate"
    )
    channels = layer.content.shape[1]
    # One warp for content and alpha: a 1 px ring (content replicated, alpha 0) plus border
    # sampling gives content without dark fringes and alpha exactly 0 outside the layer.
    ring = (1, 1, 1, 1)
    stacked = torch.cat(
        [
            F.pad(smoothed[:, :channels], ring, mode="replicate"),
            F.pad(smoothed[:, channels:], ring),
        ],
        dim=1,
    )
    padded_to_canvas = geometry.to_canvas()
    padded_to_canvas[:, :, 2] -= padded_to_canvas[:, :, :2].sum(dim=2)
    canvas_to_padded = torch.linalg.inv(_homogeneous(padded_to_canvas))[:, :2]
    warped_stack = _sample_affine(stacked, canvas_to_padded, geometry.canvas_size, "border")
    warped_stack = warped_stack.clamp(0, 1)
    warped = DefectLayer(
        warped_stack[:, :channels], warped_stack[:, channels:], layer.labels, layer.type_names
    )
    return WarpedLayers(warped, geometry.offsets.to(device), geometry.boxes.to(device))


def warp_relief(planes: torch.Tensor, geometry: LayerGeometry) -> torch.Tensor:
    """Relief planes ``[N, P, h, w]`` (:class:`~defectaug.generators.procedural.ReliefMaps`)
    resampled into their canvases ``[N, P, Hc, Wc]``: low-passed as :func:`antialias` and
    bilinear with zeros outside the layer, as the compiled renderer reads them
    (:func:`defectaug._kernels.composite_tracked`)."""
    smoothed = antialias(planes, geometry.zoom.tolist(), "constant")
    canvas_to_layer = torch.linalg.inv(_homogeneous(geometry.to_canvas()))[:, :2]
    return _sample_affine(smoothed, canvas_to_layer, geometry.canvas_size, "zeros")


def crop_windows(
    maps: torch.Tensor, image_index: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Windows ``[N, C, h, w]`` of ``maps [B, C, H, W]`` at ``offsets`` (top, left), 0 outside."""
    _, _, height, width = maps.shape
    h, w = size
    device = maps.device
    image_index, offsets = image_index.to(device), offsets.to(device)
    rows = offsets[:, :1] + torch.arange(h, device=device)
    cols = offsets[:, 1:] + torch.arange(w, device=device)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
        :, None, :
    ]
    gathered = maps[
        image_index[:, None, None],
        :,
        rows.clamp(0, height - 1)[:, :, None],
        cols.clamp(0, width - 1)[:, None, :],
    ]
    windows = gathered.permute(0, 3, 1, 2)
    return (
        windows * inside[:, None].to(windows.dtype)
        if windows.is_floating_point()
        else windows & inside[:, None]
    )


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(images) if images.shape[1] == 3 else images


def _otsu_thresholds(gray: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-image Otsu threshold ``[B]`` of ``gray [B, 1, H, W]`` in [0, 1]."""
    batch = gray.shape[0]
    index = (gray.flatten(1).clamp(0, 1) * (bins - 1)).round().long()
    histogram = torch.zeros(batch, bins, device=gray.device, dtype=torch.float64)
    histogram.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    probability = histogram / histogram.sum(1, keepdim=True)
    levels = torch.arange(bins, device=gray.device, dtype=torch.float64) / (bins - 1)
    weight_low = probability.cumsum(1)
    mean_low_sum = (probability * levels).cumsum(1)
    total_mean = mean_low_sum[:, -1:]
    between = (total_mean * weight_low - mean_low_sum) ** 2 / (weight_low * (1 - weight_low)).clamp(
        min=1e-12
    )
    best = between.argmax(1)
    return levels[best].to(gray.dtype)


def estimate_foreground(
    images: torch.Tensor,
    *,
    min_area: float = 0.02,
    max_border_ratio: float = 0.25,
) -> torch.Tensor:
    """Rough object mask ``[B, 1, H, W]`` (bool) for object-on-background images.

    Method: grayscale, Gaussian blur (sigma ~ 1 % of the shorter side), a per-image Otsu threshold,
    then the side of the threshold that touches the image border least is taken as the object;
    a morphological opening then closing (square kernel ~ 2 % of the shorter side, kornia)
    removes specks and fills small holes. The estimate is called degenerate, and the whole image
    is returned for that image, when the object covers less than ``min_area`` of the image, when it
    covers its border at more than ``max_border_ratio`` times its own area fraction (a texture
    rather than an object on a background), or when it covers the whole image.
    """
    _, _, height, width = images.shape
    shorter = min(height, width)
    gray = _grayscale(images.float())
    sigma = max(1.0, shorter / 100)
    kernel = min(2 * math.ceil(2 * sigma) + 1, (shorter - 1) // 2 * 2 + 1)
    if kernel >= 3:
        gray = kornia.filters.gaussian_blur2d(
            gray, (kernel, kernel), (sigma, sigma), border_type="replicate"
        )
    threshold = _otsu_thresholds(gray)
    bright = gray > threshold[:, None, None, None]

    border = torch.zeros(height, width, dtype=torch.bool, device=images.device)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    bright_on_border = bright[:, 0, border].float().mean(1)
    dark_on_border = 1 - bright_on_border
    foreground = torch.where(
        (bright_on_border <= dark_on_border)[:, None, None, None], bright, ~bright
    )

    size = max(3, (shorter // 50) | 1)
    structure = torch.ones(size, size, device=images.device)
    cleaned = kornia.morphology.closing(
        kornia.morphology.opening(foreground.float(), structure), structure
    )
    foreground = cleaned >= 0.5

    area = foreground.flatten(1).float().mean(1)
    on_border = foreground[:, 0, border].float().mean(1)
    degenerate = (area < min_area) | (area >= 1.0) | (on_border > max_border_ratio * area)
    return foreground | degenerate[:, None, None, None]


def resolve_roi(roi: RoiArg, images: torch.Tensor) -> torch.Tensor | None:
    """The ROI for ``images [B, C, H, W]`` as bool ``[B, 1, H, W]`` (``None`` for the whole image).

    ``roi`` may be ``None``, ``"auto"`` (:func:`estimate_foreground`), a callable taking the images
    and returning a mask, or a mask tensor ``[H, W]``, ``[1, H, W]``, ``[1, 1, H, W]`` or
    ``[B, 1, H, W]`` (bool, or numbers with ``>= 0.5`` inside). A given mask that is empty for an
    image raises ``ValueError``: defects would have nowhere to go.
    """
    if roi is None:
        return None
    batch, _, height, width = images.shape
    if isinstance(roi, str):
        if roi != "auto":
            raise ValueError(
                f"roi: expected None, 'auto', a mask tensor or a callable, got {roi!r}"
            )
        return estimate_foreground(images)
    mask = roi(images) if callable(roi) else roi
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"roi: expected a mask tensor (or a callable returning one), got {type(mask).__name__}"
        )
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] not in (1, batch)
        or mask.shape[-2:] != (height, width)
    ):
        raise ValueError(
            f"roi: expected a mask of shape [H, W], [1, H, W] or [B, 1, H, W] matching images "
            f"{tuple(images.shape)}, got {tuple(mask.shape)}"
        )
    mask = (mask >= 0.5 if mask.dtype != torch.bool else mask).to(images.device)
    mask = mask.expand(batch, -1, -1, -1)
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        raise ValueError(
            f"roi: the region of interest is empty for image(s) {empty.nonzero()[:, 0].tolist()}"
        )
    return mask
