"""Batched mask shapes in a layer's own frame, for the self-supervised anomaly generators.

Every sampler returns an alpha ``[n, 1, h, w]`` that is 1 on the shape and 0 elsewhere, so the
mask ``inject_defects`` reports (``alpha >= 0.5``) is the patch that shows. The edge is left hard
on purpose: placing a layer resamples it bilinearly, which antialiases the edge anyway, while a
ramp drawn here as well would, on small shapes, leave pixels faintly visible (alpha just under
0.5) a few px outside the reported mask.
Shapes keep the layer's outermost pixel ring empty, so that resampled edge lies inside the layer.

All draws come from the ``torch.Generator`` given and all arithmetic runs in float32 whatever the
requested ``dtype`` (cast last), so a seed gives the same shapes on one device for any dtype.

Shapes (``mask_shape=`` of every self-supervised generator, :data:`MASK_SHAPES`):

* ``"perlin"``: thresholded 2D Perlin noise as in DRAEM (:func:`perlin_masks`), scattered blobs;
* ``"polygon"``: a random star-convex polygon around the centre (:func:`polygon_masks`);
* ``"ellipse"``: a random rotated ellipse (:func:`ellipse_masks`);
* ``"rectangle"``: the whole layer (:func:`rectangle_masks`), the patches of CutPaste and NSA.

:func:`strip_masks` draws the thin rotated strips of CutPaste's "scar" variant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from defectaug import _checks as checks
from defectaug._checks import check_choice, check_generator, check_int, check_number, check_range

MASK_SHAPES: tuple[str, ...] = ("perlin", "polygon", "ellipse", "rectangle")

#: Largest layer side a sampler accepts: every sampler allocates a few ``n * h * w`` float maps.
MAX_SIDE = 4096


def check_mask_shape(value: Any, name: str = "mask_shape") -> str:
    """``value`` if it is one of :data:`MASK_SHAPES`, else an error naming ``name``."""
    return check_choice(value, MASK_SHAPES, name)


def check_size(value: Any, name: str = "size", minimum: int = 3) -> tuple[int, int]:
    """``(h, w)`` from one int or a pair, each in ``[minimum, MAX_SIDE]``."""
    return checks.check_size(value, name, minimum, MAX_SIDE)


def _uniform(
    bounds: Sequence[float], shape: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    low, high = bounds
    draw = torch.rand(*shape, generator=generator, device=generator.device)
    return low + (high - low) * draw


def _centred_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``[h, 1]`` and ``[1, w]`` relative to the layer's centre."""
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    return ys[:, None], xs[None, :]


def _inner(h: int, w: int, device: torch.device) -> torch.Tensor:
    """``[h, w]`` bool: every pixel but the outermost ring (kept transparent, see module doc)."""
    inner = torch.zeros(h, w, dtype=torch.bool, device=device)
    inner[1:-1, 1:-1] = True
    return inner


