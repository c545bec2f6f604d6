"""Thin ``nn.Module`` wrappers around the compositing functions, in the kornia style."""

from __future__ import annotations

from typing import Any

from torch import nn

from defectaug.compositing._inputs import OffsetArg
from defectaug.compositing.alpha import alpha_composite
from defectaug.compositing.improved import improved_poisson_blend
from defectaug.compositing.poisson import BlendMode, check_band, check_mode, poisson_blend


class AlphaComposite(nn.Module):
    """Module form of :func:`~defectaug.compositing.alpha_composite`."""

    def forward(
        self, background: Any, foreground: Any, alpha: Any, offset: OffsetArg = None
    ) -> Any:
        return alpha_composite(background, foreground, alpha, offset)


class PoissonBlend(nn.Module):
    """Module form of :func:`~defectaug.compositing.poisson_blend`."""

    def __init__(self, mode: BlendMode = "normal") -> None:
        super().__init__()
        check_mode(mode)
        self.mode = mode

    def forward(self, background: Any, source: Any, mask: Any, offset: OffsetArg = None) -> Any:
        return poisson_blend(background, source, mask, offset, mode=self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class ImprovedPoissonBlend(nn.Module):
    """Module form of :func:`~defectaug.compositing.improved_poisson_blend`."""

    def __init__(self, band: int = 5, mode: BlendMode = "normal") -> None:
        super().__init__()
        self.band = check_band(band)
        check_mode(mode)
        self.mode = mode

    def forward(self, background: Any, source: Any, mask: Any, offset: OffsetArg = None) -> Any:
        return improved_poisson_blend(
            background, source, mask, offset, band=self.band, mode=self.mode
        )

    def extra_repr(self) -> str:
        return f"band={self.band}, mode={self.mode!r}"
