"""Images at the public edge: every conversion of an image argument, and the checks on images.

Callers pass tensors ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` (uint8, or float in [0, 1]),
numpy arrays ``[H, W]`` / ``[H, W, C]`` and PIL images in mode L or RGB:

- :func:`to_float_image` makes any of them a float ``[B, C, H, W]`` tensor in [0, 1];
- :func:`to_batched_image` makes them ``[B, C, H, W]`` but keeps uint8 as uint8 (``x`` standing
  for ``x / 255``), for callers that convert only the pixels they read;
- :func:`as_chw` gives the ``[C, H, W]`` view of one image the compiled renderer reads;
- :func:`to_unit_batch` checks the ``[B, C, H, W]`` batch of :func:`~defectaug.inject_defects`
  (uint8 kept as it is).

The first two also return a function that turns a result back into the caller's form.
:func:`check_finite`, :func:`check_unit_range` and :func:`check_batched_image` check an image's
values and form. Every refusal names the argument (argument checks of other kinds:
:mod:`defectaug._checks`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from defectaug._checks import describe

Restore = Callable[[torch.Tensor], Any]


def pil_array(image: Image.Image, name: str) -> np.ndarray:
    """A writable ``[H, W]`` / ``[H, W, 3]`` uint8 copy of a PIL image in mode L or RGB."""
    if image.mode not in ("L", "RGB"):
        raise TypeError(
            f"{name}: expected a PIL image in mode 'L' or 'RGB', got mode {image.mode!r}"
        )
    return np.array(image)  # a writable copy: torch.from_numpy refuses read-only buffers


def to_float_image(
    value: Any,
    name: str,
    *,
    channels: tuple[int, ...] = (1, 3),
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, Restore]:
    """Convert an image-like ``value`` to a float ``[B, C, H, W]`` tensor in [0, 1].

    Accepts a tensor ``[H, W]``, ``[C, H, W]`` or ``[B, C, H, W]`` (uint8 is scaled by 1/255, float
    is taken as already in [0, 1]), a numpy array ``[H, W]`` / ``[H, W, C]`` (uint8 or float), or a
    PIL image in mode L or RGB. Returns the tensor and a function that turns a result of the same
    shape back into the caller's form (same rank, dtype, container).
    """
    tensor, restore = to_batched_image(value, name, channels=channels)
    if tensor.dtype == torch.uint8:
        return tensor.to(dtype or torch.float32) / 255.0, restore
    if dtype is not None:
        tensor = tensor.to(dtype)
    check_finite(tensor, name)
    return tensor, restore


def to_batched_image(
    value: Any, name: str, *, channels: tuple[int, ...] = (1, 3)
) -> tuple[torch.Tensor, Restore]:
    """Like :func:`to_float_image`, but a uint8 image stays a uint8 ``[B, C, H, W]`` tensor.

    For callers that read only part of an image: they convert just the pixels they read (uint8
    ``x`` stands for ``x / 255``) and skip a full-size float copy. Float values are not checked
    for finiteness here. The returned ``restore`` accepts a result in the returned dtype (kept as
    it is) or in float (rounded back to uint8 when the input was uint8).
    """
    if isinstance(value, Image.Image):
        tensor, from_numpy = to_batched_image(pil_array(value, name), name, channels=channels)
        mode = value.mode
        return tensor, lambda out: Image.fromarray(from_numpy(out), mode=mode)

    if isinstance(value, np.ndarray):
        if value.ndim not in (2, 3):
            raise ValueError(
                f"{name}: expected a numpy image [H, W] or [H, W, C], got {describe(value)}"
            )
        hwc = value if value.ndim == 3 else value[..., None]
        tensor, from_tensor = to_batched_image(
            torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))),
            name,
            channels=channels,
        )
        ndim = value.ndim

        def restore_numpy(out: torch.Tensor) -> np.ndarray:
            chw = from_tensor(out).detach().cpu().numpy().transpose(1, 2, 0)
            return chw[..., 0] if ndim == 2 else chw

        return tensor, restore_numpy

    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor, numpy array or PIL image, got {describe(value)}"
        )
    if value.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name}: expected [H, W], [C, H, W] or [B, C, H, W], got {describe(value)}"
        )
    original_ndim, original_dtype = value.ndim, value.dtype
    if original_dtype != torch.uint8 and not original_dtype.is_floating_point:
        raise TypeError(f"{name}: expected a uint8 or floating-point image, got {describe(value)}")
    batched = value
    while batched.ndim < 4:
        batched = batched.unsqueeze(0)
    if batched.shape[1] not in channels:
        raise ValueError(
            f"{name}: expected {' or '.join(map(str, channels))} channel(s) in dimension -3, "
            f"got {describe(value)}"
        )

    def restore_tensor(out: torch.Tensor) -> torch.Tensor:
        while out.ndim > original_ndim:
            out = out.squeeze(0)
        if original_dtype == torch.uint8 and out.is_floating_point():
            return to_uint8(out)
        return out.to(original_dtype)

    return batched, restore_tensor


def as_chw(image: Any, name: str = "image") -> torch.Tensor:
    """A ``[C, H, W]`` tensor view of one image (a PIL image is copied to a tensor).

    Tensors ``[H, W]``, ``[C, H, W]`` or ``[1, C, H, W]`` (C = 1 or 3, uint8 or float) are viewed
    as they are, tv_tensors as plain tensors (which read their attributes without a dispatch).
    """
    if isinstance(image, Image.Image):
        array = pil_array(image, name)
        array = array[..., None] if array.ndim == 2 else array
        return torch.from_numpy(array).permute(2, 0, 1)
    tensor = image if type(image) is torch.Tensor else image.as_subclass(torch.Tensor)
    if tensor.ndim == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    elif tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(
            f"{name}: expected [H, W], [C, H, W] or [1, C, H, W] with C = 1 or 3, got shape "
            f"{tuple(image.shape)}"
        )
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise TypeError(f"{name}: expected a uint8 or floating-point image, got {tensor.dtype}")
    return tensor


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """A float image in [0, 1] as uint8, rounded to the nearest level (values outside clamped)."""
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8)


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise if a float ``tensor`` holds NaN or inf.

    One reduction (the sum) decides in the common case; the sum can also overflow on huge finite
    values, so the exact element-wise check runs only when it trips.
    """
    if (
        tensor.is_floating_point()
        and tensor.numel()
        and not bool(torch.isfinite(tensor.sum()))
        and not bool(torch.isfinite(tensor).all())
    ):
        raise ValueError(f"{name}: contains NaN or infinite values")


