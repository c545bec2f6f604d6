"""Resampling layers into place: bilinear affine warps, anti-aliasing and canvas windows.

:func:`warp_layer` resamples generated layers into their canvases (bilinear ``grid_sample`` with
the affine map, as kornia's ``warp_affine``; content and alpha share it); :func:`warp_relief` does
the same for procedural relief maps, as the compiled renderer reads them, and
:func:`layer_backgrounds` the other way round: the image patch each layer will cover, in the
layer's own frame. :func:`antialias` low-passes layers that shrink, for every renderer.
:func:`crop_windows` reads image-sized maps (such as the ROI) under each placed canvas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from defectaug.layer import DefectLayer
from defectaug.placement.geometry import LayerGeometry


def _homogeneous(matrix: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=matrix.dtype).expand(matrix.shape[0], 1, 3)
    return torch.cat([matrix, bottom], dim=1)


_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _sample_affine(
    source: torch.Tensor,
    output_to_source: torch.Tensor,
    size: tuple[int, int],
    padding_mode: str,
) -> torch.Tensor:
    """Bilinear resampling of ``source [N, C, h, w]`` onto a ``size`` grid.

    ``output_to_source [N, 2, 3]`` maps output pixel ``(x, y)`` to source pixel coordinates.
    This is what kornia's ``warp_affine`` does (its matrix is the inverse map), written directly
    on ``affine_grid`` / ``grid_sample`` because at layer sizes kornia's per-call matrix
    normalisation costs about five times the sampling itself.
    """
    n, channels, source_h, source_w = source.shape
    out_h, out_w = size
    pixels_to_unit = torch.tensor(
        [[2.0 / max(source_w - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(source_h - 1, 1), -1.0]],
        dtype=torch.float64,
    )
    unit_to_pixels = torch.tensor(
        [[(out_w - 1) / 2, 0.0, (out_w - 1) / 2], [0.0, (out_h - 1) / 2, (out_h - 1) / 2]],
        dtype=torch.float64,
    )
    theta = (
        _homogeneous(pixels_to_unit[None])
        @ _homogeneous(output_to_source.double().cpu())
        @ _homogeneous(unit_to_pixels[None])
    )[:, :2]
    # A float16 / bfloat16 grid misplaces samples by a sizeable fraction of a pixel on images
    # a few hundred px wide (CPU grid_sample even returns NaN there): resample in float32.
    dtype = source.dtype
    if dtype in _HALF_DTYPES:
        source = source.float()
    grid = F.affine_grid(
        theta.to(device=source.device, dtype=source.dtype),
        [n, channels, out_h, out_w],
        align_corners=True,
    )
    return F.grid_sample(
        source, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    ).to(dtype)


def layer_backgrounds(
    images: torch.Tensor, image_index: torch.Tensor, geometry: LayerGeometry
) -> torch.Tensor:
    """The image patch each layer will cover, resampled into the layer's own frame.

    Returns ``[N, C, h, w]``: pixel ``(y, x)`` is the image pixel that layer pixel ``(y, x)`` will
    land on, so a generator that shades this patch produces content whose texture lines up with
    the image once warped back.
    """
    dtype = images.dtype
    if dtype in _HALF_DTYPES:
        # Converted here, before the expand: converting the expanded view would copy the image
        # once per layer.
        images = images.float()
    if images.shape[0] == 1:
        sources = images.expand(len(image_index), -1, -1, -1)
    else:
        sources = images[image_index.to(images.device)]
    return _sample_affine(sources, geometry.to_image, geometry.layer_size, "border").to(dtype)


@dataclass(frozen=True)
class WarpedLayers:
    """Layers resampled to their placements, all on one shared canvas.

    Attributes:
        layer: ``DefectLayer`` of ``[N, C, Hc, Wc]`` canvases.
        offsets: ``[N, 2]`` int64 ``(top, left)`` of each canvas in the image.
        boxes: ``[N, 4]`` int64 ``(x0, y0, x1, y1)`` of each layer's own box in the image.
    """

    layer: DefectLayer
    offsets: torch.Tensor
    boxes: torch.Tensor


def blur_kernel(zoom: float, height: int, width: int) -> tuple[int, float] | None:
    """``(taps, sigma)`` of the Gaussian :func:`antialias` low-passes a ``height x width``
    layer shrinking by ``zoom`` with, or ``None`` where it leaves the layer as it is."""
    taps, sigma = blur_taps(zoom, height, width)
    return (taps, sigma) if taps else None


def blur_taps(zoom: float, height: int, width: int) -> tuple[int, float]:
    """:func:`blur_kernel` as plain numbers, ``taps`` 0 for no blur: the compiled renderer
    compiles this very function (``defectaug._kernels``)."""
    sigma = (1.0 / zoom - 1.0) / 2.0
    taps = min(2 * math.ceil(3 * sigma) + 1, (min(height, width) - 1) // 2 * 2 + 1)
    return (taps, sigma) if sigma >= 0.5 and taps >= 3 else (0, sigma)


def antialias(stack: torch.Tensor, zoom: Sequence[float], border_type: str) -> torch.Tensor:
    """``stack [n, P, h, w]`` with the items that shrink by more than 2x (``zoom < 0.5``)
    low-passed, so thin structures don't alias away when warped.

    Item ``i`` is blurred with sigma ``(1 / zoom[i] - 1) / 2`` and a kernel reaching 3 sigma
    (at most the layer's shorter side); the others are returned as they are. Every renderer
    low-passes through here, so a layer shrinks alike whichever renders it.
    """
    h, w = stack.shape[-2:]
    groups: dict[int, list[tuple[int, float]]] = {}
    for item, value in enumerate(zoom):
        blur = blur_kernel(value, h, w)
        if blur is not None:
            groups.setdefault(blur[0], []).append((item, blur[1]))
    out = stack
    for kernel, members in groups.items():
        sigmas = torch.tensor(
            [[sigma, sigma] for _, sigma in members], dtype=stack.dtype, device=stack.device
        )
        if len(members) == len(stack):
            return kornia.filters.gaussian_blur2d(
                stack, (kernel, kernel), sigmas, border_type=border_type
            )
        index = torch.tensor([item for item, _ in members], device=stack.device)
        if out is stack:
            out = stack.clone()
        out[index] = kornia.filters.gaussian_blur2d(
            stack[index], (kernel, kernel), sigmas, border_type=border_type
        )
    return out


def warp_layer(layer: DefectLayer, geometry: LayerGeometry) -> WarpedLayers:
    """Warp ``layer`` (one item per placement) into its canvas (bilinear, as ``warp_affine``).

    Content and alpha share the matrix and one warp; content is continued by border replication
    (no dark fringe where alpha fades out), alpha is zero outside the layer. Layers shrinking by
    more than 2x are low-passed first.
    """
    n = geometry.to_image.shape[0]
    if len(layer) != n:
        raise ValueError(f"layer: expected {n} items (one per placement), got {len(layer)}")
    if n == 0:
        raise ValueError("geometry: no layer to warp (every image drew a count of 0)")
    if layer.size != geometry.layer_size:
        raise ValueError(
            f"layer: size {layer.size} differs from the size {geometry.layer_size} the geometry "
            "was computed for"
        )
    device = layer.content.device
    smoothed = antialias(
        torch.cat([layer.content, layer.alpha], dim=1), geometry.zoom.tolist(), "replicate"
    )
    channels = layer.content.shape[1]
    # One warp for content and alpha: a 1 px ring (content replicated, alpha 0) plus border
    # sampling gives content without dark fringes and alpha exactly 0 outside the layer.
    ring = (1, 1, 1, 1)
    stacked = torch.cat(
        [
            F.pad(smoothed[:, :channels], ring, mode="replicate"),
            F.pad(smoothed[:, channels:], ring),
        ],
        dim=1,
    )
    padded_to_canvas = geometry.to_canvas()
    padded_to_canvas[:, :, 2] -= padded_to_canvas[:, :, :2].sum(dim=2)
    canvas_to_padded = torch.linalg.inv(_homogeneous(padded_to_canvas))[:, :2]
    warped_stack = _sample_affine(stacked, canvas_to_padded, geometry.canvas_size, "border")
    warped_stack = warped_stack.clamp(0, 1)
    warped = DefectLayer(
        warped_stack[:, :channels], warped_stack[:, channels:], layer.labels, layer.type_names
    )
    return WarpedLayers(warped, geometry.offsets.to(device), geometry.boxes.to(device))


def warp_relief(planes: torch.Tensor, geometry: LayerGeometry) -> torch.Tensor:
    """Relief planes ``[N, P, h, w]`` (:class:`~defectaug.generators.relief.ReliefMaps`)
    resampled into their canvases ``[N, P, Hc, Wc]``: low-passed as :func:`antialias` and
    bilinear with zeros outside the layer, as the compiled renderer reads them
    (:func:`defectaug._kernels.composite_tracked`)."""
    smoothed = antialias(planes, geometry.zoom.tolist(), "constant")
    canvas_to_layer = torch.linalg.inv(_homogeneous(geometry.to_canvas()))[:, :2]
    return _sample_affine(smoothed, canvas_to_layer, geometry.canvas_size, "zeros")


def crop_windows(
    maps: torch.Tensor, image_index: torch.Tensor, offsets: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Windows ``[N, C, h, w]`` of ``maps [B, C, H, W]`` at ``offsets`` (top, left), 0 outside."""
    _, _, height, width = maps.shape
    h, w = size
    device = maps.device
    image_index, offsets = image_index.to(device), offsets.to(device)
    rows = offsets[:, :1] + torch.arange(h, device=device)
    cols = offsets[:, 1:] + torch.arange(w, device=device)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[
        :, None, :
    ]
    gathered = maps[
        image_index[:, None, None],
        :,
        rows.clamp(0, height - 1)[:, :, None],
        cols.clamp(0, width - 1)[:, None, :],
    ]
    windows = gathered.permute(0, 3, 1, 2)
    return (
        windows * inside[:, None].to(windows.dtype)
        if windows.is_floating_point()
        else windows & inside[:, None]
    )
