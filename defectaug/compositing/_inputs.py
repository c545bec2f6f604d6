"""Checking and converting compositing inputs at the public edge.

Every compositing function takes a background, a layer (foreground / source) with its matte (alpha
or binary mask) and an offset. This module turns whatever the caller passed into batched float
tensors on one device plus a per-item list of placements, and names the argument whenever it
refuses; images are converted by :mod:`defectaug._io`. A float layer's finiteness is checked with
one sum instead of a full boolean pass, a float background's only inside the region each blend
reads (the blend checks it there; pixels it never reads are copied through as they are). A uint8
background stays uint8: the blends convert only the pixels they read, write their results back
rounded, and return uint8, exactly what converting the whole image to float and back would give
(OpenCV's own in/out format, at a quarter of the bytes to copy).

A binary mask may be bool, float (``>= 0.5`` inside) or integer holding only ``{0, 1}`` (the
datasets' label format) or only ``{0, 255}``; other integer values are refused, never guessed at.
Tensors without data (the meta device) are refused before anything reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from defectaug._checks import describe, is_int
from defectaug._io import Restore, check_finite, to_batched_image, to_float_image

#: A layer pixel belongs to a binary mask where the mask's float value is at least this.
MASK_THRESHOLD = 0.5

OffsetArg = torch.Tensor | np.ndarray | Sequence[int] | Sequence[Sequence[int]] | None


@dataclass(frozen=True)
class Composite:
    """A validated compositing problem.

    Attributes:
        background: ``[B, C, H, W]`` float or uint8 tensor (the caller's own tensor when it
            already had that form: never written to). uint8 ``x`` stands for ``x / 255``; read it
            through :func:`~defectaug.compositing._regions.read_pixels`.
        layer: ``[B, C, h, w]`` float tensor on the background's device; its dtype (float32 or
            float64: half precision is promoted) is the one the blend computes in.
        matte: ``[B, 1, h, w]``: bool for a mask, float in [0, 1] for an alpha.
        offsets: per item, the ``(top, left)`` of the layer in the background.
        restore: turns a ``[B, C, H, W]`` result back into the background's original form.
    """

    background: torch.Tensor
    layer: torch.Tensor
    matte: torch.Tensor
    offsets: list[tuple[int, int]]
    restore: Restore


def _single_channel(value: torch.Tensor, name: str) -> torch.Tensor:
    """``[h, w]`` / ``[1, h, w]`` / ``[B, 1, h, w]`` tensor as ``[B, 1, h, w]``, else an error."""
    if value.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name}: expected [h, w], [1, h, w] or [B, 1, h, w], got {describe(value)}"
        )
    batched = value
    while batched.ndim < 4:
        batched = batched.unsqueeze(0)
    if batched.shape[1] != 1:
        raise ValueError(
            f"{name}: expected a single-channel [B, 1, h, w] tensor, got {describe(value)}"
        )
    return batched


def _binary_levels(mask: torch.Tensor, name: str) -> torch.Tensor:
    """An integer mask as bool: it must hold only {0, 1} or only {0, 255}.

    Both are common label formats (datasets store 0/1, OpenCV and PIL masks 0/255). Reading the
    levels as ``x / 255`` would turn a 0/1 mask into an empty one, so no threshold is applied:
    anything else (a soft or multi-class map) is refused rather than guessed at.
    """
    if mask.numel() == 0:
        return mask.bool()
    low, high = (int(v) for v in torch.aminmax(mask))
    if low >= 0 and high <= 1:
        return mask.bool()
    if low >= 0 and high == 255 and bool(((mask == 0) | (mask == 255)).all()):
        return mask == 255
    found = torch.unique(mask).tolist()
    shown = ", ".join(map(str, found[:8]))
    if len(found) > 8:
        shown += f", ... ({len(found)} distinct)"
    raise ValueError(
        f"{name}: expected a binary mask, an integer one holding only {{0, 1}} or only "
        f"{{0, 255}}, got values {{{shown}}} ({describe(mask)}); threshold it first"
    )


def _as_mask(value: Any, name: str) -> torch.Tensor:
    """A mask argument as a bool ``[B, 1, h, w]`` tensor.

    bool as it is; integers (uint8 from files, numpy, PIL) by :func:`_binary_levels`; float with
    ``>= 0.5`` inside.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            return _single_channel(value, name)
        if value.is_floating_point():
            mask = _single_channel(value, name).detach()
            check_finite(mask, name)
            return mask >= MASK_THRESHOLD
        if value.is_complex():
            raise TypeError(
                f"{name}: expected a bool, integer or floating-point mask, got {describe(value)}"
            )
        return _binary_levels(_single_channel(value, name), name)
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            value = value.view(np.uint8)
        elif value.dtype.kind in "iu" and value.dtype != np.uint8:
            # The image path below takes uint8 only: check the levels here, hand it 0/1 bytes.
            levels = _binary_levels(torch.from_numpy(np.ascontiguousarray(value)), name)
            value = levels.numpy().view(np.uint8)
    tensor, _ = to_batched_image(value, name, channels=(1,))
    if tensor.dtype == torch.uint8:
        return _binary_levels(tensor, name)
    check_finite(tensor, name)
    return tensor >= MASK_THRESHOLD