#: Float images may stray this far outside [0, 1] (rounding in resizes, colour conversions) before
#: :func:`check_unit_range` refuses them.
UNIT_RANGE_TOLERANCE = 1e-3

UNIT_RANGE_HINT = (
    "convert uint8 images with v2.ToDtype(torch.float32, scale=True) (without scale=True values "
    "stay in [0, 255]) and place DefectInject before v2.Normalize"
)


def check_unit_range(tensor: torch.Tensor, name: str, hint: str = UNIT_RANGE_HINT) -> None:
    """Raise unless a float ``tensor`` is finite and within [0, 1] (``UNIT_RANGE_TOLERANCE``).

    Defects are shaded as if 0 were black and 1 white: on a [0, 255] or normalised image they
    would come out as black blobs. One min / max pass, through numpy on the CPU (faster there
    than torch's ``aminmax``); NaN propagates into both.
    """
    if not tensor.is_floating_point() or not tensor.numel():
        return
    if tensor.device.type == "cpu" and tensor.dtype != torch.bfloat16:
        array = tensor.detach().numpy()
        low, high = float(array.min()), float(array.max())
    else:
        low, high = (float(v) for v in torch.stack(torch.aminmax(tensor.detach())).tolist())
    if low >= -UNIT_RANGE_TOLERANCE and high <= 1.0 + UNIT_RANGE_TOLERANCE:
        return
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    raise ValueError(
        f"{name}: expected float values in [0, 1], found [{low:.4g}, {high:.4g}]; {hint}"
    )


def check_batched_image(
    tensor: Any, name: str, *, channels: tuple[int, ...] = (1, 3), uint8: bool = False
) -> torch.Tensor:
    """Validate an internal-form image: a float ``[B, C, H, W]`` tensor with finite values (or,
    with ``uint8``, a uint8 one)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [B, C, H, W], got {describe(tensor)}")
    if tensor.ndim != 4:
        raise ValueError(f"{name}: expected a 4-D tensor [B, C, H, W], got {describe(tensor)}")
    if not (tensor.is_floating_point() or (uint8 and tensor.dtype == torch.uint8)):
        kind = "a uint8 tensor or " if uint8 else ""
        raise TypeError(
            f"{name}: expected {kind}a floating-point tensor with values in [0, 1], "
            f"got {describe(tensor)}"
        )
    if tensor.shape[1] not in channels:
        raise ValueError(
            f"{name}: expected {' or '.join(map(str, channels))} channel(s) in dimension 1, "
            f"got {describe(tensor)}"
        )
    check_finite(tensor, name)
    return tensor


def to_unit_batch(images: Any, name: str = "images", hint: str = UNIT_RANGE_HINT) -> torch.Tensor:
    """A ``[B, C, H, W]`` batch checked: float in [0, 1], or uint8 kept as it is (``x`` standing
    for ``x / 255``, for callers that convert only the pixels they composite).

    A float batch must already lie in [0, 1] (:func:`check_unit_range`, with ``hint``).
    """
    images = check_batched_image(images, name, uint8=True)
    check_unit_range(images, name, hint)
    return images
