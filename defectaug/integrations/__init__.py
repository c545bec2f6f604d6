"""Adapters for other augmentation libraries; each library is optional.

- :class:`~defectaug.integrations.albumentations.DefectInjectA`: an albumentations 2.x
  ``DualTransform`` (image, mask, bboxes + label fields); ``pip install defectaug[albumentations]``.
- :class:`~defectaug.integrations.kornia.DefectInjectK`: a kornia augmentation that also writes
  the defects into masks inside ``AugmentationSequential(..., data_keys=["input", "mask"])``.
- :class:`~defectaug.integrations.anomalib.DefectAnomalyGenerator`: a drop-in for anomalib's
  ``PerlinAnomalyGenerator`` (DRAEM and friends) with any defectaug generator;
  ``pip install defectaug[anomalib]`` for anomalib itself (the adapter needs only torch).

Importing this package imports none of the libraries: each name loads its module on first use,
and a missing library raises an ``ImportError`` naming the extra to install.
"""

from __future__ import annotations

from defectaug._lazy import lazy_exports

_LAZY = {
    "DefectInjectA": "defectaug.integrations.albumentations",
    "DefectInjectK": "defectaug.integrations.kornia",
    "DefectAnomalyGenerator": "defectaug.integrations.anomalib",
}

__all__ = ["DefectAnomalyGenerator", "DefectInjectA", "DefectInjectK"]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
