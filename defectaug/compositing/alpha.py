"""Alpha compositing of a defect layer over a background (Defect-GAN / DFMGAN layer model)."""

from __future__ import annotations

from typing import Any

import torch

from defectaug._io import check_finite
from defectaug.compositing._inputs import OffsetArg, prepare
from defectaug.compositing._regions import read_pixels, storable


def alpha_composite(background: Any, foreground: Any, alpha: Any, offset: OffsetArg = None) -> Any:
    """Composite ``foreground`` over ``background`` with ``alpha``: ``bg * (1 - a) + fg * a``.

    Args:
        background: ``[B, C, H, W]`` float in [0, 1] (C = 1 or 3); a uint8 / numpy / PIL image or an
            unbatched tensor is accepted, and the result comes back in the same form (uint8 is
            converted only under the layer, and rounded back).
        foreground: ``[B, C, h, w]``, the layer's content, same channel count as ``background``.
        alpha: ``[B, 1, h, w]`` float in [0, 1], bool, or uint8 levels scaled by 1/255 (a uint8
            alpha holding only 0 and 1 is a binary mask's format and is refused: pass it as
            bool), broadcast over channels.
        offset: per-item ``(top, left)`` of the layer in the background: an integer tensor
            ``[B, 2]``, one ``(top, left)`` pair for all items, or ``None`` when the layer has the
            background's size. Parts of the layer outside the background are clipped.

    Returns:
        A new image; ``background`` is never modified. Differentiable with respect to
        ``background``, ``foreground`` and ``alpha``. Values stay in [0, 1] when the inputs do.
        Background pixels under the layer must be finite; the others are copied as they are.
    """
    problem = prepare(
        background,
        foreground,
        alpha,
        offset,
        layer_name="foreground",
        matte_name="alpha",
        matte_is_mask=False,
    )
    bg, fg, weight = problem.background, problem.layer, problem.matte
    height, width = bg.shape[-2:]
    layer_h, layer_w = fg.shape[-2:]
    out = bg.clone()
    for item, (top, left) in enumerate(problem.offsets):
        y0, y1 = max(top, 0), min(top + layer_h, height)
        x0, x1 = max(left, 0), min(left + layer_w, width)
        if y0 >= y1 or x0 >= x1:
            continue
        under = read_pixels(bg[item, :, y0:y1, x0:x1], fg.dtype)
        check_finite(under, "background (under the layer)")
        layer_rows = slice(y0 - top, y1 - top)
        layer_cols = slice(x0 - left, x1 - left)
        # lerp stays within [min(bg, fg), max(bg, fg)] at the ends, so [0, 1] in gives [0, 1] out.
        blended = torch.lerp(
            under, fg[item, :, layer_rows, layer_cols], weight[item, :, layer_rows, layer_cols]
        )
        out[item, :, y0:y1, x0:x1] = storable(blended, out)
    return problem.restore(out)
