"""Tiny defect generators for tests: layers simple enough to predict pixel by pixel."""

from __future__ import annotations

import torch

from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer
from defectaug.training.data import SceneCropSet


class SquareLayers(DefectGenerator):
    """16 x 16 layers holding an opaque square ``inset`` px in from each side, filled with one
    grey per type (``tones``, in ``defect_types`` order)."""

    channels = "any"
    layer_size = (16, 16)
    inset: int
    tones: tuple[float, ...]

    def _generate(self, labels, *, generator, device, dtype, channels, **_):
        n = len(labels)
        inner = slice(self.inset, 16 - self.inset)
        alpha = torch.zeros(n, 1, 16, 16, device=device, dtype=dtype)
        alpha[..., inner, inner] = 1.0
        tone = torch.tensor(self.tones, device=device, dtype=dtype)[labels.to(device)]
        content = tone.view(n, 1, 1, 1).expand(n, channels, 16, 16).clone()
        return DefectLayer(content, alpha, labels, self.defect_types)


SCENE_TYPES = ("dark", "bright")


def scene_set(size: int = 16, count: int = 4, normals: int = 8, ramp: bool = False) -> SceneCropSet:
    """Defect windows on grey surfaces: a "dark" defect is a dark square, a "bright" one a bright
    square; normal crops flat grey, or horizontal ramps (``ramp``) for a generator that must
    learn a layout."""
    rng = torch.Generator().manual_seed(0)
    surfaces = 0.5 + 0.05 * torch.rand(count, 1, size, size, generator=rng)
    masks = torch.zeros(count, 1, size, size)
    labels = torch.arange(count) % 2
    for index in range(count):
        top, left = (int(v) for v in torch.randint(2, 8, (2,), generator=rng))
        masks[index, :, top : top + 6, left : left + 6] = 1.0
    value = torch.where(labels == 0, 0.1, 0.9).view(-1, 1, 1, 1)
    content = surfaces * (1 - masks) + value * masks
    if ramp:
        slope = torch.linspace(0.3, 0.7, size).view(1, 1, 1, size)
        backgrounds = slope + 0.02 * torch.rand(normals, 1, size, size, generator=rng)
    else:
        backgrounds = 0.5 + 0.05 * torch.rand(normals, 1, size, size, generator=rng)
    sizes = {"dark": [24, 30], "bright": [20, 28]}
    return SceneCropSet(content, masks, labels, SCENE_TYPES, sizes, backgrounds)
