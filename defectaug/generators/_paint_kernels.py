"""Compiled (numba) pixel loops of the stroke and pit painters (:mod:`._strokes`, :mod:`._blobs`).

A stroke or a pit changes a few hundred pixels of a layer of a few thousand. As torch operations
it takes some sixty calls on small arrays, each paying its dispatch, so a painting call would
cost milliseconds however little it paints. Here each is one pass: the nearest segment of a
polyline is searched only over the pixels each segment can reach, and the shading and the
"over" stacking of elements run per pixel. The random draws stay with the painters (torch, in
their fixed order), so a seed gives the same layers; these loops run on the CPU for every device
(layers are small, and one implementation of the arithmetic serves every renderer). The
arithmetic is float32.

Functions compile on first use and are cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_ZERO, _HALF, _ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
# Divisors are clamped to this floor: the combined alpha in ``_over``, a segment's squared length.
_FLOOR = np.float32(1e-6)


@njit(cache=True, nogil=True, inline="always")
def _smoothstep(edge0, edge1, value):
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order), float32."""
    t = min(max((value - edge0) / (edge1 - edge0), _ZERO), _ONE)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


@njit(cache=True, nogil=True, inline="always")
def _over(planes, pixel, relief_signed, relief_fixed, coverage):
    """Stack one element (its reliefs and alpha at ``pixel``: item, row, column) over the totals
    ``planes`` (signed, fixed, alpha; an empty fixed plane for painters without one), in place."""
    signed, fixed, alpha = planes
    below = alpha[pixel]
    kept = below * (_ONE - coverage)
    combined = coverage + kept
    norm = max(combined, _FLOOR)
    signed[pixel] = (relief_signed * coverage + signed[pixel] * kept) / norm
    if fixed.shape[0] > 0:
        fixed[pixel] = (relief_fixed * coverage + fixed[pixel] * kept) / norm
    alpha[pixel] = combined


@njit(cache=True, nogil=True)
def nearest_segments(points, reach, squared, segment):
    """Nearest segment of the polyline ``points [P, 2]`` (y, x) for each pixel within ``reach``.

    Fills ``squared [h, w]`` (float32, the squared distance; left as given, +inf, elsewhere) and
    ``segment [h, w]`` (int32, the segment's index; -1 elsewhere). Each segment visits only the
    pixels of its own box grown by ``reach``; ties go to the earlier segment. Returns the rows
    and columns ``(top, bottom, left, right)``, inclusive, that hold every pixel found (an
    empty range when none is).
    """
    h, w = squared.shape
    limit = np.float32(reach) * np.float32(reach)
    radius = np.float32(reach)
    first_row, last_row, first_col, last_col = h, -1, w, -1
    for index in range(points.shape[0] - 1):
        start_y, start_x = points[index, 0], points[index, 1]
        step_y = points[index + 1, 0] - start_y
        step_x = points[index + 1, 1] - start_x
        inverse = _ONE / max(step_y * step_y + step_x * step_x, _FLOOR)
        top = max(int(np.floor(min(start_y, start_y + step_y) - radius)), 0)
        bottom = min(int(np.ceil(max(start_y, start_y + step_y) + radius)), h - 1)
        left = max(int(np.floor(min(start_x, start_x + step_x) - radius)), 0)
        right = min(int(np.ceil(max(start_x, start_x + step_x) + radius)), w - 1)
        for row in range(top, bottom + 1):
            offset_y = np.float32(row) - start_y
            for col in range(left, right + 1):
                offset_x = np.float32(col) - start_x
                along = (offset_y * step_y + offset_x * step_x) * inverse
                along = min(max(along, _ZERO), _ONE)
                away_y = offset_y - along * step_y
                away_x = offset_x - along * step_x
                distance2 = away_y * away_y + away_x * away_x
                if distance2 <= limit and distance2 < squared[row, col]:
                    squared[row, col] = distance2
                    segment[row, col] = index
                    first_row, last_row = min(first_row, row), max(last_row, row)
                    first_col, last_col = min(first_col, col), max(last_col, col)
    return first_row, last_row, first_col, last_col


