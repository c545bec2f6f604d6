"""Stroke painters: scratches and cracks, drawn as distance fields of polylines.

:func:`_paint_scratch` draws Bezier strokes and :func:`_paint_crack` random walks with side
branches. The painters make their random draws here (torch, in a fixed order) and leave the pixel
loops (nearest segment, shading, stacking) to :mod:`defectaug.generators._paint_kernels`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from defectaug._lazy import painting_kernels
from defectaug.generators._canvas import _Canvas, _host, _Painted, _smooth_curve

if TYPE_CHECKING:
    from defectaug.generators.procedural import CrackParams, ScratchParams


def _fit_into(canvas: _Canvas, points: torch.Tensor, margin: float) -> torch.Tensor:
    """Shrink (about their box centre) and shift ``points [n, K, 2]`` to lie inside the layer."""
    low, high = points.amin(dim=1), points.amax(dim=1)
    extent = (high - low).clamp_min(1e-3)
    room = torch.tensor(
        [canvas.h - 1 - 2 * margin, canvas.w - 1 - 2 * margin], device=canvas.device
    )
    scale = (room / extent).amin(dim=1).clamp(max=1.0).view(-1, 1, 1)
    centre = (low + high) / 2.0
    fitted = (points - centre[:, None]) * scale
    half = extent * scale[:, 0] / 2.0
    slack = (room / 2.0 - half).clamp_min(0.0)
    shift = (canvas.uniform((-1.0, 1.0), 2) * slack * 0.8) + torch.tensor(
        [(canvas.h - 1) / 2.0, (canvas.w - 1) / 2.0], device=canvas.device
    )
    return fitted + shift[:, None]


def _paint_scratch(canvas: _Canvas, p: ScratchParams) -> tuple[torch.Tensor, ...]:
    n, side, samples = canvas.n, canvas.side, 17
    t = torch.linspace(0.0, 1.0, samples, device=canvas.device)
    bernstein = torch.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], dim=1)
    strokes = canvas.integers(p.count)
    bright = canvas.bright_draw()
    contrast = canvas.uniform(p.contrast)
    highlight = canvas.uniform(p.highlight) * canvas.chance(p.highlight_probability)
    highlight_side = torch.where(canvas.chance(0.5), 1.0, -1.0)
    heading = canvas.uniform(p.heading)
    curves, widths, strengths, reaches = [], [], [], []
    for stroke in range(int(round(p.count[1]))):
        # Later strokes of one item run roughly parallel, as from one abrasive contact.
        angle = heading + (canvas.uniform((-0.35, 0.35)) if stroke else 0.0)
        direction = torch.stack([torch.sin(angle), torch.cos(angle)], dim=1)
        normal = torch.stack([-direction[:, 1], direction[:, 0]], dim=1)
        length = canvas.uniform(p.length) * side
        bends = (
            canvas.uniform((-1.0, 1.0), 2) * canvas.uniform(p.curvature)[:, None] * length[:, None]
        )
        start = -direction * length[:, None] / 2.0
        control = torch.stack(
            [
                start,
                start + direction * length[:, None] / 3.0 + normal * bends[:, :1],
                start + direction * length[:, None] * 2.0 / 3.0 + normal * bends[:, 1:],
                direction * length[:, None] / 2.0,
            ],
            dim=1,
        )
        curve = torch.einsum("pk,nkd->npd", bernstein, control)
        curve = _fit_into(canvas, curve, margin=0.08 * side)
        base_width = (canvas.uniform(p.width) * side).clamp_min(1.0)[:, None]
        taper = (4.0 * t * (1.0 - t)).clamp_min(0.0) ** 0.35 * 0.7 + 0.3
        jitter = 1.0 + canvas.uniform(p.width_jitter)[:, None] * (
            2.0 * _smooth_curve(canvas, samples) - 1.0
        )
        width = (base_width * taper * jitter).clamp_min(1.0)
        strength = 1.0 - canvas.uniform(p.fade)[:, None] * _smooth_curve(canvas, samples, knots=7)
        # Past this distance the core and the highlight band have faded below 1e-3.
        widest = width.amax(dim=1)
        reach = widest / 2.0 + 3.5 * (0.6 * widest).clamp_min(1.0) + 1.0
        curves.append(curve)
        widths.append(width)
        strengths.append(strength)
        reaches.append(reach)
    signed, fixed, alpha = canvas.blank(3)
    enabled = strokes[None] > torch.arange(len(curves), device=canvas.device)[:, None]
    painting_kernels().paint_scratch_strokes(
        *(_host(torch.stack(values)) for values in (curves, widths, strengths)),
        _host(enabled),
        _host(torch.stack(reaches)),
        _host(contrast),
        _host(highlight),
        _host(highlight_side),
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


def _random_walk(
    canvas: _Canvas,
    start: torch.Tensor,
    heading: torch.Tensor,
    length: torch.Tensor,
    jaggedness: torch.Tensor,
    steps: int,
    bend: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Polyline ``[n, steps + 1, 2]`` and the course heading at each vertex ``[n, steps + 1]``.

    Each step deviates from a course drifting by ``bend`` per step by ``jaggedness`` (not
    cumulatively), so the path zigzags like a crack instead of curling up like a thread.
    """
    course = heading[:, None] + torch.cumsum(canvas.normal(steps) * bend, dim=1)
    headings = course + canvas.normal(steps) * jaggedness[:, None]
    step = (length / steps)[:, None] * (0.7 + 0.6 * canvas.uniform((0.0, 1.0), steps))
    moves = torch.stack([torch.sin(headings), torch.cos(headings)], dim=2) * step[..., None]
    points = torch.cat([start[:, None], start[:, None] + torch.cumsum(moves, dim=1)], dim=1)
    return points, torch.cat([course[:, :1], course], dim=1)


