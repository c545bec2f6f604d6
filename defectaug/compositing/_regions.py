"""Where each item's work happens: clipped masks, their boxes, and same-size crops around them.

The blends only ever compute small regions (a rectangle or a band around the mask) and paste them
into a copy of the background. Crops are cut per item with plain slicing (a handful of views and
one ``stack``), which is far cheaper on CPU than advanced indexing over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def clip_mask(
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> torch.Tensor:
    """``mask [B, h, w]`` without the pixels that land outside image rows/cols ``[start, stop)``."""
    device = mask.device
    tops = torch.tensor([o[0] for o in offsets], device=device)
    lefts = torch.tensor([o[1] for o in offsets], device=device)
    image_rows = tops[:, None] + torch.arange(mask.shape[1], device=device)
    image_cols = lefts[:, None] + torch.arange(mask.shape[2], device=device)
    row_ok = (image_rows >= rows[0]) & (image_rows < rows[1])
    col_ok = (image_cols >= cols[0]) & (image_cols < cols[1])
    return mask & row_ok[:, :, None] & col_ok[:, None, :]


def mask_boxes(mask: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """Per item ``(row0, row1, col0, col1)`` (end excluded) of ``mask [B, h, w]``, None if empty."""
    rows_any, cols_any = mask.any(dim=2), mask.any(dim=1)

    def extent(any_along: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(any_along.shape[1], device=any_along.device)
        first = torch.where(any_along, index, any_along.shape[1]).amin(dim=1)
        last = torch.where(any_along, index + 1, 0).amax(dim=1)
        return first, last

    row0, row1 = extent(rows_any)
    col0, col1 = extent(cols_any)
    table = torch.stack([row0, row1, col0, col1, rows_any.any(dim=1).long()], dim=1).tolist()
    return [tuple(entry[:4]) if entry[4] else None for entry in table]


@dataclass(frozen=True)
class Crops:
    """Same-size windows ``[G, ...]`` of the images around ``G`` items.

    ``background`` / ``source`` are ``[G, C, r, c]``; ``mask``, ``valid`` (on the layer and in the
    image) and ``in_image`` are ``[G, r, c]`` bools. Outside the image, ``background`` is 0; off
    the layer, ``source`` is 0 and ``mask`` False.
    """

    background: torch.Tensor
    source: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor
    in_image: torch.Tensor


def cut_crops(
    background: torch.Tensor,
    source: torch.Tensor,
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    corners: list[tuple[int, int, int]],
    size: tuple[int, int],
) -> Crops:
    """Crops of ``size`` whose top-left image corners are ``corners = [(item, row, col), ...]``."""
    height, width = background.shape[-2:]
    layer_h, layer_w = source.shape[-2:]
    rows, cols = size
    # Pad the layer once so every window can be sliced from it.
    reach = 0
    for item, row, col in corners:
        top, left = offsets[item]
        reach = max(
            reach, top - row, left - col, row + rows - top - layer_h, col + cols - left - layer_w
        )
    padding = (reach, reach, reach, reach)
    padded_source = F.pad(source, padding) if reach else source
    padded_mask = F.pad(mask, padding) if reach else mask

    bg_parts, source_parts, mask_parts = [], [], []
    for item, row, col in corners:
        y0, y1 = max(row, 0), min(row + rows, height)
        x0, x1 = max(col, 0), min(col + cols, width)
        part = background[item, :, y0:y1, x0:x1]
        outside = (x0 - col, col + cols - x1, y0 - row, row + rows - y1)
        bg_parts.append(F.pad(part, outside) if any(outside) else part)
        top, left = offsets[item]
        window = (
            slice(row - top + reach, row - top + reach + rows),
            slice(col - left + reach, col - left + reach + cols),
        )
        source_parts.append(padded_source[(item, slice(None), *window)])
        mask_parts.append(padded_mask[(item, *window)])

    device = background.device
    table = torch.tensor([(row, col, *offsets[item]) for item, row, col in corners], device=device)
    image_rows = table[:, 0:1] + torch.arange(rows, device=device)
    image_cols = table[:, 1:2] + torch.arange(cols, device=device)
    in_image = ((image_rows >= 0) & (image_rows < height))[:, :, None] & (
        (image_cols >= 0) & (image_cols < width)
    )[:, None, :]
    layer_rows = image_rows - table[:, 2:3]
    layer_cols = image_cols - table[:, 3:4]
    on_layer = ((layer_rows >= 0) & (layer_rows < layer_h))[:, :, None] & (
        (layer_cols >= 0) & (layer_cols < layer_w)
    )[:, None, :]
    valid = on_layer & in_image
    return Crops(
        background=torch.stack(bg_parts),
        source=torch.stack(source_parts),
        mask=torch.stack(mask_parts) & valid,
        valid=valid,
        in_image=in_image,
    )


def paste_crops(
    out: torch.Tensor, crops: torch.Tensor, corners: list[tuple[int, int, int]]
) -> None:
    """Write the in-image part of each ``crops [G, C, r, c]`` into ``out`` at its corner."""
    height, width = out.shape[-2:]
    rows, cols = crops.shape[-2:]
    for index, (item, row, col) in enumerate(corners):
        y0, y1 = max(row, 0), min(row + rows, height)
        x0, x1 = max(col, 0), min(col + cols, width)
        out[item, :, y0:y1, x0:x1] = crops[index, :, y0 - row : y1 - row, x0 - col : x1 - col]
