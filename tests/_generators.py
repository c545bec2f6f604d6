"""Tiny defect generators for tests: layers simple enough to predict pixel by pixel."""

from __future__ import annotations

import torch

from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer


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
