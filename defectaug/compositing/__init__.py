"""Compositing engine: put a defect layer onto real backgrounds, exactly and in batch.

* :func:`alpha_composite` — ``bg * (1 - a) + fg * a`` (layer model of Defect-GAN / DFMGAN).
* :func:`poisson_blend` — seamless cloning, an exact batched DST solve, no mask erosion.
* :func:`improved_poisson_blend` — DCDGANc's variant: defect kept exactly, seamless band around it.

All take ``[B, C, H, W]`` float tensors in [0, 1] (or uint8 / numpy / PIL at the edge), per-item
offsets, never modify their inputs and are differentiable with respect to the layer. A uint8
batch stays uint8: only the pixels a blend reads are converted, and the result is the float
result rounded back, bit for bit.
"""

from defectaug.compositing.alpha import alpha_composite
from defectaug.compositing.improved import improved_poisson_blend
from defectaug.compositing.modules import AlphaComposite, ImprovedPoissonBlend, PoissonBlend
from defectaug.compositing.poisson import poisson_blend

__all__ = [
    "AlphaComposite",
    "ImprovedPoissonBlend",
    "PoissonBlend",
    "alpha_composite",
    "improved_poisson_blend",
    "poisson_blend",
]