@njit(cache=True, nogil=True, inline="always")
def _along(points, index, row, col):
    """Where pixel ``(row, col)`` projects on segment ``index`` (0..1) and its side (-1, 0, 1)."""
    start_y, start_x = points[index, 0], points[index, 1]
    step_y = points[index + 1, 0] - start_y
    step_x = points[index + 1, 1] - start_x
    offset_y = np.float32(row) - start_y
    offset_x = np.float32(col) - start_x
    inverse = _ONE / max(step_y * step_y + step_x * step_x, _FLOOR)
    fraction = min(max((offset_y * step_y + offset_x * step_x) * inverse, _ZERO), _ONE)
    cross = step_x * offset_y - step_y * offset_x
    side = _ONE if cross > _ZERO else (-_ONE if cross < _ZERO else _ZERO)
    return fraction, side


@njit(cache=True, nogil=True, inline="always")
def _lerp(values, index, fraction):
    return values[index] + fraction * (values[index + 1] - values[index])


# What :func:`_paint_path` draws.
_SCRATCH, _CRACK = 0, 1


@njit(cache=True, nogil=True, inline="always")
def _paint_path(
    kind, path, width, strength, reach, item, contrast, highlight, lit_side, work, planes
):
    """Paint the polyline ``path [P, 2]`` of ``item`` (its ``width``/``strength [P]`` per vertex,
    fading out past ``reach`` px) over ``planes`` (signed, fixed, alpha) as a ``kind``:

    - ``_SCRATCH``: a core line whose strength scales its coverage, plus a band of strength
      ``highlight`` lit along its ``lit_side`` (+-1) in the fixed plane;
    - ``_CRACK``: a core line whose strength only lightens it: the outline, hence the mask, keeps
      the full width.

    ``work`` is :func:`nearest_segments`'s ``squared`` and ``segment``, cleared again after.
    """
    squared, segment = work
    top, bottom, left, right = nearest_segments(path, reach, squared, segment)
    for row in range(top, bottom + 1):
        for col in range(left, right + 1):
            index = segment[row, col]
            if index < 0:
                continue
            distance = np.sqrt(squared[row, col])
            fraction, side = _along(path, index, row, col)
            width_px = _lerp(width, index, fraction)
            strength_px = _lerp(strength, index, fraction)
            half = width_px / np.float32(2.0)
            coverage = _smoothstep(half + np.float32(0.75), half - np.float32(0.75), distance)
            if kind == _CRACK:
                core = np.exp(-((distance / (half + np.float32(0.6))) ** 2)) * strength_px
                _over(planes, (item, row, col), contrast * core, _ZERO, coverage)
                continue
            core = np.exp(-((distance / (half + _HALF)) ** 2))
            band_width = max(np.float32(0.6) * width_px, _ONE)
            band_centre = half + band_width / np.float32(2.0)
            band = np.exp(-(((distance - band_centre) / band_width) ** 2))
            band = band * strength_px * highlight if side == lit_side else _ZERO
            cover = min(max(coverage * strength_px, min(band, _ONE) * np.float32(1.6)), _ONE)
            relief_fixed = band * (_ONE - core)
            _over(planes, (item, row, col), contrast * core * strength_px, relief_fixed, cover)
    squared[top : bottom + 1, left : right + 1] = np.inf
    segment[top : bottom + 1, left : right + 1] = -1


@njit(cache=True, nogil=True, inline="always")
def _workspace(h, w):
    """:func:`_paint_path`'s ``work`` for layers of ``h x w``."""
    return np.full((h, w), np.inf, np.float32), np.full((h, w), -1, np.int32)


