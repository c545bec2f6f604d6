"""Compiled (numba) Poisson blends of one defect, for the per-sample renderer.

:func:`defectaug.batch.composite_visible` blends a defect with ``"poisson"`` or
``"improved_poisson"`` in torch (``_blend_round``), batched: on one small image per call, as a
data-loader worker has, the per-operation overhead of its many tensor operations outweighs the
solve. Here the same steps run over the defect's own small region only:

- the source is the soft composite ``under + (content - under) * alpha`` of the defect's layer
  (:func:`defectaug._kernels.shade_content`) over the current image; the defect's core is
  ``alpha >= min(peak / 2, MASK_THRESHOLD)``;
- ``"poisson"``: the core grown by ``POISSON_MARGIN`` px (:func:`poisson_footprint`) is solved
  over :func:`~defectaug.compositing.poisson.blend_rectangle`'s rectangle as
  :func:`~defectaug.compositing.poisson_blend` solves it (:func:`poisson_rhs`, then a DST-I,
  :func:`dirichlet_solve`);
- ``"improved_poisson"``: :func:`improved_patch` is
  :func:`~defectaug.compositing.improved_poisson_blend` of one item: the band by exact distance,
  conjugate gradients on it to the same relative residual;
- :func:`finish_blend` mixes the alpha blend back in where the defect kept less than
  ``KEPT_CONTRAST`` of its contrast; :func:`store_window` writes the result into the image once
  every defect is in, recording each pixel's change level for
  :func:`defectaug._kernels.settle_levels`.

:func:`blend_region` and :func:`blend_defect` drive these for one defect. The kernels work on a
float64 window of the image (values in [0, 1]) whose pixel 0, 0 is image pixel ``origin``;
positions are image pixels. The DST runs in the image's precision, float32 for uint8 images, as
the torch renderer's does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.fft
from numba import njit

from defectaug._kernels import _level_of, store_tracked
from defectaug.batch import KEPT_CONTRAST, POISSON_MARGIN
from defectaug.compositing._solvers import _inverse_eigenvalues_numpy
from defectaug.compositing.improved import _crop_window, useful_band
from defectaug.compositing.poisson import blend_rectangle
from defectaug.layer import MASK_THRESHOLD

_TINY = np.finfo(np.float64).tiny


@njit(cache=True, nogil=True, inline="always")
def _is_core(value: float, threshold: float) -> bool:
    return value >= threshold and value > 0.0


@njit(cache=True, nogil=True)
def core_threshold(alpha: np.ndarray, mask_threshold: float) -> float:
    """``min(peak / 2, mask_threshold)`` of ``alpha``: a faint layer's core is where it reaches
    half its peak (see ``defectaug.batch._blend_round``)."""
    peak = 0.0
    for value in alpha.ravel():
        peak = max(peak, value)
    return min(0.5 * np.float32(peak), mask_threshold)


@njit(cache=True, nogil=True)
def core_box(alpha: np.ndarray, threshold: float) -> tuple:
    """``(row0, row1, col0, col1)`` of the core of ``alpha [h, w]`` (end excluded); rows empty
    (``row0 >= row1``) when there is none."""
    height, width = alpha.shape
    row0, row1, col0, col1 = height, 0, width, 0
    for row in range(height):
        for col in range(width):
            if _is_core(alpha[row, col], threshold):
                row0, row1 = min(row0, row), max(row1, row + 1)
                col0, col1 = min(col0, col), max(col1, col + 1)
    return row0, row1, col0, col1


@njit(cache=True, nogil=True)
def poisson_footprint(
    alpha: np.ndarray,
    threshold: float,
    margin: int,
    box_top: int,
    box_left: int,
    row_lo: int,
    row_hi: int,
    col_lo: int,
    col_hi: int,
) -> tuple:
    """The core of ``alpha`` (the box at ``box_top, box_left``) grown by ``margin`` px (a square)
    and cut to rows ``[row_lo, row_hi)`` and columns ``[col_lo, col_hi)``.

    The torch renderer dilates the core ``margin`` times by 3 x 3 within the layer's canvas and
    then keeps the image's inner pixels; the bounds are that intersection (a rectangle, so one
    square dilation cut to it is the same). Returns ``(footprint uint8, top, left, row0, row1,
    col0, col1)``: the footprint over the box grown by ``margin`` (its corner ``top, left``) and
    its bounding box in image pixels (``row0 >= row1`` when it is empty).
    """
    height, width = alpha.shape
    top, left = box_top - margin, box_left - margin
    reach = 2 * margin
    grown_h, grown_w = height + reach, width + reach
    # Along rows first (over the box's rows), then along columns: grown pixel g is set when
    # the nearest set pixel at or before it, at box index <= g, is at most 2 * margin back.
    across = np.zeros((height, grown_w), dtype=np.uint8)
    for row in range(height):
        last = -reach - 1
        for col in range(grown_w):
            if col < width and _is_core(alpha[row, col], threshold):
                last = col
            across[row, col] = col - last <= reach
    footprint = np.zeros((grown_h, grown_w), dtype=np.uint8)
    row0, row1, col0, col1 = row_hi, row_lo, col_hi, col_lo
    for col in range(grown_w):
        at_col = left + col
        inside_cols = col_lo <= at_col < col_hi
        last = -reach - 1
        for row in range(grown_h):
            if row < height and across[row, col]:
                last = row
            at_row = top + row
            if row - last <= reach and inside_cols and row_lo <= at_row < row_hi:
                footprint[row, col] = 1
                row0, row1 = min(row0, at_row), max(row1, at_row + 1)
                col0, col1 = min(col0, at_col), max(col1, at_col + 1)
    return footprint, top, left, row0, row1, col0, col1


@njit(cache=True, nogil=True, inline="always")
def _inside(row: int, col: int, bounds: tuple) -> bool:
    top, left, bottom, right = bounds
    return top <= row < bottom and left <= col < right


@njit(cache=True, nogil=True)
def _source_and_background(
    image: np.ndarray,
    origin: tuple,
    size: tuple,
    alpha: np.ndarray,
    content: np.ndarray,
    box_top: int,
    box_left: int,
    canvas: tuple,
    top: int,
    left: int,
    rows: int,
    cols: int,
) -> tuple:
    """Over the window ``top, left, rows, cols``: the soft composite (the blends' source; 0 off
    the canvas), the background (0 off the image) and where both exist (``valid``)."""
    channels = image.shape[0]
    height, width = size
    box_h, box_w = alpha.shape
    source = np.zeros((channels, rows, cols))
    background = np.zeros((channels, rows, cols))
    valid = np.zeros((rows, cols), dtype=np.uint8)
    for row in range(rows):
        at_row = top + row
        if at_row < 0 or at_row >= height:
            continue
        for col in range(cols):
            at_col = left + col
            if at_col < 0 or at_col >= width:
                continue
            on_canvas = _inside(at_row, at_col, canvas)
            valid[row, col] = on_canvas
            box_row, box_col = at_row - box_top, at_col - box_left
            cover = 0.0
            if 0 <= box_row < box_h and 0 <= box_col < box_w:
                cover = alpha[box_row, box_col]
            for channel in range(channels):
                under = image[channel, at_row - origin[0], at_col - origin[1]]
                background[channel, row, col] = under
                if on_canvas:
                    source[channel, row, col] = (
                        under + (content[channel, box_row, box_col] - under) * cover
                        if cover > 0.0
                        else under
                    )
    return source, background, valid


@njit(cache=True, nogil=True, inline="always")
def _guidance(
    source: np.ndarray,
    background: np.ndarray,
    channel: int,
    row: int,
    col: int,
    to_row: int,
    to_col: int,
    mixed: bool,
) -> float:
    """Guidance minus background difference of the edge ``(row, col) -> (to_row, to_col)``
    (``guidance_correction`` of :mod:`defectaug.compositing.poisson`)."""
    d_source = source[channel, to_row, to_col] - source[channel, row, col]
    d_background = background[channel, to_row, to_col] - background[channel, row, col]
    if mixed and abs(d_source) <= abs(d_background):
        return 0.0
    return d_source - d_background


@njit(cache=True, nogil=True)
def poisson_rhs(
    image: np.ndarray,
    origin: tuple,
    size: tuple,
    alpha: np.ndarray,
    content: np.ndarray,
    box_top: int,
    box_left: int,
    footprint: np.ndarray,
    footprint_top: int,
    footprint_left: int,
    canvas: tuple,
    first_row: int,
    first_col: int,
    mixed: bool,
    rhs: np.ndarray,
) -> None:
    """The right-hand side ``div(v - grad(background))`` of ``poisson_blend`` into ``rhs [C, n,
    m]``, for the rectangle interior at ``first_row, first_col``.

    An edge is guided when one end is in ``footprint`` and both lie on the canvas (``canvas``:
    ``top, left, bottom, right``); the rectangle lies inside the image.
    """
    channels, rows, cols = rhs.shape
    source, background, valid = _source_and_background(
        image,
        origin,
        size,
        alpha,
        content,
        box_top,
        box_left,
        canvas,
        first_row - 1,
        first_col - 1,
        rows + 2,
        cols + 2,
    )
    # The footprint over the crop (rectangle plus its border).
    marked = np.zeros((rows + 2, cols + 2), dtype=np.uint8)
    foot_h, foot_w = footprint.shape
    for row in range(rows + 2):
        foot_row = first_row - 1 + row - footprint_top
        if foot_row < 0 or foot_row >= foot_h:
            continue
        for col in range(cols + 2):
            foot_col = first_col - 1 + col - footprint_left
            if 0 <= foot_col < foot_w:
                marked[row, col] = footprint[foot_row, foot_col]
    rhs[:] = 0.0
    # Each guided edge adds its flow to one end's divergence and takes it from the other's.
    for row in range(rows + 2):
        for col in range(cols + 2):
            for to_row, to_col in ((row, col + 1), (row + 1, col)):
                if to_row > rows + 1 or to_col > cols + 1:
                    continue
                # Only edges between two pixels of the same interior row (col) matter.
                horizontal = to_row == row
                if horizontal and (row == 0 or row == rows + 1):
                    continue
                if not horizontal and (col == 0 or col == cols + 1):
                    continue
                if not (marked[row, col] or marked[to_row, to_col]):
                    continue
                if not (valid[row, col] and valid[to_row, to_col]):
                    continue
                for channel in range(channels):
                    flow = _guidance(source, background, channel, row, col, to_row, to_col, mixed)
                    if 1 <= row <= rows and 1 <= col <= cols:
                        rhs[channel, row - 1, col - 1] += flow
                    if 1 <= to_row <= rows and 1 <= to_col <= cols:
                        rhs[channel, to_row - 1, to_col - 1] -= flow


@njit(cache=True, nogil=True)
def _band_distance(mask: np.ndarray, band: int) -> np.ndarray:
    """Exact squared Euclidean distance to the nearest ``mask`` pixel, where it is at most
    ``band`` along both axes (else a value above ``band ** 2``)."""
    rows, cols = mask.shape
    far = float(2 * band * band + 1)
    along = np.full((rows, cols), far)
    for row in range(rows):
        last = -(band + 1)
        for col in range(cols):
            if mask[row, col]:
                last = col
            if col - last <= band:
                along[row, col] = float((col - last) ** 2)
        last = cols + band + 1
        for col in range(cols - 1, -1, -1):
            if mask[row, col]:
                last = col
            if last - col <= band:
                along[row, col] = min(along[row, col], float((last - col) ** 2))
    distance = along.copy()
    for row in range(rows):
        for shift in range(1, band + 1):
            for other in (row - shift, row + shift):
                if other < 0 or other >= rows:
                    continue
                for col in range(cols):
                    distance[row, col] = min(distance[row, col], along[other, col] + shift * shift)
    return distance


@njit(cache=True, nogil=True)
def _conjugate_gradient(
    neighbours: np.ndarray, degree: np.ndarray, rhs: np.ndarray, start: np.ndarray, rtol: float
) -> np.ndarray:
    """CG for the band's masked Laplacian, one system per channel (``rhs [C, K]``), each to
    ``rtol`` relative residual, as ``defectaug.compositing._solvers._conjugate_gradient``.

    Channel by channel: the loops over one channel's contiguous vectors vectorise, which
    stepping the channels together (one pass over the neighbours for all) did not repay.
    """
    channels, size = rhs.shape
    solution = np.zeros((channels, size))
    direction = np.empty(size)
    residual = np.empty(size)
    applied = np.empty(size)
    for channel in range(channels):
        b = rhs[channel]
        x = solution[channel]
        rhs_norm2 = 0.0
        for k in range(size):
            rhs_norm2 += b[k] * b[k]
        if rhs_norm2 > 0.0:  # else the exact solution is 0
            x[:] = start[channel]
        _apply(neighbours, degree, x, applied)
        residual_norm2 = 0.0
        for k in range(size):
            residual[k] = b[k] - applied[k]
            direction[k] = residual[k]
            residual_norm2 += residual[k] * residual[k]
        threshold = rtol * rtol * rhs_norm2
        # In exact arithmetic CG ends within K steps; rounding can add a few.
        for _ in range(2 * size + 50):
            if residual_norm2 <= threshold:
                break
            _apply(neighbours, degree, direction, applied)
            curvature = 0.0
            for k in range(size):
                curvature += direction[k] * applied[k]
            step = residual_norm2 / max(curvature, _TINY)
            new_norm2 = 0.0
            for k in range(size):
                x[k] += step * direction[k]
                residual[k] -= step * applied[k]
                new_norm2 += residual[k] * residual[k]
            ratio = new_norm2 / max(residual_norm2, _TINY)
            for k in range(size):
                direction[k] = residual[k] + ratio * direction[k]
            residual_norm2 = new_norm2
    return solution


@njit(cache=True, nogil=True, inline="always")
def _apply(neighbours: np.ndarray, degree: np.ndarray, vector: np.ndarray, out: np.ndarray):
    """``out = L @ vector``, ``L`` the band's masked Laplacian (neighbour ``-1``: not an
    unknown)."""
    for k in range(vector.size):
        total = degree[k] * vector[k]
        for direction in range(4):
            other = neighbours[k, direction]
            if other >= 0:
                total -= vector[other]
        out[k] = total


@njit(cache=True, nogil=True)
def improved_patch(
    image: np.ndarray,
    origin: tuple,
    size: tuple,
    alpha: np.ndarray,
    content: np.ndarray,
    box_top: int,
    box_left: int,
    threshold: float,
    canvas: tuple,
    crop_top: int,
    crop_left: int,
    crop_rows: int,
    crop_cols: int,
    band: int,
    mixed: bool,
    rtol: float,
) -> tuple:
    """``improved_poisson_blend`` of the defect's soft composite with its core as the mask, over
    the crop ``crop_top, crop_left, crop_rows, crop_cols`` (its box grown by ``band + 1``, cut to
    the image and a one-pixel ring around it).

    Returns ``(patch [C, r, c] float64, top, left)``: the blended values of the crop's part in
    the image (the source on the mask, the solved band, the background elsewhere).
    """
    channels = image.shape[0]
    height, width = size
    source, background, valid = _source_and_background(
        image,
        origin,
        size,
        alpha,
        content,
        box_top,
        box_left,
        canvas,
        crop_top,
        crop_left,
        crop_rows,
        crop_cols,
    )
    box_h, box_w = alpha.shape
    mask = np.zeros((crop_rows, crop_cols), dtype=np.uint8)
    for row in range(box_h):
        for col in range(box_w):
            if _is_core(alpha[row, col], threshold):
                crop_row, crop_col = box_top + row - crop_top, box_left + col - crop_left
                mask[crop_row, crop_col] = valid[crop_row, crop_col]
    distance = _band_distance(mask, band)
    limit = float(band * band)
    # Unknowns: the band's pixels in raster order.
    slot = np.full((crop_rows, crop_cols), -1, dtype=np.int64)
    size = 0
    for row in range(crop_rows):
        at_row = crop_top + row
        for col in range(crop_cols):
            at_col = crop_left + col
            if (
                not mask[row, col]
                and distance[row, col] <= limit
                and 0 <= at_row < height
                and 0 <= at_col < width
            ):
                slot[row, col] = size
                size += 1
    neighbours = np.full((size, 4), -1, dtype=np.int64)
    degree = np.zeros(size)
    rhs = np.zeros((channels, size))
    start = np.zeros((channels, size))
    for row in range(crop_rows):
        for col in range(crop_cols):
            k = slot[row, col]
            if k < 0:
                continue
            ramp = 1.0 - math.sqrt(min(distance[row, col], limit)) / (band + 1)
            for channel in range(channels):
                if valid[row, col]:
                    start[channel, k] = ramp * (
                        source[channel, row, col] - background[channel, row, col]
                    )
            for direction, (near_row, near_col) in enumerate(
                ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1))
            ):
                # Band pixels lie inside the crop's ring, so their neighbours are in the crop.
                at_row, at_col = crop_top + near_row, crop_left + near_col
                if not (0 <= at_row < height and 0 <= at_col < width):
                    continue
                degree[k] += 1.0
                neighbours[k, direction] = slot[near_row, near_col]
                if mask[near_row, near_col]:
                    for channel in range(channels):
                        rhs[channel, k] += (
                            source[channel, near_row, near_col]
                            - background[channel, near_row, near_col]
                        )
            if mixed:
                # Guidance of (w_p - w_q): + the edge from the left / top neighbour, - the edge
                # to the right / bottom one; an edge is guided where both ends are valid.
                for near_row, near_col, sign in (
                    (row, col - 1, 1.0),
                    (row - 1, col, 1.0),
                    (row, col + 1, -1.0),
                    (row + 1, col, -1.0),
                ):
                    if not (valid[row, col] and valid[near_row, near_col]):
                        continue
                    for channel in range(channels):
                        if sign > 0.0:
                            flow = _guidance(
                                source, background, channel, near_row, near_col, row, col, True
                            )
                        else:
                            flow = _guidance(
                                source, background, channel, row, col, near_row, near_col, True
                            )
                        rhs[channel, k] += sign * flow
    solution = _conjugate_gradient(neighbours, degree, rhs, start, rtol)
    row0, row1 = max(crop_top, 0), min(crop_top + crop_rows, height)
    col0, col1 = max(crop_left, 0), min(crop_left + crop_cols, width)
    patch = np.empty((channels, row1 - row0, col1 - col0))
    for row in range(row0, row1):
        crop_row = row - crop_top
        for col in range(col0, col1):
            crop_col = col - crop_left
            k = slot[crop_row, crop_col]
            for channel in range(channels):
                under = background[channel, crop_row, crop_col]
                if mask[crop_row, crop_col]:
                    value = source[channel, crop_row, crop_col]
                elif k >= 0:
                    value = min(max(under + solution[channel, k], 0.0), 1.0)
                else:
                    value = under
                patch[channel, row - row0, col - col0] = value
    return patch, row0, col0


@njit(cache=True, nogil=True, inline="always")
def _lerp(start: float, end: float, weight: float) -> float:
    """``torch.lerp``'s formula (exact at both ends)."""
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


