"""albumentations 2.x adapter: :class:`DefectInjectA`, a ``DualTransform`` that injects defects.

::

    import albumentations as A
    from defectaug.integrations.albumentations import DefectInjectA

    pipeline = A.Compose(
        [A.HorizontalFlip(), DefectInjectA(["scratch", "spot"], p=0.5)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
    )
    out = pipeline(image=image, mask=mask, bboxes=boxes, labels=labels)

One draw per call is shared by every target: the image gets the defects, the mask gets
``mask_value`` where they visibly changed the image, and one box per placed defect is appended to
the bounding boxes, with a label in every label field (``box_labels``; the type name by default).
Images are HWC (or HW) numpy arrays, uint8 or float in [0, 1]; uint8 images are measured as the
8-bit images they come back as, so the mask is exactly what changed in the returned pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

from defectaug._io import to_float_image
from defectaug.batch import DEFAULT_ASPECT, DEFAULT_ROTATION, DEFAULT_SCALE
from defectaug.generators.base import DefectGenerator
from defectaug.integrations._common import Injection, missing_extra
from defectaug.placement import CountArg, RangeArg, RoiArg

try:
    import albumentations as A
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise missing_extra("albumentations (>= 2.0)", "albumentations", error) from None

__all__ = ["DefectInjectA"]


class DefectInjectA(A.DualTransform):
    """Inject synthetic defects; updates ``image``, ``mask`` and ``bboxes`` (+ label fields).

    Args:
        defect_types, generator, blend, count, scale, rotation, aspect, min_size, roi, confine:
            as for :func:`defectaug.inject_defects`.
        mask_value: written into the mask where a defect shows: an int, or ``"class"`` for the
            defect's ``box_labels`` value (which must then be a number).
        box_labels: ``{type name: label}`` for the appended boxes' label fields (default: the type
            name). A label field that holds numbers needs numeric labels here.
        p: probability of applying the transform.
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
        mask_value: int | str = 1,
        box_labels: Mapping[str, Any] | None = None,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.injection = Injection.from_arguments(locals())
        types = self.injection.defect_types
        self.box_labels = {name: name for name in types} if box_labels is None else box_labels
        missing = [name for name in types if name not in self.box_labels]
        if missing:
            raise ValueError(f"box_labels: no label for defect type(s) {missing}")
        if mask_value == "class":
            if not all(isinstance(self.box_labels[name], Real) for name in types):
                raise ValueError(
                    "mask_value: 'class' writes the box label into the mask, so box_labels must "
                    f"map every type to a number, got {dict(self.box_labels)}"
                )
        elif not isinstance(mask_value, int) or isinstance(mask_value, bool):
            raise TypeError(f"mask_value: expected an int or 'class', got {mask_value!r}")
        self.mask_value = mask_value

    @property
    def targets_as_params(self) -> list[str]:
        return ["image"]

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        image = data["image"]
        tensor, restore = to_float_image(image, "image")
        levels = 255 if image.dtype == np.uint8 else None
        # Seeded from albumentations' own generator: A.Compose(seed=...) makes the draw repeat.
        seed = int(self.random_generator.integers(2**62))
        drawn = self.injection.draw(tensor, seed, levels=levels)
        if int(drawn.labels[0]) < 0:
            return {"defect": None}
        type_name = self.injection.defect_types[int(drawn.labels[0])]
        return {
            "defect": {
                "image": restore(drawn.images),
                "mask": drawn.masks[0, 0].numpy(),
                "boxes": drawn.boxes.numpy().astype(np.float64),
                "type_name": type_name,
            }
        }

    # ------------------------------------------------------------------ targets
    def apply(self, img: np.ndarray, defect: dict[str, Any] | None = None, **params: Any):
        return img if defect is None else defect["image"]

    def apply_to_mask(self, mask: np.ndarray, defect: dict[str, Any] | None = None, **params: Any):
        if defect is None:
            return mask
        value = (
            self.box_labels[defect["type_name"]] if self.mask_value == "class" else self.mask_value
        )
        where = defect["mask"]
        if where.shape != mask.shape[:2]:
            raise ValueError(
                f"mask: expected the image's size {where.shape}, got shape {mask.shape}"
            )
        out = mask.copy()
        out[where] = value
        return out

    def apply_to_bboxes(
        self, bboxes: np.ndarray, defect: dict[str, Any] | None = None, **params: Any
    ) -> np.ndarray:
        if defect is None or not len(defect["boxes"]):
            return bboxes
        height, width = defect["mask"].shape
        # albumentations hands boxes over normalised (x_min, y_min, x_max, y_max), followed by
        # any extra columns and then one encoded column per label field.
        coords = defect["boxes"] / np.array([width, height, width, height], dtype=np.float64)
        processor = self.get_processor("bboxes")
        fields = list(processor.params.label_fields or []) if processor is not None else []
        label_columns = [
            self._encode_labels(
                processor, field, defect["type_name"], len(coords), empty=not bboxes.size
            )
            for field in fields
        ]
        extra = (bboxes.shape[1] - 4 - len(fields)) if bboxes.size else 0
        rows = np.hstack([coords, np.zeros((len(coords), max(extra, 0))), *label_columns]).astype(
            bboxes.dtype if bboxes.size else np.float32
        )
        return np.vstack([bboxes.reshape(-1, rows.shape[1]), rows]) if bboxes.size else rows

    def _encode_labels(
        self, processor: Any, field: str, type_name: str, count: int, *, empty: bool
    ) -> np.ndarray:
        """The encoded label column of ``count`` new boxes in label field ``field``."""
        label = self.box_labels[type_name]
        manager = processor.label_manager
        if empty:
            # albumentations records a field's kind when it first sees values; with no input
            # boxes it has seen none, so the new labels define it.
            return manager.process_field("bboxes", field, [label] * count).reshape(-1, 1)
        metadata = manager.metadata["bboxes"][field]
        if metadata.is_numerical:
            if not isinstance(label, Real):
                raise ValueError(
                    f"box_labels: label field {field!r} holds numbers, so the new boxes need "
                    f"numeric labels; got {label!r} for {type_name!r} (pass box_labels=...)"
                )
            return np.full((count, 1), float(label), dtype=np.float32)
        metadata.encoder.update([label])
        return np.asarray(metadata.encoder.transform([label] * count)).reshape(-1, 1)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mask_value", "box_labels")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(defect_types={list(self.injection.defect_types)}, "
            f"blend={self.injection.blend!r}, p={self.p})"
        )
