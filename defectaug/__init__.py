"""defectaug: synthesize realistic defects with exact pixel masks for training inspection models.

A defect is generated as a *layer* (content + alpha) by a :class:`DefectGenerator` (procedural, a
bank of real defects, or a learned generator in the Hub format) and composited onto real normal
images, by the :class:`DefectInject` transform, the batched :func:`inject_defects` path or the
:class:`SyntheticDefectDataset`. Domain-adaptation heads live in :mod:`defectaug.heads`; adapters
for albumentations, kornia and anomalib in :mod:`defectaug.integrations`.

``import defectaug`` is lazy (PEP 562): the public names below are imported from their modules on
first access, so the package import itself costs next to nothing on top of torch, and numba,
kornia, scipy, OpenCV and the training code load only when something that needs them is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from defectaug._lazy import lazy_exports

__version__ = "0.1.0"

#: Public name -> module defining it. Add new public names here (and to ``__all__`` below).
_LAZY: dict[str, str] = {
    "DefectInjector": "defectaug.batch",
    "inject_defects": "defectaug.batch",
    "AlphaComposite": "defectaug.compositing",
    "ImprovedPoissonBlend": "defectaug.compositing",
    "PoissonBlend": "defectaug.compositing",
    "alpha_composite": "defectaug.compositing",
    "improved_poisson_blend": "defectaug.compositing",
    "poisson_blend": "defectaug.compositing",
    "SyntheticDefectDataset": "defectaug.dataset",
    "FittedDefects": "defectaug.fitting",
    "FittedGenerator": "defectaug.fitting",
    "fit_defects": "defectaug.fitting",
    "DCDGAN": "defectaug.generators",
    "DCDGANConfig": "defectaug.generators",
    "DefectBank": "defectaug.generators",
    "DefectGenerator": "defectaug.generators",
    "PretrainedDefectGenerator": "defectaug.generators",
    "ProceduralGenerator": "defectaug.generators",
    "list_generators": "defectaug.generators",
    "load_generator": "defectaug.generators",
    "register_architecture": "defectaug.generators",
    "register_generator": "defectaug.generators",
    "MASK_THRESHOLD": "defectaug.layer",
    "DefectLayer": "defectaug.layer",
    "DefectInject": "defectaug.transforms",
}

# Spelled out (not sorted(_LAZY)) so linters and IDEs read it; a test checks the two agree.
__all__ = [
    "AlphaComposite",
    "DCDGAN",
    "DCDGANConfig",
    "DefectBank",
    "DefectGenerator",
    "DefectInject",
    "DefectInjector",
    "DefectLayer",
    "FittedDefects",
    "FittedGenerator",
    "ImprovedPoissonBlend",
    "MASK_THRESHOLD",
    "PoissonBlend",
    "PretrainedDefectGenerator",
    "ProceduralGenerator",
    "SyntheticDefectDataset",
    "alpha_composite",
    "fit_defects",
    "improved_poisson_blend",
    "inject_defects",
    "list_generators",
    "load_generator",
    "poisson_blend",
    "register_architecture",
    "register_generator",
]

if TYPE_CHECKING:  # static checkers and IDEs see the real names
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
    from defectaug.fitting import FittedDefects, FittedGenerator, fit_defects
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
