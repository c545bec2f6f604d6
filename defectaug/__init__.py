"""defectaug: synthesize realistic defects with exact pixel masks for training inspection models.

A defect is generated as a *layer* (content + alpha) by a :class:`DefectGenerator` (procedural, a
bank of real defects, or a learned generator in the Hub format) and composited onto real normal
images, by the :class:`DefectInject` transform, the batched :func:`inject_defects` path or the
:class:`SyntheticDefectDataset`. Domain-adaptation heads live in :mod:`defectaug.heads`.
"""

from defectaug.batch import DefectInjector, inject_defects
from defectaug.compositing import (
    AlphaComposite,
    ImprovedPoissonBlend,
    PoissonBlend,
    alpha_composite,
    improved_poisson_blend,
    poisson_blend,
)
from defectaug.dataset import SyntheticDefectDataset
from defectaug.generators import (
    DCDGAN,
    DCDGANConfig,
    DefectBank,
    DefectGenerator,
    PretrainedDefectGenerator,
    ProceduralGenerator,
    list_generators,
    load_generator,
    register_architecture,
    register_generator,
)
from defectaug.layer import MASK_THRESHOLD, DefectLayer
from defectaug.transforms import DefectInject

__version__ = "0.1.0"

__all__ = [
    "MASK_THRESHOLD",
    "DCDGAN",
    "AlphaComposite",
    "DCDGANConfig",
    "DefectBank",
    "DefectGenerator",
    "DefectInject",
    "DefectInjector",
    "DefectLayer",
    "ImprovedPoissonBlend",
    "PoissonBlend",
    "PretrainedDefectGenerator",
    "ProceduralGenerator",
    "SyntheticDefectDataset",
    "alpha_composite",
    "improved_poisson_blend",
    "inject_defects",
    "list_generators",
    "load_generator",
    "poisson_blend",
    "register_architecture",
    "register_generator",
]
