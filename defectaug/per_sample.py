"""The per-sample path of ``DefectInject`` for the procedural generator: CPU images, few operations.

A data-loader worker transforms one image at a time, where the cost of :func:`plan_defects` /
:func:`composite_plan` is mostly per-operation overhead on tiny tensors. This path keeps their
placement distributions, geometry and look, but

- paints layers ahead in chunks (:class:`LayerReservoir`): ``ProceduralGenerator.paint`` draws a
  chunk of one type at one size at once, and each layer serves ``USES_PER_LAYER`` samples (each
  with its own scale, rotation, aspect, mirroring, place and surface). Layers are kept as tone-free
  relief maps (:class:`~defectaug.generators.procedural.ReliefMaps`) and shaded with the very
  pixels they land on, so a chunk suits any image;
- does the placement and affine maths of one image in Python floats, and resamples, shades and
  composites each layer in one compiled pass over its box (:mod:`defectaug._kernels`), written
  straight into the output (a uint8 image stays uint8);
- settles the result over the defects' boxes (:func:`defectaug._kernels.settle_levels`): the label
  mask is what visibly changed (``VISIBILITY``), and changes farther than ``TELL_MARGIN`` px from
  it are undone, the same rule as :func:`defectaug.batch.settle_composite`. The compositing pass
  records how much each pixel it writes changed, so settling reads the image again only where it
  restores a pixel.

It handles PIL images and CPU tensors of dtype uint8, float32 or float64 that need no gradient
(:func:`takes_fast_path`); ``DefectInject`` sends anything else through the batched planner.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import kornia
import numpy as np
import PIL.Image
import torch

from defectaug._io import UNIT_RANGE_TOLERANCE, check_unit_range, to_float_image
from defectaug._kernels import (
    alpha_blocks,
    composite_tracked,
    copy_within,
    settle_levels,
    sparse_mean,
    warp_alpha,
)
from defectaug._seeding import as_generator, mix_seed, stream_identity, uniform_draws
from defectaug.generators.procedural import ProceduralGenerator, ReliefMaps
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY
from defectaug.placement import PlacementOptions, check_image_size, resolve_roi

#: Largest side at which layers are painted; bigger defects are enlarged from it.
MAX_PAINT_SIDE = 512
#: Elements (``side ** 2 * layers``) one chunk aims at: big enough to amortise the per-op cost
#: of painting, small enough to keep a worker's reservoir to a few MB.
CHUNK_PIXELS = 1 << 17
MAX_CHUNK = 32


def paint_side(size: float) -> int:
    """Side at which a defect shown ``size`` px large is painted.

    Sizes are grouped in steps of sqrt(2) and each group is painted at its geometric middle, so
    a layer is resampled by at most 2 ** 0.25 (19 %) either way and a few chunk sizes serve all.
    """
    wanted = min(max(math.ceil(size), 8), MAX_PAINT_SIDE)
    step = math.floor(2.0 * math.log2(wanted))
    return max(8, min(round(2.0 ** ((step + 0.5) / 2.0)), MAX_PAINT_SIDE))


#: Layers in the first chunk of a type and size; each later chunk doubles, up to the full length.
FIRST_CHUNK = 4

#: Samples each painted layer serves. Painting a layer costs 0.04-0.8 ms at 23-64 px (spots and
#: stains least, scratches, cracks and pits most), the rest of a sample about 0.1 ms, so painting
#: would dominate a sample's cost if layers were not reused. Every use draws its own scale,
#: rotation, aspect, mirroring, place and surface, and uses of one layer are a chunk (up to 32
#: samples of its type and size) apart. 16 keeps ``DefectInject`` within 15 % of a typical
#: decode-crop-flip pipeline (``benchmarks.pipeline``; 8 measured 1.17x there, 16 1.14x).
USES_PER_LAYER = 16


def chunk_length(side: int, chunk: int) -> int:
    """Layers in chunk number ``chunk`` of one type at ``side``.

    Chunks grow geometrically: a short-lived worker (or a rare size) paints few layers it never
    uses, a long-lived one soon paints full chunks.
    """
    full = max(FIRST_CHUNK, min(MAX_CHUNK, CHUNK_PIXELS // (side * side)))
    return min(full, FIRST_CHUNK << min(chunk, 8))


class LayerReservoir:
    """Relief maps painted ahead in chunks, one type and one side per chunk.

    A chunk of ``n`` layers serves ``n * USES_PER_LAYER`` samples, cycling through its layers.
    With an int ``seed``, chunk ``k`` of ``(type, side)`` is painted from
    ``mix_seed(seed, worker id, loader base seed, rank, type, side, k)``, so the stream of layers
    is reproducible and workers never share layers; with ``None`` chunk seeds come from torch's
    global generator. Pickling keeps only the positions (chunks are repainted on demand), so a
    copy continues exactly where the original was.
    """

    def __init__(self, generator: ProceduralGenerator, seed: int | None) -> None:
        self.generator = generator
        self.seed = seed
        self._positions: dict[tuple[int, int], tuple[int, int]] = {}
        self._chunks: dict[tuple[int, int], list[PaintedLayer]] = {}
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

    def _chunk_seed(self, type_index: int, side: int, chunk: int) -> int:
        if self.seed is None:
            return int(torch.randint(0, 2**62, (1,)).item())
        return mix_seed(self.seed, *self._identity, type_index, side, chunk)

    def take(self, type_index: int, side: int) -> PaintedLayer:
        """The next layer at ``side``; ``type_index`` indexes the generator's ``defect_types``."""
        with self._lock:
            identity = stream_identity()
            if identity != self._identity:
                # A forked DataLoader worker inherits the parent's reservoir: start afresh.
                self._identity, self._positions, self._chunks = identity, {}, {}
            key = (type_index, side)
            chunk, position = self._positions.get(key, (0, 0))
            painted = self._chunks.get(key)
            length = chunk_length(side, chunk)
            if position >= length * USES_PER_LAYER:
                chunk, position, painted = chunk + 1, 0, None
                length = chunk_length(side, chunk)
            if painted is None:
                painted = self._paint(type_index, side, chunk)
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
            PaintedLayer(layer, alpha_blocks(layer), *values)
            for layer, values in zip(planes, scalars.tolist(), strict=True)
        ]


