"""Where each item's work happens: clipped masks, their boxes, and same-size crops around them.

The blends only ever compute small regions (a rectangle or a band around the mask) and paste them
into a copy of the background. Crops are copied per item with plain slicing into one batched
buffer, which is far cheaper on CPU than advanced indexing over the whole batch. A uint8
background is read as ``x / 255`` in the layer's float dtype and written back rounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from defectaug._io import to_uint8


def read_pixels(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Pixels of a float or uint8 ``image`` as floats in [0, 1] of ``dtype``."""
    if image.dtype == torch.uint8:
        return image.to(dtype) / 255.0
    return image


def storable(values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Float ``values`` in the form ``image`` stores its pixels (uint8: rounded levels)."""
    return to_uint8(values) if image.dtype == torch.uint8 else values


def clip_mask(
    mask: torch.Tensor,
    offsets: list[tuple[int, int]],
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> torch.Tensor:
    """``mask [B, h, w]`` without the pixels that land outside image rows/cols ``[start, stop)``.

    Only items whose layer crosses those bounds are touched (on a copy); usually there are few.
    """
    height, width = mask.shape[1:]
    clipped = mask
    for item, (top, left) in enumerate(offsets):
        first_row, stop_row = rows[0] - top, rows[1] - top
        first_col, stop_col = cols[0] - left, cols[1] - left
        if first_row <= 0 and first_col <= 0 and stop_row >= height and stop_col >= width:
            continue
        if clipped is mask:
            clipped = mask.clone()
        layer = clipped[item]
        layer[: max(first_row, 0)] = False
        layer[max(stop_row, 0) :] = False
        layer[:, : max(first_col, 0)] = False
        layer[:, max(stop_col, 0) :] = False
    return clipped


def mask_boxes(mask: torch.Tensor) -> list[tuple[int, int, int, int] | None]:
    """Per item ``(row0, row1, col0, col1)`` (end excluded) of ``mask [B, h, w]``, None if empty."""
    if mask.numel() == 0:
        return [None] * mask.shape[0]
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


Span = Callable[[int, int], tuple[int, int]]


def placed_boxes(
    mask: torch.Tensor, offsets: list[tuple[int, int]], rows: Span, cols: Span
) -> list[tuple[int, int, int, int] | None]:
    """Per item of ``mask [B, h, w]``, ``(*rows(start, stop), *cols(start, stop))`` of its box's
    image rows and columns (``[start, stop)``, the layer placed at ``offsets``); None if empty."""
    placed: list[tuple[int, int, int, int] | None] = []
    for (top, left), box in zip(offsets, mask_boxes(mask), strict=True):
        placed.append(
            None
            if box is None
            else (*rows(top + box[0], top + box[1]), *cols(left + box[2], left + box[3]))
        )
    return placed


Index = tuple[int | slice, ...]


def window_copier(destination: torch.Tensor, source: torch.Tensor):
    """``copy(dst_index, src_index)`` doing ``destination[dst_index] = source[src_index]``.

    On CPU, without autograd in play, the copies go through numpy views of the same memory: a
    small slice assignment costs ~3 us there against ~12 us through torch's indexing, and a
    batch does a few of them per item.
    """
    no_graph = not (destination.requires_grad or source.requires_grad)
    if no_graph and destination.device.type == "cpu" and source.device.type == "cpu":
        destination, source = destination.numpy(), source.numpy()

    def copy(dst_index: Index, src_index: Index) -> None:
        destination[dst_index] = source[src_index]

    return copy


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
    """Crops of ``size`` whose top-left image corners are ``corners = [(item, row, col), ...]``.

    ``background`` may be uint8; its crop comes out in ``source``'s float dtype.
    """
    height, width = background.shape[-2:]
    layer_h, layer_w = source.shape[-2:]
    rows, cols = size
    count, channels = len(corners), background.shape[1]
    # Zero-fill only what some window leaves partly uncovered.
    inside_image = all(
        row >= 0 and col >= 0 and row + rows <= height and col + cols <= width
        for _, row, col in corners
    )
    on_layer = all(
        row >= offsets[item][0]
        and col >= offsets[item][1]
        and row + rows <= offsets[item][0] + layer_h
        and col + cols <= offsets[item][1] + layer_w
        for item, row, col in corners
    )
    new_bg = source.new_empty if inside_image else source.new_zeros
    new_source = source.new_empty if on_layer else source.new_zeros
    new_mask = mask.new_empty if on_layer else mask.new_zeros
    bg_crop = new_bg(count, channels, rows, cols)
    source_crop = new_source(count, channels, rows, cols)
    mask_crop = new_mask(count, rows, cols)
    copy_background = window_copier(bg_crop, background)
    copy_source = window_copier(source_crop, source)
    copy_mask = window_copier(mask_crop, mask)
    every = slice(None)
    for index, (item, row, col) in enumerate(corners):
        y0, y1 = max(row, 0), min(row + rows, height)
        x0, x1 = max(col, 0), min(col + cols, width)
        if y0 < y1 and x0 < x1:
            copy_background(
                (index, every, slice(y0 - row, y1 - row), slice(x0 - col, x1 - col)),
                (item, every, slice(y0, y1), slice(x0, x1)),
            )
        top, left = offsets[item]
        y0, y1 = max(row, top), min(row + rows, top + layer_h)
        x0, x1 = max(col, left), min(col + cols, left + layer_w)
        if y0 < y1 and x0 < x1:
            window = (slice(y0 - row, y1 - row), slice(x0 - col, x1 - col))
            layer_window = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
            copy_source((index, every, *window), (item, every, *layer_window))
            copy_mask((index, *window), (item, *layer_window))

    if background.dtype == torch.uint8:
        bg_crop.div_(255.0)
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
    return Crops(bg_crop, source_crop, mask_crop & valid, valid, in_image)


def paste_crops(
    out: torch.Tensor, crops: torch.Tensor, corners: list[tuple[int, int, int]]
) -> None:
    """Write the in-image part of each ``crops [G, C, r, c]`` into ``out`` at its corner."""
    crops = storable(crops, out)
    height, width = out.shape[-2:]
    rows, cols = crops.shape[-2:]
    copy = window_copier(out, crops)
    every = slice(None)
    for index, (item, row, col) in enumerate(corners):
        y0, y1 = max(row, 0), min(row + rows, height)
        x0, x1 = max(col, 0), min(col + cols, width)
        copy(
            (item, every, slice(y0, y1), slice(x0, x1)),
            (index, every, slice(y0 - row, y1 - row), slice(x0 - col, x1 - col)),
        )
