"""The label space shared by ``DefectInject``, ``inject_defects`` / ``DefectInjector`` and
``SyntheticDefectDataset``; stated here once, and the three entry points follow it.

- **A defect's type label is its index into the requested** ``defect_types``, in the order given
  (``["spot", "scratch"]``: spot is 0, scratch 1; ``["scratch", "spot"]``: scratch is 0). When
  ``defect_types`` is ``None`` the order is the generator's (``generator.defect_types``).
- **No defect** is :data:`NO_DEFECT` (-1) in the image-level labels of ``inject_defects`` /
  ``DefectInjector``. (``SyntheticDefectDataset`` items always carry a defect; ``DefectInject``
  leaves the label of a sample without a defect as it was.)
- **Class masks** (``mask_mode="class"``) and the class of a detection box hold the index
  **+ 1**, with **0 the background** (as torchvision's detection models expect).
- ``label_map={type: class}`` remaps, on all three entry points: a defect of ``type`` then gets
  the label ``class`` in image-level labels, class masks and boxes alike. It must give a class to
  every requested type; in class masks and boxes 0 stays the background, and in
  ``inject_defects``' labels -1 stays "no defect", so those values are refused there.
  ``DefectInject`` also sets image-level labels only when ``label_map`` (or its older name
  ``label``) is given; without it the sample's own label is left alone.

Mask dtypes follow one rule too: a binary mask is ``torch.bool`` and a class mask ``torch.int64``,
``[B, 1, H, W]`` for a batch and ``[1, H, W]`` per sample. ``DefectInject`` writes into a sample's
existing ``tv_tensors.Mask`` in that mask's own dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from defectaug._checks import _got, check_choice, is_int
from defectaug.plan import NO_DEFECT

__all__ = [
    "BACKGROUND",
    "MASK_MODES",
    "NO_DEFECT",
    "LabelMap",
    "check_label_map",
    "check_mask_mode",
    "class_id",
    "class_masks",
    "remap_labels",
    "type_label",
]

LabelMap = Mapping[str, int]
#: What a mask holds: ``"binary"`` (``torch.bool``, True on a defect) or ``"class"``
#: (``torch.int64``, the defect's class id, 0 = background).
MASK_MODES: tuple[str, ...] = ("binary", "class")
#: Class id of the background in class masks.
BACKGROUND = 0


def check_label_map(
    label_map: Any,
    defect_types: Sequence[str],
    name: str = "label_map",
    *,
    reserved: Mapping[int, str] | None = None,
) -> dict[str, int] | None:
    """``label_map`` as ``{type: int}`` over ``defect_types`` (``None`` passes through).

    Raises ``TypeError`` for a non-mapping or a non-int class, ``ValueError`` for a requested
    type without a class or a class in ``reserved`` (``{value: what it means}``), naming ``name``.
    Keys beyond ``defect_types`` are ignored (one map can serve several type lists).
    """
    if label_map is None:
        return None
    if not isinstance(label_map, Mapping):
        raise TypeError(f"{name}: expected None or a dict type -> int, got {_got(label_map)}")
    missing = [type_name for type_name in defect_types if type_name not in label_map]
    if missing:
        raise ValueError(
            f"{name}: no class for defect type(s) {missing}; it needs one for each of "
            f"{list(defect_types)}"
        )
    classes = {type_name: label_map[type_name] for type_name in defect_types}
    wrong = {type_name: value for type_name, value in classes.items() if not is_int(value)}
    if wrong:
        raise TypeError(f"{name}: expected int classes, got {wrong}")
    checked = {type_name: int(value) for type_name, value in classes.items()}
    for value, meaning in (reserved or {}).items():
        clashing = [type_name for type_name, got in checked.items() if got == value]
        if clashing:
            raise ValueError(
                f"{name}: class id {value} is {meaning}, so no defect type may map to it; got "
                f"{ {type_name: value for type_name in clashing} }"
            )
    return checked


def check_mask_mode(value: Any, name: str = "mask_mode") -> str:
    """``value`` if it is one of :data:`MASK_MODES`."""
    return check_choice(value, MASK_MODES, name)


def type_label(index: int, defect_types: Sequence[str], label_map: LabelMap | None) -> int:
    """Image-level label of a ``defect_types[index]`` defect: ``index``, or its ``label_map``
    class."""
    return index if label_map is None else int(label_map[defect_types[index]])


def class_id(index: int, defect_types: Sequence[str], label_map: LabelMap | None) -> int:
    """Class-mask / box class of a ``defect_types[index]`` defect: ``index + 1`` (0 is the
    background), or its ``label_map`` class."""
    return index + 1 if label_map is None else int(label_map[defect_types[index]])


def _lookup(
    labels: torch.Tensor, defect_types: Sequence[str], label_map: LabelMap | None, offset: int
) -> torch.Tensor:
    """``labels`` (type indices, ``NO_DEFECT`` where none) through the label space."""
    if label_map is None:
        table = [index + offset for index in range(len(defect_types))]
    else:
        table = [int(label_map[type_name]) for type_name in defect_types]
    lookup = torch.tensor(table, dtype=torch.int64, device=labels.device)
    none = labels == NO_DEFECT
    return torch.where(none, NO_DEFECT, lookup[labels.clamp_min(0)])


def remap_labels(
    labels: torch.Tensor, defect_types: Sequence[str], label_map: LabelMap | None
) -> torch.Tensor:
    """Image-level labels from type indices: :func:`type_label` each, ``NO_DEFECT`` kept."""
    if label_map is None:
        return labels
    return _lookup(labels, defect_types, label_map, 0)


def class_masks(
    masks: torch.Tensor,
    labels: torch.Tensor,
    defect_types: Sequence[str],
    label_map: LabelMap | None,
) -> torch.Tensor:
    """``int64`` class masks from binary ``masks [B, 1, H, W]`` and type indices ``labels [B]``:
    each image's defect pixels hold :func:`class_id` of its type, the rest ``BACKGROUND``."""
    ids = _lookup(labels, defect_types, label_map, 1).clamp_min(BACKGROUND)
    return torch.where(masks, ids.view(-1, *([1] * (masks.ndim - 1))), BACKGROUND)