def shape_alpha(inside: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``inside`` as alpha in ``dtype``: 1 on the shape, 0 elsewhere (exact in every dtype)."""
    return inside.to(dtype)


def _grey_open(field: torch.Tensor) -> torch.Tensor:
    """Grey-level opening of ``field [n, h, w]`` with a 2x2 square.

    Thresholding the opened field equals opening the thresholded mask, so any threshold gives
    masks without parts narrower than 2 px: a one-pixel sliver would fall below 0.5 alpha once
    the layer is rotated and resampled, and show outside the reported mask.
    """
    lowest = torch.finfo(field.dtype).min
    padded = F.pad(field[:, None], (0, 1, 0, 1), value=lowest)
    eroded = -F.max_pool2d(-padded, 2, stride=1)
    return F.max_pool2d(F.pad(eroded, (1, 0, 1, 0), value=lowest), 2, stride=1)[:, 0]


def perlin_noise(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    scale_range: tuple[int, int] = (0, 6),
    min_period: float = 8.0,
) -> torch.Tensor:
    """2D Perlin gradient noise ``[n, h, w]`` (float32, about [-1, 1]) on ``generator``'s device.

    As DRAEM's ``rand_perlin_2d``: per item, the number of noise periods across the layer is
    ``2**kx`` horizontally and ``2**ky`` vertically, ``kx, ky`` drawn independently and uniformly
    from ``scale_range[0] .. scale_range[1] - 1`` (like ``torch.randint``), random unit gradients
    on the lattice, quintic fade, and the result scaled by sqrt(2). Periods are capped so one
    spans at least ``min_period`` pixels: finer noise is pixel speckle, not a shape.
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    generator = check_generator(generator)
    low, high = check_range(scale_range, "scale_range", 0, 12, integer=True, strict_order=True)
    check_number(min_period, "min_period", 1, 64)
    device = generator.device
    exponents = torch.randint(low, high, (2, n), generator=generator, device=device)
    periods = torch.stack(
        [
            (2 ** exponents[0]).clamp(max=max(1, int(h / min_period))),
            (2 ** exponents[1]).clamp(max=max(1, int(w / min_period))),
        ]
    )
    lattice_h, lattice_w = int(periods[0].max()) + 1, int(periods[1].max()) + 1
    # One lattice of the largest size for the whole batch keeps the draw count independent of
    # each item's own periods; smaller items read its top-left corner.
    angles = _uniform((0.0, 2.0 * math.pi), (n, lattice_h, lattice_w), generator)
    grad_x, grad_y = angles.cos(), angles.sin()

    def lattice_coords(length: int, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Pixel centres in lattice units: pixel i of ``length`` sits at (i + 0.5) / length.
        pos = (torch.arange(length, device=device, dtype=torch.float32) + 0.5) / length
        pos = pos[None, :] * count[:, None].float()
        cell = pos.floor().long().clamp(max=count[:, None] - 1)
        return cell, pos - cell

    cell_y, frac_y = lattice_coords(h, periods[0])
    cell_x, frac_x = lattice_coords(w, periods[1])
    items = torch.arange(n, device=device)[:, None, None]

    def corner(dy: int, dx: int) -> torch.Tensor:
        iy = (cell_y + dy)[:, :, None]
        ix = (cell_x + dx)[:, None, :]
        gx, gy = grad_x[items, iy, ix], grad_y[items, iy, ix]
        return gx * (frac_x - dx)[:, None, :] + gy * (frac_y - dy)[:, :, None]

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)

    fade_y, fade_x = fade(frac_y)[:, :, None], fade(frac_x)[:, None, :]
    top = torch.lerp(corner(0, 0), corner(0, 1), fade_x)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), fade_x)
    return math.sqrt(2.0) * torch.lerp(top, bottom, fade_y)


