"""One plan per injection: every random choice, from one counter-based seeding scheme.

:func:`draw_plan` decides, per image, whether it receives defects (``p``), their type and count,
and per defect its size, rotation, aspect, centre, mirroring and the seed of its layer. Image
``i``'s numbers are :func:`~defectaug._seeding.uniform_draws` of ``(seed, stream i)``, so a plan
depends on the seed, the image's index and the options alone: never on the images' dtype or
device, nor on the blend, and an image gets the same plan in a batch of one as in a batch of 64.

Two renderers read a plan: the compiled CPU renderer of :mod:`defectaug.per_sample` and the torch
renderer of :mod:`defectaug.batch`. Both place a layer with :func:`layer_box`, so a defect lands on
the same pixels whichever of them renders it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch

from defectaug._seeding import SeedLike, as_seed, uniform_draws

if TYPE_CHECKING:
    from defectaug.placement import PlacementOptions

#: Value of a plan's ``type_index`` (and of injection ``labels``) for images without a defect.
NO_DEFECT = -1

# Per image: the p draw, the type, the count, then these per defect: scale, rotation, aspect,
# row, column, mirroring, layer seed.
_HEAD, _PER_DEFECT = 3, 7
# Defects drawn in the first hash call; more cost a second call (which repeats the first block).
_FIRST_DRAW_DEFECTS = 4


class PlannedDefect(NamedTuple):
    """One defect of a :class:`Plan`.

    Attributes:
        image: index of the image it lands on.
        rank: its order among that image's defects (later ones are composited over earlier ones).
        size: length in pixels of the layer's longer side on the image (before stretch and turn).
        angle: rotation in degrees (counter-clockwise).
        aspect: width / height stretch applied before the rotation.
        centre: requested ``(y, x)`` centre in image pixels.
        mirror: whether the layer is flipped left-right before it is placed.
        layer_seed: seed of the layer a renderer paints or samples for it (53 bits).
    """

    image: int
    rank: int
    size: float
    angle: float
    aspect: float
    centre: tuple[float, float]
    mirror: bool
    layer_seed: int


@dataclass(frozen=True)
class Placements:
    """Per-defect placement draws for a batch of images (all CPU tensors of length ``N``).

    The tensor form of a :class:`Plan`'s defects (:attr:`Plan.placements`).

    Attributes:
        image_index: ``[N]`` int64, the image each defect lands on (sorted ascending).
        rank: ``[N]`` int64, the defect's order among its image's defects (0, 1, ...).
        size: ``[N]`` float64, length in pixels of the layer's longer side on the image (before
            the aspect stretch and rotation).
        angle: ``[N]`` float64, rotation in degrees (counter-clockwise).
        aspect: ``[N]`` float64, width/height stretch applied before rotation (1 = unchanged).
        center: ``[N, 2]`` float64, requested ``(y, x)`` centre in image pixels, inside the ROI.
        image_size: ``(H, W)`` of the images.
        batch_size: number of images ``B`` (images may receive no defect).
        mirror: ``[N]`` bool, layers flipped left-right before placing (``None``: none).
        layer_seed: ``[N]`` int64, the seed of each defect's layer (``None``: not drawn).
    """

    image_index: torch.Tensor
    rank: torch.Tensor
    size: torch.Tensor
    angle: torch.Tensor
    aspect: torch.Tensor
    center: torch.Tensor
    image_size: tuple[int, int]
    batch_size: int
    mirror: torch.Tensor | None = None
    layer_seed: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.image_index.numel())

    def counts(self) -> torch.Tensor:
        """Number of defects per image, ``[B]`` int64."""
        return torch.bincount(self.image_index, minlength=self.batch_size)

    def select(self, index: torch.Tensor) -> Placements:
        """The placements at ``index`` (same images and image size)."""
        return Placements(
            image_index=self.image_index[index],
            rank=self.rank[index],
            size=self.size[index],
            angle=self.angle[index],
            aspect=self.aspect[index],
            center=self.center[index],
            image_size=self.image_size,
            batch_size=self.batch_size,
            mirror=None if self.mirror is None else self.mirror[index],
            layer_seed=None if self.layer_seed is None else self.layer_seed[index],
        )


@dataclass(frozen=True)
class Plan:
    """Every random choice of one injection (see the module docs); renderers read it.

    Attributes:
        defect_types: the type names ``type_index`` indexes.
        type_index: per image, the index in ``defect_types`` of its defects' type (one type per
            image), or ``NO_DEFECT`` when it receives none.
        defects: the defects of every image, by image and then by rank.
        image_size: ``(H, W)`` the plan was drawn for.
        roi: the resolved region of interest ``[B, 1, H, W]`` bool the centres were drawn in
            (``None``: the whole image); renderers confine defects to it. Not compared.
    """

    defect_types: tuple[str, ...]
    type_index: tuple[int, ...]
    defects: tuple[PlannedDefect, ...]
    image_size: tuple[int, int]
    roi: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def batch_size(self) -> int:
        return len(self.type_index)

    def labels(self, device: torch.device | str | None = None) -> torch.Tensor:
        """``[B]`` int64: ``type_index`` as a tensor."""
        return torch.tensor(self.type_index, dtype=torch.int64, device=device)

    @functools.cached_property
    def placements(self) -> Placements:
        """The defects as tensors (:class:`Placements`)."""
        defects = self.defects
        return Placements(
            image_index=torch.tensor([d.image for d in defects], dtype=torch.int64),
            rank=torch.tensor([d.rank for d in defects], dtype=torch.int64),
            size=torch.tensor([d.size for d in defects], dtype=torch.float64),
            angle=torch.tensor([d.angle for d in defects], dtype=torch.float64),
            aspect=torch.tensor([d.aspect for d in defects], dtype=torch.float64),
            center=torch.tensor([d.centre for d in defects], dtype=torch.float64).view(-1, 2),
            image_size=self.image_size,
            batch_size=self.batch_size,
            mirror=torch.tensor([d.mirror for d in defects], dtype=torch.bool),
            layer_seed=torch.tensor([d.layer_seed for d in defects], dtype=torch.int64),
        )


def check_image_size(image_size: tuple[int, int], min_size: int) -> None:
    """Raise when an image is too small to hold the smallest allowed defect.

    A side of 1 px leaves a defect no room at all (it would be scaled to nothing), whatever
    ``min_size`` says, so both sides must be at least 2 px.
    """
    height, width = image_size
    if min(height, width) < 2:
        raise ValueError(
            f"image of size {height}x{width} is too small for a defect: both sides must be at "
            "least 2 px"
        )
    if min(height, width) < min_size:
        raise ValueError(
            f"image of size {height}x{width} is smaller than the smallest allowed defect "
            f"({min_size} px, min_size); use larger images or a smaller min_size"
        )


RoiSource = torch.Tensor | Callable[[], torch.Tensor | None] | None


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def draw_plan(
    options: PlacementOptions,
    defect_types: Sequence[str],
    batch_size: int,
    image_size: tuple[int, int],
    seed: SeedLike = None,
    *,
    p: float = 1.0,
    roi: RoiSource = None,
) -> Plan:
    """Draw the plan for ``batch_size`` images of ``image_size`` (see the module docs).

    ``options`` are checked placement options (:class:`~defectaug.placement.PlacementOptions`;
    its ``roi`` is not read: pass the resolved one). Each image receives defects with probability
    ``p``, one type drawn uniformly from ``defect_types`` for all of them, ``count`` drawn uniformly
    in its range; each defect's size is a fraction of the image's shorter side drawn uniformly in
    ``scale`` (at least ``min_size`` px), its rotation uniformly in ``rotation``, its stretch
    log-uniformly in ``aspect``, its centre uniformly over the image or, with ``roi`` (a bool
    ``[B or 1, 1, H, W]`` mask, or a callable returning one, called only when some image receives
    a defect), over the ROI's pixels; it is mirrored with probability 1/2.

    ``seed``: an int keys the draws directly; a ``torch.Generator`` gives one 62-bit draw;
    ``None`` one draw from torch's global generator.
    """
    key = as_seed(seed)
    height, width = image_size
    shorter = min(height, width)
    low, high = options.count
    spread = high - low
    types = len(defect_types)
    log_aspect = options.log_aspect
    type_index: list[int] = []
    defects: list[PlannedDefect] = []
    mask: torch.Tensor | None = None
    roi_pixels: dict[int, torch.Tensor] = {}
    checked = False
    for image in range(batch_size):
        draws = uniform_draws(key, _HEAD + _PER_DEFECT * min(high, _FIRST_DRAW_DEFECTS), image)
        count = low + min(int(draws[2] * (spread + 1)), spread)
        if draws[0] >= p or count == 0:
            type_index.append(NO_DEFECT)
            continue
        if not checked:
            check_image_size(image_size, options.min_size)
            mask = roi() if callable(roi) else roi
            checked = True
        if count > _FIRST_DRAW_DEFECTS:
            draws = uniform_draws(key, _HEAD + _PER_DEFECT * count, image)
        type_index.append(min(int(draws[1] * types), types - 1))
        for rank in range(count):
            u = draws[_HEAD + _PER_DEFECT * rank : _HEAD + _PER_DEFECT * (rank + 1)]
            if mask is None:
                centre = (u[3] * (height - 1), u[4] * (width - 1))
            else:
                pixels = roi_pixels.get(image)
                if pixels is None:
                    plane = mask[image if mask.shape[0] > 1 else 0, 0]
                    pixels = roi_pixels[image] = plane.flatten().nonzero()[:, 0].cpu()
                flat = int(pixels[min(int(u[3] * len(pixels)), len(pixels) - 1)])
                centre = (float(flat // width), float(flat % width))
            defects.append(
                PlannedDefect(  # positional: keywords make a NamedTuple slower to build
                    image,
                    rank,
                    max(_lerp(options.scale, u[0]) * shorter, options.min_size),
                    _lerp(options.rotation, u[1]),
                    math.exp(_lerp(log_aspect, u[2])),
                    centre,
                    u[5] < 0.5,
                    int(u[6] * 2.0**53),
                )
            )
    return Plan(tuple(defect_types), tuple(type_index), tuple(defects), (height, width), mask)


#: Largest side at which layers are painted or rendered; bigger defects are enlarged from it.
MAX_PAINT_SIDE = 512


def paint_side(size: float) -> int:
    """Side at which a defect shown ``size`` px large is painted, by every renderer (generators
    that render at any size; the others render at their ``layer_size``).

    Sizes are grouped in steps of sqrt(2) and each group is painted at its geometric middle, so
    a layer is resampled by at most 2 ** 0.25 (19 %) either way and a few sides serve all. The
    side depends on the defect alone, not on the others of its batch.
    """
    wanted = min(max(math.ceil(size), 8), MAX_PAINT_SIDE)
    step = math.floor(2.0 * math.log2(wanted))
    return max(8, min(round(2.0 ** ((step + 0.5) / 2.0)), MAX_PAINT_SIDE))


class LayerBox(NamedTuple):
    """Where a layer lands (:func:`layer_box`).

    Attributes:
        top, left, height, width: the layer's box in the image, always inside it; it holds the
            whole rotated layer as bilinear sampling reads it.
        to_image: the affine map from layer pixel ``(x, y)`` to image pixel, as the rows
            ``(a, b, c), (d, e, f)`` of a ``2 x 3`` matrix.
        zoom: the smaller of the layer's x / y scale factors.
    """

    top: int
    left: int
    height: int
    width: int
    to_image: tuple[tuple[float, float, float], tuple[float, float, float]]
    zoom: float

    def box_to_layer(self) -> list[list[float]]:
        """The inverse map, from box pixel ``(x, y)`` (0 at the box's corner) to layer pixel."""
        (a, b, tx), (c, d, ty) = self.to_image
        x_col, x_row, x_0, y_col, y_row, y_0 = invert_placement(
            a, b, tx, c, d, ty, self.top, self.left
        )
        return [[x_col, x_row, x_0], [y_col, y_row, y_0]]


def layer_box(
    defect: PlannedDefect, layer_size: tuple[int, int], image_size: tuple[int, int]
) -> LayerBox:
    """Where a ``layer_size`` layer drawn as ``defect`` lands on an ``image_size`` image.

    The one geometry of every renderer. The layer is mirrored (when drawn so), scaled so its
    longer side is ``defect.size`` px, stretched by ``aspect`` (width by ``sqrt(aspect)``,
    height by ``1 / sqrt(aspect)``), rotated by ``angle`` about its centre (kornia's
    ``get_rotation_matrix2d``) and centred on ``defect.centre``. A layer whose rotated box would
    not fit the image is shrunk until it does; the box is then shifted inwards so it lies fully
    inside.
    """
    top, left, box_h, box_w, a, b, tx, c, d, ty, zoom = place_layer(
        defect, *layer_size, *image_size
    )
    return LayerBox(top, left, box_h, box_w, ((a, b, tx), (c, d, ty)), zoom)


# place_layer and invert_placement are plain arithmetic on numbers: the compiled renderer
# compiles these very functions (defectaug._kernels), so every renderer places a layer alike.


def place_layer(
    defect: PlannedDefect, layer_h: int, layer_w: int, image_h: int, image_w: int
) -> tuple[int, int, int, int, float, float, float, float, float, float, float]:
    """:func:`layer_box` on numbers: ``top, left, height, width``, the map ``a, b, tx, c, d,
    ty`` (:attr:`LayerBox.to_image`) and ``zoom``."""
    height, width = image_h, image_w
    h, w = layer_h, layer_w
    zoom = defect.size / max(h, w)
    root = math.sqrt(defect.aspect)
    zoom_x, zoom_y = zoom * root, zoom / root
    radians = math.radians(defect.angle)
    cos, sin = math.cos(radians), math.sin(radians)
    # Bilinear sampling reads a layer over (-1, w) x (-1, h): that support, scaled and rotated,
    # plus one pixel of slack for snapping the translation to whole pixels, is the layer's box.
    extent_w = (w + 1) * zoom_x * abs(cos) + (h + 1) * zoom_y * abs(sin)
    extent_h = (w + 1) * zoom_x * abs(sin) + (h + 1) * zoom_y * abs(cos)
    fit = min((height - 1) / extent_h, (width - 1) / extent_w, 1.0)
    zoom_x, zoom_y, extent_w, extent_h = zoom_x * fit, zoom_y * fit, extent_w * fit, extent_h * fit
    box_h = min(max(math.ceil(extent_h) + 1, 1), height)
    box_w = min(max(math.ceil(extent_w) + 1, 1), width)
    centre_y, centre_x = defect.centre
    top = min(max(round(centre_y - (box_h - 1) / 2), 0), height - box_h)
    left = min(max(round(centre_x - (box_w - 1) / 2), 0), width - box_w)
    middle_x, middle_y = (w - 1) / 2, (h - 1) / 2
    a, b = cos * zoom_x, sin * zoom_y
    c, d = -sin * zoom_x, cos * zoom_y
    # A whole-pixel shift of the centre: an unscaled, unrotated layer is copied without blur.
    tx = middle_x - a * middle_x - b * middle_y + round(left + (box_w - 1) / 2 - middle_x)
    ty = middle_y - c * middle_x - d * middle_y + round(top + (box_h - 1) / 2 - middle_y)
    if defect.mirror:  # layer x -> w - 1 - x first
        a, c, tx, ty = -a, -c, tx + a * (w - 1), ty + c * (w - 1)
    return top, left, box_h, box_w, a, b, tx, c, d, ty, min(zoom_x, zoom_y)


def invert_placement(
    a: float, b: float, tx: float, c: float, d: float, ty: float, top: int, left: int
) -> tuple[float, float, float, float, float, float]:
    """:meth:`LayerBox.box_to_layer` on numbers: the inverse of the map ``a, b, tx, c, d, ty``
    from a box whose corner is image pixel ``top, left``, as the rows' six entries."""
    tx, ty = tx - left, ty - top
    det = a * d - b * c
    return (
        d / det,
        -b / det,
        (b * ty - d * tx) / det,
        -c / det,
        a / det,
        (c * tx - a * ty) / det,
    )