@njit(cache=True, nogil=True)
def finish_blend(
    image: np.ndarray,
    origin: tuple,
    level_top: int,
    level_left: int,
    level_shape: tuple,
    alpha: np.ndarray,
    content: np.ndarray,
    box_top: int,
    box_left: int,
    threshold: float,
    patch: np.ndarray,
    patch_top: int,
    patch_left: int,
    additive: bool,
    kept_contrast: float,
) -> tuple:
    """Write a Poisson-blended defect into ``image``, the window at ``origin`` of the image.

    The blend is ``patch [C, r, c]`` at ``patch_top, patch_left`` (with ``additive``, a
    correction added to the image and clipped to [0, 1]) and the image elsewhere. Where it kept
    less than ``kept_contrast`` of the alpha blend's mean signed change over the core (``alpha
    >= threshold``), the alpha blend of ``content`` is mixed back in until it does (the rule of
    ``defectaug.batch._blend_round``). Returns the rows and columns written, as half-open
    ranges in the level window at ``level_top, level_left`` (of ``level_shape``), which holds
    them.
    """
    channels = image.shape[0]
    origin_top, origin_left = origin
    box_h, box_w = alpha.shape
    patch_h, patch_w = patch.shape[1], patch.shape[2]
    wanted = 0.0
    kept = 0.0
    count = 0
    for row in range(box_h):
        for col in range(box_w):
            cover = alpha[row, col]
            if not _is_core(cover, threshold):
                continue
            count += 1
            at_row, at_col = box_top + row, box_left + col
            patch_row, patch_col = at_row - patch_top, at_col - patch_left
            in_patch = 0 <= patch_row < patch_h and 0 <= patch_col < patch_w
            for channel in range(channels):
                under = image[channel, at_row - origin_top, at_col - origin_left]
                wanted += _lerp(under, content[channel, row, col], cover) - under
                if in_patch:
                    value = patch[channel, patch_row, patch_col]
                    if additive:
                        value = min(max(under + value, 0.0), 1.0)
                    kept += value - under
    weight = max(count * channels, 1)
    wanted /= weight
    kept /= weight
    share = 0.0
    direction = 1.0 if wanted > 0.0 else (-1.0 if wanted < 0.0 else 0.0)
    if wanted != 0.0 and kept * direction < kept_contrast * abs(wanted):
        share = min(max((kept_contrast * wanted - kept) / (wanted - kept), 0.0), 1.0)

    top, left, bottom, right = box_top, box_left, box_top + box_h, box_left + box_w
    if patch_h > 0 and patch_w > 0:
        top, left = min(top, patch_top), min(left, patch_left)
        bottom, right = max(bottom, patch_top + patch_h), max(right, patch_left + patch_w)
    row_start, row_stop, col_start, col_stop = level_shape[0], 0, level_shape[1], 0
    for at_row in range(top, bottom):
        for at_col in range(left, right):
            row, col = at_row - box_top, at_col - box_left
            cover = alpha[row, col] if 0 <= row < box_h and 0 <= col < box_w else 0.0
            patch_row, patch_col = at_row - patch_top, at_col - patch_left
            in_patch = 0 <= patch_row < patch_h and 0 <= patch_col < patch_w
            if not in_patch and cover <= 0.0:
                continue  # neither blend changes it
            for channel in range(channels):
                under = image[channel, at_row - origin_top, at_col - origin_left]
                blended = under
                if in_patch:
                    blended = patch[channel, patch_row, patch_col]
                    if additive:
                        blended = min(max(under + blended, 0.0), 1.0)
                alpha_blended = (
                    _lerp(under, content[channel, row, col], cover) if cover > 0.0 else under
                )
                image[channel, at_row - origin_top, at_col - origin_left] = (
                    blended + (alpha_blended - blended) * share
                )
            level_row, level_col = at_row - level_top, at_col - level_left
            row_start, row_stop = min(row_start, level_row), max(row_stop, level_row + 1)
            col_start, col_stop = min(col_start, level_col), max(col_stop, level_col + 1)
    return row_start, row_stop, col_start, col_stop


