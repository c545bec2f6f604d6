"""Relief maps: painted defects before they meet a surface, and how a surface shades them.

A painted defect is a signed relief in [-1, 1] (-1 black, 0 the surface tone, +1 white), a fine
texture and an alpha (:class:`ReliefMaps`). :func:`shade_relief` turns it into content on a
surface tone; :func:`bright_sign` decides, from that tone, whether it is a bright or a dark defect.
The compiled renderer (:mod:`defectaug._kernels`) reads the same planes in the same order.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: The tint of stains on 3-channel output (a rust brown, per RGB channel).
RUST = (1.0, 0.78, 0.55)

#: Plane order of ``ReliefMaps.planes``.
_SIGNED, _FIXED, _TEXTURE, _ALPHA = 0, 1, 2, 3


class ReliefMaps(NamedTuple):
    """Painted defects before they meet a surface (``ProceduralGenerator.paint``).

    Attributes:
        planes: ``[n, 4, h, w]``: the relief part whose sign the surface decides (dark or bright
            defect), the relief part lit regardless (highlights, lit rims), the fine texture
            (already scaled) and the alpha. Being one tensor, all four warp in one resampling.
        tint: ``[n]`` rust tint strength (3-channel output).
        bright_draw: ``[n]`` uniform draws that, with the tone, pick bright or dark
            (:func:`bright_sign`).
        bright_probability: ``[n]`` chance of a bright defect of each item's type.
    """

    planes: torch.Tensor
    tint: torch.Tensor
    bright_draw: torch.Tensor
    bright_probability: torch.Tensor

    @property
    def alpha(self) -> torch.Tensor:
        """``[n, 1, h, w]`` coverage in [0, 1]."""
        return self.planes[:, _ALPHA : _ALPHA + 1]

    def shade(self, tone: torch.Tensor) -> torch.Tensor:
        """Content ``[n, C, h, w]`` on surface ``tone`` (``[n, C, 1, 1]`` or ``[n, C, h, w]``)."""
        sign = bright_sign(self.bright_draw, self.bright_probability, tone.mean(dim=(1, 2, 3)))
        return shade_relief(self.planes, tone, sign, self.tint)


def shade_relief(
    planes: torch.Tensor,
    tone: torch.Tensor,
    sign: torch.Tensor | float,
    tint: torch.Tensor | float,
) -> torch.Tensor:
    """Content ``[n, C, h, w]`` in [0, 1] from :class:`ReliefMaps` planes on a surface ``tone``.

    The relief (``sign * signed + fixed``, in [-1, 1]) darkens the tone towards black or lightens
    it towards white, the texture modulates it, and a tint (3 channels) browns strong relief.
    ``sign`` and ``tint`` are ``[n]`` or, for one item, floats; ``tone`` is ``[n, C, h, w]`` or
    broadcastable to it. (The per-sample path of ``DefectInject`` does the same per pixel in
    :func:`defectaug._kernels.composite_relief`.)
    """
    n = planes.shape[0]
    if isinstance(sign, torch.Tensor):
        sign = sign.view(n, 1, 1, 1)
    relief = planes[:, _SIGNED : _SIGNED + 1] * sign
    relief = (relief + planes[:, _FIXED : _FIXED + 1]).clamp(-1.0, 1.0)
    shaded = torch.where(relief < 0, tone * (1.0 + relief), tone + (1.0 - tone) * relief)
    content = shaded * (1.0 + planes[:, _TEXTURE : _TEXTURE + 1])
    tinted = bool((tint > 0).any()) if isinstance(tint, torch.Tensor) else tint > 0
    if content.shape[1] == 3 and tinted:
        rust = torch.tensor(RUST, device=planes.device, dtype=planes.dtype).view(1, 3, 1, 1)
        if isinstance(tint, torch.Tensor):
            tint = tint.view(n, 1, 1, 1)
        strength = tint * relief.abs().clamp(max=1.0) * 3.0
        content = content * (1.0 - strength.clamp(max=1.0) * (1.0 - rust))
    return content.clamp(0.0, 1.0)


#: Bright defects are drawn at their full probability on surfaces darker than
#: ``BRIGHT_FADE_START - BRIGHT_FADE_SPAN`` mean tone, never at ``BRIGHT_FADE_START`` and above.
BRIGHT_FADE_START, BRIGHT_FADE_SPAN = 0.92, 0.25


def bright_sign(
    draw: torch.Tensor, bright_probability: torch.Tensor, surface: torch.Tensor
) -> torch.Tensor:
    """``[n]`` +1 for bright items, -1 for dark ones, from :meth:`_Canvas.bright_draw` draws.

    Bright defects grow rarer on surfaces near white (``surface`` mean tone ``[n]``), where they
    would not show.
    """
    room = ((BRIGHT_FADE_START - surface) / BRIGHT_FADE_SPAN).clamp(0.0, 1.0)
    return torch.where(draw < bright_probability * room, 1.0, -1.0)


def bright_sign_of(surface: float, draw: float, bright_probability: float) -> float:
    """:func:`bright_sign` of one item, on floats (the compiled renderer compiles this very
    function)."""
    room = min(max((BRIGHT_FADE_START - surface) / BRIGHT_FADE_SPAN, 0.0), 1.0)
    return 1.0 if draw < bright_probability * room else -1.0
