"""Training crops for learned generators: one layer per connected real defect region.

Each connected region of a defect mask is cut out with a margin
(``defectaug.datasets.defect_crops``),
its surrounding surface is removed (``fill_outside_mask``: the seed's "only defect contents are
used") and it is squared and resized to the layer size, with the region's mask as the target alpha.

Background-aware generators (Defect-GAN) learn from whole surfaces instead: ``load_scene_crops``
keeps the real pixels around each defect and adds crops of the split's normal images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from defectaug.generators.dcdgan import padded_side, prepare_defect_crop, square_resize
from defectaug.training import memory


@dataclass(frozen=True)
class DefectCropSet:
    """Real defect layers ready for training.

    Attributes:
        content: ``[N, C, S, S]`` float in [0, 1], the surface around the defect a constant.
        alpha: ``[N, 1, S, S]`` float in [0, 1], the region's mask.
        labels: ``[N]`` int64 index into ``type_names``.
        type_names: class names.
        native_sizes: per class, the side in pixels of each crop's square before resizing.
    """

    content: torch.Tensor
    alpha: torch.Tensor
    labels: torch.Tensor
    type_names: tuple[str, ...]
    native_sizes: dict[str, list[int]]

    def __post_init__(self) -> None:
        n = self.content.shape[0]
        if self.content.ndim != 4 or self.alpha.shape != (n, 1, *self.content.shape[-2:]):
            raise ValueError(
                f"crops: content {tuple(self.content.shape)} and alpha {tuple(self.alpha.shape)} "
                "must be "
                "[N, C, S, S] and [N, 1, S, S]"
            )
        if self.labels.shape != (n,) or self.labels.dtype != torch.int64:
            raise ValueError(
                f"labels: expected int64 [{n}], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        missing = [
            name
            for index, name in enumerate(self.type_names)
            if not bool((self.labels == index).any())
        ]
        if n == 0 or missing:
            raise ValueError(
                f"crops: every defect type needs at least one crop; none for {missing or 'any'}"
            )

    def __len__(self) -> int:
        return self.content.shape[0]

    @property
    def by_class(self) -> list[torch.Tensor]:
        """Per class, the indices of its crops."""
        return [
            torch.nonzero(self.labels == index).flatten() for index in range(len(self.type_names))
        ]

    def counts(self) -> dict[str, int]:
        return {
            name: int((self.labels == index).sum()) for index, name in enumerate(self.type_names)
        }

    def to(self, device: torch.device | str) -> DefectCropSet:
        return DefectCropSet(
            self.content.to(device),
            self.alpha.to(device),
            self.labels.to(device),
            self.type_names,
            self.native_sizes,
        )


def crops_from_regions(
    regions: Sequence[tuple[torch.Tensor, torch.Tensor, str]],
    type_names: Sequence[str],
    layer_size: int,
    *,
    min_area: int = 16,
) -> DefectCropSet:
    """Build a ``DefectCropSet`` from ``(content [C, h, w], alpha [1, h, w], type name)`` regions.

    Regions whose mask covers fewer than ``min_area`` pixels are dropped: the magnetic-tile masks
    hold a few single-pixel specks that are annotation noise, not defects.
    """
    type_names = tuple(type_names)
    _check_crops_fit(regions, layer_size)
    contents, alphas, labels = [], [], []
    native_sizes: dict[str, list[int]] = {name: [] for name in type_names}
    for content, alpha, name in regions:
        if name not in type_names:
            raise ValueError(f"regions: defect type {name!r} is not one of {type_names}")
        if float((alpha >= 0.5).sum()) < min_area:
            continue
        prepared_content, prepared_alpha = prepare_defect_crop(
            content[None].float(), alpha[None].float(), layer_size
        )
        contents.append(prepared_content[0])
        alphas.append(prepared_alpha[0])
        labels.append(type_names.index(name))
        native_sizes[name].append(padded_side(*content.shape[-2:]))
    if not contents:
        raise ValueError(f"regions: no defect region of at least {min_area} pixels")
    return DefectCropSet(
        torch.stack(contents),
        torch.stack(alphas),
        torch.tensor(labels, dtype=torch.int64),
        type_names,
        native_sizes,
    )


def _check_crops_fit(
    regions: Sequence[tuple[torch.Tensor, torch.Tensor, str]], layer_size: int
) -> None:
    """Refuse a ``layer_size`` whose crops alone would not fit in memory, before allocating them.

    Every region becomes ``(C + 1) * layer_size**2`` floats, held twice while the list is stacked.
    """
    if not regions:
        return
    channels = int(regions[0][0].shape[0])
    needed = 2 * len(regions) * (channels + 1) * layer_size * layer_size * 4
    available = memory.available_bytes("cpu")
    if available is not None and needed > available:
        raise memory.TrainingResourceError(
            f"layer_size (--layer-size) {layer_size}: the {len(regions)} training crops need "
            f"about {memory.format_bytes(needed)} at this size, but cpu has "
            f"{memory.format_bytes(available)} available; lower --layer-size"
        )


def load_defect_crops(
    root: str | Path,
    *,
    split: str | None,
    types: Sequence[str],
    layer_size: int,
    margin: int = 4,
    min_area: int = 16,
) -> DefectCropSet:
    """Every connected defect region of ``types`` in ``root``'s ``split``, as training layers.

    Images without a mask or with an empty mask contribute nothing. Grayscale data gives 1-channel
    content and RGB data 3-channel content, as the images come.
    """
    from defectaug.datasets import defect_crops, load_image, load_mask, read_defect_dataset

    records = read_defect_dataset(root, split=split, types=list(types))
    regions = []
    for record in records:
        if record.mask is None or record.label not in types:
            continue
        image = load_image(record.image)
        mask = load_mask(record.mask)
        for content, alpha in defect_crops(image, mask, margin):
            regions.append((content, alpha, record.label))
    if not regions:
        raise ValueError(
            f"data: no defect regions of types {list(types)} found in {str(root)!r} split {split!r}"
        )
    return crops_from_regions(regions, types, layer_size, min_area=min_area)


#: The label of defect-free images in a defect dataset.
NORMAL_LABEL = "good"


@dataclass(frozen=True)
class SceneCropSet(DefectCropSet):
    """Real defect images and normal images, as a background-aware generator trains on them.

    ``content`` holds square windows of real defect images (surface kept), ``alpha`` the defect
    masks in them (every region of the image, not only the one the window is centred on),
    ``normals`` ``[M, C, S, S]`` crops of normal images at the windows' range of scales.
    """

    normals: torch.Tensor

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normals.ndim != 4 or self.normals.shape[1:] != self.content.shape[1:]:
            raise ValueError(
                f"normals: expected [M, {', '.join(map(str, self.content.shape[1:]))}], got "
                f"{tuple(self.normals.shape)}"
            )
        if self.normals.shape[0] == 0:
            raise ValueError("normals: expected at least one normal image crop")

    def to(self, device: torch.device | str) -> SceneCropSet:
        return SceneCropSet(
            self.content.to(device),
            self.alpha.to(device),
            self.labels.to(device),
            self.type_names,
            self.native_sizes,
            self.normals.to(device),
        )


def square_window(
    height: int, width: int, box: tuple[int, int, int, int], side: int
) -> tuple[int, int, int]:
    """``(top, left, side)`` of a square of ``side`` centred on ``box`` (top, bottom, left,
    right), shrunk to fit and shifted to lie inside a ``height`` x ``width`` image."""
    top, bottom, left, right = box
    side = min(side, height, width)
    y = min(max((top + bottom) // 2 - side // 2, 0), height - side)
    x = min(max((left + right) // 2 - side // 2, 0), width - side)
    return y, x, side


def load_scene_crops(
    root: str | Path,
    *,
    split: str | None,
    types: Sequence[str],
    layer_size: int,
    min_area: int = 16,
    normals_per_image: int = 4,
    seed: int = 0,
) -> SceneCropSet:
    """Defect windows with their masks and normal crops of ``root``'s ``split``.

    Each connected defect region of at least ``min_area`` px gives one square window around it,
    the side ``prepare_defect_crop`` gives the region (real surface kept, the window moved inside
    the image at its border), resized to ``layer_size``. Each normal (``good``) image gives
    ``normals_per_image`` squares at random places, their sides drawn from the windows' sides, so
    backgrounds and defect windows share one range of scales. Deterministic for ``seed``.
    """
    from defectaug.datasets import defect_regions, load_image, load_mask, read_defect_dataset

    type_names = tuple(types)
    records = read_defect_dataset(root, split=split, types=[*type_names, NORMAL_LABEL])
    windows, masks, labels = [], [], []
    native_sizes: dict[str, list[int]] = {name: [] for name in type_names}
    normal_paths = []
    for record in records:
        if record.label == NORMAL_LABEL:
            normal_paths.append(record.image)
            continue
        if record.mask is None or record.label not in type_names:
            continue
        image, mask = load_image(record.image), load_mask(record.mask)
        height, width = image.shape[-2:]
        for region in defect_regions(mask, min_area):
            rows = torch.nonzero(region[0].any(dim=1)).flatten()
            cols = torch.nonzero(region[0].any(dim=0)).flatten()
            box = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
            side = padded_side(box[1] - box[0], box[3] - box[2])
            y, x, side = square_window(height, width, box, side)
            crop = image[None, :, y : y + side, x : x + side]
            crop_mask = mask[None, :, y : y + side, x : x + side].float()
            windows.append(square_resize(crop, layer_size)[0].clamp(0.0, 1.0))
            masks.append(square_resize(crop_mask, layer_size)[0].clamp(0.0, 1.0))
            labels.append(type_names.index(record.label))
            native_sizes[record.label].append(side)
    if not windows:
        raise ValueError(
            f"data: no defect regions of types {list(type_names)} found in {str(root)!r} "
            f"split {split!r}"
        )
    if not normal_paths:
        raise ValueError(
            f"data: no normal ({NORMAL_LABEL!r}) images in {str(root)!r} split {split!r}; a "
            "background-aware generator learns to deface them"
        )
    sides = torch.tensor([s for name in type_names for s in native_sizes[name]])
    rng = torch.Generator().manual_seed(seed)
    normals = []
    for path in normal_paths:
        image = load_image(path)
        if image.shape[0] != windows[0].shape[0]:
            image = image.mean(dim=0, keepdim=True).expand(windows[0].shape[0], -1, -1)
        height, width = image.shape[-2:]
        for _ in range(normals_per_image):
            side = int(sides[int(torch.randint(len(sides), (1,), generator=rng))])
            side = min(side, height, width)
            y = int(torch.randint(height - side + 1, (1,), generator=rng))
            x = int(torch.randint(width - side + 1, (1,), generator=rng))
            crop = image[None, :, y : y + side, x : x + side]
            normals.append(square_resize(crop, layer_size)[0].clamp(0.0, 1.0))
    return SceneCropSet(
        torch.stack(windows),
        torch.stack(masks),
        torch.tensor(labels, dtype=torch.int64),
        type_names,
        native_sizes,
        torch.stack(normals),
    )