@njit(cache=True, nogil=True)
def store_window(
    work: np.ndarray,
    origin: tuple,
    image: np.ndarray,
    before: np.ndarray,
    level: np.ndarray,
    level_top: int,
    level_left: int,
    change_threshold: float,
    scale: float,
    row_start: int,
    row_stop: int,
    col_start: int,
    col_stop: int,
) -> None:
    """Store the blended ``work`` window (floats in [0, 1], at ``origin``) into ``image [C, H,
    W]`` over ``level[row_start:row_stop, col_start:col_stop]`` and record each pixel's change
    level against ``before`` there (as :func:`defectaug._kernels.composite_tracked` does).

    ``scale`` is 255 for a uint8 image (rounded half to even, once, after every defect: the
    torch renderer rounds its float composite once too) and 1 for a float one.
    """
    channels = image.shape[0]
    rounded = scale != 1.0
    for level_row in range(row_start, row_stop):
        at_row = level_top + level_row
        for level_col in range(col_start, col_stop):
            at_col = level_left + level_col
            change = 0.0
            for channel in range(channels):
                value = work[channel, at_row - origin[0], at_col - origin[1]]
                change = max(
                    change,
                    store_tracked(image, before, channel, at_row, at_col, value, scale, rounded),
                )
            level[level_row, level_col] = _level_of(change, change_threshold)