class PaintedLayer(NamedTuple):
    """A layer of a reservoir: relief planes ``[4, s, s]``, their ``alpha_blocks``, its scalars."""

    planes: np.ndarray
    blocks: np.ndarray
    tint: float
    bright_draw: float
    bright_probability: float

    def sign(self, surface: float) -> float:
        """+1 (bright) or -1 (dark) on a surface of mean tone ``surface`` (see ``bright_sign``)."""
        room = min(max((0.92 - surface) / 0.25, 0.0), 1.0)
        return 1.0 if self.bright_draw < self.bright_probability * room else -1.0


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
        return warp_alpha(
            self.planes, self.blocks, self.box_to_layer, self.confine, self.height, self.width
        )


_NOT_CONFINED = np.empty((0, 0), dtype=np.float32)
#: The label mask of a plan that changed nothing visibly (shared: never written).
_INVISIBLE = np.zeros((0, 0), dtype=np.uint8)
_INVISIBLE.flags.writeable = False


@dataclass(frozen=True)
class SamplePlan:
    """Every random choice for one image: its defects (in draw order), type and size.

    ``source`` is the image the plan was drawn for; its composite (:meth:`source_composite`)
    decides the label mask, so mask and image always agree.
    """

    type_index: int
    defects: tuple[PlacedDefect, ...]
    image_size: tuple[int, int]
    source: Any = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def _source_result(self) -> list[Any]:
        out, window, rect = _composite(self.source, self)
        return [out, window, rect]

    def source_composite(self) -> Any:
        """The source image with the plan composited (computed once; later calls recomposite)."""
        result = self._source_result
        out = result[0]
        if out is None:
            out, _, _ = _composite(self.source, self)
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


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _box_and_map(
    size: float,
    angle: float,
    aspect: float,
    centre: tuple[float, float],
    side: int,
    image: tuple[int, int],
) -> tuple[int, int, int, int, list[list[float]], float]:
    """``layer_geometry`` for one layer in floats: its box and the box-to-layer pixel map.

    Returns ``top, left, box_h, box_w``, the ``2 x 3`` map from box pixels ``(x, y)`` to layer
    pixels, and the smaller zoom factor.
    """
    height, width = image
    zoom = size / side
    root = math.sqrt(aspect)
    zoom_x, zoom_y = zoom * root, zoom / root
    radians = math.radians(angle)
    cos, sin = math.cos(radians), math.sin(radians)
    extent_w = (side + 1) * zoom_x * abs(cos) + (side + 1) * zoom_y * abs(sin)
    extent_h = (side + 1) * zoom_x * abs(sin) + (side + 1) * zoom_y * abs(cos)
    fit = min((height - 1) / extent_h, (width - 1) / extent_w, 1.0)
    zoom_x, zoom_y, extent_w, extent_h = zoom_x * fit, zoom_y * fit, extent_w * fit, extent_h * fit
    box_h = min(max(math.ceil(extent_h) + 1, 1), height)
    box_w = min(max(math.ceil(extent_w) + 1, 1), width)
    top = min(max(round(centre[0] - (box_h - 1) / 2), 0), height - box_h)
    left = min(max(round(centre[1] - (box_w - 1) / 2), 0), width - box_w)
    # Layer -> box: kornia's get_rotation_matrix2d about the layer centre, then a whole-pixel
    # shift of the centre (an unscaled, unrotated layer is copied without resampling blur).
    middle = (side - 1) / 2
    a, b = cos * zoom_x, sin * zoom_y
    c, d = -sin * zoom_x, cos * zoom_y
    shift_x = round(left + (box_w - 1) / 2 - middle) - left
    shift_y = round(top + (box_h - 1) / 2 - middle) - top
    tx = middle - a * middle - b * middle + shift_x
    ty = middle - c * middle - d * middle + shift_y
    det = a * d - b * c
    inverse = [
        [d / det, -b / det, (b * ty - d * tx) / det],
        [-c / det, a / det, (c * tx - a * ty) / det],
    ]
    return top, left, box_h, box_w, inverse, min(zoom_x, zoom_y)


