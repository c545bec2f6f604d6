"""``DefectLayer``: what every defect generator returns — content plus a soft alpha mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: ``DefectLayer.mask()`` calls a pixel defective where ``alpha`` is at least this value. (The
#: label mask of an *injected* defect is not this: it is what visibly changed, see ``VISIBILITY``.)
MASK_THRESHOLD = 0.5

#: A composited pixel is part of the defect's label mask when some channel of it changed by more
#: than this (in [0, 1] units, measured in the output's own dtype after rounding: 8 levels of a
#: uint8 image). The same rule decides the mask on every path (batched, per-sample, dataset).
VISIBILITY = 8.0 / 255.0

#: Pixels farther than this (chessboard distance) from the label mask are restored to the
#: background after compositing, so a defect leaves no faint trace (a "tell") outside its mask.
#: Within it, changes (all below ``VISIBILITY``) fade out: full at 1 px, halved at 2 px.
TELL_MARGIN = 2

#: An image whose defects visibly change fewer pixels than this is left as it was and gets no
#: defect label (its defects are invisible): the visibility floor.
MIN_VISIBLE_PIXELS = 4


@dataclass(frozen=True)
class DefectLayer:
    """A batch of defects as layers to composite: ``content`` shown where ``alpha`` is high.

    Attributes:
        content: ``[B, C, h, w]`` float in [0, 1], the defect's appearance.
        alpha: ``[B, 1, h, w]`` float in [0, 1], its soft mask (coverage).
        labels: ``[B]`` int64, index of each item's defect type in ``type_names``.
        type_names: the generator's defect types, so ``type_names[labels[i]]`` names item ``i``.
    """

    content: torch.Tensor
    alpha: torch.Tensor
    labels: torch.Tensor
    type_names: tuple[str, ...]

    def __post_init__(self) -> None:
        content, alpha, labels = self.content, self.alpha, self.labels
        if content.ndim != 4 or not content.is_floating_point():
            raise ValueError(
                f"content: expected a float tensor [B, C, h, w], got shape {tuple(content.shape)} "
                f"and dtype {content.dtype}"
            )
        if alpha.ndim != 4 or alpha.shape[1] != 1 or not alpha.is_floating_point():
            raise ValueError(
                f"alpha: expected a float tensor [B, 1, h, w], got shape {tuple(alpha.shape)} "
                f"and dtype {alpha.dtype}"
            )
        if alpha.shape[0] != content.shape[0] or alpha.shape[-2:] != content.shape[-2:]:
            raise ValueError(
                f"alpha: shape {tuple(alpha.shape)} does not match content {tuple(content.shape)} "
                "in batch size and spatial size"
            )
        if labels.shape != (content.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(
                f"labels: expected int64 of shape ({content.shape[0]},), got shape "
                f"{tuple(labels.shape)} and dtype {labels.dtype}"
            )
        if not self.type_names:
            raise ValueError("type_names: expected at least one defect type name")
        object.__setattr__(self, "type_names", tuple(self.type_names))

    def __len__(self) -> int:
        return self.content.shape[0]

    def __getitem__(self, index: int | slice | torch.Tensor | Sequence[int]) -> DefectLayer:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return DefectLayer(
            self.content[index], self.alpha[index], self.labels[index], self.type_names
        )

    @property
    def size(self) -> tuple[int, int]:
        """Spatial size ``(h, w)``."""
        return (self.content.shape[-2], self.content.shape[-1])

    @property
    def names(self) -> list[str]:
        """Defect type name of every item."""
        return [self.type_names[i] for i in self.labels.tolist()]

    def mask(self, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
        """Binary pixel mask ``[B, 1, h, w]`` (bool): ``alpha >= threshold``."""
        return self.alpha >= threshold

    def bounding_box(self, threshold: float = MASK_THRESHOLD) -> torch.Tensor:
        """Per-item tight box ``[B, 4]`` as ``(x0, y0, x1, y1)``, exclusive ends; zeros if empty."""
        mask = self.mask(threshold)[:, 0]
        occupied_rows, occupied_cols = mask.any(dim=2), mask.any(dim=1)
        h, w = self.size

        def extent(any_along: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.arange(length, device=any_along.device)
            first = torch.where(any_along, index, length).amin(dim=1)
            last = torch.where(any_along, index + 1, 0).amax(dim=1)
            empty = ~any_along.any(dim=1)
            return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

        x0, x1 = extent(occupied_cols, w)
        y0, y1 = extent(occupied_rows, h)
        return torch.stack([x0, y0, x1, y1], dim=1)

    def crop(self, threshold: float = MASK_THRESHOLD, margin: int = 0) -> DefectLayer:
        """Crop to the union of the items' tight boxes (plus ``margin`` px), so shapes stay batched.

        Crop items one at a time (``layer[i].crop()``) for each item's own tight box.
        """
        boxes = self.bounding_box(threshold)
        nonempty = boxes[:, 2] > boxes[:, 0]
        if not bool(nonempty.any()):
            raise ValueError(
                "DefectLayer.crop: every alpha is empty at this threshold; nothing to crop to"
            )
        boxes = boxes[nonempty]
        h, w = self.size
        x0 = max(int(boxes[:, 0].min()) - margin, 0)
        y0 = max(int(boxes[:, 1].min()) - margin, 0)
        x1 = min(int(boxes[:, 2].max()) + margin, w)
        y1 = min(int(boxes[:, 3].max()) + margin, h)
        return DefectLayer(
            self.content[..., y0:y1, x0:x1],
            self.alpha[..., y0:y1, x0:x1],
            self.labels,
            self.type_names,
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DefectLayer:
        """Move content and alpha to ``device`` / floating ``dtype`` (labels follow the device)."""
        return DefectLayer(
            self.content.to(device=device, dtype=dtype),
            self.alpha.to(device=device, dtype=dtype),
            self.labels.to(device=device),
            self.type_names,
        )

    @staticmethod
    def cat(layers: Sequence[DefectLayer]) -> DefectLayer:
        """Concatenate layers of equal size and type names along the batch."""
        if not layers:
            raise ValueError("layers: expected at least one DefectLayer")
        names = layers[0].type_names
        if any(layer.type_names != names for layer in layers):
            raise ValueError(
                "layers: every DefectLayer must share the same type_names to concatenate"
            )
        return DefectLayer(
            torch.cat([layer.content for layer in layers]),
            torch.cat([layer.alpha for layer in layers]),
            torch.cat([layer.labels for layer in layers]),
            names,
        )
