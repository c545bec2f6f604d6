"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of defect layers for the critic.

With a few dozen real defects a critic memorises the training set within a few hundred steps and
its gradients stop telling the generator anything. Showing the critic randomly flipped, shifted
and re-lit versions of *both* real and generated layers (independent draws, same distribution)
removes that shortcut without teaching the generator to produce augmented-looking defects, because
the augmentation is differentiable and applied to the fakes too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_augment(
    content: torch.Tensor,
    alpha: torch.Tensor,
    generator: torch.Generator,
    *,
    max_shift: float = 0.125,
    brightness: float = 0.1,
    contrast: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, integer translation and brightness/contrast jitter of ``(content, alpha)``.

    Geometry is shared by content and alpha (one ``grid_sample`` on both); photometric jitter
    touches the content only. Shifts are whole pixels up to ``max_shift`` of the side, so sampling
    lands on pixel centres and nothing is blurred. Draws come from ``generator`` only.
    """
    batch, channels, height, width = content.shape
    device, dtype = content.device, content.dtype

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=generator.device).to(
            device=device, dtype=dtype
        )

    flips = torch.where(uniform(batch, 2) < 0.5, -1.0, 1.0).to(dtype)
    limit = torch.tensor(
        [max(int(width * max_shift), 0), max(int(height * max_shift), 0)], device=device
    )
    shift = torch.floor(uniform(batch, 2) * (2 * limit + 1).to(dtype)) - limit.to(dtype)
    theta = torch.zeros(batch, 2, 3, device=device, dtype=dtype)
    theta[:, 0, 0], theta[:, 1, 1] = flips[:, 0], flips[:, 1]
    theta[:, 0, 2] = -2.0 * shift[:, 0] / width
    theta[:, 1, 2] = -2.0 * shift[:, 1] / height
    grid = F.affine_grid(theta, [batch, channels + 1, height, width], align_corners=False)
    moved = F.grid_sample(
        torch.cat([content, alpha], dim=1),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    content, alpha = moved[:, :channels], moved[:, channels:]
    mean = content.mean(dim=(1, 2, 3), keepdim=True)
    gain = 1.0 + contrast * (2.0 * uniform(batch, 1, 1, 1) - 1.0)
    offset = brightness * (2.0 * uniform(batch, 1, 1, 1) - 1.0)
    return (content - mean) * gain + mean + offset, alpha
