"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of defect layers for the critic.

With a few dozen real defects a critic memorises the training set within a few hundred steps and
its gradients stop telling the generator anything. Showing the critic randomly flipped, shifted
and re-lit versions of *both* real and generated layers (independent draws, same distribution)
removes that shortcut without teaching the generator to produce augmented-looking defects, because
the augmentation is differentiable and applied to the fakes too.
"""

from __future__ import annotations

import torch


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

    Geometry is shared by content and alpha; photometric jitter touches the content only. Shifts
    are whole pixels up to ``max_shift`` of the side, done by index gathering with the edge
    repeated, so pixels move exactly and a binary alpha stays binary. Draws come from
    ``generator`` only.
    """
    batch, channels, height, width = content.shape
    device, dtype = content.device, content.dtype

    def uniform(*shape: int) -> torch.Tensor:
        draw = torch.rand(*shape, generator=generator, device=generator.device)
        return draw.to(device=device, dtype=dtype)

    flips = uniform(batch, 2) < 0.5
    layers = torch.cat([content, alpha], dim=1)
    layers = torch.where(flips[:, 0, None, None, None], layers.flip(-1), layers)
    layers = torch.where(flips[:, 1, None, None, None], layers.flip(-2), layers)
    for dim, length in ((-1, width), (-2, height)):
        limit = int(length * max_shift)
        if limit == 0:
            continue
        shift = torch.floor(uniform(batch) * (2 * limit + 1)).long() - limit
        index = (torch.arange(length, device=device)[None] - shift[:, None]).clamp(0, length - 1)
        shape = [batch, 1, 1, 1]
        shape[dim] = length
        index = index.view(shape).expand_as(layers)
        layers = torch.gather(layers, dim, index)
    content, alpha = layers[:, :channels], layers[:, channels:]
    mean = content.mean(dim=(1, 2, 3), keepdim=True)
    gain = 1.0 + contrast * (2.0 * uniform(batch, 1, 1, 1) - 1.0)
    offset = brightness * (2.0 * uniform(batch, 1, 1, 1) - 1.0)
    return (content - mean) * gain + mean + offset, alpha