# ---------------------------------------------------------------------------------------------
# The driver: one defect's region (from its layer alone) and its blend into one image.


class BlendRegion(NamedTuple):
    """Where a Poisson blend of one placed defect works, from its layer alone (so every image
    of a sample shares it).

    ``alpha [h, w]`` is its coverage over its box and ``threshold`` its core's; ``canvas`` is
    ``top, left, bottom, right`` of the canvas the torch renderer warps it into (guidance stops
    at the canvas's edge there, so it does here). ``"poisson"`` solves over ``rectangle``
    (``first_row, first_col, rows, cols`` of the interior, ``None`` when the footprint is
    empty) with ``footprint`` (uint8, corner ``footprint_top, footprint_left``) guided;
    ``"improved_poisson"`` over ``crop`` (``top, left, rows, cols``, ``None`` without a core).
    ``reach`` (``top, left, height, width``) holds every pixel the blend may change.
    """

    alpha: np.ndarray
    threshold: float
    canvas: tuple[int, int, int, int]
    rectangle: tuple[int, int, int, int] | None
    footprint: np.ndarray
    footprint_top: int
    footprint_left: int
    crop: tuple[int, int, int, int] | None
    reach: tuple[int, int, int, int]


_NO_FOOTPRINT = np.zeros((0, 0), dtype=np.uint8)


