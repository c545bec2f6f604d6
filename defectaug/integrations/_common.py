"""What the adapters share: one checked set of injection options and a draw that retries until
the defect shows (as :class:`~defectaug.DefectInject` does)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from defectaug._seeding import mix_seed
from defectaug.batch import (
    DEFAULT_ASPECT,
    DEFAULT_ROTATION,
    DEFAULT_SCALE,
    NO_DEFECT,
    DefectInjector,
    composite_visible,
    plan_defects,
)
from defectaug.generators.base import DefectGenerator
from defectaug.placement import CountArg, RangeArg, RoiArg

#: Draws tried per call until a defect shows; after that the input is returned unchanged.
DRAW_ATTEMPTS = 8


def missing_extra(library: str, extra: str, error: ImportError) -> ImportError:
    """The ImportError an adapter raises when its optional library is not installed."""
    return ImportError(
        f"defectaug.integrations.{extra} needs {library}, which is not installed "
        f"({error}); install it with: pip install defectaug[{extra}]"
    )


@dataclass(frozen=True)
class Drawn:
    """One visible draw on a batch: the composited images, masks and per-defect boxes."""

    images: torch.Tensor  # [B, C, H, W] float
    masks: torch.Tensor  # [B, 1, H, W] bool
    labels: torch.Tensor  # [B] int64 index in defect_types, NO_DEFECT where nothing shows
    boxes: torch.Tensor  # [K, 4] int64 XYXY (exclusive ends) of the defects that show
    box_image: torch.Tensor  # [K] int64 image of each box
    box_labels: torch.Tensor  # [K] int64 type index of each box


class Injection:
    """Checked injection options (those of :func:`defectaug.inject_defects`) and the draw."""

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
    ) -> None:
        # DefectInjector validates exactly these options; the adapters share its checks.
        checked = DefectInjector(
            defect_types,
            generator,
            blend=blend,
            count=count,
            scale=scale,
            rotation=rotation,
            aspect=aspect,
            min_size=min_size,
            roi=roi,
            confine=confine,
        )
        self.generator = checked.generator
        self.defect_types = checked.defect_types
        self.blend = checked.blend
        self.placement = checked.placement

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> Injection:
        """The injection built from an adapter's own arguments (its ``locals()``).

        Each adapter spells these options out in its signature, so IDEs and ``help()`` show
        them; this takes them from there by name, so no adapter repeats the forwarding list and
        an option added here reaches every adapter that declares it.
        """
        names = list(inspect.signature(cls).parameters)
        return cls(**{name: arguments[name] for name in names})

    def draw(
        self,
        images: torch.Tensor,
        seed: int,
        *,
        p: float = 1.0,
        levels: int | None = None,
    ) -> Drawn:
        """Defects on ``images [B, C, H, W]`` (float, [0, 1]) from ``seed``; each image gets one
        with probability ``p``. A draw where nothing shows is redrawn from the next sub-seed
        (up to ``DRAW_ATTEMPTS``); images whose defects never show come back unchanged."""
        images = images.float()
        out, masks = images.clone(), torch.zeros_like(images[:, :1], dtype=torch.bool)
        labels = torch.full((len(images),), NO_DEFECT, dtype=torch.int64, device=images.device)
        boxes, box_image, box_labels = [], [], []
        active = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < p
        pending = active.nonzero()[:, 0].tolist()
        for attempt in range(DRAW_ATTEMPTS):
            if not pending:
                break
            batch = images[pending]
            plan = plan_defects(
                batch,
                self.defect_types,
                self.generator,
                p=1.0,
                seed=mix_seed(seed, attempt, 1),
                **self.placement.keywords(),
            )
            result = composite_visible(batch, plan, self.blend, levels=levels)
            shown = (result.labels != NO_DEFECT).tolist()
            owner = plan.placements.image_index.to(result.boxes.device)
            for row, image_index in enumerate(pending):
                if not shown[row]:
                    continue
                out[image_index] = result.images[row]
                masks[image_index] = result.masks[row]
                labels[image_index] = result.labels[row]
                mine = (owner == row) & (result.boxes[:, 2] > result.boxes[:, 0])
                boxes.append(result.boxes[mine].cpu())
                box_image += [image_index] * int(mine.sum())
                box_labels += [int(result.labels[row])] * int(mine.sum())
            pending = [index for row, index in enumerate(pending) if not shown[row]]
        return Drawn(
            out,
            masks,
            labels,
            torch.cat(boxes) if boxes else torch.zeros(0, 4, dtype=torch.int64),
            torch.tensor(box_image, dtype=torch.int64),
            torch.tensor(box_labels, dtype=torch.int64),
        )
