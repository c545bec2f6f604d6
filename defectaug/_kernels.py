"""Compiled (numba) loops of the per-sample path of ``DefectInject``.

A data-loader worker puts one defect of some 60 x 60 px on one image at a time. As numpy or
torch operations that is some thirty calls on arrays of a few thousand elements, each paying
microseconds of dispatch, next to a JPEG decode and a resize that take ~1.4 ms in all. Here each
step is one pass over the defect's box, and the shading only visits pixels the defect covers.

The resampling is :func:`torch.nn.functional.grid_sample`'s (bilinear, zeros padding,
``align_corners=True``; the content of a content + alpha layer with its border replicated, as
:func:`defectaug.placement.warp_layer` reads it) and the shading is
:func:`defectaug.generators.relief.shade_relief`'s; the tests compare them.
Functions compile on first use and are cached on disk (``cache=True``). (OpenCV's
``warpAffine`` is not used: its thread pool can deadlock in a forked DataLoader worker.)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import overload

from defectaug.generators.bank import MATCH_CONTRAST
from defectaug.generators.base import LUMA

# The plane order of ReliefMaps.planes, from the module that defines it.
from defectaug.generators.relief import _ALPHA, _FIXED, _SIGNED, _TEXTURE, RUST, bright_sign_of
from defectaug.placement.warping import blur_taps
from defectaug.plan import invert_placement, place_layer

_RED, _GREEN, _BLUE = RUST

#: Coverage at or below which compositing cannot change a rounded pixel: with content and
#: background in [0, 1], a pixel moves by at most ``cover`` of full scale, under half a level
#: (a margin below 0.5 absorbs the background's float rounding), so it rounds back to itself.
#: Such pixels are skipped for integer images; float images take every change.
UNCHANGED_COVER_LEVELS = 0.49

# The placement arithmetic of every renderer, compiled: the same functions, so the same numbers.
_place_layer = njit(cache=True, nogil=True, inline="always")(place_layer)
_invert_placement = njit(cache=True, nogil=True, inline="always")(invert_placement)
_blur_taps = njit(cache=True, nogil=True, inline="always")(blur_taps)
_bright_sign_of = njit(cache=True, nogil=True, inline="always")(bright_sign_of)
_LUMA_RED, _LUMA_GREEN, _LUMA_BLUE = LUMA
_MATCH_LOW, _MATCH_HIGH = MATCH_CONTRAST


@njit(cache=True, nogil=True, inline="always")
def _least_cover(scale: float) -> float:
    """The cover at or below which a pass leaves a pixel as it is: UNCHANGED_COVER_LEVELS of a
    level for a rounded image (``scale`` 255), none for a float one."""
    return UNCHANGED_COVER_LEVELS / scale if scale != 1.0 else 0.0


@njit(cache=True, nogil=True)
def alpha_blocks(planes: np.ndarray) -> np.ndarray:
    """Where the alpha of ``planes [4, s, s]`` can be read as non-zero, by blocks of 4 x 4.

    Bilinear sampling at ``(x, y)`` reads pixels ``x0, x0 + 1`` and ``y0, y0 + 1`` (the floors);
    entry ``[(y0 + 1) >> 2, (x0 + 1) >> 2]`` is 0 when all four hold alpha <= 0, so the
    resamplers skip most of a box (a defect covers a small part of its layer) with one read.
    """
    return coverage_blocks(planes[_ALPHA])


@njit(cache=True, nogil=True)
def coverage_blocks(alpha: np.ndarray) -> np.ndarray:
    """:func:`alpha_blocks` of an alpha plane ``[h, w]`` (a content + alpha layer's)."""
    height, width = alpha.shape
    block_rows, block_cols = (height >> 2) + 1, (width >> 2) + 1
    # Pixel p is a tap of the floors p - 1 and p: blocks p >> 2 and (p + 1) >> 2 of its axis.
    # Columns first, row by row, then rows: two passes without nested block loops.
    hit_columns = np.zeros((height, block_cols), dtype=np.uint8)
    for row in range(height):
        for col in range(width):
            if alpha[row, col] > 0.0:
                hit_columns[row, col >> 2] = 1
                hit_columns[row, (col + 1) >> 2] = 1
    blocks = np.zeros((block_rows, block_cols), dtype=np.uint8)
    for row in range(height):
        for block_col in range(block_cols):
            if hit_columns[row, block_col]:
                blocks[row >> 2, block_col] = 1
                blocks[(row + 1) >> 2, block_col] = 1
    return blocks


@njit(cache=True, nogil=True, inline="always")
def _taps(x: float, y: float, left: int, top: int, height: int, width: int) -> tuple:
    """Bilinear taps at layer point ``(x, y)`` (floors ``left``, ``top``): corners and weights.

    A corner off the layer weighs 0 (zeros padding); its index is clamped so reads stay inside.
    """
    fx = x - left
    fy = y - top
    w00 = (1.0 - fy) * (1.0 - fx)
    w01 = (1.0 - fy) * fx
    w10 = fy * (1.0 - fx)
    w11 = fy * fx
    if left < 0:
        w00 = w10 = 0.0
    if left + 1 >= width:
        w01 = w11 = 0.0
    if top < 0:
        w00 = w01 = 0.0
    if top + 1 >= height:
        w10 = w11 = 0.0
    right, bottom = min(left + 1, width - 1), min(top + 1, height - 1)
    return max(top, 0), bottom, max(left, 0), right, w00, w01, w10, w11


@njit(cache=True, nogil=True, inline="always")
def _sample(plane: np.ndarray, taps: tuple) -> float:
    top, bottom, left, right, w00, w01, w10, w11 = taps
    return (
        w00 * plane[top, left]
        + w01 * plane[top, right]
        + w10 * plane[bottom, left]
        + w11 * plane[bottom, right]
    )


@njit(cache=True, nogil=True, inline="always")
def _affine(box_to_layer: np.ndarray) -> tuple:
    """``box_to_layer [2, 3]`` as six floats, read once per box rather than once per pixel."""
    return (
        box_to_layer[0, 0],
        box_to_layer[0, 1],
        box_to_layer[0, 2],
        box_to_layer[1, 0],
        box_to_layer[1, 1],
        box_to_layer[1, 2],
    )


@njit(cache=True, nogil=True, inline="always")
def _layer_point(affine: tuple, blocks: np.ndarray, shape: tuple, row: int, col: int) -> tuple:
    """Where box pixel ``(row, col)`` samples the layer: ``(hit, x, y, floor x, floor y)``.

    ``affine`` is ``box_to_layer`` flattened, ``shape`` the layer's ``(height, width)``. ``hit`` is
    False where the pixel maps off the layer or into a block whose alpha is all 0.
    """
    height, width = shape
    x_col, x_row, x_0, y_col, y_row, y_0 = affine
    x = x_col * col + x_row * row + x_0
    y = y_col * col + y_row * row + y_0
    if not (x > -1.0 and y > -1.0 and x < width and y < height):
        return False, x, y, 0, 0
    left, top = int(math.floor(x)), int(math.floor(y))
    return blocks[(top + 1) >> 2, (left + 1) >> 2] != 0, x, y, left, top


@njit(cache=True, nogil=True)
def _hit_bounds(blocks: np.ndarray, shape: tuple) -> tuple:
    """``x_low, x_high, y_low, y_high``: :func:`_layer_point` can hit only at layer points with
    ``x_low <= x < x_high`` and ``y_low <= y < y_high`` (the non-zero blocks' extent, within the
    layer); an empty range when no block is non-zero."""
    height, width = shape
    block_rows, block_cols = blocks.shape
    first_row, last_row, first_col, last_col = block_rows, -1, block_cols, -1
    for block_row in range(block_rows):
        for block_col in range(block_cols):
            if blocks[block_row, block_col] != 0:
                first_row, last_row = min(first_row, block_row), max(last_row, block_row)
                first_col, last_col = min(first_col, block_col), max(last_col, block_col)
    if last_row < 0:
        return 0.0, 0.0, 0.0, 0.0
    # Block b holds the floors f with (f + 1) >> 2 == b: 4 b - 1 <= f <= 4 b + 2.
    return (
        max(4.0 * first_col - 1.0, -1.0),
        min(4.0 * last_col + 3.0, float(width)),
        max(4.0 * first_row - 1.0, -1.0),
        min(4.0 * last_row + 3.0, float(height)),
    )


#: Columns added on each side of a row's span (:func:`_row_span`): its ends are solved with a
#: different rounding than :func:`_layer_point` maps pixels, so they are widened, not trusted.
_SPAN_SLACK = 2
#: A slope below this is taken as 0 (the row maps to one layer column or row, give or take).
_FLAT = 1e-6


@njit(cache=True, nogil=True, inline="always")
def _axis_span(slope: float, base: float, low: float, high: float, box_w: int) -> tuple:
    """Columns ``col`` of a row where ``low <= slope * col + base < high`` may hold, widened."""
    if abs(slope) < _FLAT:
        # The point moves by under 1e-6 px a column: the whole row or none of it, with 1 px of
        # slack (more than it moves across any image's width).
        if base < low - 1.0 or base >= high + 1.0:
            return 0, 0
        return 0, box_w
    first, last = (low - base) / slope, (high - base) / slope
    if slope < 0.0:
        first, last = last, first
    if last < -_SPAN_SLACK or first > box_w + _SPAN_SLACK:
        return 0, 0
    start = max(int(math.floor(first)) - _SPAN_SLACK, 0)
    stop = min(int(math.ceil(last)) + _SPAN_SLACK, box_w)
    return start, max(stop, start)


@njit(cache=True, nogil=True, inline="always")
def _row_span(affine: tuple, bounds: tuple, row: int, box_w: int) -> tuple:
    """``start, stop``: the columns of box row ``row`` outside which :func:`_layer_point` cannot
    hit (``bounds``: :func:`_hit_bounds`), so the resamplers skip the rest of the row. The
    pixels inside are still tested one by one, so results do not depend on it."""
    x_col, x_row, x_0, y_col, y_row, y_0 = affine
    x_low, x_high, y_low, y_high = bounds
    if x_low >= x_high or y_low >= y_high:
        return 0, 0
    x_start, x_stop = _axis_span(x_col, x_row * row + x_0, x_low, x_high, box_w)
    y_start, y_stop = _axis_span(y_col, y_row * row + y_0, y_low, y_high, box_w)
    start = max(x_start, y_start)
    return start, max(min(x_stop, y_stop), start)


@njit(cache=True, nogil=True)
def warp_alpha(
    planes: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    confine: np.ndarray,
    box_h: int,
    box_w: int,
) -> np.ndarray:
    """The alpha plane of ``planes [4, s, s]`` resampled into a ``box_h x box_w`` box, in [0, 1].

    ``blocks`` is :func:`alpha_blocks` of ``planes``; ``box_to_layer`` (``[2, 3]``) maps box pixel
    ``(x, y, 1)`` to layer pixel ``(x, y)``; ``confine`` weighs the result as in
    :func:`composite_relief`, so both passes see the same coverage.
    """
    return warp_coverage(planes[_ALPHA], blocks, box_to_layer, confine, box_h, box_w)


@njit(cache=True, nogil=True)
def warp_coverage(
    layer_alpha: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    confine: np.ndarray,
    box_h: int,
    box_w: int,
) -> np.ndarray:
    """:func:`warp_alpha` of an alpha plane ``[h, w]`` (``blocks``: its
    :func:`coverage_blocks`): the coverage :func:`composite_layer_tracked` composites with."""
    shape = layer_alpha.shape
    confined = confine.size > 0
    affine = _affine(box_to_layer)
    bounds = _hit_bounds(blocks, shape)
    alpha = np.zeros((box_h, box_w), dtype=np.float32)
    for row in range(box_h):
        start, stop = _row_span(affine, bounds, row, box_w)
        for col in range(start, stop):
            hit, x, y, left, top = _layer_point(affine, blocks, shape, row, col)
            if hit:
                value = _sample(layer_alpha, _taps(x, y, left, top, shape[0], shape[1]))
                alpha[row, col] = min(max(value, 0.0), 1.0)
                if confined:
                    alpha[row, col] *= confine[row, col]
    return alpha


@njit(cache=True, nogil=True, inline="always")
def _composite_box(
    window: np.ndarray,
    top: int,
    left: int,
    box_h: int,
    box_w: int,
    planes: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    confine: np.ndarray,
    sign: float,
    tint: float,
    scale: float,
    track: bool,
    before: np.ndarray,
    level: np.ndarray,
    level_top: int,
    level_left: int,
    threshold: float,
) -> tuple:
    """:func:`composite_relief` into ``window[:, top:top + box_h, left:left + box_w]``.

    With ``track``, every pixel written also gets its change level (see :func:`settle_levels`)
    against ``before`` (same shape as ``window``) in ``level[row - level_top, col - level_left]``,
    from the values as stored, so the last write to a pixel leaves the level of its final value;
    returns the rows and columns of ``level`` written, as half-open ranges (empty: none).
    """
    channels = window.shape[0]
    signed_plane, fixed_plane = planes[_SIGNED], planes[_FIXED]
    texture_plane, alpha_plane = planes[_TEXTURE], planes[_ALPHA]
    confined = confine.size > 0
    tinted = channels == 3 and tint > 0.0
    rounded = scale != 1.0
    least = _least_cover(scale)
    shape = alpha_plane.shape
    affine = _affine(box_to_layer)
    bounds = _hit_bounds(blocks, shape)
    row_start, row_stop, col_start, col_stop = level.shape[0], 0, level.shape[1], 0
    for row in range(box_h):
        start, stop = _row_span(affine, bounds, row, box_w)
        for col in range(start, stop):
            hit, x, y, left_tap, top_tap = _layer_point(affine, blocks, shape, row, col)
            if not hit:
                continue
            taps = _taps(x, y, left_tap, top_tap, shape[0], shape[1])
            cover = min(max(_sample(alpha_plane, taps), 0.0), 1.0)
            if confined:
                cover *= confine[row, col]
            if cover <= least:
                continue
            relief = _sample(signed_plane, taps) * sign + _sample(fixed_plane, taps)
            relief = min(max(relief, -1.0), 1.0)
            texture = 1.0 + _sample(texture_plane, taps)
            strength = min(tint * min(abs(relief), 1.0) * 3.0, 1.0) if tinted else 0.0
            at_row, at_col = top + row, left + col
            change = 0.0
            for channel in range(channels):
                under = window[channel, at_row, at_col] / scale
                content = _shade(under, relief, texture, tinted, strength, channel)
                value = under + cover * (content - under)
                stored = store_tracked(
                    window, before, channel, at_row, at_col, value, scale, rounded
                )
                change = max(change, stored)
            if track:
                level_row, level_col = at_row - level_top, at_col - level_left
                level[level_row, level_col] = _level_of(change, threshold)
                row_start, row_stop = min(row_start, level_row), max(row_stop, level_row + 1)
                col_start, col_stop = min(col_start, level_col), max(col_stop, level_col + 1)
    return row_start, row_stop, col_start, col_stop


@njit(cache=True, nogil=True, inline="always")
def _shade(
    under: float, relief: float, texture: float, tinted: bool, strength: float, channel: int
) -> float:
    """``shade_relief`` of one channel of one pixel of tone ``under``."""
    # Negative relief darkens towards black, positive lightens towards white.
    shaded = under * (1.0 + relief) if relief < 0.0 else under + (1.0 - under) * relief
    content = shaded * texture
    if tinted:
        rust = _RED if channel == 0 else (_GREEN if channel == 1 else _BLUE)
        content *= 1.0 - strength * (1.0 - rust)
    return min(max(content, 0.0), 1.0)


@njit(cache=True, nogil=True, inline="always")
def _change(value, under, rounded: bool) -> float:
    """How far ``value`` moved from ``under``, in raw units."""
    # Integer pixels are subtracted as floats, not modulo 256.
    return abs(float(value) - float(under)) if rounded else float(abs(value - under))


@njit(cache=True, nogil=True, inline="always")
def _level_of(change: float, threshold: float) -> int:
    """0: no change, 1: a change of at most ``threshold``, 2: a larger one. A pixel's level is
    that of its largest channel change (the level grows with the change), so it is classified
    once, not once per channel."""
    if change > threshold:
        return 2
    return 1 if change > 0.0 else 0


@njit(cache=True, nogil=True, inline="always")
def store_tracked(
    image: np.ndarray,
    before: np.ndarray,
    channel: int,
    row: int,
    col: int,
    value: float,
    scale: float,
    rounded: bool,
) -> float:
    """Store ``value`` (in [0, 1]; rounded to ``scale`` levels for a uint8 image) at
    ``image[channel, row, col]``; return how far the stored value is from ``before`` there
    (:func:`_change`)."""
    if rounded:
        value = np.rint(min(max(value, 0.0), 1.0) * scale)
    image[channel, row, col] = value
    return _change(image[channel, row, col], before[channel, row, col], rounded)


@njit(cache=True, nogil=True)
def composite_relief(
    window: np.ndarray,
    planes: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    confine: np.ndarray,
    sign: float,
    tint: float,
    scale: float,
) -> None:
    """Resample the layer ``planes [4, s, s]`` into ``window [C, h, w]``, shade it and composite.

    ``blocks`` is :func:`alpha_blocks` of ``planes``. One pass over the box: a pixel whose
    resampled alpha (clipped to [0, 1], times ``confine`` when that is an ``[h, w]`` array rather
    than an empty one) is 0, or too small to change a uint8 pixel (``UNCHANGED_COVER_LEVELS``),
    is left as it is; elsewhere the relief is shaded on the pixel
    (``shade_relief``) and alpha-composited. ``scale`` is 255 for a uint8 window (read as
    ``value / 255``, written back clipped and rounded half to even) and 1 for a float one.
    """
    _, box_h, box_w = window.shape
    _composite_box(
        window,
        0,
        0,
        box_h,
        box_w,
        planes,
        blocks,
        box_to_layer,
        confine,
        sign,
        tint,
        scale,
        False,
        window,
        blocks,
        0,
        0,
        0.0,
    )


@njit(cache=True, nogil=True)
def composite_tracked(
    image: np.ndarray,
    before: np.ndarray,
    level: np.ndarray,
    level_top: int,
    level_left: int,
    threshold: float,
    planes: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    confine: np.ndarray,
    top: int,
    left: int,
    box_h: int,
    box_w: int,
    sign: float,
    tint: float,
    scale: float,
) -> tuple:
    """:func:`composite_relief` into the box ``top, left, box_h, box_w`` of ``image [C, H, W]``,
    recording what changed.

    ``before`` is the image before any defect was composited. Each pixel written gets its change
    level in ``level [h, w]`` (whose pixel 0, 0 is image pixel ``level_top, level_left``; it
    must hold the box): 0 where every channel equals ``before``, 2 where some channel changed by
    more than ``threshold`` (raw units, as in :func:`settle_window`), else 1. The level is that of
    the value stored, so over several (overlapping) calls ``level`` ends up exactly as
    :func:`settle_window` would measure it by comparing the whole window with ``before``; pixels
    never written stay 0, which they are. Returns the rows and columns of ``level`` written, as
    half-open ranges ``row_start, row_stop, col_start, col_stop`` (empty when none was).
    """
    return _composite_box(
        image,
        top,
        left,
        box_h,
        box_w,
        planes,
        blocks,
        box_to_layer,
        confine,
        sign,
        tint,
        scale,
        True,
        before,
        level,
        level_top,
        level_left,
        threshold,
    )


@njit(cache=True, nogil=True)
def place_box(defect: tuple, layer_h: int, layer_w: int, image_h: int, image_w: int) -> tuple:
    """Where a ``layer_h x layer_w`` layer drawn as ``defect`` (a
    :class:`~defectaug.plan.PlannedDefect`) lands on an ``image_h x image_w`` image:
    ``top, left, height, width, to_image [2, 3], box_to_layer [2, 3], taps, sigma``, the box of
    :func:`~defectaug.plan.layer_box`, its map and the inverse, and the anti-aliasing low-pass
    of :func:`~defectaug.placement.warping.blur_taps` (``taps`` 0: none)."""
    top, left, box_h, box_w, a, b, tx, c, d, ty, zoom = _place_layer(
        defect, layer_h, layer_w, image_h, image_w
    )
    to_image = _map_of(a, b, tx, c, d, ty)
    x_col, x_row, x_0, y_col, y_row, y_0 = _invert_placement(a, b, tx, c, d, ty, top, left)
    box_to_layer = _map_of(x_col, x_row, x_0, y_col, y_row, y_0)
    taps, sigma = _blur_taps(zoom, layer_h, layer_w)
    return top, left, box_h, box_w, to_image, box_to_layer, taps, sigma


@njit(cache=True, nogil=True, inline="always")
def _map_of(a: float, b: float, c: float, d: float, e: float, f: float) -> np.ndarray:
    """The ``[2, 3]`` map of rows ``(a, b, c), (d, e, f)`` (what :func:`_affine` reads)."""
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[0, 0], matrix[0, 1], matrix[0, 2] = a, b, c
    matrix[1, 0], matrix[1, 1], matrix[1, 2] = d, e, f
    return matrix


@njit(cache=True, nogil=True)
def place_relief(
    surface: np.ndarray,
    scale: float,
    planes: np.ndarray,
    blocks: np.ndarray,
    defect: tuple,
    bright_draw: float,
    bright_probability: float,
) -> tuple:
    """Place a relief layer ``planes [4, h, w]`` (``blocks``: its :func:`alpha_blocks`) drawn as
    ``defect`` (a :class:`~defectaug.plan.PlannedDefect`) on ``surface [C, H, W]`` (raw values,
    white at ``scale``).

    Returns ``planes, blocks, box_to_layer [2, 3], top, left, height, width, sign``: the box
    and inverse map of :func:`place_box`, the planes low-passed as
    :func:`~defectaug.placement.warping.antialias` would (with their blocks; the inputs when
    not), and the sign (+1 bright, -1 dark) the layer's ``bright_draw`` and
    ``bright_probability`` give on the surface's mean tone under the box (every other pixel,
    :func:`sparse_mean`; :func:`~defectaug.generators.relief.bright_sign`).
    """
    _, image_h, image_w = surface.shape
    _, layer_h, layer_w = planes.shape
    top, left, box_h, box_w, _, box_to_layer, taps, sigma = place_box(
        defect, layer_h, layer_w, image_h, image_w
    )
    if taps:  # low-passed as antialias low-passes it ("constant" border)
        planes = blur_planes(planes, taps, sigma, False)
        blocks = alpha_blocks(planes)
    tone = sparse_mean(surface, top, left, box_h, box_w) / scale
    sign = _bright_sign_of(tone, bright_draw, bright_probability)
    return planes, blocks, box_to_layer, top, left, box_h, box_w, sign


def _composite_defect(target: tuple, scale: float, defect: tuple) -> tuple:
    """:func:`composite_tracked` of a placed relief layer
    (:class:`~defectaug.per_sample.PlacedDefect`), or :func:`composite_layer_tracked` of a
    placed content + alpha layer (:class:`~defectaug.per_sample.PlacedLayer`), into ``target``:
    ``image, before, level, level_top, level_left, threshold`` as those passes take them.
    Compiled code only: the layer's kind picks the pass when compiling."""
    raise TypeError("_composite_defect runs in compiled code only (composite_defects)")


@overload(_composite_defect, jit_options={"cache": True, "nogil": True})
def _composite_defect_pass(target, scale, defect):
    if "planes" not in defect.fields:
        return lambda target, scale, defect: composite_layer_tracked(*target, scale, defect)

    def composite_relief_defect(target, scale, defect):
        return composite_tracked(
            *target,
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

    return composite_relief_defect


@njit(cache=True, nogil=True)
def composite_defects(
    image: np.ndarray,
    before: np.ndarray,
    defects: tuple,
    threshold: float,
    scale: float,
    min_pixels: int,
) -> tuple:
    """Alpha-composite a sample's placed layers (``defects``: a tuple of
    :class:`~defectaug.per_sample.PlacedDefect`, shaded relief layers as
    :func:`composite_tracked` composites them, or of
    :class:`~defectaug.per_sample.PlacedLayer`, content + alpha layers as
    :func:`composite_layer_tracked` does) into ``image [C, H, W]`` in order, recording what
    changed, then settle the union window of their boxes (:func:`settle_levels`).

    ``before`` holds the pixels before any defect (``image``'s, on the call). Returns ``level,
    top, left, count``: the label mask (uint8 0/1) of the union window, whose corner is image
    pixel ``top, left``, and its pixel count (0: fewer than ``min_pixels`` pixels changed
    visibly, and every pixel was restored).
    """
    top, left, bottom, right = 1 << 30, 1 << 30, 0, 0
    for defect in defects:
        top, left = min(top, defect.top), min(left, defect.left)
        bottom = max(bottom, defect.top + defect.height)
        right = max(right, defect.left + defect.width)
    height, width = bottom - top, right - left
    level = np.zeros((height, width), dtype=np.uint8)
    row_start, row_stop, col_start, col_stop = height, 0, width, 0
    target = (image, before, level, top, left, threshold)
    for defect in defects:
        rows_and_cols = _composite_defect(target, scale, defect)
        row_start, row_stop = min(row_start, rows_and_cols[0]), max(row_stop, rows_and_cols[1])
        col_start, col_stop = min(col_start, rows_and_cols[2]), max(col_stop, rows_and_cols[3])
    count = settle_levels(
        image,
        before,
        level,
        top,
        left,
        min_pixels,
        scale != 1.0,
        row_start,
        row_stop,
        col_start,
        col_stop,
    )
    return level, top, left, count


@njit(cache=True, nogil=True)
def landing_patch(
    image: np.ndarray,
    to_image: np.ndarray,
    height: int,
    width: int,
    scale: float,
    region: tuple,
) -> np.ndarray:
    """The patch of ``image [C, H, W]`` (divided by ``scale``) a ``height x width`` layer lands
    on, in the layer's frame: ``[C, height, width]`` float32, layer pixel ``(x, y)`` read at
    image point ``to_image [2, 3] @ (x, y, 1)`` bilinearly with the border replicated, as
    :func:`defectaug.placement.layer_backgrounds` reads it. Only the layer pixels of
    ``region`` (``row_start, row_stop, col_start, col_stop``) are read; the others are 0."""
    channels, image_h, image_w = image.shape
    a, b, c = to_image[0, 0], to_image[0, 1], to_image[0, 2]
    d, e, f = to_image[1, 0], to_image[1, 1], to_image[1, 2]
    row_start, row_stop, col_start, col_stop = region
    patch = np.zeros((channels, height, width), dtype=np.float32)
    span = max(col_stop - col_start, 0)
    # A row's taps (the corners' flat offsets and the fractions) are found once and then read
    # for every channel: the channels' inner loops are plain gathers.
    corners = np.empty((4, span), dtype=np.intp)
    across = np.empty(span, dtype=np.float64)
    down = np.empty(span, dtype=np.float64)
    flat = np.ascontiguousarray(image).reshape(channels, image_h * image_w)
    for row in range(row_start, row_stop):
        for index in range(span):
            col = col_start + index
            x = min(max(a * col + b * row + c, 0.0), image_w - 1.0)
            y = min(max(d * col + e * row + f, 0.0), image_h - 1.0)
            left, top = int(math.floor(x)), int(math.floor(y))
            right, bottom = min(left + 1, image_w - 1), min(top + 1, image_h - 1)
            across[index], down[index] = x - left, y - top
            corners[0, index] = top * image_w + left
            corners[1, index] = top * image_w + right
            corners[2, index] = bottom * image_w + left
            corners[3, index] = bottom * image_w + right
        for channel in range(channels):
            source = flat[channel]
            target = patch[channel, row]
            for index in range(span):
                fx, fy = across[index], down[index]
                upper = (1.0 - fx) * source[corners[0, index]] + fx * source[corners[1, index]]
                lower = (1.0 - fx) * source[corners[2, index]] + fx * source[corners[3, index]]
                target[col_start + index] = ((1.0 - fy) * upper + fy * lower) / scale
    return patch


@njit(cache=True, nogil=True, inline="always")
def _grey(image: np.ndarray, row: int, col: int) -> float:
    """ITU-R 601 luminance of pixel ``row, col`` of ``image [3, h, w]`` (``LUMA``)."""
    return (
        _LUMA_RED * image[0, row, col]
        + _LUMA_GREEN * image[1, row, col]
        + _LUMA_BLUE * image[2, row, col]
    )


@njit(cache=True, nogil=True)
def finish_crop(
    content: np.ndarray,
    valid: np.ndarray,
    alpha: np.ndarray,
    contrast: float,
    brightness: float,
    patch: np.ndarray,
) -> np.ndarray:
    """A bank crop (``content [C, h, w]``, ``valid [h, w]``, ``alpha [h, w]``) finished for the
    patch it lands on, as ``DefectBank._finish`` finishes it: tone-matched to ``patch [P, h, w]``
    (``match_tone``, the patch converted to the crop's channels: luminance, or grey
    replicated; an empty ``patch`` skips the match), then ``contrast`` about the defect's mean
    plus ``brightness``, 0 where the crop has no pixels, clamped to [0, 1] (float32)."""
    channels, height, width = content.shape
    out = np.empty((channels, height, width), dtype=np.float32)
    out[:] = content
    matched = patch.shape[0] > 0
    grey_patch = matched and patch.shape[0] != channels and channels == 1
    # One pass for what the match measures over: 1 where the crop has pixels, 2 where they also
    # lie outside the defect (its surroundings); and the coverage and the patch's luminance.
    where = np.zeros((height, width), dtype=np.uint8)
    grey = np.empty((height if grey_patch else 0, width), dtype=np.float64)
    around = 0
    inside = 0
    coverage = 0.0
    for row in range(height):
        for col in range(width):
            if valid[row, col] > 0.5:
                inside += 1
                where[row, col] = 1
                if alpha[row, col] < 0.5:
                    around += 1
                    where[row, col] = 2
            coverage += alpha[row, col]
            if grey_patch:
                grey[row, col] = _grey(patch, row, col)
    coverage = max(coverage, 1e-6)
    # The surroundings (valid, outside the defect) when there are enough, else all valid.
    enough = around >= 8
    least = 2 if enough else 1
    total = float(max(around if enough else inside, 1))
    crop_mean, patch_mean, factor = 0.0, 0.0, 1.0  # what an unmatched crop keeps
    for channel in range(channels):
        if matched:
            source = 0 if patch.shape[0] == 1 else channel
            crop_sum, patch_sum = 0.0, 0.0
            for row in range(height):
                for col in range(width):
                    if where[row, col] >= least:
                        crop_sum += out[channel, row, col]
                        patch_sum += grey[row, col] if grey_patch else patch[source, row, col]
            crop_mean, patch_mean = crop_sum / total, patch_sum / total
            crop_spread, patch_spread = 0.0, 0.0
            for row in range(height):
                for col in range(width):
                    if where[row, col] >= least:
                        crop_spread += (out[channel, row, col] - crop_mean) ** 2
                        tone = grey[row, col] if grey_patch else patch[source, row, col]
                        patch_spread += (tone - patch_mean) ** 2
            crop_std = math.sqrt(crop_spread / total)
            patch_std = math.sqrt(patch_spread / total)
            factor = min(max(patch_std / max(crop_std, 1e-3), _MATCH_LOW), _MATCH_HIGH)
        total_tone = 0.0
        for row in range(height):
            for col in range(width):
                if matched:
                    out[channel, row, col] = (out[channel, row, col] - crop_mean) * factor + (
                        patch_mean
                    )
                total_tone += out[channel, row, col] * alpha[row, col]
        mean = total_tone / coverage
        for row in range(height):
            for col in range(width):
                if valid[row, col] > 1e-3:
                    value = (out[channel, row, col] - mean) * contrast + mean + brightness
                    out[channel, row, col] = min(max(value, 0.0), 1.0)
                else:
                    out[channel, row, col] = 0.0
    return out


@njit(cache=True, nogil=True)
def landed_planes(
    content: np.ndarray, alpha: np.ndarray, patch: np.ndarray, channels: int
) -> np.ndarray:
    """``content [C, h, w]`` in ``channels`` channels stacked over ``alpha [h, w]``:
    ``[channels + 1, h, w]`` float32, converted as
    :func:`defectaug.generators.base.convert_layer` converts a layer: RGB -> grey by
    luminance; grey -> RGB as a luminance change of the landing ``patch [3, h, w]``
    (``clamp(patch + grey - luminance(patch), 0, 1)``), or replicated when ``patch`` has no
    3 channels."""
    native, height, width = content.shape
    planes = np.empty((channels + 1, height, width), dtype=np.float32)
    shifted = native == 1 and channels == 3 and patch.shape[0] == 3
    for row in range(height):
        for col in range(width):
            if native == channels:
                for channel in range(channels):
                    planes[channel, row, col] = content[channel, row, col]
            elif channels == 1:
                planes[0, row, col] = _grey(content, row, col)
            elif shifted:
                change = content[0, row, col] - _grey(patch, row, col)
                for channel in range(3):
                    value = patch[channel, row, col] + change
                    planes[channel, row, col] = min(max(value, 0.0), 1.0)
            else:
                for channel in range(channels):
                    planes[channel, row, col] = content[0, row, col]
            planes[channels, row, col] = alpha[row, col]
    return planes


@njit(cache=True, nogil=True)
def blur_planes(planes: np.ndarray, size: int, sigma: float, replicate: bool) -> np.ndarray:
    """``planes [P, h, w]`` low-passed by a normalised Gaussian of ``size`` (odd) taps and
    ``sigma``, along rows then columns, each tap off the plane read as its nearest edge pixel
    (``replicate``) or as 0: :func:`defectaug.placement.antialias`'s blur (float32)."""
    count, height, width = planes.shape
    reach = size // 2
    weights = np.empty(size, dtype=np.float64)
    for tap in range(size):
        weights[tap] = math.exp(-((tap - reach) ** 2) / (2.0 * sigma * sigma))
    weights /= weights.sum()
    taps = weights.astype(np.float32)
    out = np.zeros((count, height, width), dtype=np.float32)
    # Padded copies of a row and of the plane filtered along rows: the inner loops then run
    # over contiguous rows without a bounds test, which the compiler vectorises.
    row_buffer = np.zeros(width + 2 * reach, dtype=np.float32)
    across = np.zeros((height + 2 * reach, width), dtype=np.float32)
    for plane in range(count):
        source = planes[plane]
        for row in range(height):
            row_buffer[reach : reach + width] = source[row]
            if replicate:
                row_buffer[:reach] = source[row, 0]
                row_buffer[reach + width :] = source[row, width - 1]
            filtered = across[reach + row]
            filtered[:] = 0.0
            for tap in range(size):
                weight = taps[tap]
                for col in range(width):
                    filtered[col] += weight * row_buffer[tap + col]
        if replicate:
            for row in range(reach):
                across[row] = across[reach]
                across[reach + height + row] = across[reach + height - 1]
        target = out[plane]
        for row in range(height):
            result = target[row]
            for tap in range(size):
                weight = taps[tap]
                filtered = across[row + tap]
                for col in range(width):
                    result[col] += weight * filtered[col]
    return out


@njit(cache=True, nogil=True, inline="always")
def _content_taps(x: float, y: float, left: int, top: int, height: int, width: int) -> tuple:
    """Bilinear taps of a content plane at layer point ``(x, y)`` (floors ``left``, ``top``),
    its border replicated: rows, columns and fractions."""
    col0, col1 = min(max(left, 0), width - 1), min(max(left + 1, 0), width - 1)
    row0, row1 = min(max(top, 0), height - 1), min(max(top + 1, 0), height - 1)
    return row0, row1, col0, col1, x - left, y - top


@njit(cache=True, nogil=True, inline="always")
def _content_sample(plane: np.ndarray, taps: tuple) -> float:
    """``plane`` read at :func:`_content_taps`, clipped to [0, 1]."""
    row0, row1, col0, col1, fx, fy = taps
    upper = (1.0 - fx) * plane[row0, col0] + fx * plane[row0, col1]
    lower = (1.0 - fx) * plane[row1, col0] + fx * plane[row1, col1]
    return min(max((1.0 - fy) * upper + fy * lower, 0.0), 1.0)


@njit(cache=True, nogil=True)
def composite_layer_tracked(
    image: np.ndarray,
    before: np.ndarray,
    level: np.ndarray,
    level_top: int,
    level_left: int,
    threshold: float,
    scale: float,
    layer: tuple,
) -> tuple:
    """Alpha-composite a placed content + alpha layer (``layer``: a
    :class:`~defectaug.per_sample.PlacedLayer`, ``content [C, h, w]`` and ``alpha [h, w]`` in
    [0, 1] landing on the box ``top, left, height, width``) into ``image [C, H, W]``, recording
    what changed as :func:`composite_tracked` does (the same return value).

    Box pixel ``(x, y, 1)`` samples the layer at ``box_to_layer @ (x, y, 1)``, bilinearly: alpha
    with zeros outside the layer, content with its border replicated, so the layer is resampled
    as :func:`defectaug.placement.warp_layer` resamples it (its 1 px ring, replicated content
    and zero alpha, read with border padding); ``blocks`` is :func:`coverage_blocks` of
    ``alpha``, and ``confine`` weighs the coverage as in :func:`composite_relief`. A pixel becomes
    ``under + cover * (content - under)``, rounded when ``scale`` is 255 (a uint8 image; a cover
    too small to change it leaves it as it is).
    """
    content, alpha, blocks = layer.content, layer.alpha, layer.blocks
    box_to_layer, confine = layer.box_to_layer, layer.confine
    top, left, box_h, box_w = layer.top, layer.left, layer.height, layer.width
    channels = image.shape[0]
    confined = confine.size > 0
    rounded = scale != 1.0
    least = _least_cover(scale)
    shape = alpha.shape
    height, width = shape
    affine = _affine(box_to_layer)
    bounds = _hit_bounds(blocks, shape)
    row_start, row_stop, col_start, col_stop = level.shape[0], 0, level.shape[1], 0
    for row in range(box_h):
        start, stop = _row_span(affine, bounds, row, box_w)
        for col in range(start, stop):
            hit, x, y, left_tap, top_tap = _layer_point(affine, blocks, shape, row, col)
            if not hit:
                continue
            cover = _sample(alpha, _taps(x, y, left_tap, top_tap, height, width))
            cover = min(max(cover, 0.0), 1.0)
            if confined:
                cover *= confine[row, col]
            if cover <= least:
                continue
            taps = _content_taps(x, y, left_tap, top_tap, height, width)
            at_row, at_col = top + row, left + col
            change = 0.0
            for channel in range(channels):
                shown = _content_sample(content[channel], taps)
                under = image[channel, at_row, at_col] / scale
                value = under + cover * (shown - under)
                change = max(
                    change,
                    store_tracked(image, before, channel, at_row, at_col, value, scale, rounded),
                )
            level_row, level_col = at_row - level_top, at_col - level_left
            level[level_row, level_col] = _level_of(change, threshold)
            row_start, row_stop = min(row_start, level_row), max(row_stop, level_row + 1)
            col_start, col_stop = min(col_start, level_col), max(col_stop, level_col + 1)
    return row_start, row_stop, col_start, col_stop


@njit(cache=True, nogil=True)
def warp_content(
    content: np.ndarray, blocks: np.ndarray, box_to_layer: np.ndarray, alpha: np.ndarray
) -> np.ndarray:
    """The content ``[C, h, w]`` of a content + alpha layer resampled into a box (float64) as
    :func:`composite_layer_tracked` resamples it, where the box's coverage ``alpha [box_h,
    box_w]`` (:func:`warp_coverage`) is non-zero; 0 elsewhere. ``blocks`` is
    :func:`coverage_blocks` of the layer's alpha. The Poisson blends of the compiled renderer
    start from it, as from :func:`shade_content`'s shaded relief."""
    channels, height, width = content.shape
    box_h, box_w = alpha.shape
    shape = (height, width)
    affine = _affine(box_to_layer)
    out = np.zeros((channels, box_h, box_w), dtype=np.float64)
    for row in range(box_h):
        for col in range(box_w):
            if alpha[row, col] <= 0.0:
                continue
            _, x, y, left_tap, top_tap = _layer_point(affine, blocks, shape, row, col)
            taps = _content_taps(x, y, left_tap, top_tap, height, width)
            for channel in range(channels):
                out[channel, row, col] = _content_sample(content[channel], taps)
    return out


@njit(cache=True, nogil=True)
def shade_content(
    image: np.ndarray,
    planes: np.ndarray,
    blocks: np.ndarray,
    box_to_layer: np.ndarray,
    alpha: np.ndarray,
    top: int,
    left: int,
    sign: float,
    tint: float,
    scale: float,
) -> np.ndarray:
    """The shaded content ``[C, h, w]`` (float64) of a layer over the box ``top, left`` of
    ``image [C, H, W]``, where its coverage ``alpha [h, w]`` (:func:`warp_alpha`) is non-zero.

    The relief is shaded on ``image``'s pixels (read as ``value / scale``) as in
    :func:`composite_relief`, but not composited: the Poisson blends of the compiled renderer
    (:mod:`defectaug._poisson_kernels`) start from it. Content is 0 where ``alpha`` is 0.
    """
    channels = image.shape[0]
    box_h, box_w = alpha.shape
    signed_plane, fixed_plane = planes[_SIGNED], planes[_FIXED]
    texture_plane, alpha_plane = planes[_TEXTURE], planes[_ALPHA]
    tinted = channels == 3 and tint > 0.0
    shape = alpha_plane.shape
    affine = _affine(box_to_layer)
    content = np.zeros((channels, box_h, box_w), dtype=np.float64)
    for row in range(box_h):
        for col in range(box_w):
            if alpha[row, col] <= 0.0:
                continue
            _, x, y, left_tap, top_tap = _layer_point(affine, blocks, shape, row, col)
            taps = _taps(x, y, left_tap, top_tap, shape[0], shape[1])
            relief = _sample(signed_plane, taps) * sign + _sample(fixed_plane, taps)
            relief = min(max(relief, -1.0), 1.0)
            texture = 1.0 + _sample(texture_plane, taps)
            strength = min(tint * min(abs(relief), 1.0) * 3.0, 1.0) if tinted else 0.0
            for channel in range(channels):
                under = image[channel, top + row, left + col] / scale
                content[channel, row, col] = _shade(
                    under, relief, texture, tinted, strength, channel
                )
    return content


@njit(cache=True, nogil=True)
def copy_within(source: np.ndarray, out: np.ndarray, low: float, high: float) -> bool:
    """Copy C-contiguous ``source`` into ``out`` (same shape); whether all of it is in [low, high].

    One pass for the copy and the range check of a float image (NaN is outside), instead of a
    clone followed by separate min and max passes.
    """
    values = source.ravel()
    copy = out.ravel()
    inside = True
    for index in range(values.size):
        value = values[index]
        copy[index] = value
        inside &= (value >= low) & (value <= high)
    return inside


@njit(cache=True, nogil=True)
def sparse_mean(pixels: np.ndarray, top: int, left: int, box_h: int, box_w: int) -> float:
    """Mean of ``pixels [C, H, W]`` over every other row and column of a box (raw values)."""
    total = 0.0
    count = 0
    for channel in range(pixels.shape[0]):
        for row in range(top, top + box_h, 2):
            for col in range(left, left + box_w, 2):
                total += pixels[channel, row, col]
                count += 1
    return total / max(count, 1)


@njit(cache=True, nogil=True)
def settle_window(
    window: np.ndarray, before: np.ndarray, threshold: float, min_pixels: int, rounded: bool
) -> np.ndarray:
    """Make a composited ``window [C, h, w]`` agree with its label mask; return the mask.

    ``before`` is the same window before compositing. The mask (uint8, 1 inside) holds the
    pixels where some channel changed by more than ``threshold`` (raw units: 8 for uint8 at
    8/255), plus one-pixel holes whose four neighbours are in it. Pixels at chessboard distance 1
    from the mask keep their (invisible) change, at distance 2 half of it (rounded when
    ``rounded``, for integer windows), and farther ones are restored to ``before`` (no faint
    trace outside the mask). When the mask has fewer than ``min_pixels`` pixels the whole window
    is restored and the mask is empty. This is :func:`defectaug.batch.settle_composite` for one
    window; the tests compare them. (The per-sample path measures the change while compositing,
    :func:`composite_tracked`, and settles with :func:`settle_levels`.)
    """
    channels, height, width = window.shape
    # 0: unchanged, 1: changed invisibly, 2: changed visibly (in the mask).
    level = np.zeros((height, width), dtype=np.uint8)
    for row in range(height):
        for col in range(width):
            change = 0.0
            for channel in range(channels):
                change = max(
                    change, _change(window[channel, row, col], before[channel, row, col], rounded)
                )
            level[row, col] = _level_of(change, threshold)
    settle_levels(window, before, level, 0, 0, min_pixels, rounded, 0, height, 0, width)
    return level


@njit(cache=True, nogil=True)
def settle_levels(
    image: np.ndarray,
    before: np.ndarray,
    level: np.ndarray,
    top: int,
    left: int,
    min_pixels: int,
    rounded: bool,
    row_start: int,
    row_stop: int,
    col_start: int,
    col_stop: int,
) -> int:
    """:func:`settle_window` of the window of ``image`` under ``level``, from its change levels.

    ``level [h, w]`` holds, for the window ``image[:, top:top + h, left:left + w]``, 0 where it
    equals ``before``, 1 where it changed by at most the visibility threshold and 2 where some
    channel changed by more (:func:`composite_tracked`). Only ``level[row_start:row_stop,
    col_start:col_stop]`` may be non-zero, and ``image`` must hold exactly ``before`` outside it
    (its pixels were never written). Only that part is scanned, and only the pixels to restore or
    halve are read (``rounded``: round them, for integer images). ``level`` becomes the label mask
    (uint8, 1 inside); returns its pixel count (0 when it was below ``min_pixels`` and everything
    was restored).
    """
    channels = image.shape[0]
    height, width = level.shape
    count = 0
    loose = 0
    for row in range(row_start, row_stop):
        for col in range(col_start, col_stop):
            state = level[row, col]
            if state == 2:
                count += 1
            elif (
                0 < row < height - 1
                and 0 < col < width - 1
                and level[row - 1, col] == 2
                and level[row, col - 1] == 2
                and level[row, col + 1] == 2
                and level[row + 1, col] == 2
            ):
                level[row, col] = 3  # a pinhole: in the mask, but it fills no neighbour
                count += 1
            elif state == 1:
                loose += 1
    if count < min_pixels:
        for channel in range(channels):
            for row in range(top + row_start, top + row_stop):
                for col in range(left + col_start, left + col_stop):
                    image[channel, row, col] = before[channel, row, col]
        level[row_start:row_stop, col_start:col_stop] = 0
        return 0
    if loose:
        for row in range(row_start, row_stop):
            for col in range(col_start, col_stop):
                if level[row, col] != 1:
                    continue
                # Chessboard distance to the mask (level >= 2): 1, 2, or 3 (= farther than 2).
                if _mask_within(level, row, col, 1):
                    continue
                step = 2 if _mask_within(level, row, col, 2) else 3
                at_row, at_col = top + row, left + col
                for channel in range(channels):
                    if step == 3:
                        image[channel, at_row, at_col] = before[channel, at_row, at_col]
                    else:
                        under = float(before[channel, at_row, at_col])
                        value = under + 0.5 * (float(image[channel, at_row, at_col]) - under)
                        image[channel, at_row, at_col] = np.rint(value) if rounded else value
    for row in range(row_start, row_stop):
        for col in range(col_start, col_stop):
            level[row, col] = 1 if level[row, col] >= 2 else 0
    return count


@njit(cache=True, nogil=True, inline="always")
def _mask_within(level: np.ndarray, row: int, col: int, reach: int) -> bool:
    """Whether a pixel of level >= 2 lies within chessboard distance ``reach`` of ``row, col``."""
    height, width = level.shape
    for near_row in range(max(row - reach, 0), min(row + reach + 1, height)):
        for near_col in range(max(col - reach, 0), min(col + reach + 1, width)):
            if level[near_row, near_col] >= 2:
                return True
    return False
