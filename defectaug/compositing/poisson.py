"""Seamless cloning (Perez et al. 2003), solved exactly and in batch with a DST.

The solve is for the correction ``w = result - background``, which is zero outside each item's
rectangle: the result equals the background bit for bit there, and only the rectangles are ever
computed before being pasted into a copy of the background.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal

import torch

from defectaug._checks import check_choice, check_int
from defectaug._io import check_finite
from defectaug.compositing._inputs import OffsetArg, prepare_masked
from defectaug.compositing._regions import (
    Crops,
    clip_mask,
    cut_crops,
    paste_crops,
    placed_boxes,
)
from defectaug.compositing._solvers import dst_friendly_length, solve_dirichlet_rectangle

BlendMode = Literal["normal", "mixed"]
_MODES = ("normal", "mixed")

#: Pixels of free interior kept between the mask's bounding box and the rectangle's fixed border.
RECTANGLE_MARGIN = 1

#: Pixel values per chunk of rectangles solved together (4 MB in float32): small enough for the
#: passes over a chunk to stay in cache, large enough to keep per-call overheads down.
CHUNK_ELEMENTS = 1 << 20


def check_mode(mode: Any) -> str:
    """``mode`` if it is a guidance mode (``"normal"`` or ``"mixed"``)."""
    return check_choice(mode, _MODES, "mode")


def check_band(band: Any) -> int:
    """``band`` as the width in pixels (an int >= 1) of the improved blend's band."""
    return check_int(band, "band", 1, what="an int >= 1 (pixels)")


def guidance_correction(
    source: torch.Tensor,
    background: torch.Tensor,
    guided: torch.Tensor,
    mode: str,
    dim: int,
) -> torch.Tensor:
    """Per edge along ``dim``: guidance difference minus background difference, 0 off ``guided``.

    ``guided [G, r', c']`` marks the edges that take the source's difference ("normal") or the
    larger-magnitude of source and background differences ("mixed", per channel).
    """
    length = source.shape[dim]
    d_source = source.narrow(dim, 1, length - 1) - source.narrow(dim, 0, length - 1)
    d_background = background.narrow(dim, 1, length - 1) - background.narrow(dim, 0, length - 1)
    if mode == "mixed":
        d_source = torch.where(d_source.abs() > d_background.abs(), d_source, d_background)
    return torch.where(guided[:, None], d_source - d_background, 0.0)


def poisson_blend(
    background: Any,
    source: Any,
    mask: Any,
    offset: OffsetArg = None,
    mode: BlendMode = "normal",
) -> Any:
    """Seamless cloning (Perez et al. 2003) of ``source`` into ``background``, solved exactly.

    The discrete problem is OpenCV's ``seamlessClone`` formulation without its mask erosion. Per
    item, over a rectangle holding the mask's bounding box plus a margin, the result ``u`` has
    Dirichlet values from the background on the rectangle's border, and inside it satisfies, for
    every pixel ``p``, ``sum_q (u_q - u_p) = sum_q v_pq`` over the 4 neighbours ``q``. The guidance
    ``v_pq`` of an edge is the source difference ``s_q - s_p`` when ``p`` or ``q`` is in the mask
    (and both lie on the layer), otherwise the background difference. In ``"mixed"`` mode a
    masked edge takes whichever of the source and background differences is larger in magnitude,
    per channel. Because an edge counts as soon as one end is in the mask, a 1-2 px scratch keeps
    its gradients (OpenCV erodes the mask by 3 px and loses it).

    The rectangle is the mask's bounding box grown by ``RECTANGLE_MARGIN`` px, then to the next
    size ``n`` with ``n + 1`` 5-smooth (fast DST), inside the image when it fits; it depends on the
    item alone, so a batch gives the same result as a loop. It is solved with an orthonormal DST-I
    (exact up to rounding); items sharing a rectangle size are solved together. Mask pixels on the
    image's outermost rows/columns act as the fixed border (there is no pixel beyond them).

    Args:
        background: ``[B, C, H, W]`` float in [0, 1] (C = 1 or 3); uint8 / numpy / PIL / unbatched
            images are accepted and the result is returned in the same form. A uint8 background is
            never copied to float as a whole: only the rectangles are, and the result is exactly
            the float result rounded to uint8 (OpenCV's in/out format, a quarter of the bytes).
        source: ``[B, C, h, w]`` defect content, same channels as ``background``.
        mask: ``[B, 1, h, w]`` bool; integer (uint8, numpy, PIL mode L) holding only
            ``{0, 1}`` or only ``{0, 255}`` (other values are refused, not thresholded); or
            float with ``>= 0.5`` inside.
        offset: per-item ``(top, left)`` of the layer in the background (integer tensor
            ``[B, 2]``), one pair for all items, or ``None`` when the layer has the background's
            size. Layers hanging over the border are clipped.
        mode: ``"normal"`` or ``"mixed"``.

    Returns:
        A new image, equal to ``background`` outside each item's rectangle (an empty mask returns
        a copy). Values are clamped to [0, 1]: a Poisson solution can overshoot its boundary
        values, and images live in [0, 1]. Differentiable with respect to ``source`` and
        ``background`` (the solve's backward is the same symmetric solve).
    """
    check_mode(mode)
    problem = prepare_masked(background, source, mask, offset)
    out = _poisson_blend(
        problem.background, problem.layer, problem.matte[:, 0], problem.offsets, mode
    )
    return problem.restore(out)


