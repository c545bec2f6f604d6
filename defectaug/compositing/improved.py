"""Improved Poisson blending (DCDGANc, Wei et al.): the defect kept exactly, a seamless band."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from defectaug._io import check_finite
from defectaug.compositing._inputs import OffsetArg, prepare_masked
from defectaug.compositing._regions import Crops, clip_mask, cut_crops, paste_crops, placed_boxes
from defectaug.compositing._solvers import band_laplacian_matrix, solve_band
from defectaug.compositing.poisson import BlendMode, check_band, check_mode, guidance_correction

_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def improved_poisson_blend(
    background: Any,
    source: Any,
    mask: Any,
    offset: OffsetArg = None,
    band: int = 5,
    mode: BlendMode = "normal",
) -> Any:
    """Improved Poisson blending (DCDGANc): keep the defect exactly, blend a band around it.

    Plain seamless cloning lets the background seep into the defect (its level shifts towards the
    surroundings); alpha compositing keeps the defect but leaves a visible cut. DCDGANc
    alpha-composites the defect into a band of ``band`` px around its mask (found with a distance
    transform), then solves a Poisson problem whose boundary values come from that composite.
    Here that is the following well-posed problem:

    * the mask keeps the source exactly, so the label mask stays exact, even for 1 px scratches;
    * the band, ``0 < distance(p, mask) <= band`` (exact Euclidean distance), is the domain;
    * its Dirichlet values are the composite's at the band's two edges: the source on the mask,
      the background beyond the band;
    * its guidance is the background's gradient (``"normal"``: the background texture is kept
      and shifted by an offset that falls smoothly from the defect's level to zero across the
      band) or, per edge and channel, the larger-magnitude of the source and background
      differences (``"mixed"``, where the source exists).

    Using the composite's own gradient as guidance would make the solution the composite itself
    (a plain feathered alpha blend), so the guidance comes from the background. The distance-ramp
    alpha composite of the defect into the band is the solver's starting point. The band has an
    arbitrary shape; it is solved by batched conjugate gradients on the masked 5-point Laplacian
    to a relative residual of 1e-6 (float32) / 1e-12 (float64). At the image border the band has
    no neighbours beyond it (a natural boundary).

    Args:
        background, source, mask, offset: as in :func:`~defectaug.compositing.poisson_blend`.
        band: width of the blended band in pixels, an int >= 1 (the paper uses 5). A band
            wider than the image's diagonal covers the whole image; it is capped there.
        mode: ``"normal"`` or ``"mixed"``.

    Returns:
        A new image: the source on the mask, the blended band, the background elsewhere (bit for
        bit; an empty mask returns a copy). Band values are clamped to [0, 1]. Differentiable with
        respect to ``source`` and ``background``.
    """
    band = check_band(band)
    check_mode(mode)
    problem = prepare_masked(background, source, mask, offset)
    out = _improved_poisson_blend(
        problem.background, problem.layer, problem.matte[:, 0], problem.offsets, band, mode
    )
    return problem.restore(out)


def useful_band(band: int, height: int, width: int) -> int:
    """``band`` capped where it stops adding pixels: the image's diagonal (rounded up).

    Every band pixel lies in the image within ``band`` of a mask pixel that also lies in it, so no
    two such pixels are farther apart than ``hypot(height - 1, width - 1)``: any wider band is the
    whole image and gives the same problem, which the crops and loops below would otherwise pay
    for in ``band``.
    """
    diagonal_sq = (height - 1) ** 2 + (width - 1) ** 2
    reach = math.isqrt(diagonal_sq - 1) + 1 if diagonal_sq else 1  # ceil(sqrt), at least 1
    return min(band, reach)


def _crop_window(start: int, stop: int, image_length: int) -> tuple[int, int]:
    """The image rows (or columns) ``[start, stop)`` a crop needs, cut to the image and a ring.

    ``[start, stop)`` is a mask's box grown by its band and a ring of fixed neighbours. Band pixels
    lie in the image, so one pixel beyond it on either side is enough to keep each one's
    neighbours inside the crop.
    """
    return max(start, -1), min(stop, image_length + 1)


#: The most a group's crop may exceed (in area) the window of any item solved in it.
GROUP_PADDING = 4


def _group_windows(
    windows: list[tuple[int, int, int, int, int]],
) -> list[tuple[int, int, list[tuple[int, int, int, int, int]]]]:
    """``(rows, cols, windows)`` groups of ``(item, row0, row1, col0, col1)`` solved together.

    Padding a whole batch to its largest item made one large mask among small ones cost seconds
    and gigabytes; one solve per item costs a CG loop each. Greedily, largest window first, an
    item joins the first group whose crop, grown to hold it, stays within ``GROUP_PADDING`` times
    its own area (so within that of every earlier, larger member too). The band depends on the
    mask alone, so a bigger crop never changes an item's result.
    """
    groups: list[tuple[int, int, list[tuple[int, int, int, int, int]]]] = []
    by_area = sorted(windows, key=lambda w: (w[2] - w[1]) * (w[4] - w[3]), reverse=True)
    for window in by_area:
        rows, cols = window[2] - window[1], window[4] - window[3]
        for index, (group_rows, group_cols, members) in enumerate(groups):
            grown = (max(group_rows, rows), max(group_cols, cols))
            if grown[0] * grown[1] <= GROUP_PADDING * rows * cols:
                groups[index] = (*grown, [*members, window])
                break
        else:
            groups.append((rows, cols, [window]))
    return groups


def _improved_poisson_blend(
    background: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    band: int,
    mode: str,
) -> torch.Tensor:
    height, width = background.shape[-2:]
    out = background.clone()
    mask = clip_mask(mask, offsets, (0, height), (0, width))
    band = useful_band(band, height, width)
    windows = [
        (item, *window)
        for item, window in enumerate(_windows(mask, offsets, height, width, band))
        if window is not None
    ]
    for rows, cols, group in _group_windows(windows):
        # Shifted back where the group's size would reach past the ring around the image
        # (at most height + 2 rows, so the crop still fits there and holds the item's window).
        corners = [
            (item, min(row0, height + 1 - rows), min(col0, width + 1 - cols))
            for item, row0, _, col0, _ in group
        ]
        blended = _blend_crops(background, source, mask, offsets, corners, (rows, cols), band, mode)
        paste_crops(out, blended, corners)
    return out


def _windows(
    clipped: torch.Tensor, offsets: list[tuple[int, int]], height: int, width: int, band: int
) -> list[tuple[int, int, int, int] | None]:
    """Per item ``(row0, row1, col0, col1)``: the window its band is solved in (see
    :func:`_crop_window`), ``None`` for an empty mask; ``band`` already :func:`useful_band`."""
    margin = band + 1
    return placed_boxes(
        clipped,
        offsets,
        lambda start, stop: _crop_window(start - margin, stop + margin, height),
        lambda start, stop: _crop_window(start - margin, stop + margin, width),
    )


def band_windows(
    mask: torch.Tensor, offsets: list[tuple[int, int]], image_size: tuple[int, int], band: int
) -> list[tuple[int, int, int, int] | None]:
    """Per item of ``mask [B, h, w]`` (bool, the layer's) placed at ``offsets`` in an image of
    ``image_size``, the rows and columns ``(row0, row1, col0, col1)`` (ends excluded, reaching
    one pixel past the image where the band meets its edge) that the item's result in
    :func:`improved_poisson_blend` depends on and may change (a grouped crop can be larger: its
    other pixels are pasted back as they were); ``None`` where the image is left as it is."""
    height, width = image_size
    clipped = clip_mask(mask, offsets, (0, height), (0, width))
    return _windows(clipped, offsets, height, width, useful_band(band, height, width))


def _blend_crops(
    background: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    corners: list[tuple[int, int, int]],
    size: tuple[int, int],
    band: int,
    mode: str,
) -> torch.Tensor:
    """The blended crops ``[G, C, r, c]`` of the items at ``corners`` (see :func:`cut_crops`)."""
    crops = cut_crops(background, source, mask, offsets, corners, size)
    if background.is_floating_point():
        check_finite(crops.background, "background (inside the blended band)")
    dist_sq = _squared_distance_within(crops.mask, band)
    band_px = ~crops.mask & (dist_sq <= band * band) & crops.in_image
    correction = _band_correction(crops, band_px, dist_sq, band, mode)
    return torch.where(
        crops.mask[:, None],
        crops.source,
        torch.where(
            band_px[:, None], (crops.background + correction).clamp(0.0, 1.0), crops.background
        ),
    )


def _squared_distance_within(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Exact squared Euclidean distance to the nearest ``mask [G, r, c]`` pixel, up to ``radius``.

    Separable: the distance along each row first, then the minimum over nearby rows of
    ``dy^2 + row_distance^2``. Pixels farther than ``radius`` along either axis get ``inf``.
    (``kornia.contrib.distance_transform`` is a soft-min approximation, up to 29 % short on
    diagonals, and iterates over the whole image: neither fits an exact band.)
    """
    inf = float("inf")
    rows, cols = mask.shape[-2:]
    row_sq = torch.where(mask, 0.0, inf)
    # Shifts as long as the crop or longer see nothing: the loops stop there.
    for shift in range(1, min(radius, cols - 1) + 1):
        seen = torch.zeros_like(mask)
        seen[:, :, :-shift] = mask[:, :, shift:]
        seen[:, :, shift:] |= mask[:, :, :-shift]
        row_sq = torch.where(seen & torch.isinf(row_sq), float(shift * shift), row_sq)
    dist_sq = row_sq
    for shift in range(1, min(radius, rows - 1) + 1):
        below = F.pad(row_sq[:, shift:], (0, 0, 0, shift), value=inf)
        above = F.pad(row_sq[:, :-shift], (0, 0, shift, 0), value=inf)
        dist_sq = torch.minimum(dist_sq, torch.minimum(below, above) + shift * shift)
    return dist_sq


def _neighbour_values(
    grid: torch.Tensor, dy: int, dx: int, fill: float | int | bool
) -> torch.Tensor:
    """``grid[..., y + dy, x + dx]`` at every ``(y, x)`` of ``grid [G, r, c]``, ``fill`` outside."""
    rows, cols = grid.shape[-2:]
    shifted = torch.full_like(grid, fill)
    target_rows = slice(max(-dy, 0), rows - max(dy, 0))
    target_cols = slice(max(-dx, 0), cols - max(dx, 0))
    source_rows = slice(max(dy, 0), rows - max(-dy, 0))
    source_cols = slice(max(dx, 0), cols - max(-dx, 0))
    shifted[:, target_rows, target_cols] = grid[:, source_rows, source_cols]
    return shifted


def _band_correction(
    crops: Crops, band_px: torch.Tensor, dist_sq: torch.Tensor, band: int, mode: str
) -> torch.Tensor:
    """Correction ``w = u - background`` over the crops, non-zero on the band only.

    For each band pixel ``p``: ``sum_q (w_p - w_q) = sum_q g_pq`` over its in-image neighbours,
    with ``w`` known on the mask (source - background) and zero beyond the band; ``g`` is the
    guidance minus the background difference (zero in normal mode). The band pixels of item ``g``
    are its unknowns, packed in raster order into slots ``[0, K_g)`` of ``[G, C, K]``.
    """
    source, background = crops.source, crops.background
    groups, channels, rows, cols = source.shape
    device = source.device
    flat_band = band_px.flatten(1)
    counts = flat_band.sum(dim=1)
    size = int(counts.max())
    if size == 0:
        return torch.zeros_like(source)
    slot_map = torch.where(flat_band, flat_band.cumsum(dim=1) - 1, size)
    pixels = rows * cols
    positions = torch.zeros(groups, size + 1, device=device, dtype=torch.long).scatter_(
        1, slot_map, torch.arange(pixels, device=device).expand(groups, pixels)
    )[:, :size]
    live = torch.arange(size, device=device) < counts[:, None]
    positions = torch.where(live, positions, 0)

    # Band pixels lie at least one pixel inside the crop, so their neighbours are in it too.
    slot_grid = slot_map.view(groups, rows, cols)
    neighbour_slots, neighbour_exists = [], []
    for dy, dx in _DIRECTIONS:
        exists = _neighbour_values(crops.in_image, dy, dx, False)
        slot = torch.where(exists, _neighbour_values(slot_grid, dy, dx, size), size)
        neighbour_slots.append(slot.flatten(1).gather(1, positions))
        neighbour_exists.append(exists.flatten(1).gather(1, positions))
    neighbours = torch.where(live[:, :, None], torch.stack(neighbour_slots, dim=2), size)
    degree = torch.where(live, torch.stack(neighbour_exists, dim=2).sum(dim=2), 1)

    # Right-hand side: the known neighbours (on the mask) plus, in mixed mode, the guidance.
    known = torch.where(crops.mask[:, None], source - background, 0.0)
    padded = F.pad(known, (1, 1, 1, 1))
    rhs = (
        padded[:, :, :-2, 1:-1]
        + padded[:, :, 2:, 1:-1]
        + padded[:, :, 1:-1, :-2]
        + padded[:, :, 1:-1, 2:]
    )
    if mode == "mixed":
        valid = crops.valid
        flow_x = guidance_correction(
            source, background, valid[:, :, 1:] & valid[:, :, :-1], mode, 3
        )
        flow_y = guidance_correction(source, background, valid[:, 1:] & valid[:, :-1], mode, 2)
        # Guidance of (w_p - w_q): + the edge from the left/top neighbour, - the edge to the
        # right/bottom one.
        rhs = rhs + F.pad(flow_x, (1, 0)) - F.pad(flow_x, (0, 1))
        rhs = rhs + F.pad(flow_y, (0, 0, 1, 0)) - F.pad(flow_y, (0, 0, 0, 1))

    gather_index = positions[:, None].expand(groups, channels, size)

    def unknowns(dense: torch.Tensor) -> torch.Tensor:
        """Values of ``dense [G, C, r, c]`` at the unknowns, ``[G, C, K]`` (zero in spare slots)."""
        return dense.flatten(2).gather(2, gather_index) * live[:, None]

    ramp = 1.0 - dist_sq.clamp_max(float(band * band)).sqrt() / (band + 1)
    composite = (ramp * crops.valid).to(source.dtype)[:, None] * (source - background)
    matrix = band_laplacian_matrix(neighbours, degree.to(source.dtype), channels)
    solution = solve_band(unknowns(rhs), unknowns(composite), matrix)
    scatter_index = torch.where(live, positions, pixels)[:, None].expand(groups, channels, size)
    dense = source.new_zeros(groups, channels, pixels + 1).scatter(2, scatter_index, solution)
    return dense[:, :, :-1].view(groups, channels, rows, cols)
