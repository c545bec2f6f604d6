"""Data side of the downstream benchmark: real images at a fixed size, the validation carve-out,
traditional augmentation, and the synthetic training sets of every generator.

Everything is held in memory at the benchmark resolution (the magnetic-tile train split is ~600
images): images as float ``[N, 1, S, S]``, masks as bool. Items are dicts ``{"image", "mask",
"label"}`` so real and synthetic sets (``SyntheticDefectDataset(target="dict")``) can be joined with
``ConcatDataset`` and tagged with their source by ``SourceTagged``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset

from defectaug._seeding import child_seed, mix_seed
from defectaug.dataset import SyntheticDefectDataset
from defectaug.datasets import (
    GOOD_LABEL,
    DefectRecord,
    defect_regions,
    load_image,
    load_mask,
    read_defect_dataset,
)
from defectaug.evaluation import stratified_subset
from defectaug.fitting import FittedGenerator, fit_defects
from defectaug.generators import DefectBank
from defectaug.generators.base import DefectGenerator
from defectaug.heads import SOURCE_REAL, SOURCE_SYNTHETIC, SourceTagged

#: A resized pixel is a defect when at least this share of its source area is (a thin crack keeps
#: its line at 128 px instead of vanishing, which a 0.5 threshold would do).
MASK_AREA_THRESHOLD = 1.0 / 3.0

#: Magnetic-tile class -> procedural defect type, chosen by look (the data README describes the
#: classes): blowholes are small dark pits, cracks thin dark lines, fray is a worn patch (an
#: irregular stain), uneven a large low-contrast region. ``break`` (chipped tile edges) has no
#: procedural analogue: it gets no procedural images and is only oversampled, as in arm 2.
PROCEDURAL_CLASS_MAP = {"blowhole": "pit", "crack": "crack", "fray": "stain", "uneven": "uneven"}

#: Generators with one class-agnostic defect type that need no real defect: used for every defect
#: class (their images differ between classes only by the placement the caller gives).
CLASS_AGNOSTIC_GENERATORS = ("cutpaste",)


@dataclass
class ImageSet:
    """Images of one split at the benchmark size, with labels and masks."""

    images: torch.Tensor  # float [N, 1, S, S] in [0, 1]
    labels: torch.Tensor  # int64 [N], index into classes
    masks: torch.Tensor  # bool [N, 1, S, S]; all False for normal images
    has_mask: torch.Tensor  # bool [N]: the record has a mask file
    classes: tuple[str, ...]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageSet:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.masks[index],
            self.has_mask[index],
            self.classes,
            [self.paths[i] for i in index.tolist()],
        )

    def class_counts(self) -> dict[str, int]:
        counts = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))


def class_names(records: Sequence[DefectRecord]) -> tuple[str, ...]:
    """``good`` first, then the defect labels sorted: the benchmark's class order."""
    labels = {r.label for r in records}
    if GOOD_LABEL not in labels:
        raise ValueError(
            f"data: no '{GOOD_LABEL}' images found (labels: {sorted(labels)}); the synthetic arms "
            "need normal images as backgrounds"
        )
    return (GOOD_LABEL, *sorted(labels - {GOOD_LABEL}))


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[C, H, W]`` -> ``[C, size, size]`` (antialiased bilinear; the aspect is not kept, as in
    the usual ``Resize((s, s))`` of a classification pipeline)."""
    return F.interpolate(
        image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].clamp(0.0, 1.0)


def resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Bool ``[1, H, W]`` -> ``[1, size, size]`` by area share (:data:`MASK_AREA_THRESHOLD`)."""
    share = F.interpolate(mask[None].float(), size=(size, size), mode="area")[0]
    return share >= MASK_AREA_THRESHOLD


def load_image_set(records: Sequence[DefectRecord], classes: Sequence[str], size: int) -> ImageSet:
    """Load ``records`` as grayscale at ``size`` x ``size``; labels index ``classes``."""
    unknown = sorted({r.label for r in records} - set(classes))
    if unknown:
        raise ValueError(
            f"data: label(s) {unknown} are not among the training classes {list(classes)}"
        )
    if not records:
        raise ValueError("data: no images to load")
    images, masks, has_mask = [], [], []
    for record in records:
        image = load_image(record.image, channels=1)
        images.append(resize_image(image, size))
        if record.mask is not None:
            masks.append(resize_mask(load_mask(record.mask), size))
        else:
            masks.append(torch.zeros(1, size, size, dtype=torch.bool))
        has_mask.append(record.mask is not None)
    return ImageSet(
        torch.stack(images),
        torch.tensor([classes.index(r.label) for r in records], dtype=torch.long),
        torch.stack(masks),
        torch.tensor(has_mask),
        tuple(classes),
        [str(r.image) for r in records],
    )