@njit(cache=True, nogil=True)
def paint_scratch_strokes(
    points,
    width,
    strength,
    enabled,
    reach,
    contrast,
    highlight,
    highlight_side,
    signed,
    fixed,
    alpha,
):
    """Paint strokes ``[S, n, P, 2]`` of ``n`` scratches over ``signed``/``fixed``/``alpha``.

    Per stroke and item: ``width``/``strength [S, n, P]`` per vertex, ``enabled``/``reach [S, n]``;
    per item ``contrast``, ``highlight`` (the band's strength) and ``highlight_side`` (+-1).
    """
    work = _workspace(alpha.shape[1], alpha.shape[2])
    for stroke in range(points.shape[0]):
        for item in range(points.shape[1]):
            if enabled[stroke, item]:
                _paint_path(
                    _SCRATCH,
                    points[stroke, item],
                    width[stroke, item],
                    strength[stroke, item],
                    reach[stroke, item],
                    item,
                    contrast[item],
                    highlight[item],
                    highlight_side[item],
                    work,
                    (signed, fixed, alpha),
                )


@njit(cache=True, nogil=True)
def paint_crack_path(points, width, strength, enabled, reach, contrast, signed, alpha):
    """Paint one path ``[n, P, 2]`` of ``n`` cracks over ``signed``/``alpha``:
    ``width``/``strength [n, P]`` per vertex, ``enabled``/``reach``/``contrast [n]``."""
    work = _workspace(alpha.shape[1], alpha.shape[2])
    no_fixed = np.empty((0, 0, 0), np.float32)
    for item in range(points.shape[0]):
        if enabled[item]:
            _paint_path(
                _CRACK,
                points[item],
                width[item],
                strength[item],
                reach[item],
                item,
                contrast[item],
                _ZERO,
                _ZERO,
                work,
                (signed, no_fixed, alpha),
            )


@njit(cache=True, nogil=True)
def paint_pits(
    centres, radius, active, light, contrast, rim, roughness, window, signed, fixed, alpha
):
    """Paint pits ``[K, n, 2]`` (centres, y x) over ``signed``/``fixed``/``alpha``.

    ``radius``/``active [K, n]``; per item ``light`` (the direction the rim is lit from),
    ``contrast`` and ``rim``; ``roughness [n, h, w]`` scales distances. Pit ``k`` of item ``i``
    is painted when ``active[k, i]``, over the pixels of the ``window (h, w)`` around its centre
    (clamped into the layer) where it has not faded out.
    """
    pits, n = centres.shape[0], centres.shape[1]
    h, w = alpha.shape[1], alpha.shape[2]
    window_h, window_w = window
    planes = (signed, fixed, alpha)
    for pit in range(pits):
        for item in range(n):
            if not active[pit, item]:
                continue
            centre_y, centre_x = centres[pit, item, 0], centres[pit, item, 1]
            top = int(np.rint(centre_y - np.float32(window_h / 2.0)))
            left = int(np.rint(centre_x - np.float32(window_w / 2.0)))
            top = min(max(top, 0), h - window_h)
            left = min(max(left, 0), w - window_w)
            pit_radius = radius[pit, item]
            # Past this distance the hollow is 0 and the lit rim below 1e-7: the pit's alpha
            # there would not move the totals by a float32 step.
            faded = pit_radius + np.float32(4.0)
            cos_light, sin_light = np.cos(light[item]), np.sin(light[item])
            for row in range(top, top + window_h):
                offset_y = np.float32(row) - centre_y
                for col in range(left, left + window_w):
                    offset_x = np.float32(col) - centre_x
                    distance = (
                        np.sqrt(offset_y * offset_y + offset_x * offset_x)
                        * roughness[item, row, col]
                    )
                    if distance > faded:
                        continue
                    hollow = _smoothstep(
                        pit_radius + np.float32(0.7), pit_radius - np.float32(0.7), distance
                    )
                    depth = np.exp(-((distance / (pit_radius + _HALF)) ** 2))
                    facing = (offset_x * cos_light + offset_y * sin_light) / max(
                        distance, np.float32(1e-3)
                    )
                    lit_rim = (
                        np.exp(
                            -(((distance - pit_radius - np.float32(0.6)) / np.float32(0.8)) ** 2)
                        )
                        * max(facing, _ZERO)
                        * rim[item]
                    )
                    cover = min(max(hollow, lit_rim * np.float32(1.6)), _ONE)
                    relief_fixed = lit_rim * (_ONE - hollow)
                    _over(planes, (item, row, col), contrast[item] * depth, relief_fixed, cover)