def perlin_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    scale_range: tuple[int, int] = (0, 6),
    threshold: float = 0.5,
    min_period: float = 8.0,
    min_area: float = 0.05,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """DRAEM-style masks ``[n, 1, h, w]``: Perlin noise (:func:`perlin_noise`) above ``threshold``.

    The noise fades out towards the layer border (a round vignette) so blobs end inside the
    layer rather than along its straight edge. Never empty: an item whose noise covers less
    than ``min_area`` of the layer (or fewer than 4 pixels) at ``threshold`` uses, for that item
    only, the lower threshold that covers that much: DRAEM's absolute threshold alone leaves
    little of a layer, and nothing at all for many items with few periods. Parts
    narrower than 2 px are opened away (:func:`_grey_open`). Raising ``threshold`` only ever
    shrinks a mask (same seed). ``min_period`` defaults to 8 px, DRAEM's finest period (32
    periods over 256 px).
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    check_number(threshold, "threshold", 0, 1, low_open=True, high_open=True)
    check_number(min_area, "min_area", 0, 0.5, what="a fraction in [0, 0.5]")
    noise = perlin_noise(n, (h, w), generator, scale_range=scale_range, min_period=min_period)
    device = noise.device
    # A round vignette (1 inside 70 % of the layer's radius, 0 from the inscribed ellipse outwards):
    # blobs reaching the border end in curved rims, not in the straight edge a square window
    # would cut. Outside it the field sits at -1, below any threshold in (0, 1).
    ys, xs = _centred_grid(h, w, device)
    radius = torch.sqrt((xs / max(w / 2 - 1, 1.0)) ** 2 + (ys / max(h / 2 - 1, 1.0)) ** 2)
    t = ((1.0 - radius) / 0.3).clamp(0.0, 1.0)
    window = t * t * (3.0 - 2.0 * t)
    field = _grey_open(noise * window - (1.0 - window))
    inner = _inner(h, w, device)
    candidates = field.masked_fill(~inner, -math.inf).flatten(1)
    wanted = min(max(4, math.ceil(float(min_area) * h * w)), int(inner.sum()))
    kth_highest = candidates.topk(wanted, dim=1).values[:, -1]
    level = torch.clamp(kth_highest, max=float(threshold))[:, None, None]
    inside = (field >= level) & inner
    return shape_alpha(inside, dtype)[:, None]


def polygon_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    vertices: tuple[int, int] = (4, 10),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random star-convex polygons ``[n, 1, h, w]`` around the layer centre.

    Each item has ``vertices[0] .. vertices[1]`` corners at random angular gaps and radii between
    45 % and 100 % of the largest radius that keeps the edge inside the layer; edges are straight
    (ray / segment intersection). The centre pixel always belongs to the shape, so tiny layers
    are never empty.
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    generator = check_generator(generator)
    fewest, most = check_range(vertices, "vertices", 3, 64, integer=True)
    device = generator.device
    slots = int(most)
    counts = torch.randint(int(fewest), slots + 1, (n,), generator=generator, device=device)
    gaps = _uniform((0.5, 1.0), (n, slots), generator)
    phase = _uniform((0.0, 2.0 * math.pi), (n, 1), generator)
    reach = max(min(h, w) / 2 - 1.5, 1.0)
    radii = reach * _uniform((0.45, 1.0), (n, slots), generator)
    # Slots past an item's own count repeat its last corner: zero-length edges that no pixel
    # angle falls on, so every item keeps one fixed-size batch.
    slot = torch.arange(slots, device=device)[None, :]
    active = slot < counts[:, None]
    gaps = gaps * active
    angles = phase + 2.0 * math.pi * (gaps.cumsum(1) - gaps) / gaps.sum(1, keepdim=True)
    last = (counts - 1)[:, None]
    angles = torch.where(active, angles, angles.gather(1, last))
    radii = torch.where(active, radii, radii.gather(1, last))
    # Close the polygon: the first corner again, one turn later.
    angles = torch.cat([angles, angles[:, :1] + 2.0 * math.pi], 1)
    radii = torch.cat([radii, radii[:, :1]], 1)
    corner_x, corner_y = radii * angles.cos(), radii * angles.sin()

    ys, xs = _centred_grid(h, w, device)
    ys, xs = ys.expand(h, w).reshape(1, -1), xs.expand(h, w).reshape(1, -1)
    radius = torch.sqrt(xs * xs + ys * ys)
    theta = phase + torch.remainder(torch.atan2(ys, xs) - phase, 2.0 * math.pi)
    edge = (torch.searchsorted(angles.contiguous(), theta.contiguous(), right=True) - 1).clamp(
        0, slots - 1
    )
    start_x, start_y = corner_x.gather(1, edge), corner_y.gather(1, edge)
    end_x, end_y = corner_x.gather(1, edge + 1), corner_y.gather(1, edge + 1)
    along_x, along_y = end_x - start_x, end_y - start_y
    dir_x, dir_y = torch.cos(theta), torch.sin(theta)
    across = dir_x * along_y - dir_y * along_x
    # Where the ray from the centre through the pixel meets the edge; corners sit at increasing
    # angles around the centre, so ``across`` has one sign and is zero only on degenerate edges.
    safe = torch.where(across.abs() < 1e-6, torch.full_like(across, 1e-6), across)
    boundary = (start_x * along_y - start_y * along_x) / safe
    inner = _inner(h, w, device).reshape(1, -1)
    inside = ((radius <= boundary) | (radius <= 0.75)) & inner
    return shape_alpha(inside.reshape(n, 1, h, w), dtype)


def ellipse_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random rotated ellipses ``[n, 1, h, w]`` centred in the layer.

    Semi-major axis 50-100 % of the largest radius that keeps the edge inside the layer, minor to
    major ratio 0.35-1, any orientation; the centre pixel always belongs to the shape.
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    generator = check_generator(generator)
    device = generator.device
    reach = max(min(h, w) / 2 - 1.5, 1.0)
    major = reach * _uniform((0.5, 1.0), (n,), generator)
    minor = major * _uniform((0.35, 1.0), (n,), generator)
    angle = _uniform((0.0, math.pi), (n,), generator)
    ys, xs = _centred_grid(h, w, device)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u = xs * cos + ys * sin
    v = -xs * sin + ys * cos
    a2, b2 = (major * major)[:, None, None], (minor * minor)[:, None, None]
    level = u * u / a2 + v * v / b2
    radius = torch.sqrt(xs * xs + ys * ys)
    inside = ((level <= 1.0) | (radius <= 0.75)) & _inner(h, w, device)
    return shape_alpha(inside, dtype)[:, None]


def rectangle_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The whole layer but its outer pixel ring ``[n, 1, h, w]`` (draws nothing).

    The placement's scale, aspect and rotation make it a random rotated rectangle in the image.
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    device = generator.device if generator is not None else torch.device("cpu")
    return shape_alpha(_inner(h, w, device).expand(n, 1, h, w), dtype)


def strip_masks(
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    width: tuple[float, float] = (0.08, 0.2),
    length: tuple[float, float] = (0.6, 0.95),
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Thin rotated strips ``[n, 1, h, w]`` through the layer centre (CutPaste's "scar").

    ``width`` is a fraction of the layer's shorter side (at least 2 px); ``length`` a fraction of
    the longest segment through the centre, at the strip's angle, that stays inside the layer.
    """
    n = check_int(n, "n", 1)
    h, w = check_size(size)
    generator = check_generator(generator)
    width = check_range(width, "width", 0.0, 1.0)
    length = check_range(length, "length", 0.0, 1.0)
    device = generator.device
    angle = _uniform((0.0, math.pi), (n,), generator)
    thickness = (min(h, w) * _uniform(width, (n,), generator)).clamp(min=2.0)
    cos, sin = angle.cos(), angle.sin()
    # Half extents left for the centre line once the strip's own half-thickness (at this angle)
    # and a 1.5 px rim are kept clear of the layer border.
    half_w = (w - 3) / 2 - thickness / 2 * sin.abs()
    half_h = (h - 3) / 2 - thickness / 2 * cos.abs()
    reach = torch.minimum(
        half_w / cos.abs().clamp(min=1e-6), half_h / sin.abs().clamp(min=1e-6)
    ).clamp(min=1.0)
    half_length = reach * _uniform(length, (n,), generator)
    ys, xs = _centred_grid(h, w, device)
    cos, sin = cos[:, None, None], sin[:, None, None]
    along = xs * cos + ys * sin
    across = -xs * sin + ys * cos
    distance = torch.minimum(
        half_length[:, None, None] - along.abs(), thickness[:, None, None] / 2 - across.abs()
    )
    radius = torch.sqrt(xs * xs + ys * ys)
    inside = ((distance >= 0) | (radius <= 0.75)) & _inner(h, w, device)
    return shape_alpha(inside, dtype)[:, None]


def sample_masks(
    shape: str,
    n: int,
    size: int | tuple[int, int],
    generator: torch.Generator,
    *,
    perlin_scale: tuple[int, int] = (0, 6),
    perlin_threshold: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Masks of the named ``shape`` (:data:`MASK_SHAPES`): the one switch every generator uses."""
    check_mask_shape(shape, "shape")
    if shape == "perlin":
        return perlin_masks(
            n, size, generator, scale_range=perlin_scale, threshold=perlin_threshold, dtype=dtype
        )
    if shape == "polygon":
        return polygon_masks(n, size, generator, dtype=dtype)
    if shape == "ellipse":
        return ellipse_masks(n, size, generator, dtype=dtype)
    return rectangle_masks(n, size, generator, dtype=dtype)