def read_split(root: Path, split: str | None) -> list[DefectRecord]:
    """The records of ``split``; for a dataset with no test split of its own, a fixed one.

    BSData ships its annotated pitting images (all marked as the paper's training split) and
    unannotated images, which are read as normals (``NORMAL_ALIASES``; most show no pitting, which
    the source does not promise). Such a dataset is split by a hash of each image's path:
    ``HASH_TEST_FRACTION`` of every label goes to ``"test"``, the same on every machine.
    """
    found = read_defect_dataset(root)
    if any(r.split == "test" for r in found):
        if split in {r.split for r in found}:
            return [r for r in found if r.split == split]
        return read_defect_dataset(root, split=split or None)  # all, or the error naming splits
    records = [replace(r, label=NORMAL_ALIASES.get(r.label, r.label)) for r in found]
    if split not in ("train", "test"):
        raise ValueError(
            f"split: {root} has no test split, so it is split by path hash into 'train' and "
            f"'test'; got {split!r}"
        )
    return [r for r in records if _hash_split(r.image, root) == split]


#: Labels that name normal images in some datasets (BSData's images without annotation).
NORMAL_ALIASES = {"unannotated": GOOD_LABEL}
HASH_TEST_FRACTION = 0.3


def _hash_split(image: Path, root: Path) -> str:
    key = Path(image).relative_to(root).as_posix().encode()
    share = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
    return "test" if share < HASH_TEST_FRACTION else "train"


def carve_validation(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split ``data`` into (train, validation), stratified: ``round(fraction * n_c)`` items of every
    class ``c`` (at least one, never all) go to validation, drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1), got {fraction!r}")
    rng = torch.Generator().manual_seed(seed)
    train_index, val_index = [], []
    for label in range(len(data.classes)):
        members = torch.nonzero(data.labels == label).flatten()
        if len(members) == 0:
            continue
        order = members[torch.randperm(len(members), generator=rng)].tolist()
        take = min(max(round(fraction * len(order)), 1), len(order) - 1)
        val_index += order[:take]
        train_index += order[take:]
    return data.subset(sorted(train_index)), data.subset(sorted(val_index))