def _as_alpha(value: Any, name: str) -> torch.Tensor:
    """An alpha argument as a float ``[B, 1, h, w]`` tensor with values in [0, 1].

    uint8 is a soft alpha read as ``x / 255``, except that one holding only 0 and 1 is refused:
    that is a binary mask in the 0/1 label format, which as levels would be at most 1/255 opaque
    (invisible), and reading it as a hard matte instead would give ``{0, 1}`` and ``{0, 1, 2}``
    unrelated meanings.
    """
    if isinstance(value, torch.Tensor) and value.dtype == torch.bool:
        alpha = _single_channel(value, name).to(torch.float32)
    elif isinstance(value, torch.Tensor) and value.is_floating_point():
        alpha = _single_channel(value, name)
        check_finite(alpha, name)
    else:
        if isinstance(value, np.ndarray) and value.dtype == np.bool_:
            value = value.astype(np.uint8) * 255
        alpha, _ = to_batched_image(value, name, channels=(1,))
        if alpha.dtype == torch.uint8:
            if alpha.numel() and int(alpha.max()) == 1:
                raise ValueError(
                    f"{name}: a uint8 alpha is read as levels x / 255, but this one holds only "
                    f"{{0, 1}} ({describe(alpha)}), a binary mask's format; pass it as bool "
                    "(alpha.bool()) for a hard matte, or scale it to 0..255"
                )
            alpha = alpha.to(torch.float32) / 255.0
        else:
            check_finite(alpha, name)
    if alpha.numel():
        low, high = torch.aminmax(alpha.detach())
        if float(low) < 0.0 or float(high) > 1.0:
            raise ValueError(
                f"{name}: expected values in [0, 1], got values in "
                f"[{float(low):.4g}, {float(high):.4g}]"
            )
    return alpha


def parse_offset(
    offset: OffsetArg, batch: int, layer_size: tuple[int, int], image_size: tuple[int, int]
) -> list[tuple[int, int]]:
    """Per-item ``(top, left)`` from ``None``, one pair, or an integer ``[B, 2]`` tensor/array."""
    expected = "None, a (top, left) pair of ints, or an integer tensor of shape [B, 2]"
    if offset is None:
        if layer_size != image_size:
            raise ValueError(
                f"offset: None places the layer at (0, 0) over the whole background, so the layer "
                f"must have the background's size {image_size}; got a layer of size {layer_size} "
                "(pass offset=(top, left))"
            )
        return [(0, 0)] * batch
    if isinstance(offset, np.ndarray):
        if offset.dtype.kind not in "iu":
            raise TypeError(f"offset: expected integer values, got {describe(offset)}")
        offset = torch.from_numpy(offset)
    if isinstance(offset, torch.Tensor):
        if offset.dtype.is_floating_point or offset.dtype.is_complex or offset.dtype == torch.bool:
            raise TypeError(f"offset: expected an integer tensor, got {describe(offset)}")
        if tuple(offset.shape) == (2,):
            top, left = offset.tolist()
            return [(top, left)] * batch
        if tuple(offset.shape) == (batch, 2):
            return [(top, left) for top, left in offset.tolist()]
        raise ValueError(f"offset: expected shape [{batch}, 2] or [2], got {describe(offset)}")
    if isinstance(offset, Sequence) and not isinstance(offset, str | bytes):
        if len(offset) == 2 and all(is_int(v) for v in offset):
            return [(int(offset[0]), int(offset[1]))] * batch
        pairs_ok = all(
            isinstance(p, Sequence) and len(p) == 2 and all(is_int(v) for v in p) for p in offset
        )
        if pairs_ok and len(offset) == batch:
            return [(int(p[0]), int(p[1])) for p in offset]
        raise ValueError(f"offset: expected {expected} (batch size {batch}), got {offset!r}")
    raise TypeError(f"offset: expected {expected}, got {describe(offset)}")