def _antialias(layer: PaintedLayer, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """Planes and blocks of ``layer``, low-passed when it shrinks by more than 2x.

    Without the low-pass, thin structures would alias away.
    """
    sigma = (1.0 / zoom - 1.0) / 2.0
    side = layer.planes.shape[-1]
    kernel = min(2 * math.ceil(3 * sigma) + 1, (side - 1) // 2 * 2 + 1)
    if sigma < 0.5 or kernel < 3:
        return layer.planes, layer.blocks
    blurred = kornia.filters.gaussian_blur2d(
        torch.from_numpy(layer.planes)[None],
        (kernel, kernel),
        (sigma, sigma),
        border_type="constant",
    )[0].numpy()
    return blurred, alpha_blocks(blurred)


def _mirrored(box_to_layer: list[list[float]], side: int) -> list[list[float]]:
    """The same map followed by a left-right flip of the layer."""
    x_row, y_row = box_to_layer
    return [[-x_row[0], -x_row[1], side - 1 - x_row[2]], y_row]


def takes_fast_path(image: Any) -> bool:
    """Whether :func:`plan_sample` / :func:`composite_sample` handle ``image`` natively."""
    if isinstance(image, PIL.Image.Image):
        return True
    if not isinstance(image, torch.Tensor):
        return False
    image = image.as_subclass(torch.Tensor)  # tv_tensors pay a dispatch per attribute read
    return (
        image.device.type == "cpu"
        and image.dtype in (torch.uint8, torch.float32, torch.float64)
        and not image.requires_grad
    )


def plan_sample(
    image: Any,
    defect_types: tuple[str, ...],
    reservoir: LayerReservoir,
    options: PlacementOptions,
    seed: int | None,
) -> SamplePlan | None:
    """Draw the defects for one image that :func:`takes_fast_path` (``[C, H, W]`` / ``[H, W]``).

    Returns ``None`` when the image draws a count of 0. The draws are
    :func:`~defectaug._seeding.uniform_draws` of ``seed`` (stream 1), plus a multinomial when there
    is a region of interest; ``seed=None`` draws from torch's global generator.
    """
    pixels = as_chw(image)
    _, height, width = pixels.shape
    check_image_size((height, width), options.min_size)
    low, high = options.count
    # Type, count, then six numbers per defect: scale, rotation, aspect, row, column, mirroring.
    draws = uniform_draws(seed, 2 + 6 * high, stream=1)
    type_index = min(int(draws[0] * len(defect_types)), len(defect_types) - 1)
    count = low + min(int(draws[1] * (high - low + 1)), high - low)
    if count == 0:
        return None
    per_defect = [draws[2 + 6 * k : 8 + 6 * k] for k in range(count)]
    painted_type = reservoir.generator.defect_types.index(defect_types[type_index])
    surface = pixels.numpy()
    scale = 255.0 if surface.dtype == np.uint8 else 1.0
    roi = None
    if options.roi is not None:
        floats, _ = to_float_image(pixels, "image")
        roi_tensor = resolve_roi(options.roi, floats)[0, 0].cpu()
        rng = None if seed is None else as_generator(mix_seed(seed, 2))
        flat = torch.multinomial(roi_tensor.flatten().double(), count, True, generator=rng)
        centres = [(int(i) // width, int(i) % width) for i in flat.tolist()]
        roi = roi_tensor.numpy()
    else:
        centres = [(u[3] * (height - 1), u[4] * (width - 1)) for u in per_defect]
    shorter = min(height, width)
    defects = []
    for u, centre in zip(per_defect, centres, strict=True):
        size = max(_lerp(options.scale, u[0]) * shorter, options.min_size)
        angle = _lerp(options.rotation, u[1])
        aspect = math.exp(_lerp(options.log_aspect, u[2]))
        side = paint_side(size)
        top, left, box_h, box_w, box_to_layer, zoom = _box_and_map(
            size, angle, aspect, centre, side, (height, width)
        )
        if u[5] < 0.5:
            box_to_layer = _mirrored(box_to_layer, side)
        layer = reservoir.take(painted_type, side)
        confine = _NOT_CONFINED
        if roi is not None and options.confine:
            confine = np.ascontiguousarray(roi[top : top + box_h, left : left + box_w], np.float32)
        # Every other pixel is plenty to tell a dark surface from a bright one.
        tone = sparse_mean(surface, top, left, box_h, box_w) / scale
        planes, blocks = _antialias(layer, zoom)
        defects.append(
            PlacedDefect(
                planes,
                blocks,
                np.array(box_to_layer),
                confine,
                top,
                left,
                box_h,
                box_w,
                layer.sign(tone),
                layer.tint,
            )
        )
    return SamplePlan(type_index, tuple(defects), (height, width), image)


def as_chw(image: Any) -> torch.Tensor:
    """A ``[C, H, W]`` tensor view of an image (PIL images are copied to a tensor)."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("L", "RGB"):
            raise TypeError(
                f"image: expected a PIL image in mode 'L' or 'RGB', got mode {image.mode!r}"
            )
        array = np.array(image)
        array = array[..., None] if array.ndim == 2 else array
        return torch.from_numpy(array).permute(2, 0, 1)
    tensor = image.as_subclass(torch.Tensor)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    elif tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(
            f"image: expected [H, W], [C, H, W] or [1, C, H, W] with C = 1 or 3, got shape "
            f"{tuple(image.shape)}"
        )
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise TypeError(f"image: expected a uint8 or floating-point image, got {tensor.dtype}")
    return tensor


def composite_sample(image: Any, plan: SamplePlan) -> Any:
    """A copy of ``image`` (same type, dtype and shape) with the plan's defects alpha-composited.

    The result is settled (:func:`~defectaug._kernels.settle_levels`): pixels that changed
    invisibly farther than ``TELL_MARGIN`` px from what visibly changed are left as they were.
    Images outside the fast path (:func:`takes_fast_path`) are composited on a CPU copy (uint8,
    or float32 for other floats) and converted back; no gradient flows through that copy.
    """
    if image is plan.source:
        return plan.source_composite()
    return _composite(image, plan)[0]


def _composite(image: Any, plan: SamplePlan) -> tuple[Any, np.ndarray, tuple[int, int]]:
    """``composite_sample`` plus the settled mask of the defects' union box and its corner."""
    pixels = as_chw(image)
    if tuple(pixels.shape[-2:]) != plan.image_size:
        raise ValueError(
            f"image: all images of a sample must share one size; got {tuple(pixels.shape[-2:])} "
            f"and {plan.image_size}"
        )
    fast = takes_fast_path(pixels)
    if fast and pixels.is_floating_point() and pixels.is_contiguous():
        # The copy and the range check in one pass (the common case: a float tensor).
        host, out = pixels, torch.empty_like(pixels)
        if not copy_within(host.numpy(), out.numpy(), _LOWEST, _HIGHEST):
            check_unit_range(pixels, "image")  # raises: outside [0, 1] or not finite
    else:
        if pixels.is_floating_point():
            check_unit_range(pixels, "image")
        if fast:
            host = pixels
        else:  # e.g. a second image of the sample on CUDA, or in half precision
            host = pixels.detach().to(
                "cpu", torch.uint8 if pixels.dtype == torch.uint8 else torch.float32
            )
        out = host.clone()
    window, corner = _composite_defects(out.numpy(), host.numpy(), plan)
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
    """Alpha-composite the plan's shaded defects into ``out [C, H, W]`` in place and settle it.

    ``before`` holds the pixels before compositing. Returns the label mask (uint8 0/1) of the
    union of the defects' boxes and that box's ``(top, left)``; ``_INVISIBLE`` and ``(0, 0)``
    when less than ``MIN_VISIBLE_PIXELS`` changed visibly.
    """
    defects = plan.defects
    if not defects:
        return _INVISIBLE, (0, 0)
    rounded = out.dtype == np.uint8
    scale, threshold = (255.0, _THRESHOLD_8BIT) if rounded else (1.0, _THRESHOLD_FLOAT)
    if len(defects) == 1:
        (defect,) = defects
        top, left, height, width = defect.top, defect.left, defect.height, defect.width
    else:
        top = min(defect.top for defect in defects)
        left = min(defect.left for defect in defects)
        height = max(defect.top + defect.height for defect in defects) - top
        width = max(defect.left + defect.width for defect in defects) - left
    # Change levels of the union box, filled as the defects are composited (compositing never
    # writes outside the boxes, so settling their union box is exact).
    level = np.zeros((height, width), dtype=np.uint8)
    row_start, row_stop, col_start, col_stop = height, 0, width, 0
    for defect in defects:
        rows_and_cols = composite_tracked(
            out,
            before,
            level,
            top,
            left,
            threshold,
            defect.planes,
            defect.blocks,
            defect.box_to_layer,
            defect.confine,
            defect.top,
            defect.left,
            defect.height,
            defect.width,
            defect.sign,
            defect.tint,
            scale,
        )
        if len(defects) == 1:
            row_start, row_stop, col_start, col_stop = rows_and_cols
        else:  # the union of the parts written
            row_start = min(row_start, rows_and_cols[0])
            row_stop = max(row_stop, rows_and_cols[1])
            col_start = min(col_start, rows_and_cols[2])
            col_stop = max(col_stop, rows_and_cols[3])
    visible = settle_levels(
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
    if not visible:
        return _INVISIBLE, (0, 0)
    return level, (top, left)


# The float range check_unit_range accepts.
_LOWEST, _HIGHEST = -UNIT_RANGE_TOLERANCE, 1.0 + UNIT_RANGE_TOLERANCE
# The visibility threshold in raw units: 8 for uint8 (8/255), and as a float32 for float images.
_THRESHOLD_8BIT = round(VISIBILITY * 255.0, 6)
_THRESHOLD_FLOAT = float(np.float32(VISIBILITY))