class RealImages(Dataset):
    """An :class:`ImageSet` as a dataset of ``{"image", "mask", "label"}`` dicts."""

    def __init__(self, data: ImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(
            image=self.data.images[index],
            mask=self.data.masks[index],
            label=int(self.data.labels[index]),
        )


class CachedItems(Dataset):
    """Keeps every item once computed: a view pool draws the same synthetic item several times."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self._cache:
            self._cache[index] = self.dataset[index]
        return self._cache[index]


def defect_scale_ranges(
    data: ImageSet, quantiles: tuple[float, float] = (0.1, 0.9), fill: float = 0.75
) -> dict[str, tuple[float, float]]:
    """Per defect class, the ``scale`` range for ``SyntheticDefectDataset``, from the train masks.

    The placement ``scale`` is a layer's longer side over the image's shorter side; a defect covers
    about ``fill`` of its layer, so the range is the given quantiles of the real regions' longer
    box side (over the image side), divided by ``fill``.
    """
    ranges: dict[str, tuple[float, float]] = {}
    side = data.images.shape[-1]
    for label, name in enumerate(data.classes):
        if name == GOOD_LABEL:
            continue
        extents = []
        for index in torch.nonzero((data.labels == label) & data.has_mask).flatten().tolist():
            for region in defect_regions(data.masks[index], min_area=2):
                rows = torch.nonzero(region[0].any(dim=1)).flatten()
                cols = torch.nonzero(region[0].any(dim=0)).flatten()
                longer = max(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1)
                extents.append(longer / side)
        if not extents:
            ranges[name] = (0.1, 0.3)
            continue
        low, high = np.quantile(np.asarray(extents), quantiles)
        low, high = min(low / fill, 1.0), min(max(high, low * 1.2) / fill, 1.0)
        ranges[name] = (float(low), float(high))
    return ranges


def generator_class_map(
    name: str, generator: DefectGenerator, classes: Sequence[str]
) -> dict[str, str]:
    """``{class: generator defect type}`` used by a generator's synthetic set.

    The procedural generator uses :data:`PROCEDURAL_CLASS_MAP`; a class-agnostic one
    (:data:`CLASS_AGNOSTIC_GENERATORS`) its single type for every defect class; every other
    generator (the bank, the fitted one and learned cards) is used for the classes that are among
    its own defect types.
    """
    types = set(generator.defect_types)
    if name == "procedural":
        return {c: t for c, t in PROCEDURAL_CLASS_MAP.items() if c in classes and t in types}
    if name in CLASS_AGNOSTIC_GENERATORS and len(generator.defect_types) == 1:
        return {c: generator.defect_types[0] for c in classes if c != GOOD_LABEL}
    return {c: c for c in classes if c != GOOD_LABEL and c in types}


# ------------------------------------------------------------------------------------ few-shot
def parse_shots(text: str) -> int | None:
    """``--shots``: a positive number of real defect images per class, or ``"all"`` (``None``)."""
    if text == "all":
        return None
    try:
        shots = int(text)
    except ValueError:
        shots = 0
    if shots < 1:
        raise ValueError(f"--shots: expected a positive integer or 'all', got {text!r}")
    return shots


def shot_index(data: ImageSet, shots: int | None, seed: int) -> torch.Tensor:
    """The seed's k shots: sorted indices of at most ``shots`` images of every defect class of
    ``data`` and of all its ``good`` images; the same subset for every arm of the seed
    (``stratified_subset`` with ``mix_seed(seed, 7)``). ``shots=None`` keeps everything."""
    keep = [data.classes.index(GOOD_LABEL)] if GOOD_LABEL in data.classes else []
    return stratified_subset(data.labels, shots, seed=mix_seed(seed, 7), keep=keep)


def shot_bank(records: Sequence[DefectRecord], source: str = "records") -> DefectBank:
    """A ``DefectBank`` of the defects of ``records`` (the good ones are skipped), crops scaled to
    fill a 64-px layer: the placement ``scale`` (``bank.placement``: the crops' own size on their
    images) sets their size on the image."""
    return DefectBank.from_records(
        [r for r in records if r.label != GOOD_LABEL],
        preserve_scale=False,
        layer_size=64,
        source=source,
    )


def bank_generator(
    records: Sequence[DefectRecord], source: str = "records"
) -> tuple[DefectBank, dict[str, dict[str, Any]]]:
    """:func:`shot_bank` of ``records`` and each class's placement by the bank's location prior
    (``bank.placement(class)``: where, how large and how many the real defects were, edge classes
    on an image edge) as ``inject_defects`` / ``SyntheticDefectDataset`` keywords."""
    bank = shot_bank(records, source)
    return bank, {name: bank.placement(name) for name in bank.defect_types}


def fitted_generator(
    records: Sequence[DefectRecord],
) -> tuple[FittedGenerator, dict[str, dict[str, Any]]]:
    """A ``FittedGenerator`` fitted (``fit_defects``) on the defects of ``records``, and each
    class's fitted placement (``fitted.placement(class)``: size, orientation, count, location
    prior, edge side) as ``inject_defects`` / ``SyntheticDefectDataset`` keywords."""
    fitted = FittedGenerator(fit_defects([r for r in records if r.label != GOOD_LABEL]))
    return fitted, {name: fitted.placement(name) for name in fitted.defect_types}


def synthetic_counts(data: ImageSet, mapped_classes: Sequence[str]) -> dict[str, int]:
    """Synthetic images per mapped class so that each reaches the count of the largest class."""
    counts = data.class_counts()
    target = max(counts.values())
    return {c: target - counts[c] for c in mapped_classes if target > counts[c]}


def synthetic_sets(
    generator: DefectGenerator,
    class_map: Mapping[str, str],
    counts: Mapping[str, int],
    backgrounds: torch.Tensor,
    classes: Sequence[str],
    scales: Mapping[str, tuple[float, float]],
    seed: int,
    placements: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[SyntheticDefectDataset]:
    """One ``SyntheticDefectDataset(target="dict")`` per mapped class, on ``backgrounds``
    (normal train images ``[N, 1, S, S]``), placed at the class's real size range, or with the
    class's placement keywords where ``placements`` has them (a fitted generator's)."""
    rng = torch.Generator().manual_seed(seed)
    sets = []
    for class_name, defect_type in class_map.items():
        length = counts.get(class_name, 0)
        if length < 1:
            continue
        placement = dict((placements or {}).get(class_name) or {})
        placement.setdefault("scale", scales.get(class_name, (0.1, 0.3)))
        sets.append(
            SyntheticDefectDataset(
                list(backgrounds),
                generator=generator,
                defect_types=[defect_type],
                length=length,
                seed=child_seed(rng),
                **placement,
                target="dict",
                label_map={defect_type: classes.index(class_name)},
            )
        )
    return sets


def training_set(real: ImageSet, synthetic: Sequence[Dataset]) -> tuple[Dataset, torch.Tensor]:
    """``ConcatDataset([real, *synthetic])`` with source tags, and the class of every item."""
    parts: list[Dataset] = [SourceTagged(RealImages(real), SOURCE_REAL)]
    labels = [real.labels]
    for dataset in synthetic:
        parts.append(SourceTagged(CachedItems(dataset), SOURCE_SYNTHETIC))
        label = next(iter(dataset.class_to_idx.values()))
        labels.append(torch.full((len(dataset),), label, dtype=torch.long))
    return ConcatDataset(parts), torch.cat(labels)


def draw_items(
    labels: torch.Tensor, num_views: int, balanced: bool, generator: torch.Generator
) -> torch.Tensor:
    """Indices of ``num_views`` items: uniform over items, or (``balanced``) uniform over the
    classes present, then uniform within the class (minority-class oversampling)."""
    if balanced:
        counts = torch.bincount(labels).double()
        weights = 1.0 / counts[labels]
    else:
        weights = torch.ones(len(labels), dtype=torch.float64)
    return torch.multinomial(weights, num_views, replacement=True, generator=generator)


def collate_items(dataset: Dataset, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stack the items at ``indices``: image float ``[B,1,S,S]``, mask bool, label, source."""
    items = [dataset[int(i)] for i in indices]
    return dict(
        image=torch.stack([torch.as_tensor(item["image"]).float() for item in items]),
        mask=torch.stack([torch.as_tensor(item["mask"]).bool() for item in items]),
        label=torch.tensor([int(item["label"]) for item in items], dtype=torch.long),
        source=torch.tensor([int(item["source"]) for item in items], dtype=torch.long),
    )