def _check_real_device(value: Any, name: str) -> None:
    """Refuse a tensor without data (the meta device) before anything tries to read it."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        raise ValueError(
            f"{name}: expected a tensor with data on a real device (cpu or cuda), got a meta "
            f"tensor ({describe(value)}); move it with .to(device) first"
        )


def prepare(
    background: Any,
    layer: Any,
    matte: Any,
    offset: OffsetArg,
    *,
    layer_name: str,
    matte_name: str,
    matte_is_mask: bool,
) -> Composite:
    """Validate and convert one compositing call's arguments (see the module docstring)."""
    for value, name in (
        (background, "background"),
        (layer, layer_name),
        (matte, matte_name),
        (offset, "offset"),
    ):
        _check_real_device(value, name)
    bg, restore = to_batched_image(background, "background")
    fg, _ = to_float_image(layer, layer_name)
    if fg.device != bg.device:
        raise ValueError(
            f"{layer_name}: expected a tensor on the background's device {bg.device}, "
            f"got {fg.device}"
        )
    if fg.shape[0] != bg.shape[0]:
        raise ValueError(
            f"{layer_name}: expected the background's batch size {bg.shape[0]}, got {describe(fg)}"
        )
    if fg.shape[1] != bg.shape[1]:
        raise ValueError(
            f"{layer_name}: channel mismatch, the background has {bg.shape[1]} channel(s) but "
            f"{layer_name} has {fg.shape[1]} ({describe(fg)}); convert one of them first"
        )
    dtype = torch.promote_types(bg.dtype, fg.dtype) if bg.is_floating_point() else fg.dtype
    # Half precision is too coarse for the solves (and sparse products lack it): compute in
    # float32; the result is cast back to the background's dtype.
    dtype = torch.promote_types(dtype, torch.float32)
    fg = fg.to(dtype)
    if bg.is_floating_point():
        bg = bg.to(dtype)

    matte_tensor = _as_mask(matte, matte_name) if matte_is_mask else _as_alpha(matte, matte_name)
    if matte_tensor.device != bg.device:
        raise ValueError(
            f"{matte_name}: expected a tensor on the background's device {bg.device}, "
            f"got {matte_tensor.device}"
        )
    if matte_tensor.shape[0] != fg.shape[0] or matte_tensor.shape[-2:] != fg.shape[-2:]:
        raise ValueError(
            f"{matte_name}: expected shape [{fg.shape[0]}, 1, {fg.shape[2]}, {fg.shape[3]}] to "
            f"match {layer_name} {tuple(fg.shape)}, got {describe(matte_tensor)}"
        )
    if not matte_is_mask:
        matte_tensor = matte_tensor.to(dtype)

    offsets = parse_offset(
        offset, fg.shape[0], (fg.shape[2], fg.shape[3]), (bg.shape[2], bg.shape[3])
    )
    return Composite(bg, fg, matte_tensor, offsets, restore)


def prepare_masked(background: Any, source: Any, mask: Any, offset: OffsetArg) -> Composite:
    """:func:`prepare` for the Poisson blends: a ``source`` layer with a binary ``mask``."""
    return prepare(
        background,
        source,
        mask,
        offset,
        layer_name="source",
        matte_name="mask",
        matte_is_mask=True,
    )
