"""Stroke painters: scratches and cracks, drawn as distance fields of polylines.

:func:`_polyline_field` gives, per pixel near a polyline, the distance to it, the side it lies on
and per-vertex values interpolated along it; :func:`_paint_scratch` draws Bezier strokes with it
and :func:`_paint_crack` random walks with side branches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from defectaug.generators._canvas import _Canvas, _over, _Painted, _smooth_curve, _smoothstep

if TYPE_CHECKING:
    from defectaug.generators.procedural import CrackParams, ScratchParams


@dataclass
class _Stroke:
    """Distance field of polylines: per pixel the nearest distance, side and interpolated extras."""

    distance: torch.Tensor
    side: torch.Tensor
    extras: list[torch.Tensor]

    @classmethod
    def from_flat(
        cls,
        distance: torch.Tensor,
        side: torch.Tensor,
        extras: list[torch.Tensor],
        size: tuple[int, int],
    ) -> _Stroke:
        shape = (distance.shape[0], *size)
        return cls(distance.view(shape), side.view(shape), [v.view(shape) for v in extras])


# A packed (distance, segment) key: the float32 bits of the squared distance (monotonic for
# non-negative floats) above 8 bits of segment index, so one integer ``amin`` finds both.
_SEGMENT_BITS = 8
_FAR = torch.iinfo(torch.int64).max


def _polyline_field(
    canvas: _Canvas,
    points: torch.Tensor,
    extras: list[torch.Tensor],
    enabled: torch.Tensor,
    reach: torch.Tensor,
) -> _Stroke:
    """Nearest-segment field of polylines ``points [n, P, 2]`` (y, x) for pixels near them.

    ``extras`` are per-vertex values ``[n, P]`` interpolated at the nearest point. Only pixels
    within ``reach [n]`` px of an item's polyline are evaluated (callers pass the distance past
    which their strokes have faded out); the others, and every pixel of items where ``enabled``
    is False, get an infinite distance, side 0 and extras 0. Each segment is evaluated on the
    window of pixels it can reach only, which at layer sizes is a small part of the layer.
    """
    n, count = points.shape[0], points.shape[1]
    h, w, device = canvas.h, canvas.w, canvas.device
    distance = torch.full((n, h * w), float("inf"), device=device)
    side = torch.zeros(n, h * w, device=device)
    values = [torch.zeros(n, h * w, device=device) for _ in extras]
    active = enabled.nonzero()[:, 0]
    if active.numel() == 0 or count < 2:
        return _Stroke.from_flat(distance, side, values, (h, w))
    m, segments = active.numel(), count - 1
    pts = points[active].float()
    radius = reach[active].float().view(m, 1, 1)
    start, step = pts[:, :-1], pts[:, 1:] - pts[:, :-1]
    inv_length2 = 1.0 / (step * step).sum(2).clamp_min(1e-6)
    low = torch.minimum(pts[:, :-1], pts[:, 1:]) - radius
    extent = float((torch.maximum(pts[:, :-1], pts[:, 1:]) + radius - low).amax())
    window_h, window_w = min(math.ceil(extent) + 2, h), min(math.ceil(extent) + 2, w)
    top = low[..., 0].floor().long().clamp(0, h - window_h)
    left = low[..., 1].floor().long().clamp(0, w - window_w)
    rows = top[..., None] + torch.arange(window_h, device=device)
    cols = left[..., None] + torch.arange(window_w, device=device)
    py = (rows.float() - start[..., 0, None])[..., :, None]
    px = (cols.float() - start[..., 1, None])[..., None, :]
    step_y, step_x = step[..., 0, None, None], step[..., 1, None, None]
    u = (py * step_y + px * step_x).mul_(inv_length2[..., None, None]).clamp_(0.0, 1.0)
    off_y, off_x = py - u * step_y, px - u * step_x
    squared = off_y.mul_(off_y).addcmul_(off_x, off_x)
    segment_index = torch.arange(segments, device=device).view(1, segments, 1, 1)
    key = (squared.view(torch.int32).long() << _SEGMENT_BITS) | segment_index
    key = key.masked_fill_(squared > radius.view(m, 1, 1, 1) ** 2, _FAR)
    where = (rows[..., :, None] * w + cols[..., None, :]).view(m, -1)
    nearest = torch.full((m, h * w), _FAR, dtype=torch.int64, device=device)
    nearest.scatter_reduce_(1, where, key.view(m, -1), reduce="amin")
    found = nearest != _FAR
    segment = (nearest & ((1 << _SEGMENT_BITS) - 1)).masked_fill_(~found, 0)
    near_distance = (nearest >> _SEGMENT_BITS).to(torch.int32).view(torch.float32).sqrt()
    # Where along its nearest segment each pixel projects, and on which side it lies.
    a_y, a_x = start[..., 0].gather(1, segment), start[..., 1].gather(1, segment)
    d_y, d_x = step[..., 0].gather(1, segment), step[..., 1].gather(1, segment)
    pixel_y = torch.arange(h, device=device).repeat_interleave(w).float() - a_y
    pixel_x = torch.arange(w, device=device).repeat(h).float() - a_x
    fraction = ((pixel_y * d_y + pixel_x * d_x) * inv_length2.gather(1, segment)).clamp(0.0, 1.0)
    cross = torch.sign(d_x * pixel_y - d_y * pixel_x)
    distance[active] = torch.where(found, near_distance, float("inf"))
    side[active] = torch.where(found, cross, 0.0)
    for slot, extra in zip(values, extras, strict=True):
        item_extra = extra[active]
        first, last = item_extra.gather(1, segment), item_extra.gather(1, segment + 1)
        slot[active] = torch.where(found, first + fraction * (last - first), 0.0)
    return _Stroke.from_flat(distance, side, values, (h, w))


def _line_coverage(distance: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of a line ``width`` px wide: 0.5 at ``distance == width / 2``."""
    half = width / 2.0
    return _smoothstep(half + 0.75, half - 0.75, distance)


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
    contrast = canvas.uniform(p.contrast).view(n, 1, 1)
    highlight = canvas.uniform(p.highlight) * canvas.chance(p.highlight_probability)
    highlight_side = torch.where(canvas.chance(0.5), 1.0, -1.0).view(n, 1, 1)
    heading = canvas.uniform(p.heading)
    alpha_total = torch.zeros(n, canvas.h, canvas.w, device=canvas.device)
    reliefs_total = (torch.zeros_like(alpha_total), torch.zeros_like(alpha_total))
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
        field_ = _polyline_field(canvas, curve, [width, strength], strokes > stroke, reach)
        width_px, strength_px = field_.extras
        coverage = _line_coverage(field_.distance, width_px) * strength_px
        core = torch.exp(-((field_.distance / (width_px / 2.0 + 0.5)) ** 2))
        band_width = (0.6 * width_px).clamp_min(1.0)
        band_centre = width_px / 2.0 + band_width / 2.0
        band = torch.exp(-(((field_.distance - band_centre) / band_width) ** 2))
        band = band * (field_.side == highlight_side) * highlight.view(n, 1, 1) * strength_px
        reliefs = (contrast * core * strength_px, band * (1.0 - core))
        alpha = torch.maximum(coverage, band.clamp(max=1.0) * 1.6).clamp(max=1.0)
        reliefs_total, alpha_total = _over(reliefs_total, alpha_total, reliefs, alpha)
    return _Painted(
        *reliefs_total,
        alpha_total,
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
    contrast = canvas.uniform(p.contrast).view(n, 1, 1)
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
    alpha_total = torch.zeros(n, canvas.h, canvas.w, device=canvas.device)
    reliefs_total = (torch.zeros_like(alpha_total),)
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
        field_ = _polyline_field(canvas, points, [width, strength], active, reach)
        width_px, strength_px = field_.extras
        # Fading only lightens the crack: its mask stays one connected path.
        coverage = _line_coverage(field_.distance, width_px)
        core = torch.exp(-((field_.distance / (width_px / 2.0 + 0.6)) ** 2)) * strength_px
        reliefs_total, alpha_total = _over(reliefs_total, alpha_total, (contrast * core,), coverage)
    return _Painted(
        reliefs_total[0],
        None,
        alpha_total,
        torch.zeros(n, device=canvas.device),
        canvas.uniform(p.opacity),
        bright,
    )