def canvases(
    boxes: Sequence[tuple[int, int, int, int]], sides: Sequence[Hashable]
) -> list[tuple[int, int, int, int]]:
    """The torch renderer's canvas ``top, left, bottom, right`` of each box ``top, left, height,
    width`` of one image, painted at ``sides`` (or rendered at sizes ``(h, w)``: only which
    boxes share one matters).

    ``layer_geometry`` centres each box on a canvas as large as the largest box of its side,
    and ``_merge_warped`` grows every canvas right and down to the largest box of all.
    """
    largest: dict[Hashable, tuple[int, int]] = {}
    for (_, _, height, width), side in zip(boxes, sides, strict=True):
        known = largest.get(side, (0, 0))
        largest[side] = (max(known[0], height), max(known[1], width))
    canvas_h = max(height for _, _, height, _ in boxes)
    canvas_w = max(width for _, _, _, width in boxes)
    out = []
    for (top, left, height, width), side in zip(boxes, sides, strict=True):
        group_h, group_w = largest[side]
        canvas_top = top - (group_h - height) // 2
        canvas_left = left - (group_w - width) // 2
        out.append((canvas_top, canvas_left, canvas_top + canvas_h, canvas_left + canvas_w))
    return out


def _union(*windows: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The bounding window ``top, left, height, width`` of non-empty windows."""
    top = min(window[0] for window in windows)
    left = min(window[1] for window in windows)
    bottom = max(window[0] + window[2] for window in windows)
    right = max(window[1] + window[3] for window in windows)
    return top, left, bottom - top, right - left


def blend_region(
    alpha: np.ndarray,
    box: tuple[int, int, int, int],
    canvas: tuple[int, int, int, int],
    image_size: tuple[int, int],
    blend: str,
    band: int,
) -> BlendRegion:
    """The :class:`BlendRegion` of a defect of coverage ``alpha`` over ``box`` (``top, left,
    height, width``) on an ``image_size`` image."""
    height, width = image_size
    top, left = box[0], box[1]
    threshold = core_threshold(alpha, MASK_THRESHOLD)
    rectangle = crop = None
    footprint, footprint_top, footprint_left = _NO_FOOTPRINT, 0, 0
    reach = box
    if blend == "poisson":
        if height >= 3 and width >= 3:  # else the outermost pixels, all fixed, are all there is
            footprint, footprint_top, footprint_left, row0, row1, col0, col1 = poisson_footprint(
                alpha,
                threshold,
                POISSON_MARGIN,
                top,
                left,
                max(canvas[0], 1),
                min(canvas[2], height - 1),
                max(canvas[1], 1),
                min(canvas[3], width - 1),
            )
            if row0 < row1:
                first_row, rows = blend_rectangle(row0, row1, height)
                first_col, cols = blend_rectangle(col0, col1, width)
                rectangle = (first_row, first_col, rows, cols)
                reach = _union(box, rectangle)
    else:
        row0, row1, col0, col1 = core_box(alpha, threshold)
        if row0 < row1:
            margin = useful_band(band, height, width) + 1
            crop_top, crop_bottom = _crop_window(top + row0 - margin, top + row1 + margin, height)
            crop_left, crop_right = _crop_window(left + col0 - margin, left + col1 + margin, width)
            crop = (crop_top, crop_left, crop_bottom - crop_top, crop_right - crop_left)
            in_image = (
                max(crop_top, 0),
                max(crop_left, 0),
                min(crop_bottom, height) - max(crop_top, 0),
                min(crop_right, width) - max(crop_left, 0),
            )
            reach = _union(box, in_image)
    return BlendRegion(
        alpha,
        threshold,
        canvas,
        rectangle,
        footprint,
        footprint_top,
        footprint_left,
        crop,
        reach,
    )


def _orthonormal_dst_1(array: np.ndarray) -> np.ndarray:
    """``scipy.fft.dstn(array, type=1, axes=(-2, -1), norm="ortho", overwrite_x=True)`` of a
    float ``[C, n, m]`` array, one thread."""
    if _POCKETFFT_DST is None:
        return scipy.fft.dstn(array, type=1, axes=(-2, -1), norm="ortho", overwrite_x=True)
    # What dstn calls after its argument checks, which cost about as much as the transform
    # itself at a defect's sizes: type 1, the last two axes, the "ortho" normalisation (1),
    # written in place, one thread.
    axes = (array.ndim - 2, array.ndim - 1)
    return _POCKETFFT_DST(array, 1, axes, 1, array, 1, None)


def _pocketfft_dst() -> Any:
    """scipy's pocketfft DST binding, which ``scipy.fft.dstn`` calls, when this scipy has it
    and it gives exactly what ``dstn`` gives on a probe; else ``None`` (``dstn`` is used)."""
    try:
        from scipy.fft._pocketfft.pypocketfft import dst

        probe = np.linspace(0.0, 1.0, 24).reshape(2, 3, 4)
        expected = scipy.fft.dstn(probe, type=1, axes=(-2, -1), norm="ortho")
        if np.array_equal(dst(probe.copy(), 1, (1, 2), 1, None, 1, None), expected):
            return dst
    except Exception:  # a private binding: any other scipy falls back to dstn
        pass
    return None


_POCKETFFT_DST = _pocketfft_dst()


def dirichlet_solve(rhs: np.ndarray) -> np.ndarray:
    """``Laplacian(w) = rhs`` on ``[C, n, m]`` interiors with ``w = 0`` on their border.

    Two orthonormal DST-I (scipy's pocketfft, one thread: the caller is one data-loader
    worker) and the inverse eigenvalues, as ``solve_dirichlet_rectangle``. ``rhs`` is
    overwritten.
    """
    rows, cols = rhs.shape[-2:]
    spectrum = _orthonormal_dst_1(rhs)
    spectrum *= _inverse_eigenvalues_numpy(rows, cols, spectrum.dtype)
    return _orthonormal_dst_1(spectrum)


def blend_defect(
    work: np.ndarray,
    origin: tuple[int, int],
    size: tuple[int, int],
    level_window: tuple[int, int, int, int],
    content: np.ndarray,
    box: tuple[int, int],
    region: BlendRegion,
    blend: str,
    options: Mapping[str, Any],
    precision: np.dtype,
) -> tuple[int, int, int, int]:
    """Blend one defect (its shaded ``content [C, h, w]`` over the box at ``box``, ``top,
    left``) with ``blend`` and its ``options`` into ``work``, the float64 window at ``origin``
    of an image of ``size``; returns what :func:`finish_blend` returns for the level window
    ``top, left, height, width``.

    ``precision`` is the torch renderer's dtype for the image (float32, or float64 for float64
    images): the DST runs in it and the conjugate gradients stop at its tolerance.
    """
    top, left = box
    mixed = options["mode"] == "mixed"
    alpha, threshold = region.alpha, region.threshold
    patch, patch_top, patch_left, additive = np.zeros((len(work), 0, 0)), 0, 0, False
    if blend == "poisson":
        if region.rectangle is not None:
            first_row, first_col, rows, cols = region.rectangle
            rhs = np.empty((len(work), rows, cols), dtype=precision)
            poisson_rhs(
                work,
                origin,
                size,
                alpha,
                content,
                top,
                left,
                region.footprint,
                region.footprint_top,
                region.footprint_left,
                region.canvas,
                first_row,
                first_col,
                mixed,
                rhs,
            )
            patch, patch_top, patch_left = dirichlet_solve(rhs), first_row, first_col
            additive = True
    elif region.crop is not None:
        band = useful_band(options["band"], *size)
        rtol = 1e-12 if precision == np.float64 else 1e-6
        patch, patch_top, patch_left = improved_patch(
            work,
            origin,
            size,
            alpha,
            content,
            top,
            left,
            threshold,
            region.canvas,
            *region.crop,
            band,
            mixed,
            rtol,
        )
    return finish_blend(
        work,
        origin,
        level_window[0],
        level_window[1],
        level_window[2:],
        alpha,
        content,
        top,
        left,
        threshold,
        patch,
        patch_top,
        patch_left,
        additive,
        KEPT_CONTRAST,
    )
