"""kornia adapter: :class:`DefectInjectK`, a kornia augmentation that injects defects.

::

    import kornia.augmentation as K
    from defectaug.integrations.kornia import DefectInjectK

    augment = K.AugmentationSequential(
        K.RandomHorizontalFlip(),
        DefectInjectK(["scratch", "spot"], p=0.5),
        K.RandomAffine(degrees=10),
        data_keys=["input", "mask"],
    )
    images, masks = augment(images, masks)  # masks: [B, 1, H, W], defect pixels set to mask_value

kornia treats masks as geometric-only: an intensity augmentation leaves them untouched. This class
is an intensity augmentation that also writes its defects into the mask: the image pass draws
the defects and keeps their masks under the draw's seed (one of its parameters), and the mask
pass, which kornia hands the same parameters, writes those pixels. Geometric augmentations after
it move image and mask together, as for any kornia pipeline. Call it on the image before the
mask (AugmentationSequential does, in ``data_keys`` order with "input" first).

Used alone, ``DefectInjectK(...)(images)`` returns the images; ``last_mask`` holds the defect mask
``[B, 1, H, W]`` bool of that call. Images are float ``[B, C, H, W]`` in [0, 1] on any device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from defectaug.batch import DEFAULT_ASPECT, DEFAULT_ROTATION, DEFAULT_SCALE
from defectaug.generators.base import DefectGenerator
from defectaug.integrations._common import Injection, missing_extra
from defectaug.placement import CountArg, RangeArg, RoiArg

try:
    from kornia.augmentation import IntensityAugmentationBase2D
except ImportError as error:  # pragma: no cover - kornia is a core dependency today
    raise missing_extra("kornia", "kornia", error) from None

__all__ = ["DefectInjectK"]


class DefectInjectK(IntensityAugmentationBase2D):
    """Inject synthetic defects into ``input``; write them into ``mask`` (value ``mask_value``).

    Args:
        defect_types, generator, blend, count, scale, rotation, aspect, min_size, roi, confine:
            as for :func:`defectaug.inject_defects`.
        mask_value: value written into the mask where a defect shows.
        p, p_batch, same_on_batch, keepdim: kornia's augmentation arguments.
    """

    def __init__(
        self,
        defect_types: str | Sequence[str] | None = None,
        generator: str | DefectGenerator = "procedural",
        *,
        blend: str = "alpha",
        count: CountArg = (1, 1),
        scale: RangeArg = DEFAULT_SCALE,
        rotation: RangeArg = DEFAULT_ROTATION,
        aspect: RangeArg = DEFAULT_ASPECT,
        min_size: int = 8,
        roi: RoiArg = None,
        confine: bool = True,
        mask_value: float = 1.0,
        p: float = 0.5,
        p_batch: float = 1.0,
        same_on_batch: bool = False,
        keepdim: bool = False,
    ) -> None:
        super().__init__(p=p, p_batch=p_batch, same_on_batch=same_on_batch, keepdim=keepdim)
        self.injection = Injection.from_arguments(locals())
        self.mask_value = float(mask_value)
        # The generator is a submodule, so .to(device) moves a learned generator's weights too.
        self.generator = self.injection.generator
        self.last_mask: torch.Tensor | None = None
        self._drawn: tuple[int, torch.Tensor] | None = None

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        # One seed per call (from torch's generator, as kornia's own parameters are), repeated
        # per sample so kornia can index parameters by sample.
        seed = int(torch.randint(0, 2**62, (1,)))
        return {"defect_seed": torch.full((batch_shape[0],), seed, dtype=torch.int64)}

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        seed = int(params["defect_seed"][0])
        applied = torch.atleast_1d(params["batch_prob"] > 0.5).to(input.device)
        out = input.clone()
        masks = torch.zeros_like(input[:, :1], dtype=torch.bool)
        if bool(applied.any()):
            # Only the samples kornia keeps are drawn on (the others come back from
            # apply_non_transform); skipped ones may have been replaced by a 0.5 placeholder.
            chosen = applied.nonzero()[:, 0]
            drawn = self.injection.draw(input[chosen].clamp(0, 1), seed)
            out[chosen] = drawn.images.to(input.dtype)
            masks[chosen] = drawn.masks
        self._drawn = (seed, masks)
        self.last_mask = masks
        return out

    def apply_transform_mask(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        seed = int(params["defect_seed"][0])
        if self._drawn is None or self._drawn[0] != seed:
            raise RuntimeError(
                "DefectInjectK: the mask was transformed before its image; pass the image first "
                '(data_keys=["input", "mask"]) so the mask gets the defects drawn on it'
            )
        masks = self._drawn[1].to(input.device)
        if masks.shape[-2:] != input.shape[-2:]:
            raise ValueError(
                f"mask: expected the image's size {tuple(masks.shape[-2:])}, got "
                f"{tuple(input.shape)}"
            )
        value = torch.tensor(self.mask_value, dtype=input.dtype, device=input.device)
        return torch.where(masks, value, input)
