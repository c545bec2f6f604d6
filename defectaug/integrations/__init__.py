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

import importlib
from typing import Any

_LAZY = {
    "DefectInjectA": "defectaug.integrations.albumentations",
    "DefectInjectK": "defectaug.integrations.kornia",
    "DefectAnomalyGenerator": "defectaug.integrations.anomalib",
}

__all__ = ["DefectAnomalyGenerator", "DefectInjectA", "DefectInjectK"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'defectaug.integrations' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
