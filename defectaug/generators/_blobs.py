"""Area painters: spots, stains, uneven regions, pit clusters and shapes anchored on an edge.

Each is a soft-edged region (a noisy ellipse, a cut across the layer, a cluster of small round
pits, a profile grown down from the layer's top side) with its relief.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from defectaug._lazy import painting_kernels
from defectaug.generators._canvas import _Canvas, _host, _Painted, _smoothstep

if TYPE_CHECKING:
    from defectaug.generators.procedural import (
        EdgeChipParams,
        PitParams,
        SpotParams,
        StainParams,
        UnevenParams,
    )


def _ellipse_radius(
    canvas: _Canvas, centre: torch.Tensor, radius: torch.Tensor, aspect: torch.Tensor
) -> torch.Tensor:
    """Normalised elliptical radius ``[n, h, w]`` (1 on the outline) with a random orientation."""
    angle = canvas.uniform((0.0, math.pi)).view(-1, 1, 1)
    dy = canvas.y - centre[:, 0].view(-1, 1, 1)
    dx = canvas.x - centre[:, 1].view(-1, 1, 1)
    along = dx * torch.cos(angle) + dy * torch.sin(angle)
    across = -dx * torch.sin(angle) + dy * torch.cos(angle)
    major = radius.view(-1, 1, 1) / aspect.sqrt().view(-1, 1, 1)
    minor = radius.view(-1, 1, 1) * aspect.sqrt().view(-1, 1, 1)
    return torch.sqrt((along / major) ** 2 + (across / minor) ** 2)


def _blob_centre(canvas: _Canvas, reach: torch.Tensor) -> torch.Tensor:
    """Centres ``[n, 2]`` keeping a blob of radius ``reach`` px inside the layer when possible."""
    middle = torch.tensor([(canvas.h - 1) / 2.0, (canvas.w - 1) / 2.0], device=canvas.device)
    slack = (middle[None] - reach[:, None] - 0.06 * canvas.side).clamp_min(0.0)
    return middle + canvas.uniform((-1.0, 1.0), 2) * slack


def _ellipse_draws(
    canvas: _Canvas, p: SpotParams | StainParams, reach: float
) -> tuple[torch.Tensor, ...]:
    """Radius, aspect, outline irregularity, edge softness and centre of a spot or a stain.

    The centre keeps ``reach`` times the major semi-axis inside the layer when possible.
    """
    n = canvas.n
    radius = canvas.uniform(p.radius) * canvas.side
    aspect = canvas.uniform(p.aspect)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1)
    softness = canvas.uniform(p.softness).view(n, 1, 1)
    centre = _blob_centre(canvas, radius / aspect.sqrt() * reach)
    return radius, aspect, irregularity, softness, centre


def _paint_spot(canvas: _Canvas, p: SpotParams) -> tuple[torch.Tensor, ...]:
    n = canvas.n
    radius, aspect, irregularity, softness, centre = _ellipse_draws(canvas, p, 1.3)
    outline_noise = canvas.noise(6.0, octaves=2)
    field_ = _ellipse_radius(canvas, centre, radius, aspect) + irregularity * outline_noise
    alpha = _smoothstep(1.0 + softness, 1.0 - softness, field_)
    depth = 1.0 - canvas.uniform(p.core).view(n, 1, 1) * field_.clamp(0.0, 1.0) ** 2
    depth = depth * (1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(8.0, octaves=2))
    bright = canvas.bright_draw()
    relief = canvas.uniform(p.contrast).view(n, 1, 1) * depth
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)


def _paint_stain(canvas: _Canvas, p: StainParams) -> tuple[torch.Tensor, ...]:
    n = canvas.n
    radius, aspect, irregularity, softness, centre = _ellipse_draws(canvas, p, 1.2)
    field_ = _ellipse_radius(canvas, centre, radius, aspect) + irregularity * canvas.noise(
        3.0, octaves=3
    )
    alpha = _smoothstep(1.0 + softness, 1.0 - softness, field_)
    ring = torch.exp(-(((field_ - 0.9) / 0.18) ** 2)) * (0.6 + 0.4 * canvas.noise(6.0, octaves=2))
    rim = canvas.uniform(p.rim).view(n, 1, 1)
    mottle = 1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(5.0, octaves=2)
    relief = (1.0 - rim) * mottle + rim * 2.0 * ring
    bright = canvas.bright_draw()
    relief = (canvas.uniform(p.contrast).view(n, 1, 1) * relief).clamp(-1.0, 1.0)
    return _Painted(relief, None, alpha, canvas.uniform(p.tint), canvas.uniform(p.opacity), bright)


def _paint_uneven(canvas: _Canvas, p: UnevenParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    # The region fills the layer and fades out irregularly towards its border, so its one
    # visible outline is the cut below.
    # Superellipse radius: ~1 at the layer border, with no creases towards the corners.
    across = ((canvas.x - (canvas.w - 1) / 2.0) / (canvas.w / 2.0)).abs() ** 3
    down = ((canvas.y - (canvas.h - 1) / 2.0) / (canvas.h / 2.0)).abs() ** 3
    radius = (across + down) ** (1.0 / 3.0) + 0.2 * canvas.noise(2.5, octaves=2)
    vignette = canvas.uniform(p.vignette).view(n, 1, 1)
    inside = _smoothstep(1.0, 1.0 - 2.0 * vignette, radius)
    # A mostly straight boundary across the layer, as where a grinding pass or coating changes.
    angle = canvas.uniform((0.0, 2 * math.pi)).view(n, 1, 1)
    cut = canvas.uniform(p.cut).view(n, 1, 1) * side
    signed = (canvas.x - (canvas.w - 1) / 2.0) * torch.cos(angle) + (
        canvas.y - (canvas.h - 1) / 2.0
    ) * torch.sin(angle)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1) * side
    signed = signed - cut + irregularity * canvas.noise(4.0, octaves=3)
    softness = (canvas.uniform(p.softness) * side).clamp_min(0.8).view(n, 1, 1)
    alpha = inside * _smoothstep(-softness, softness, signed)
    shading = canvas.uniform(p.shading).view(n, 1, 1)
    gradient = (signed / side).clamp(0.0, 1.0)
    variation = shading * (0.6 * canvas.noise(2.0, octaves=2) + 0.8 * gradient - 0.3)
    bright = canvas.bright_draw()
    relief = canvas.uniform(p.contrast).view(n, 1, 1)
    relief = (relief * (1.0 + variation)).clamp(-1.0, 1.0)
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)


def _paint_pit(canvas: _Canvas, p: PitParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    count = canvas.integers(p.count)
    spread = canvas.uniform(p.spread) * side
    reach = spread * 2.0 + p.radius[1] * side
    centre = _blob_centre(canvas, reach)
    light = canvas.uniform((0.0, 2 * math.pi))
    contrast = canvas.uniform(p.contrast)
    rim = canvas.uniform(p.rim)
    bright = canvas.bright_draw()
    limit = torch.tensor([canvas.h - 1, canvas.w - 1], device=canvas.device) - 0.08 * side
    roughness = 1.0 + 0.2 * canvas.noise(10.0)
    # A pit only shows within a few radii of its centre (roughness shortens distances by at most
    # 0.8): each pit is painted on that window of the items that have it, not the whole layer.
    reach = (3.0 * (p.radius[1] * side + 0.5) + 0.6) / 0.8 + 1.0
    window = (min(2 * math.ceil(reach) + 2, canvas.h), min(2 * math.ceil(reach) + 2, canvas.w))
    positions, radii = [], []
    for _ in range(int(round(p.count[1]))):
        offset = canvas.normal(2) * spread[:, None]
        positions.append(
            torch.maximum(torch.minimum(centre + offset, limit), limit.new_tensor(0.08 * side))
        )
        radii.append((canvas.uniform(p.radius) * side).clamp_min(0.7))
    active = count[None] > torch.arange(len(positions), device=canvas.device)[:, None]
    signed, fixed, alpha = canvas.blank(3)
    painting_kernels().paint_pits(
        _host(torch.stack(positions)),
        _host(torch.stack(radii)),
        _host(active),
        *(_host(values) for values in (light, contrast, rim, roughness)),
        window,
        signed,
        fixed,
        alpha,
    )
    return _Painted(
        canvas.tensor(signed),
        canvas.tensor(fixed),
        canvas.tensor(alpha),
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )


def _paint_edge(canvas: _Canvas, p: EdgeChipParams) -> tuple[torch.Tensor, ...]:
    n, side = canvas.n, canvas.side
    depth = (canvas.uniform(p.depth) * (canvas.h - 1)).clamp_min(2.0).view(n, 1, 1)
    half = (canvas.uniform(p.width) * (canvas.w - 1) / 2.0).clamp_min(1.5).view(n, 1, 1)
    belly = canvas.uniform(p.belly).view(n, 1, 1)
    neck = canvas.uniform(p.neck).view(n, 1, 1)
    # Along the edge the shape sits anywhere its widest part still fits in the layer.
    place = canvas.uniform((0.0, 1.0)).view(n, 1, 1)
    # A leaning shape is sheared sideways (by ``shear`` px per row), its tip shortened so the
    # whole shape still fits across the layer.
    shear = torch.zeros(n, 1, 1, device=canvas.device)
    if p.lean[1] > 0.0:
        lean = torch.deg2rad(canvas.uniform(p.lean)).view(n, 1, 1)
        sign = torch.where(canvas.chance(0.5), 1.0, -1.0).view(n, 1, 1)
        slope = torch.tan(lean)
        room = ((canvas.w - 1) - 2.0 * half).clamp_min(1.0)
        depth = torch.minimum(depth, (room / slope.clamp_min(1e-3)).clamp_min(2.0))
        shear = sign * slope
    offset = shear * depth
    low = half + (-offset).clamp_min(0.0)
    high = (canvas.w - 1) - half - offset.clamp_min(0.0)
    centre = torch.where(high >= low, low + place * (high - low), (low + high) / 2.0)
    t = canvas.y / depth
    # Half-width profile down from the edge: rising from ``neck`` to 1 at ``belly`` along a
    # quarter ellipse, then closing along another one (a superellipse for ``corner`` > 0) at
    # ``depth``.
    rise = ((belly - t) / belly.clamp_min(1e-3)).clamp(max=1.0)
    before = neck + (1.0 - neck) * (1.0 - rise**2).clamp_min(0.0).sqrt()
    u = ((t - belly) / (1.0 - belly).clamp_min(1e-3)).clamp(0.0, 1.0)
    point = canvas.uniform(p.point).view(n, 1, 1)
    if p.corner[1] > 0.0:
        power = 2.0 + 6.0 * canvas.uniform(p.corner).view(n, 1, 1)
        rounded = (1.0 - u**power).clamp_min(0.0) ** (1.0 / power)
    else:
        rounded = (1.0 - u**2).sqrt()
    after = (1.0 - point) * rounded + point * (1.0 - u)
    after = torch.where(t > 1.0, torch.zeros_like(after), after)
    profile = torch.where(t < belly, before, after)
    # Normalised lateral distance minus the profile: < 0 inside; a tip closing below ``depth``
    # is measured along the depth too, so the outline stays soft there. The outline noise is
    # relative to the local half-width (and below it), so the axis always stays inside and
    # a thin or tapering shape does not break into islands.
    lateral = (canvas.x - centre - shear * canvas.y).abs() / half
    beyond = ((t - 1.0) * depth / half).clamp_min(0.0)
    irregularity = canvas.uniform(p.irregularity).view(n, 1, 1)
    field_ = lateral - profile * (1.0 - irregularity * canvas.noise(5.0, octaves=2)) + beyond
    soft = (canvas.uniform(p.softness).view(n, 1, 1) * side + 0.75) / half
    alpha = _smoothstep(soft, -soft, field_)
    mottle = 1.0 + canvas.uniform(p.mottling).view(n, 1, 1) * canvas.noise(6.0, octaves=2)
    if p.gradient[1] > 0.0:
        mottle = mottle * (1.0 - canvas.uniform(p.gradient).view(n, 1, 1) * t.clamp(0.0, 1.0))
    relief = (canvas.uniform(p.contrast).view(n, 1, 1) * mottle).clamp(0.0, 1.0)
    bright = canvas.bright_draw()
    zeros = torch.zeros(n, device=canvas.device)
    return _Painted(relief, None, alpha, zeros, canvas.uniform(p.opacity), bright)
