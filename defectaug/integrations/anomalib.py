"""anomalib adapter: :class:`DefectAnomalyGenerator`, a drop-in for ``PerlinAnomalyGenerator``.

anomalib's self-supervised models (DRAEM, GLASS, ...) corrupt normal training images with
Perlin-noise anomalies. This class has the same call, ``generator(image) -> (augmented, mask)``
for ``[C, H, W]`` or ``[B, C, H, W]`` float images in [0, 1], with a ``probability`` per image,
and makes the anomalies with any defectaug generator instead (``"procedural"`` by default; every
name :func:`defectaug.load_generator` knows, e.g. ``"cutpaste"``, ``"nsa"``, ``"texture"``, a
real-defect folder or a Hub card)::

    from anomalib.models import Draem
    from defectaug.integrations.anomalib import DefectAnomalyGenerator

    model = Draem()
    model.augmenter = DefectAnomalyGenerator("procedural", probability=0.5)

The mask is float ``[1, H, W]`` (or ``[B, 1, H, W]``) in {0, 1}, exactly the pixels the defects
visibly changed; images left alone get an empty mask, as with Perlin.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectaug._checks import check_probability
from defectaug._seeding import mix_seed, stream_identity
from defectaug.batch import DEFAULT_ASPECT, DEFAULT_ROTATION
from defectaug.generators.base import DefectGenerator
from defectaug.integrations._common import Injection
from defectaug.placement import CountArg, RangeArg, RoiArg

__all__ = ["DefectAnomalyGenerator"]


class DefectAnomalyGenerator(nn.Module):
    """``(augmented, mask)`` from normal images, like anomalib's ``PerlinAnomalyGenerator``.

    Args:
        generator: a ``DefectGenerator`` or a name / folder / Hub id for ``load_generator``.
        probability: probability that an image gets anomalies (anomalib's default, 0.5).
        defect_types: types to draw from (default: all of the generator's).
        blend, count, scale, rotation, aspect, min_size, roi, confine: as for
            :func:`defectaug.inject_defects`; ``scale`` defaults larger than there (0.2-0.5 of
            the shorter side), closer to the size of Perlin anomalies.
        seed: ``None`` draws from torch's global generator (seeded per DataLoader worker);
            an int makes call ``k`` reproducible (per worker and rank, see ``CallSeeds``).
    """

    def __init__(
        self,
        generator: str | DefectGenerator = "procedural",
        probability: float = 0.5,
        *,
        defect_types: str | Sequence[str] | None = None,
        blend: str = "alpha",
        count: CountArg = (1, 2),
        scale: RangeArg = (0.2, 0.5),
        rotation: RangeArg = DEFAULT_ROTATION,
        aspect: RangeArg = DEFAULT_ASPECT,
        min_size: int = 8,
        roi: RoiArg = None,
        confine: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.probability = check_probability(probability, "probability")
        self.injection = Injection.from_arguments(locals())
        self.generator = self.injection.generator  # a submodule: .to(device) moves it
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"seed: expected an int or None, got {seed!r}")
        self.seed, self.calls = seed, 0

    def _next_seed(self) -> int:
        if self.seed is None:
            return int(torch.randint(0, 2**62, (1,)))
        self.calls += 1
        return mix_seed(self.seed, self.calls - 1, *stream_identity())

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(img, torch.Tensor) or img.ndim not in (3, 4):
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"img: expected a tensor [C, H, W] or [B, C, H, W], got {shape}")
        batched = img.ndim == 4
        images = img if batched else img[None]
        if images.shape[1] not in (1, 3):
            raise ValueError(f"img: expected 1 or 3 channels, got shape {tuple(img.shape)}")
        if not bool(((images >= 0) & (images <= 1)).all()):
            raise ValueError(
                "img: expected values in [0, 1] (anomalib's DRAEM pre-processing does not "
                "normalise); inject anomalies before any Normalize"
            )
        drawn = self.injection.draw(images, self._next_seed(), p=self.probability)
        augmented = drawn.images.to(img.dtype)
        mask = drawn.masks.to(img.dtype)
        return (augmented, mask) if batched else (augmented[0], mask[0])

    def extra_repr(self) -> str:
        return (
            f"generator={type(self.generator).__name__}, probability={self.probability}, "
            f"defect_types={list(self.injection.defect_types)}"
        )