@dataclass(frozen=True)
class TraditionalAugment:
    """The seeds' traditional augmentation: random flips, a small rotation, brightness and contrast
    jitter. Batched; geometric changes apply to the masks too (nearest)."""

    rotation: float = 10.0
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.8, 1.2)

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        flips = torch.rand(n, 2, generator=generator) < 0.5
        angles = (torch.rand(n, generator=generator) * 2.0 - 1.0) * self.rotation
        shift = (torch.rand(n, generator=generator) * 2.0 - 1.0) * self.brightness
        low, high = self.contrast
        factor = low + torch.rand(n, generator=generator) * (high - low)
        horizontal = flips[:, 0].view(n, 1, 1, 1)
        vertical = flips[:, 1].view(n, 1, 1, 1)
        images = torch.where(horizontal, images.flip(-1), images)
        images = torch.where(vertical, images.flip(-2), images)
        masks = torch.where(horizontal, masks.flip(-1), masks)
        masks = torch.where(vertical, masks.flip(-2), masks)
        images = kornia.geometry.transform.rotate(images, angles, padding_mode="reflection")
        masks = kornia.geometry.transform.rotate(masks.float(), angles, mode="nearest") >= 0.5
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * factor.view(n, 1, 1, 1) + mean + shift.view(n, 1, 1, 1)
        return images.clamp(0.0, 1.0), masks


def sample_grid(images: torch.Tensor, columns: int) -> np.ndarray:
    """Tile ``[N, 1, S, S]`` images into one uint8 grayscale array with 2-px gaps."""
    n, _, size, _ = images.shape
    rows = math.ceil(n / columns)
    gap = 2
    canvas = np.full((rows * (size + gap) + gap, columns * (size + gap) + gap), 255, dtype=np.uint8)
    pixels = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for i in range(n):
        top, left = gap + (i // columns) * (size + gap), gap + (i % columns) * (size + gap)
        canvas[top : top + size, left : left + size] = pixels[i]
    return canvas