def _paint_crack(canvas: _Canvas, p: CrackParams) -> tuple[torch.Tensor, ...]:
    n, side, steps, branch_steps = canvas.n, canvas.side, 22, 8
    contrast = _host(canvas.uniform(p.contrast))
    bright = canvas.bright_draw()
    length = canvas.uniform(p.length) * side
    jaggedness = canvas.uniform(p.jaggedness)
    main, headings = _random_walk(
        canvas,
        torch.zeros(n, 2, device=canvas.device),
        canvas.uniform(p.heading),
        length,
        jaggedness,
        steps,
        p.bend,
    )
    count = canvas.integers(p.branches)
    paths, enabled = [main], [torch.ones(n, dtype=torch.bool, device=canvas.device)]
    for branch in range(int(round(p.branches[1]))):
        vertex = torch.randint(3, steps - 2, (n,), generator=canvas.generator, device=canvas.device)
        start = main[torch.arange(n, device=canvas.device), vertex]
        turn = canvas.uniform((0.4, 1.1)) * torch.where(canvas.chance(0.5), 1.0, -1.0)
        heading = headings[torch.arange(n, device=canvas.device), vertex] + turn
        walk, _ = _random_walk(
            canvas,
            start,
            heading,
            length * canvas.uniform(p.branch_length),
            jaggedness,
            branch_steps,
            p.bend,
        )
        paths.append(walk)
        enabled.append(count > branch)
    # Fit all paths of an item together, counting only the branches it actually has.
    stacked = torch.cat(paths, dim=1)
    masks = torch.cat(
        [e[:, None].expand(-1, path.shape[1]) for e, path in zip(enabled, paths, strict=True)],
        dim=1,
    )
    anchor = main[:, :1].expand_as(stacked)
    fitted = _fit_into(canvas, torch.where(masks[..., None], stacked, anchor), margin=0.08 * side)
    base_width = (canvas.uniform(p.width) * side).clamp_min(1.0)
    width_jitter = canvas.uniform(p.width_jitter)[:, None]
    fade = canvas.uniform(p.fade)[:, None]
    signed, alpha = canvas.blank(2)
    offset = 0
    for index, (path, active) in enumerate(zip(paths, enabled, strict=True)):
        points = fitted[:, offset : offset + path.shape[1]]
        offset += path.shape[1]
        t = torch.linspace(0.0, 1.0, path.shape[1], device=canvas.device)
        # Main path tapers at both tips, branches from their root to their tip.
        taper = (4.0 * t * (1.0 - t)) ** 0.5 if index == 0 else (1.0 - t) ** 0.7
        scale = 1.0 if index == 0 else 0.75
        vertices = path.shape[1]
        jitter = 1.0 + width_jitter * (2.0 * _smooth_curve(canvas, vertices, knots=9) - 1.0)
        width = (base_width[:, None] * scale * (0.45 + 0.55 * taper) * jitter).clamp_min(1.0)
        strength = 1.0 - fade * _smooth_curve(canvas, vertices, knots=7)
        # Past this distance the core has faded below 1e-3.
        reach = 3.0 * (width.amax(dim=1) / 2.0 + 0.6) + 1.0
        painting_kernels().paint_crack_path(
            *(_host(values) for values in (points, width, strength, active, reach)),
            contrast,
            signed,
            alpha,
        )
    return _Painted(
        canvas.tensor(signed),
        None,
        canvas.tensor(alpha),
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )
