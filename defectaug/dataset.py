"""``SyntheticDefectDataset``: defect images synthesised on the fly from normal backgrounds.

Item ``i`` is a pure function of ``(seed, i)``: the background it uses and every random draw come
from a generator seeded with a hash of the two, so the item is the same in every worker, epoch,
process and DDP rank. That makes the dataset safe with ``DistributedSampler`` and lets a run
resume exactly. It mixes with a real dataset through ``ConcatDataset``, ImageFolder style. Give
both the same v2 pipeline (so sizes, dtype and range agree), ``to_rgb=True`` (``ImageFolder``
opens images as RGB) and a ``label_map`` onto the real class ids, and a ``DataLoader`` batches
them::

    transform = v2.Compose(
        [v2.ToImage(), v2.RandomResizedCrop(224), v2.ToDtype(torch.float32, scale=True)]
    )
    real = ImageFolder("data/train", transform=transform)  # classes good, scratch, spot
    synthetic = SyntheticDefectDataset(
        "data/train/good",  # normal images are the backgrounds
        defect_types=["scratch", "spot"],
        label_map={name: real.class_to_idx[name] for name in ("scratch", "spot")},
        length=2000,
        transform=transform,
        to_rgb=True,
    )
    loader = DataLoader(ConcatDataset([real, synthetic]), batch_size=32, shuffle=True)
    images, labels = next(iter(loader))  # [32, 3, 224, 224] float32, [32] int64

With ``target="mask"`` / ``"dict"`` the same transform sees image, mask (and boxes) together.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from defectaug._checks import check_choice, check_int
from defectaug._io import check_unit_range, to_float_image
from defectaug._legacy import legacy_positional
from defectaug._seeding import SeedLike, as_seed, check_seed, child_seed
from defectaug.batch import (
    DEFAULT_ASPECT,
    DEFAULT_ROTATION,
    DEFAULT_SCALE,
    NO_DEFECT,
    BlendMode,
    check_blend,
    check_blend_options,
    composite_visible,
    mix_seed,
    plan_defects,
    resolve_defect_types,
    resolve_generator,
)
from defectaug.compositing._regions import mask_boxes
from defectaug.datasets import image_to_tensor, load_image
from defectaug.generators.base import DefectGenerator
from defectaug.labels import BACKGROUND, check_label_map, check_mask_mode, class_masks, type_label
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY
from defectaug.placement import CountArg, PlacementOptions, RangeArg, RoiArg, check_image_size

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TARGETS = ("label", "mask", "dict")
BackgroundsArg = str | Path | Sequence[str | Path] | Dataset | None
#: Draws tried per item until its defects show (each from the item's next sub-seed). More than
#: ``defectaug.transforms.DRAW_ATTEMPTS`` (4): an item that never shows raises, so it gets more
#: tries. Changing either count changes seeded items, so they are kept apart.
DRAW_ATTEMPTS = 8


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted so the order is the same everywhere."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"backgrounds: folder not found: {root}")
    return sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as float ``[1, C, H, W]`` in [0, 1] (grayscale files give 1 channel).

    Scaled by the file's bit depth; a file that cannot be decoded raises ``ValueError`` naming
    it (see :func:`defectaug.datasets.load_image`).
    """
    return load_image(path)[None]


_BACKGROUND_HINT = (
    "give the backgrounds dataset a transform that ends in v2.ToDtype(torch.float32, scale=True) "
    "(without scale=True values stay in [0, 255]) and leave v2.Normalize for after the defects"
)


def _names_a_generator(value: Any) -> bool:
    """Whether ``value`` is a generator or a name / folder ``load_generator`` would load."""
    if isinstance(value, DefectGenerator):
        return True
    if not isinstance(value, str):
        return False
    from defectaug.generators import list_generators

    return value in list_generators() or Path(value).is_dir()


def _is_type_spec(value: Any) -> bool:
    """Whether ``value`` can be a ``defect_types`` argument: ``None``, a name or names."""
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(name, str) for name in value)


def _legacy_dataset_order(args: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The old order ``(backgrounds, generator, defect_types, length, seed, blend)``: a
    generator, or a registered generator name or folder followed by type names, in second
    place (or more than three positionals)."""
    legacy = ("backgrounds", "generator", "defect_types", "length", "seed", "blend")
    if len(args) > 3:
        return legacy
    if len(args) < 2:
        return None
    second = args[1]
    if isinstance(second, DefectGenerator):
        return legacy
    # A name in third place that loads a generator reads as the new order (a self-supervised
    # generator's one type is named like it: (bg, "cutpaste", "cutpaste") is the same either way).
    third_is_types = len(args) < 3 or (_is_type_spec(args[2]) and not _names_a_generator(args[2]))
    if third_is_types and _names_a_generator(second):
        return legacy
    return None


class SyntheticDefectDataset(Dataset):
    """Normal backgrounds with synthetic defects composited in; item ``i`` depends on ``(seed, i)``.

    Arguments follow the entry points' one convention (as
    :class:`~defectaug.transforms.DefectInject` and :func:`~defectaug.batch.inject_defects`):
    ``backgrounds, defect_types, generator`` positionally, the rest by keyword; labels and masks
    as :mod:`defectaug.labels` states. The old order ``(backgrounds, generator, defect_types,
    length, seed, blend)`` (a generator, or a registered generator name or folder, in second
    place) still works, with a ``FutureWarning``.

    Args:
        backgrounds: a folder of images (searched recursively), a list of image paths, or a
            ``Dataset`` (or list) whose items are an image (tensor ``[C, H, W]``, PIL image, numpy
            array; uint8 or float) or a tuple / list starting with one, e.g. an ``ImageFolder`` of
            normal parts. Files are scaled by their bit depth (8 or 16 bits); float images must
            hold values in [0, 1] (``ValueError`` otherwise). Only background 0 is read up front:
            call :meth:`check` to validate them all, else a bad one raises (naming it) when an
            item picks it. ``None``: the generator makes whole images (one with
            ``generate_images``, e.g. a ``dfmgan`` card), and each item is one generated
            defective image, its mask where it visibly differs from its generated defect-free
            twin; blend and placement options then have nothing to act on and must stay at their
            defaults.
        defect_types: types to draw from (default: all of the generator's); each item has one.
        generator: a ``DefectGenerator`` or a name / folder / Hub id for ``load_generator``.
        blend: ``"alpha"``, ``"poisson"`` or ``"improved_poisson"``.
        blend_options: the blend's options, see :data:`defectaug.batch.BLEND_OPTIONS`.
        count, scale, rotation, aspect, min_size, roi, confine: placement options, see
            :func:`defectaug.inject_defects`; ``count`` must be >= 1 (every item has a defect).
        seed: the dataset's seed; item ``i`` depends only on ``(seed, i)``. An int, a
            ``torch.Generator`` (one draw of it gives the int) or ``None`` (one draw of torch's
            global generator, at construction): the int is kept as :attr:`seed`, so items stay
            reproducible within the object and in every DataLoader worker.
        label_map: ``{type: class}`` for labels (and class-mask ids); default: the type's index
            in ``defect_types`` (:mod:`defectaug.labels`), as :attr:`class_to_idx` shows.
        mask_mode: ``"binary"``: the mask is bool; ``"class"``: int64, each defect pixel holding
            its class id (index + 1, or its ``label_map`` class; 0 is the background).
        length: number of items.
        transform: a torchvision v2-style callable: ``transform(image)`` for ``"label"`` (the
            int label passes v2 transforms untouched, so it is not handed over),
            ``transform(image, mask)`` for ``"mask"``, ``transform(sample)`` for ``"dict"`` (image,
            mask and boxes are tv_tensors, so geometric v2 transforms such as
            ``v2.RandomResizedCrop`` keep them aligned). The image is a float
            ``tv_tensors.Image`` in [0, 1], so a pipeline written for ``ImageFolder``'s PIL images
            (``v2.ToImage()``, ``v2.ToDtype(torch.float32, scale=True)``) works on it unchanged.
        target: ``"label"`` -> ``(image, label)``; ``"mask"`` -> ``(image, mask)``; ``"dict"`` ->
            ``{"image", "mask", "label", "boxes", "defect_types"}``. ``image`` is a float
            ``tv_tensors.Image [C, H, W]``, ``mask`` a ``tv_tensors.Mask [1, H, W]`` (bool, or
            int64 with ``mask_mode="class"``), ``boxes`` ``tv_tensors.BoundingBoxes`` (XYXY, one
            per visible defect) and ``defect_types`` the type name of each box.
        to_grayscale / to_rgb: convert every background to 1 / 3 channels; without them the
            backgrounds must all have the channel count of the first one.

    Attributes ``classes`` (``defect_types`` in their order: ``classes[label]`` is the type of a
    label by default) and ``class_to_idx`` (``{type: label}``) follow ``ImageFolder``.

    An item whose defects all end up invisible is redrawn from its next sub-seed, up to
    ``DRAW_ATTEMPTS`` (8) draws in all, then raises ``RuntimeError``. The first draw is the same
    whatever the background's dtype, and a redraw happens only when that draw is invisible in the
    item's own dtype, float32 for every background (no rounding to 8 bits): a uint8 background and
    its float copy give the same item.
    """

    @legacy_positional(
        "SyntheticDefectDataset",
        ("backgrounds", "defect_types", "generator"),
        _legacy_dataset_order,
    )
    def __init__(
        self,
        backgrounds: BackgroundsArg,
        defect_types: str | Sequence[str] | None = None,
        generator: str | DefectGenerator = "procedural",
        *,
        blend: BlendMode = "alpha",
        blend_options: Mapping[str, Any] | None = None,
        count: CountArg = (1, 1),
        scale: RangeArg = DEFAULT_SCALE,
        rotation: RangeArg = DEFAULT_ROTATION,
        aspect: RangeArg = DEFAULT_ASPECT,
        min_size: int = 8,
        roi: RoiArg = None,
        confine: bool = True,
        seed: SeedLike = 0,
        label_map: Mapping[str, int] | None = None,
        mask_mode: str = "binary",
        length: int = 1000,
        transform: Callable[..., Any] | None = None,
        target: str = "label",
        to_grayscale: bool = False,
        to_rgb: bool = False,
    ) -> None:
        check_int(length, "length", 1)
        seed = as_seed(check_seed(seed))  # None / a generator: one draw, kept as an int
        check_choice(target, TARGETS, "target")
        mask_mode = check_mask_mode(mask_mode)
        if to_grayscale and to_rgb:
            raise ValueError("to_grayscale, to_rgb: choose at most one conversion")
        self.placement = PlacementOptions.check(
            count=count,
            scale=scale,
            rotation=rotation,
            aspect=aspect,
            min_size=min_size,
            roi=roi,
            confine=confine,
        )
        if self.placement.count[0] < 1:
            raise ValueError(
                f"count: every item carries a defect, so the minimum must be >= 1, got {count!r}"
            )
        self.generator = resolve_generator(generator)
        if backgrounds is None:
            self._check_whole_image_source(blend, blend_options)
            self.backgrounds = None
        else:
            self.backgrounds = self._resolve_backgrounds(backgrounds)
        self.defect_types = resolve_defect_types(defect_types, self.generator)
        self.length, self.seed = length, seed
        self.blend = check_blend(blend)
        self.blend_options = check_blend_options(blend, blend_options)
        self.transform, self.target = transform, target
        self.to_grayscale, self.to_rgb = to_grayscale, to_rgb
        self.mask_mode = mask_mode
        reserved = {BACKGROUND: "the background of class masks"} if mask_mode == "class" else None
        self.label_map = check_label_map(label_map, self.defect_types, reserved=reserved)
        self.classes = list(self.defect_types)
        self.class_to_idx = {
            name: type_label(index, self.defect_types, self.label_map)
            for index, name in enumerate(self.defect_types)
        }
        if self.backgrounds is None:
            native = self.generator.resolve_channels(None)
            self.channels = 1 if to_grayscale else 3 if to_rgb else native
        else:
            self.channels = self.load_background(0).shape[1]
        self.generator.resolve_channels(self.channels)

    # ----------------------------------------------------------------------- setup
    def _check_whole_image_source(
        self, blend: str, blend_options: Mapping[str, Any] | None
    ) -> None:
        """``backgrounds=None`` needs a generator of whole images and no compositing options."""
        if not callable(getattr(self.generator, "generate_images", None)):
            raise ValueError(
                "backgrounds: None needs a generator that makes whole images (one with "
                f"generate_images, e.g. a dfmgan card); {type(self.generator).__name__} makes "
                "defect layers, so give normal backgrounds to composite them on"
            )
        defaults = PlacementOptions.check(
            count=(1, 1),
            scale=DEFAULT_SCALE,
            rotation=DEFAULT_ROTATION,
            aspect=DEFAULT_ASPECT,
            min_size=8,
            roi=None,
            confine=True,
        )
        changed = [
            name
            for name in ("count", "scale", "rotation", "aspect", "min_size", "confine")
            if getattr(self.placement, name) != getattr(defaults, name)
        ]
        changed += ["roi"] if self.placement.roi is not None else []
        changed += ["blend"] if blend != "alpha" else []
        changed += ["blend_options"] if blend_options else []
        if changed:
            raise ValueError(
                f"{', '.join(changed)}: with backgrounds=None the generator makes whole images, "
                "so nothing is placed or blended; leave these at their defaults"
            )

    @staticmethod
    def _resolve_backgrounds(backgrounds: BackgroundsArg) -> Sequence[Any]:
        if isinstance(backgrounds, (str, os.PathLike)):
            found = list_images(backgrounds)
            if not found:
                raise ValueError(
                    f"backgrounds: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {backgrounds}"
                )
            return found
        if not (hasattr(backgrounds, "__getitem__") and hasattr(backgrounds, "__len__")):
            raise TypeError(
                "backgrounds: expected a folder, a list of image paths or a Dataset, "
                f"got {type(backgrounds).__name__}"
            )
        if len(backgrounds) == 0:
            raise ValueError("backgrounds: the dataset / list of images is empty")
        if isinstance(backgrounds, (list, tuple)) and all(
            isinstance(item, (str, os.PathLike)) for item in backgrounds
        ):
            paths = [Path(item) for item in backgrounds]
            missing = [str(path) for path in paths if not path.is_file()]
            if missing:
                raise FileNotFoundError(
                    f"backgrounds: {len(missing)} file(s) not found, e.g. {missing[0]}"
                )
            return paths
        return backgrounds

    def check(self) -> None:
        """Read every background once; raise ``ValueError`` naming the first that is unusable.

        Catches what would otherwise surface only when an item happens to pick that background:
        files that are empty, truncated, not images or decompression bombs, images smaller than
        ``min_size``, a channel count that differs from background 0, float values outside
        [0, 1]. Decodes every file, so it takes about one pass over the folder. Without
        backgrounds there is nothing to read.
        """
        for index in range(len(self.backgrounds or ())):
            try:
                self.load_background(index)
            except (ValueError, TypeError, OSError) as error:
                item = self.backgrounds[index]
                message = str(error)
                for prefix in ("backgrounds: ", "backgrounds ", "path: "):
                    message = message.removeprefix(prefix)
                source = str(item) if isinstance(item, Path) else f"item {index}"
                where = "" if source in message else f"item {index}: "
                raise ValueError(f"backgrounds: {where}{message}") from error

    def load_background(self, index: int) -> torch.Tensor:
        """Background ``index`` as float ``[1, C, H, W]`` after the channel conversion.

        Errors name the file (or the item index of a ``Dataset``).
        """
        item = self.backgrounds[index]
        name = f"backgrounds item {index}"
        if isinstance(item, Path):
            image = read_image(item)
            name = f"backgrounds item {index} ({str(item)!r})"
        else:
            if isinstance(item, (tuple, list)):
                if not item:
                    raise ValueError(f"backgrounds: item {index} is an empty sequence")
                item = item[0]
            if isinstance(item, torch.Tensor) and item.ndim == 4:
                raise ValueError(
                    f"backgrounds: item {index} is a batch {tuple(item.shape)}; expected one image"
                )
            if isinstance(item, PIL.Image.Image) and item.mode not in ("L", "RGB"):
                # 16-bit, float and palette images: scaled by their bit depth like files.
                item = image_to_tensor(item, name)
            image, _ = to_float_image(item, name)
            check_unit_range(image, name, _BACKGROUND_HINT)
        try:
            check_image_size(tuple(image.shape[-2:]), self.placement.min_size)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        image = self._convert_channels(image)
        expected = getattr(self, "channels", image.shape[1])
        if image.shape[1] != expected:
            raise ValueError(
                f"{name} has {image.shape[1]} channel(s) but item 0 has "
                f"{expected}; pass to_grayscale=True or to_rgb=True to convert them all"
            )
        return image.float().contiguous()

    def _convert_channels(self, image: torch.Tensor) -> torch.Tensor:
        """``to_grayscale`` / ``to_rgb`` applied to ``[B, C, H, W]``."""
        if self.to_grayscale and image.shape[1] == 3:
            return kornia.color.rgb_to_grayscale(image)
        if self.to_rgb and image.shape[1] == 1:
            return image.expand(-1, 3, -1, -1)
        return image

    # ----------------------------------------------------------------------- items
    def __len__(self) -> int:
        return self.length

    def _generated(
        self, type_index: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One generated ``(normal, defective, visible change)`` of type ``type_index``."""
        normal, defective, _ = self.generator.generate_images(
            1, self.defect_types[type_index], generator=seed, device="cpu"
        )
        normal, defective = normal.float(), defective.float()
        changed = (defective - normal).abs().amax(dim=1, keepdim=True) > VISIBILITY
        return normal, defective, changed

    def _synthesize_generated(self, index: int, rng: torch.Generator) -> dict[str, Any]:
        """Item ``index`` of a dataset without backgrounds: a generated image, its mask the
        visible change from its defect-free twin (redrawn while that change is too small)."""
        type_index = int(torch.randint(len(self.defect_types), (1,), generator=rng))
        type_name = self.defect_types[type_index]
        for _ in range(DRAW_ATTEMPTS):
            _, defective, changed = self._generated(type_index, child_seed(rng))
            if int(changed.sum()) >= MIN_VISIBLE_PIXELS:
                break
        else:
            raise RuntimeError(
                f"item {index}: {DRAW_ATTEMPTS} generated {type_name!r} images all changed fewer "
                "than MIN_VISIBLE_PIXELS pixels by more than VISIBILITY from their defect-free "
                "twins"
            )
        row0, row1, col0, col1 = mask_boxes(changed[:, 0])[0]
        return dict(
            image=self._convert_channels(defective)[0],
            mask=changed[0],
            type_name=type_name,
            type_index=type_index,
            label=self.class_to_idx[type_name],
            boxes=torch.tensor([[col0, row0, col1, row1]], dtype=torch.int64),
            background_index=None,
        )

    def synthesize(self, index: int) -> dict[str, Any]:
        """Item ``index`` before ``transform`` / target selection, as plain tensors.

        Returns ``image [C, H, W]`` float, ``mask [1, H, W]`` bool, ``type_name``, ``type_index``
        (its index in ``defect_types``), ``label``, ``boxes [K, 4]`` int64 XYXY of the visible
        defects, ``background_index`` (``None`` without backgrounds).
        """
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        index = int(index)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"index: {index} out of range for a dataset of length {self.length}")
        rng = torch.Generator().manual_seed(mix_seed(self.seed, index))
        if self.backgrounds is None:
            return self._synthesize_generated(index, rng)
        background_index = int(torch.randint(len(self.backgrounds), (1,), generator=rng))
        background = self.load_background(background_index)
        # A draw whose defects all end up invisible is redrawn from the next sub-seed: every item
        # carries a defect that shows, and its mask and boxes are what visibly changed.
        for _ in range(DRAW_ATTEMPTS):
            plan = plan_defects(
                background,
                self.defect_types,
                self.generator,
                p=1.0,
                seed=child_seed(rng),
                **self.placement.keywords(),
            )
            result = composite_visible(background, plan, self.blend, None, self.blend_options)
            if int(result.labels[0]) != NO_DEFECT:
                break
        else:
            raise RuntimeError(
                f"item {index}: {DRAW_ATTEMPTS} draws of defects on background {background_index} "
                "all ended up invisible (each changed fewer than MIN_VISIBLE_PIXELS pixels by "
                "more than VISIBILITY); the background may be too bright or dark for the chosen "
                "defect types"
            )
        type_index = int(result.labels[0])
        type_name = self.defect_types[type_index]
        visible = result.boxes[:, 2] > result.boxes[:, 0]
        return dict(
            image=result.images[0],
            mask=result.masks[0],
            type_name=type_name,
            type_index=type_index,
            label=self.class_to_idx[type_name],
            boxes=result.boxes[visible],
            background_index=background_index,
        )

    def __getitem__(self, index: int) -> Any:
        item = self.synthesize(index)
        image = tv_tensors.Image(item["image"])
        mask = item["mask"]
        if self.mask_mode == "class":
            labels = torch.tensor([item["type_index"]])
            mask = class_masks(mask[None], labels, self.defect_types, self.label_map)[0]
        mask = tv_tensors.Mask(mask)
        height, width = image.shape[-2:]
        if self.target == "label":
            out_image = self.transform(image) if self.transform is not None else image
            return out_image, item["label"]
        if self.target == "mask":
            return self.transform(image, mask) if self.transform is not None else (image, mask)
        sample = dict(
            image=image,
            mask=mask,
            label=item["label"],
            boxes=tv_tensors.BoundingBoxes(
                item["boxes"], format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(height, width)
            ),
            defect_types=[item["type_name"]] * len(item["boxes"]),
        )
        return self.transform(sample) if self.transform is not None else sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(backgrounds={len(self.backgrounds or ()) or None}, "
            f"defect_types={list(self.defect_types)}, generator={type(self.generator).__name__}, "
            f"blend={self.blend!r}, seed={self.seed}, length={self.length}, "
            f"target={self.target!r})"
        )
