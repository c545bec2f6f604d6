"""Regions of interest: where on an image defects may go.

:func:`resolve_roi` turns an ``roi`` argument into a mask: ``None`` (the whole image), a mask
tensor, a callable ``images -> mask`` or ``"auto"`` for :func:`estimate_foreground`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import kornia
import torch

RoiArg = torch.Tensor | Callable[[torch.Tensor], torch.Tensor] | Literal["auto"] | None


def _grayscale(images: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(images) if images.shape[1] == 3 else images


def _otsu_thresholds(gray: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per-image Otsu threshold ``[B]`` of ``gray [B, 1, H, W]`` in [0, 1]."""
    batch = gray.shape[0]
    index = (gray.flatten(1).clamp(0, 1) * (bins - 1)).round().long()
    histogram = torch.zeros(batch, bins, device=gray.device, dtype=torch.float64)
    histogram.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float64))
    probability = histogram / histogram.sum(1, keepdim=True)
    levels = torch.arange(bins, device=gray.device, dtype=torch.float64) / (bins - 1)
    weight_low = probability.cumsum(1)
    mean_low_sum = (probability * levels).cumsum(1)
    total_mean = mean_low_sum[:, -1:]
    between = (total_mean * weight_low - mean_low_sum) ** 2 / (weight_low * (1 - weight_low)).clamp(
        min=1e-12
    )
    best = between.argmax(1)
    return levels[best].to(gray.dtype)


def estimate_foreground(
    images: torch.Tensor,
    *,
    min_area: float = 0.02,
    max_border_ratio: float = 0.25,
) -> torch.Tensor:
    """Rough object mask ``[B, 1, H, W]`` (bool) for object-on-background images.

    Method: grayscale, Gaussian blur (sigma ~ 1 % of the shorter side), a per-image Otsu threshold,
    then the side of the threshold that touches the image border least is taken as the object;
    a morphological opening then closing (square kernel ~ 2 % of the shorter side, kornia)
    removes specks and fills small holes. The estimate is called degenerate, and the whole image
    is returned for that image, when the object covers less than ``min_area`` of the image, when it
    covers its border at more than ``max_border_ratio`` times its own area fraction (a texture
    rather than an object on a background), or when it covers the whole image.
    """
    _, _, height, width = images.shape
    shorter = min(height, width)
    gray = _grayscale(images.float())
    sigma = max(1.0, shorter / 100)
    kernel = min(2 * math.ceil(2 * sigma) + 1, (shorter - 1) // 2 * 2 + 1)
    if kernel >= 3:
        gray = kornia.filters.gaussian_blur2d(
            gray, (kernel, kernel), (sigma, sigma), border_type="replicate"
        )
    threshold = _otsu_thresholds(gray)
    bright = gray > threshold[:, None, None, None]

    border = torch.zeros(height, width, dtype=torch.bool, device=images.device)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    bright_on_border = bright[:, 0, border].float().mean(1)
    dark_on_border = 1 - bright_on_border
    foreground = torch.where(
        (bright_on_border <= dark_on_border)[:, None, None, None], bright, ~bright
    )

    size = max(3, (shorter // 50) | 1)
    structure = torch.ones(size, size, device=images.device)
    cleaned = kornia.morphology.closing(
        kornia.morphology.opening(foreground.float(), structure), structure
    )
    foreground = cleaned >= 0.5

    area = foreground.flatten(1).float().mean(1)
    on_border = foreground[:, 0, border].float().mean(1)
    degenerate = (area < min_area) | (area >= 1.0) | (on_border > max_border_ratio * area)
    return foreground | degenerate[:, None, None, None]


def resolve_roi(roi: RoiArg, images: torch.Tensor) -> torch.Tensor | None:
    """The ROI for ``images [B, C, H, W]`` as bool ``[B, 1, H, W]`` (``None`` for the whole image).

    ``roi`` may be ``None``, ``"auto"`` (:func:`estimate_foreground`), a callable taking the images
    and returning a mask, or a mask tensor ``[H, W]``, ``[1, H, W]``, ``[1, 1, H, W]`` or
    ``[B, 1, H, W]`` (bool, or numbers with ``>= 0.5`` inside). A given mask that is empty for an
    image raises ``ValueError``: defects would have nowhere to go.
    """
    if roi is None:
        return None
    batch, _, height, width = images.shape
    if isinstance(roi, str):
        if roi != "auto":
            raise ValueError(
                f"roi: expected None, 'auto', a mask tensor or a callable, got {roi!r}"
            )
        return estimate_foreground(images)
    mask = roi(images) if callable(roi) else roi
    if not isinstance(mask, torch.Tensor):
        raise TypeError(
            f"roi: expected a mask tensor (or a callable returning one), got {type(mask).__name__}"
        )
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] not in (1, batch)
        or mask.shape[-2:] != (height, width)
    ):
        raise ValueError(
            f"roi: expected a mask of shape [H, W], [1, H, W] or [B, 1, H, W] matching images "
            f"{tuple(images.shape)}, got {tuple(mask.shape)}"
        )
    mask = (mask >= 0.5 if mask.dtype != torch.bool else mask).to(images.device)
    mask = mask.expand(batch, -1, -1, -1)
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        raise ValueError(
            f"roi: the region of interest is empty for image(s) {empty.nonzero()[:, 0].tolist()}"
        )
    return mask