def blend_rectangle(start: int, stop: int, image_length: int) -> tuple[int, int]:
    """Along one axis, the solved interior ``(first, length)`` for mask pixels ``[start, stop)``.

    It covers ``[start - RECTANGLE_MARGIN, stop + RECTANGLE_MARGIN)`` within the image's inner
    pixels ``[1, image_length - 1)``, grown (centred, shifted to fit) to a DST-friendly length.
    """
    first = max(start - RECTANGLE_MARGIN, 1)
    last = min(stop + RECTANGLE_MARGIN, image_length - 1)
    needed = last - first
    length = dst_friendly_length(needed, image_length - 2)
    first = min(max(first - (length - needed) // 2, 1), image_length - 1 - length)
    return first, length


def _clip_to_interior(
    mask: torch.Tensor, offsets: list[tuple[int, int]], height: int, width: int
) -> torch.Tensor:
    # The outermost image rows/columns are the Dirichlet border: no mask pixel may sit there.
    return clip_mask(mask, offsets, (1, height - 1), (1, width - 1))


def _rectangles(
    clipped: torch.Tensor, offsets: list[tuple[int, int]], height: int, width: int
) -> list[tuple[int, int, int, int] | None]:
    """Per item ``(row, rows, col, cols)``: corner and size of the solved interior."""
    return placed_boxes(
        clipped,
        offsets,
        lambda start, stop: blend_rectangle(start, stop, height),
        lambda start, stop: blend_rectangle(start, stop, width),
    )


def solved_rectangles(
    mask: torch.Tensor, offsets: list[tuple[int, int]], image_size: tuple[int, int]
) -> list[tuple[int, int, int, int] | None]:
    """Per item of ``mask [B, h, w]`` (bool, the layer's) placed at ``offsets`` in an image of
    ``image_size``, the image rows and columns ``(row0, row1, col0, col1)`` (ends excluded) that
    :func:`poisson_blend` reads and may change: the solved interior and its fixed border.
    ``None`` where the blend leaves the item's image as it is."""
    height, width = image_size
    if height < 3 or width < 3:
        return [None] * mask.shape[0]
    rectangles = _rectangles(_clip_to_interior(mask, offsets, height, width), offsets, *image_size)
    return [
        None if r is None else (r[0] - 1, r[0] + r[1] + 1, r[2] - 1, r[2] + r[3] + 1)
        for r in rectangles
    ]


def _poisson_blend(
    background: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    mode: str,
) -> torch.Tensor:
    height, width = background.shape[-2:]
    out = background.clone()
    if height < 3 or width < 3:
        return out
    mask = _clip_to_interior(mask, offsets, height, width)
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for item, rectangle in enumerate(_rectangles(mask, offsets, height, width)):
        if rectangle is None:
            continue
        first_row, rows, first_col, cols = rectangle
        # Corner of the interior plus its one-pixel Dirichlet border.
        groups[(rows, cols)].append((item, first_row - 1, first_col - 1))

    for (rows, cols), same_size in groups.items():
        # A few items at a time, so that the dozen passes over the crops run in cache.
        chunk = max(1, CHUNK_ELEMENTS // (source.shape[1] * (rows + 2) * (cols + 2)))
        for start in range(0, len(same_size), chunk):
            corners = same_size[start : start + chunk]
            crops = cut_crops(background, source, mask, offsets, corners, (rows + 2, cols + 2))
            interiors = [(item, row + 1, col + 1) for item, row, col in corners]
            paste_crops(out, _solve_crops(crops, background, mode), interiors)
    return out


def _solve_crops(crops: Crops, background: torch.Tensor, mode: str) -> torch.Tensor:
    """The blended interiors ``[G, C, r, c]`` of rectangle crops that include their border."""
    if background.is_floating_point():
        check_finite(crops.background, "background (inside the blended rectangle)")
    correction = solve_dirichlet_rectangle(
        _guidance_divergence(crops.source, crops.background, crops.mask, crops.valid, mode)
    )
    return correction.add_(crops.background[:, :, 1:-1, 1:-1]).clamp_(0.0, 1.0)


def _guidance_divergence(
    source: torch.Tensor,
    background: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Right-hand side ``div(v - grad(background))`` inside ``[G, C, n + 2, m + 2]`` crops.

    ``v`` is the guidance of :func:`poisson_blend`: an edge touching the mask, with both ends on
    the layer (``valid``), takes the source difference (or in mixed mode the larger-magnitude one).
    """
    inner = slice(1, -1)
    guided_x = (
        (mask[:, inner, 1:] | mask[:, inner, :-1]) & valid[:, inner, 1:] & valid[:, inner, :-1]
    )
    guided_y = (
        (mask[:, 1:, inner] | mask[:, :-1, inner]) & valid[:, 1:, inner] & valid[:, :-1, inner]
    )
    if mode == "normal":
        # source difference - background difference = difference of (source - background)
        offset = source - background
        flow_x = offset[:, :, inner, 1:] - offset[:, :, inner, :-1]
        flow_y = offset[:, :, 1:, inner] - offset[:, :, :-1, inner]
        flow_x.mul_(guided_x[:, None])
        flow_y.mul_(guided_y[:, None])
    else:
        flow_x = guidance_correction(
            source[:, :, inner], background[:, :, inner], guided_x, mode, 3
        )
        flow_y = guidance_correction(
            source[:, :, :, inner], background[:, :, :, inner], guided_y, mode, 2
        )
    divergence = flow_x[..., 1:] - flow_x[..., :-1]
    return divergence.add_(flow_y[:, :, 1:]).sub_(flow_y[:, :, :-1])
