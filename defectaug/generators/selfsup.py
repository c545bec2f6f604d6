"""Self-supervised anomaly generators: defects made from normal images only.

In the anomaly setting there are no real defects to learn from; what works in the literature is
to put *foreign but plausible* texture on normal images and train a segmenter to find it:

* :class:`CutPasteGenerator` (``"cutpaste"``, after Li et al. 2021): the image's own texture out
  of place. The patch a layer lands on is mirrored and circularly shifted, so inside the mask
  the texture is the image's own, and the seams are the anomaly.
* :class:`NSAGenerator` (``"nsa"``, natural synthetic anomalies, Schlüter et al. 2022): a patch of
  *another* normal image, resized, meant to be Poisson-blended (``blend="poisson"`` or
  ``"improved_poisson"``) so no sharp edge gives it away.
* :class:`TextureGenerator` (``"texture"``, after DRAEM, Zavrtanik et al. 2021): a Perlin-shaped
  region filled with a foreign texture mixed in at opacity ``beta``.

Each is a :class:`~defectaug.generators.base.DefectGenerator` with one defect type (its registered
name) and any channel count, so it drops into ``inject_defects`` / ``DefectInjector`` /
``DefectInject``, which place the layers (count, scale, rotation, aspect) and composite them::

    inject_defects(images, None, "cutpaste", blend="alpha", seed=0)
    inject_defects(images, None, NSAGenerator(pool="data/train/good"), blend="poisson")

The mask shape inside each layer is ``mask_shape=`` (:mod:`defectaug.generators.shapes`:
``"perlin"``, ``"polygon"``, ``"ellipse"`` or ``"rectangle"``); ``alpha >= 0.5`` is exactly the
shape, so the returned mask is the visible patch. Layers render at the size they are shown at
(``sample(..., layer_size=)``, which ``inject_defects`` uses), so copied texture stays sharp.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from defectaug._checks import check_int, check_number
from defectaug._io import check_finite, check_unit_range
from defectaug.datasets import IMAGE_SUFFIXES, load_image
from defectaug.generators.base import DefectGenerator, match_channels
from defectaug.generators.registry import register_generator
from defectaug.generators.shapes import (
    check_mask_shape,
    check_range,
    check_size,
    sample_masks,
    strip_masks,
)
from defectaug.layer import DefectLayer

__all__ = [
    "CutPasteGenerator",
    "NSAGenerator",
    "TextureGenerator",
    "load_image_pool",
]

#: Default bound on the images a pool keeps, and on their longer side (pixels): with both at
#: their defaults a 3-channel pool holds at most 64 * 3 * 256 * 256 float32 values (about 50 MB).
DEFAULT_MAX_POOL = 64
DEFAULT_MAX_SIDE = 256
#: Hard limits on ``max_pool`` / ``max_side``, so no argument can ask for an unbounded buffer.
MAX_POOL_LIMIT = 1024
MAX_SIDE_LIMIT = 1024
#: Side fraction of the crop taken from a landing patch when patches stand in for a pool: a
#: layer-sized patch has little to spare, and a small crop of it would only be blown up blurred.
PATCH_CROP = (0.5, 1.0)
#: The DRAEM-style appearance changes :class:`TextureGenerator` picks ``augment`` of per texture.
TEXTURE_AUGMENTATIONS = ("gamma", "brightness", "invert", "solarize", "posterize", "autocontrast")


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[n, C, h, w]`` with antialiasing (shrinking must not alias)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out.clamp(0.0, 1.0)


def _evenly_spaced(count: int, keep: int) -> list[int]:
    """``keep`` indices spread over ``range(count)``: a capped pool still spans all of it."""
    if count <= keep:
        return list(range(count))
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)} if keep > 1 else {0})


def _fit(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """``[1, C, H, W]`` shrunk (keeping its aspect) so its longer side is at most ``max_side``."""
    height, width = image.shape[-2:]
    factor = max_side / max(height, width)
    if factor >= 1.0:
        return image
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return _resize(image, size)


def load_image_pool(
    pool: torch.Tensor | str | os.PathLike[str],
    name: str = "pool",
    *,
    max_pool: int = DEFAULT_MAX_POOL,
    max_side: int = DEFAULT_MAX_SIDE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A bounded image pool: ``(images [N, C, Hm, Wm] float32, sizes [N, 2] int64)``.

    ``pool`` is a float tensor ``[N, C, H, W]`` in [0, 1] (C = 1 or 3) or a folder of images
    (read with :func:`defectaug.datasets.load_image`, not recursively). At most ``max_pool``
    images are kept, evenly spaced over the input (sorted file names for a folder, so only those
    files are read), and each is shrunk to a longer side of at most ``max_side`` pixels. Images
    of different sizes are zero-padded to a common canvas; ``sizes`` holds each one's own
    ``(h, w)``. A folder mixing grey and colour files comes back in colour.
    """
    max_pool = check_int(max_pool, "max_pool", 1, MAX_POOL_LIMIT)
    max_side = check_int(max_side, "max_side", 8, MAX_SIDE_LIMIT)
    if isinstance(pool, torch.Tensor):
        if pool.ndim != 4 or pool.shape[1] not in (1, 3) or not pool.is_floating_point():
            raise ValueError(
                f"{name}: expected a float tensor [N, 1 or 3, H, W] in [0, 1], got shape "
                f"{tuple(pool.shape)} and dtype {pool.dtype}"
            )
        if pool.shape[0] < 1 or min(pool.shape[-2:]) < 2:
            raise ValueError(
                f"{name}: expected at least one image of at least 2x2 pixels, got shape "
                f"{tuple(pool.shape)}"
            )
        check_finite(pool, name)
        check_unit_range(pool, name)
        chosen = _evenly_spaced(pool.shape[0], max_pool)
        images = [_fit(pool[i : i + 1].detach().float().cpu(), max_side) for i in chosen]
    elif isinstance(pool, (str, os.PathLike)):
        folder = Path(pool).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{name}: expected a folder of normal images, got {str(pool)!r}")
        files = sorted(
            path
            for path in folder.iterdir()
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(
                f"{name}: no images ({', '.join(IMAGE_SUFFIXES)}) in folder {str(folder)!r}"
            )
        images = []
        for index in _evenly_spaced(len(files), max_pool):
            # Shrink each image as it is read, so memory stays bounded by the kept pool.
            images.append(_fit(load_image(files[index])[None], max_side))
            if min(images[-1].shape[-2:]) < 2:
                raise ValueError(f"{name}: image {str(files[index])!r} is smaller than 2x2 pixels")
    else:
        raise TypeError(
            f"{name}: expected a float tensor [N, C, H, W] or a folder path, "
            f"got {type(pool).__name__}"
        )
    channels = max(image.shape[1] for image in images)
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    stacked = torch.zeros(len(images), channels, height, width)
    sizes = torch.zeros(len(images), 2, dtype=torch.int64)
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        stacked[i, :, :h, :w] = match_channels(image, channels)[0]
        sizes[i] = torch.tensor([h, w])
    return stacked, sizes


def _check_crop_scale(crop_scale: tuple[float, float]) -> tuple[float, float]:
    checked = check_range(crop_scale, "crop_scale", 0.0, 1.0)
    if checked[0] <= 0.0:
        raise ValueError(f"crop_scale: expected 0 < low <= high <= 1, got {crop_scale!r}")
    return checked


def _optional_pool(
    source: torch.Tensor | str | os.PathLike[str] | None, name: str, max_pool: int, max_side: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``load_image_pool(source)``, or ``(None, None)`` without a source; the bounds are checked
    either way, so a bad ``max_pool`` or ``max_side`` is refused even where no pool is given."""
    if source is not None:
        return load_image_pool(source, name, max_pool=max_pool, max_side=max_side)
    check_int(max_pool, "max_pool", 1, MAX_POOL_LIMIT)
    check_int(max_side, "max_side", 8, MAX_SIDE_LIMIT)
    return None, None


def _crop_resize(
    sources: torch.Tensor,
    sizes: torch.Tensor | None,
    source_index: torch.Tensor,
    size: tuple[int, int],
    crop_scale: tuple[float, float],
    generator: torch.Generator,
    *,
    force_mirror: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random crops of ``sources[source_index]`` resized to ``size``: ``[n, C, h, w]`` float32.

    Each crop has the layer's aspect and a longer side of ``crop_scale`` times the source's
    shorter side, lies fully inside the source's own ``sizes`` (``None``: the full canvas), and
    is mirrored along x and/or y with probability 1/2 each. Items flagged in ``force_mirror``
    are always mirrored, so a crop of the very patch it lands on never reproduces it.
    """
    n = source_index.shape[0]
    h, w = size
    device = generator.device
    draws = torch.rand(5, n, generator=generator, device=device).cpu()
    fraction = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * draws[0]
    flip_x, flip_y = draws[3] < 0.5, draws[4] < 0.5
    if force_mirror is not None:
        flip_x = flip_x | (force_mirror.cpu() & ~flip_y)
    if sizes is None:
        source_sizes = torch.tensor(sources.shape[-2:]).expand(n, 2)
    else:
        source_sizes = sizes[source_index.to(sizes.device)].cpu()
    crops = []
    for i in range(n):
        source_h, source_w = (int(v) for v in source_sizes[i])
        side = float(fraction[i]) * min(source_h, source_w)
        crop_h = side if h >= w else side * h / w
        crop_w = side if w >= h else side * w / h
        crop_h = min(max(round(crop_h), 2), source_h)
        crop_w = min(max(round(crop_w), 2), source_w)
        top = int(float(draws[1, i]) * (source_h - crop_h + 1))
        left = int(float(draws[2, i]) * (source_w - crop_w + 1))
        crop = sources[int(source_index[i]), :, top : top + crop_h, left : left + crop_w]
        dims = [d for d, flip in ((-1, flip_x[i]), (-2, flip_y[i])) if bool(flip)]
        if dims:
            crop = crop.flip(dims)
        crops.append(_resize(crop[None].float(), (h, w)))
    return torch.cat(crops).to(device)


def _shift_mirror(
    patch: torch.Tensor, shift: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``patch [n, C, h, w]`` circularly shifted by a random fraction per axis, then mirrored.

    Shifts lie in ``shift`` (fractions of each side); the mirror axis is x or y at random. With
    shifts of a quarter to three quarters of the side, every pixel moves well away from where
    it was, so the content is the image's texture out of place rather than a copy of it.
    """
    n, _, h, w = patch.shape
    device = patch.device
    draws = torch.rand(3, n, generator=generator, device=generator.device).to(device)
    fraction = shift[0] + (shift[1] - shift[0]) * draws[:2]
    mirror_x = (draws[2] < 0.5)[:, None]
    rows = (torch.arange(h, device=device)[None, :] + (fraction[0] * h).long()[:, None]) % h
    cols = (torch.arange(w, device=device)[None, :] + (fraction[1] * w).long()[:, None]) % w
    rows = torch.where(mirror_x, rows, rows.flip(1))
    cols = torch.where(mirror_x, cols.flip(1), cols)
    items = torch.arange(n, device=device)[:, None, None]
    moved = patch[items, :, rows[:, :, None], cols[:, None, :]]  # [n, h, w, C]
    return moved.permute(0, 3, 1, 2)


def _jitter(content: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Per-item brightness and contrast factors in ``1 +- strength`` (CutPaste's colour jitter)."""
    n = content.shape[0]
    if strength == 0.0:
        # No arithmetic at all, so jitter=0 leaves the moved pixels bit-identical.
        return content
    draws = torch.rand(2, n, generator=generator, device=generator.device).to(content.device)
    brightness = (1.0 + strength * (2.0 * draws[0] - 1.0)).view(n, 1, 1, 1)
    contrast = (1.0 + strength * (2.0 * draws[1] - 1.0)).view(n, 1, 1, 1)
    mean = content.mean(dim=(1, 2, 3), keepdim=True)
    return (((content - mean) * contrast + mean) * brightness).clamp(0.0, 1.0)


def _augment_texture(texture: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """DRAEM's texture augmentation: ``count`` of :data:`TEXTURE_AUGMENTATIONS` per item.

    Every parameter is drawn for every item whatever it picks, so the number of draws (hence
    the rest of the stream) does not depend on the choice. Ops run in a fixed order.
    """
    n = texture.shape[0]
    ops = len(TEXTURE_AUGMENTATIONS)
    device = texture.device
    draws = torch.rand(ops + 5, n, generator=generator, device=generator.device).to(device)
    if count == 0:
        return texture
    picked = draws[:ops].argsort(dim=0).argsort(dim=0) < count  # [ops, n]: a random subset
    gamma = torch.exp((2.0 * draws[ops] - 1.0) * 0.6931).view(n, 1, 1, 1)  # 0.5 .. 2
    gain = (0.8 + 0.4 * draws[ops + 1]).view(n, 1, 1, 1)
    offset = (0.24 * draws[ops + 2] - 0.12).view(n, 1, 1, 1)
    solar = (0.125 + 0.375 * draws[ops + 3]).view(n, 1, 1, 1)
    levels = (2.0 ** (1 + (draws[ops + 4] * 4).floor())).view(n, 1, 1, 1)  # 1 .. 4 bits

    def autocontrast(x: torch.Tensor) -> torch.Tensor:
        low = x.amin(dim=(2, 3), keepdim=True)
        high = x.amax(dim=(2, 3), keepdim=True)
        return (x - low) / (high - low).clamp(min=1e-3)

    transforms = (
        lambda x: x.clamp(min=0.0) ** gamma,
        lambda x: x * gain + offset,
        lambda x: 1.0 - x,
        lambda x: torch.where(x >= solar, 1.0 - x, x),
        lambda x: (x * levels).floor().clamp(max=levels - 1) / (levels - 1),
        autocontrast,
    )
    out = texture
    for index, transform in enumerate(transforms):
        chosen = picked[index].view(n, 1, 1, 1)
        out = torch.where(chosen, transform(out).clamp(0.0, 1.0), out)
    return out


class _SelfSupervisedGenerator(DefectGenerator):
    """What the three generators share: layer size, mask shape, background handling."""

    channels = "any"
    default_mask_shape: ClassVar[str] = "rectangle"
    # A layer is a few small torch operations on its landing patch: the compiled renderer of
    # DefectInject samples it for each sample, as the torch renderer does.
    samples_per_call: ClassVar[bool] = True

    def __init__(
        self,
        layer_size: int | tuple[int, int],
        mask_shape: str | None,
        perlin_scale: tuple[int, int],
        perlin_threshold: float,
    ) -> None:
        super().__init__()
        self.layer_size = check_size(layer_size, "layer_size", minimum=8)
        self.mask_shape = check_mask_shape(
            self.default_mask_shape if mask_shape is None else mask_shape
        )
        self.perlin_scale = check_range(
            perlin_scale, "perlin_scale", 0, 12, integer=True, strict_order=True
        )
        self.perlin_threshold = check_number(
            perlin_threshold, "perlin_threshold", 0, 1, low_open=True, high_open=True
        )
        # Lets .to(device) set the default device of sample(), as for the procedural generator.
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)

    def _start(
        self,
        labels: torch.Tensor,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None,
        options: dict[str, Any],
    ) -> tuple[int, tuple[int, int]]:
        name = type(self).__name__
        if options:
            raise TypeError(
                f"options: unknown sample option(s) {', '.join(sorted(options))} for {name}; "
                "accepted: layer_size"
            )
        if reference is not None:
            raise ValueError(f"reference: {name} does not use reference crops")
        size = self.layer_size if layer_size is None else check_size(layer_size, "layer_size", 8)
        return labels.shape[0], size

    def _start_on_landing(
        self,
        labels: torch.Tensor,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None,
        options: dict[str, Any],
        background: torch.Tensor | None,
        channels: int,
        device: torch.device,
    ) -> tuple[int, tuple[int, int], torch.Tensor]:
        """:meth:`_start` for a generator whose content is made from the landing patches: also
        those patches, checked and resized to the layer."""
        n, size = self._start(labels, reference, layer_size, options)
        assert background is not None  # sample() enforces needs_background
        return n, size, self._images(background, channels, device, size)

    def _masks(
        self, n: int, size: tuple[int, int], generator: torch.Generator, dtype: torch.dtype
    ) -> torch.Tensor:
        return sample_masks(
            self.mask_shape,
            n,
            size,
            generator,
            perlin_scale=self.perlin_scale,
            perlin_threshold=self.perlin_threshold,
            dtype=dtype,
        )

    @staticmethod
    def _images(
        background: torch.Tensor,
        channels: int,
        device: torch.device,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """``background`` checked, as float32 on ``device`` with ``channels`` (and ``size``)."""
        if not background.is_floating_point() or background.shape[1] not in (1, 3):
            raise ValueError(
                "background: expected a float [n, 1 or 3, H, W] tensor in [0, 1], got shape "
                f"{tuple(background.shape)} and dtype {background.dtype}"
            )
        if min(background.shape[-2:]) < 2:
            raise ValueError(
                f"background: expected images of at least 2x2 pixels, got shape "
                f"{tuple(background.shape)}"
            )
        images = match_channels(background.to(device=device, dtype=torch.float32), channels)
        images = images.clamp(0.0, 1.0)
        return images if size is None else _resize(images, size)

    def _patch_sources(
        self, patches: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Which landing patch each item borrows from, and whether it is its own.

        Landing patches of a batch come from other images, or other places of one image, so
        item ``i`` borrows patch ``(i + k) % n`` with one random ``k`` in ``1 .. n - 1``; a
        single item has only its own patch.
        """
        n = patches.shape[0]
        items = torch.arange(n)
        if n == 1:
            return items, torch.ones(1, dtype=torch.bool)
        k = int(torch.randint(1, n, (1,), generator=generator, device=generator.device))
        return (items + k) % n, torch.zeros(n, dtype=torch.bool)

    def _foreign_crops(
        self,
        pool: torch.Tensor | None,
        pool_sizes: torch.Tensor | None,
        crop_scale: tuple[float, float],
        patches: torch.Tensor | None,
        n: int,
        size: tuple[int, int],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """``n`` crops resized to ``size`` from somewhere else than each item's own landing:
        random images of ``pool`` (cropped by ``crop_scale``) or, without a pool, other items'
        ``patches`` (see :meth:`_patch_sources`)."""
        if pool is not None:
            index = torch.randint(
                0, pool.shape[0], (n,), generator=generator, device=generator.device
            ).cpu()
            return _crop_resize(pool, pool_sizes, index, size, crop_scale, generator)
        assert patches is not None
        index, own = self._patch_sources(patches, generator)
        return _crop_resize(patches, None, index, size, PATCH_CROP, generator, force_mirror=own)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_shape={self.mask_shape!r}"


class CutPasteGenerator(_SelfSupervisedGenerator):
    """CutPaste: the image's own texture out of place (Li et al. 2021), one type ``"cutpaste"``.

    Content is the landing patch (``background`` in the layer frame, which ``inject_defects``
    passes) circularly shifted by a random ``shift`` fraction of each side and mirrored, then
    brightness / contrast jittered; the texture inside the mask is the image's own, and its
    seams with the surroundings are the anomaly. Works with every ``blend``.

    Args:
        layer_size: native ``(h, w)`` (or one int, >= 8); ``sample(..., layer_size=)`` overrides.
        variant: ``"patch"`` (the ``mask_shape``) or ``"scar"`` (a thin strip at a random angle,
            CutPaste-scar; it draws its own shape, so ``mask_shape`` must stay unset).
        mask_shape: ``"rectangle"`` (default, the paper's patch), ``"perlin"``, ``"polygon"`` or
            ``"ellipse"``.
        shift: range of the circular shift, as a fraction of each side, in [0, 1].
        jitter: brightness and contrast jitter strength in [0, 1) (factors ``1 +- jitter``).
        scar_width: strip width range as a fraction of the layer's shorter side (``"scar"``).
        perlin_scale, perlin_threshold: for ``mask_shape="perlin"``: the ``2**k`` periods range
            and the threshold of :func:`~defectaug.generators.shapes.perlin_masks`.

    ``sample`` needs ``background`` (``[n, C, h, w]``; resized to the layer size if different).
    """

    defect_types = ("cutpaste",)
    needs_background: ClassVar[bool] = True

    def __init__(
        self,
        layer_size: int | tuple[int, int] = (64, 64),
        *,
        variant: str = "patch",
        mask_shape: str | None = None,
        shift: tuple[float, float] = (0.25, 0.75),
        jitter: float = 0.1,
        scar_width: tuple[float, float] = (0.08, 0.2),
        perlin_scale: tuple[int, int] = (0, 3),
        perlin_threshold: float = 0.5,
    ) -> None:
        if variant not in ("patch", "scar"):
            raise ValueError(f"variant: expected 'patch' or 'scar', got {variant!r}")
        if variant == "scar" and mask_shape is not None:
            raise ValueError(
                f"mask_shape: variant='scar' draws its own strip shape; leave mask_shape unset "
                f"(got {mask_shape!r})"
            )
        super().__init__(layer_size, mask_shape, perlin_scale, perlin_threshold)
        self.variant = variant
        self.shift = check_range(shift, "shift", 0.0, 1.0)
        self.jitter = check_number(jitter, "jitter", 0, 1, high_open=True)
        self.scar_width = check_range(scar_width, "scar_width", 0.0, 1.0)

    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None = None,
        **options: Any,
    ) -> DefectLayer:
        n, size, patch = self._start_on_landing(
            labels, reference, layer_size, options, background, channels, device
        )
        if self.variant == "scar":
            alpha = strip_masks(n, size, generator, width=self.scar_width, dtype=dtype)
        else:
            alpha = self._masks(n, size, generator, dtype)
        content = _shift_mirror(patch, self.shift, generator)
        content = _jitter(content, self.jitter, generator)
        return DefectLayer(content.to(dtype), alpha.to(device), labels, self.defect_types)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}"


class NSAGenerator(_SelfSupervisedGenerator):
    """Natural synthetic anomalies (Schlüter et al. 2022), one type ``"nsa"``.

    Content is a random crop of a random *other* normal image, resized to the layer; ``alpha``
    is the mask shape. The paper blends these patches in the gradient domain: use
    ``blend="poisson"`` or ``"improved_poisson"`` (``"alpha"`` pastes them with hard seams).

    Args:
        pool: normal images to take patches from: a float tensor ``[N, C, H, W]`` in [0, 1] or a
            folder (see :func:`load_image_pool` for the bounds on memory). ``None``: each
            ``sample`` call borrows the ``background`` patches instead, item ``i`` a crop of
            another item's landing patch (other images of the batch, or other places of the same
            image), mirrored; a single item gets a mirrored crop of its own patch.
        layer_size: native ``(h, w)`` (or one int, >= 8); ``sample(..., layer_size=)`` overrides.
        mask_shape: ``"rectangle"`` (default, the paper's patch), ``"perlin"``, ``"polygon"`` or
            ``"ellipse"``.
        crop_scale: range of the crop's longer side as a fraction of the pool image's shorter
            side (pool crops only; borrowed patches use 0.5 to 1 of the patch).
        max_pool, max_side: bounds on the kept pool (images, longer side in pixels).
        perlin_scale, perlin_threshold: for ``mask_shape="perlin"``.

    With a pool, ``background`` given to ``sample`` is ignored, and ``inject_defects`` does not
    compute it; without one ``sample`` needs it (``needs_background`` is set per instance).
    """

    defect_types = ("nsa",)

    def __init__(
        self,
        pool: torch.Tensor | str | os.PathLike[str] | None = None,
        layer_size: int | tuple[int, int] = (64, 64),
        *,
        mask_shape: str | None = None,
        crop_scale: tuple[float, float] = (0.1, 0.4),
        max_pool: int = DEFAULT_MAX_POOL,
        max_side: int = DEFAULT_MAX_SIDE,
        perlin_scale: tuple[int, int] = (0, 3),
        perlin_threshold: float = 0.5,
    ) -> None:
        super().__init__(layer_size, mask_shape, perlin_scale, perlin_threshold)
        self.crop_scale = _check_crop_scale(crop_scale)
        images, sizes = _optional_pool(pool, "pool", max_pool, max_side)
        # Buffers follow .to(device) but stay out of state_dict: the pool is data, not weights.
        self.register_buffer("pool", images, persistent=False)
        self.register_buffer("pool_sizes", sizes, persistent=False)
        # Without a pool the landing patches are the only source of foreign texture.
        self.needs_background = images is None

    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None = None,
        **options: Any,
    ) -> DefectLayer:
        n, size = self._start(labels, reference, layer_size, options)
        alpha = self._masks(n, size, generator, dtype)
        if self.pool is None:
            assert background is not None  # needs_background is set without a pool
            patches = self._images(background, channels, device)
        else:
            patches = None
        content = self._foreign_crops(
            self.pool, self.pool_sizes, self.crop_scale, patches, n, size, generator
        )
        content = match_channels(content.to(device), channels)
        return DefectLayer(content.to(dtype), alpha.to(device), labels, self.defect_types)

    def extra_repr(self) -> str:
        pool = "none" if self.pool is None else f"{self.pool.shape[0]} images"
        return f"{super().extra_repr()}, pool={pool}"


class TextureGenerator(_SelfSupervisedGenerator):
    """DRAEM-style foreign texture (Zavrtanik et al. 2021), one type ``"texture"``.

    Content is ``beta * texture + (1 - beta) * landing_patch`` with ``beta`` drawn per item from
    ``beta_range``; ``alpha`` is the mask shape (Perlin blobs by default), so the mask is where
    the texture lands. The texture is a random crop of a ``source`` image (for instance a folder
    of DTD textures), changed by ``augment`` random DRAEM-style appearance operations
    (:data:`TEXTURE_AUGMENTATIONS`). Grey images get grey textures (luminance), colour ones
    colour textures.

    Args:
        source: texture images: a float tensor ``[N, C, H, W]`` in [0, 1] or a folder (bounded as
            by :func:`load_image_pool`). ``None``: the ``background`` patches of each call serve
            as source, as for :class:`NSAGenerator` without a pool.
        layer_size: native ``(h, w)`` (or one int, >= 8); ``sample(..., layer_size=)`` overrides.
        beta_range: range of the texture's opacity inside the mask, within [0, 1].
        mask_shape: ``"perlin"`` (default), ``"polygon"``, ``"ellipse"`` or ``"rectangle"``.
        augment: how many appearance operations per texture (0 to 6; DRAEM uses 3).
        crop_scale: range of the crop's longer side as a fraction of the source image's shorter
            side (``source`` crops only).
        max_pool, max_side: bounds on the kept ``source`` images.
        perlin_scale, perlin_threshold: ``2**k`` noise periods across the layer (``k`` from
            ``perlin_scale[0]`` to ``perlin_scale[1] - 1``) and the noise threshold.

    ``sample`` needs ``background`` (the landing patches, mixed in at ``1 - beta``).
    """

    defect_types = ("texture",)
    needs_background: ClassVar[bool] = True
    default_mask_shape: ClassVar[str] = "perlin"

    def __init__(
        self,
        source: torch.Tensor | str | os.PathLike[str] | None = None,
        layer_size: int | tuple[int, int] = (64, 64),
        *,
        beta_range: tuple[float, float] = (0.1, 1.0),
        mask_shape: str | None = None,
        augment: int = 3,
        crop_scale: tuple[float, float] = (0.1, 0.4),
        max_pool: int = DEFAULT_MAX_POOL,
        max_side: int = DEFAULT_MAX_SIDE,
        perlin_scale: tuple[int, int] = (0, 3),
        perlin_threshold: float = 0.5,
    ) -> None:
        super().__init__(layer_size, mask_shape, perlin_scale, perlin_threshold)
        self.beta_range = check_range(beta_range, "beta_range", 0.0, 1.0)
        self.augment = check_int(augment, "augment", 0, len(TEXTURE_AUGMENTATIONS))
        self.crop_scale = _check_crop_scale(crop_scale)
        images, sizes = _optional_pool(source, "source", max_pool, max_side)
        self.register_buffer("source", images, persistent=False)
        self.register_buffer("source_sizes", sizes, persistent=False)

    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None = None,
        **options: Any,
    ) -> DefectLayer:
        n, size, landing = self._start_on_landing(
            labels, reference, layer_size, options, background, channels, device
        )
        alpha = self._masks(n, size, generator, dtype)
        texture = self._foreign_crops(
            self.source, self.source_sizes, self.crop_scale, landing, n, size, generator
        )
        texture = match_channels(texture.to(device), channels)
        texture = _augment_texture(texture, self.augment, generator)
        low, high = self.beta_range
        beta = low + (high - low) * torch.rand(n, generator=generator, device=generator.device)
        beta = beta.to(device).view(n, 1, 1, 1)
        content = beta * texture + (1.0 - beta) * landing
        return DefectLayer(
            content.clamp(0.0, 1.0).to(dtype), alpha.to(device), labels, self.defect_types
        )

    def extra_repr(self) -> str:
        source = "backgrounds" if self.source is None else f"{self.source.shape[0]} images"
        return f"{super().extra_repr()}, source={source}, beta_range={self.beta_range}"


register_generator("cutpaste", CutPasteGenerator)
register_generator("nsa", NSAGenerator)
register_generator("texture", TextureGenerator)
