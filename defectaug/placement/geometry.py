"""Where each layer lands: its affine map into the image, its box and the canvas it is warped into.

:func:`layer_geometry` places each layer with :func:`~defectaug.plan.layer_box` (the one geometry of
every renderer) on a tight canvas shared by a group of layers. It needs only the layer size, so it
runs before the layers are generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from defectaug.plan import Placements, PlannedDefect, layer_box


@dataclass(frozen=True)
class LayerGeometry:
    """How each placed layer maps into the image; computed before the layers are generated.

    Attributes:
        to_image: ``[N, 2, 3]`` float64 affine maps from layer pixel ``(x, y)`` to image pixels.
        canvas_size: ``(Hc, Wc)`` of the shared canvas every layer is warped into.
        offsets: ``[N, 2]`` int64 ``(top, left)`` of each canvas in the image (may be negative:
            only the empty margin around a smaller layer hangs over the border).
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` (exclusive ends) of each layer's own
            rotated box in the image; always inside the image.
        zoom: ``[N]`` float64, the smaller of each layer's x / y scale factors.
        layer_size: ``(h, w)`` of the layers it was computed for.
    """

    to_image: torch.Tensor
    canvas_size: tuple[int, int]
    offsets: torch.Tensor
    boxes: torch.Tensor
    zoom: torch.Tensor
    layer_size: tuple[int, int]

    def to_canvas(self) -> torch.Tensor:
        """``[N, 2, 3]`` maps from layer pixels to each layer's canvas pixels."""
        matrix = self.to_image.clone()
        matrix[:, 0, 2] -= self.offsets[:, 1].to(matrix)
        matrix[:, 1, 2] -= self.offsets[:, 0].to(matrix)
        return matrix


def layer_geometry(placements: Placements, layer_size: tuple[int, int]) -> LayerGeometry:
    """Where layers of ``layer_size`` go for ``placements``: :func:`~defectaug.plan.layer_box`
    of each, on one canvas that holds the largest box."""
    n = len(placements)
    mirror = placements.mirror.tolist() if placements.mirror is not None else [False] * n
    boxes = [
        layer_box(
            PlannedDefect(0, 0, size, angle, aspect, (centre_y, centre_x), flip, 0),
            layer_size,
            placements.image_size,
        )
        for size, angle, aspect, (centre_y, centre_x), flip in zip(
            placements.size.tolist(),
            placements.angle.tolist(),
            placements.aspect.tolist(),
            placements.center.tolist(),
            mirror,
            strict=True,
        )
    ]
    top = torch.tensor([box.top for box in boxes], dtype=torch.int64)
    left = torch.tensor([box.left for box in boxes], dtype=torch.int64)
    own_h = torch.tensor([box.height for box in boxes], dtype=torch.int64)
    own_w = torch.tensor([box.width for box in boxes], dtype=torch.int64)
    canvas_h = int(own_h.max()) if n else 1
    canvas_w = int(own_w.max()) if n else 1
    pad_top, pad_left = (canvas_h - own_h) // 2, (canvas_w - own_w) // 2
    return LayerGeometry(
        to_image=torch.tensor([box.to_image for box in boxes], dtype=torch.float64).view(n, 2, 3),
        canvas_size=(canvas_h, canvas_w),
        offsets=torch.stack([top - pad_top, left - pad_left], 1),
        boxes=torch.stack([left, top, left + own_w, top + own_h], 1),
        zoom=torch.tensor([box.zoom for box in boxes], dtype=torch.float64),
        layer_size=tuple(layer_size),
    )
