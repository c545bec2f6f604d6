"""Reading real defect datasets: MVTec-AD-style folders or a ``manifest.csv``, and defect crops.

Two layouts are understood by :func:`read_defect_dataset`:

- **MVTec AD**: ``<root>/<split>/<type>/*.png|jpg`` with masks at
  ``<root>/ground_truth/<type>/<stem>_mask.png``; the type ``good`` has no mask.
- **manifest**: ``<root>/manifest.csv`` with columns ``image`` and ``label`` (paths relative to
  ``root``), optional ``mask`` (empty for normal images) and optional ``split`` (else
  ``paper_split``; empty means no split), as in ``../shared/data/magnetic_tile`` and ``bsdata``.

:func:`defect_crops` turns one image and its mask into one ``(content, alpha)`` crop per connected
defect region; the real-defect bank and the learned-generator trainer build on it.
"""

from __future__ import annotations

import csv
import os
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from defectaug._checks import check_int
from defectaug._io import UNIT_RANGE_TOLERANCE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD_LABEL = "good"
MASK_DIR = "ground_truth"
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class DefectRecord:
    """One image of a defect dataset.

    Attributes:
        image: path of the image.
        label: its class: a defect type, ``"good"`` or another normal label.
        mask: path of its binary defect mask, or ``None`` (normal image, or no annotation).
        split: ``"train"``, ``"test"``, ... or ``None`` when the dataset has no split.
    """

    image: Path
    label: str
    mask: Path | None
    split: str | None

    @property
    def has_mask(self) -> bool:
        return self.mask is not None


def read_defect_dataset(
    root: str | os.PathLike[str],
    split: str | None = None,
    types: str | Iterable[str] | None = None,
) -> list[DefectRecord]:
    """Every image of the dataset at ``root``, optionally only one ``split`` and some ``types``.

    The layout is detected: ``root/manifest.csv`` if present, else MVTec-AD folders. Records come
    sorted by split, label and image path. Raises ``FileNotFoundError`` for a missing ``root``,
    missing listed files or an empty dataset, ``ValueError`` for an unknown split or type (the
    message lists the ones found).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"root: {str(root)!r} is not a folder")
    if (root / MANIFEST).is_file():
        records = _read_manifest(root)
        layout = f"{root / MANIFEST}"
    else:
        records = _read_mvtec(root)
        layout = f"MVTec-AD folders under {root} (<split>/<type>/*.png|jpg)"
    if not records:
        raise FileNotFoundError(
            f"root: no images found in {layout}; expected <split>/<type>/*.png|jpg with masks in "
            f"{MASK_DIR}/<type>/<stem>_mask.png, or a {MANIFEST} with image,label[,mask,split] "
            "columns"
        )
    if split is not None:
        splits = sorted({r.split for r in records if r.split is not None})
        if split not in splits:
            raise ValueError(
                f"split: {split!r} not found in {root}; available: {', '.join(splits) or '(none)'}"
            )
        records = [r for r in records if r.split == split]
    if types is not None:
        wanted = [types] if isinstance(types, str) else list(types)
        labels = sorted({r.label for r in records})
        unknown = [t for t in wanted if t not in labels]
        if unknown:
            raise ValueError(
                f"types: {', '.join(map(repr, unknown))} not found in {root}"
                f"{'' if split is None else f' (split {split!r})'}; available: {', '.join(labels)}"
            )
        records = [r for r in records if r.label in wanted]
    return sorted(records, key=lambda r: (r.split or "", r.label, str(r.image)))


def _read_manifest(root: Path) -> list[DefectRecord]:
    path = root / MANIFEST
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0]) if rows else set()
    missing_columns = {"image", "label"} - columns
    if rows and missing_columns:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing_columns))}")
    split_column = (
        "split" if "split" in columns else "paper_split" if "paper_split" in columns else None
    )
    records, missing = [], []
    for row in rows:
        image = root / row["image"]
        mask = root / row["mask"] if row.get("mask") else None
        missing += [str(p) for p in (image, mask) if p is not None and not p.is_file()]
        split = row.get(split_column) if split_column else None
        records.append(DefectRecord(image, row["label"], mask, split or None))
    if missing:
        raise FileNotFoundError(
            f"{path}: {len(missing)} listed file(s) do not exist, e.g. {', '.join(missing[:3])}"
        )
    return records


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _read_mvtec(root: Path) -> list[DefectRecord]:
    records = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != MASK_DIR):
        for type_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for image in _images_in(type_dir):
                mask = None
                if type_dir.name != GOOD_LABEL:
                    candidate = root / MASK_DIR / type_dir.name / f"{image.stem}_mask.png"
                    mask = candidate if candidate.is_file() else None
                records.append(DefectRecord(image, type_dir.name, mask, split_dir.name))
    return records


#: Largest image, in pixels, the loaders decode (also capped by PIL's ``Image.MAX_IMAGE_PIXELS``):
#: 8192 x 8192, some 0.8 GB as float RGB. Larger files raise ``ValueError`` (as possible
#: decompression bombs) instead of exhausting memory; raise it here for bigger backgrounds.
MAX_IMAGE_PIXELS = 1 << 26

_GRAY_MODES = ("L", "LA", "1")
#: Integer depths that are not PIL's 8-bit modes, by format: PNG and PGM hold at most 16 bits
#: (older Pillow opens them as mode "I"); TIFF says in its BitsPerSample tag.
_SIXTEEN_BIT_FORMATS = ("PNG", "PPM")
_TIFF_BITS_PER_SAMPLE = 258


def _pixel_limit() -> int:
    pil_limit = Image.MAX_IMAGE_PIXELS
    return MAX_IMAGE_PIXELS if pil_limit is None else min(MAX_IMAGE_PIXELS, int(pil_limit))


def open_image(path: str | os.PathLike[str], what: str = "image") -> Image.Image:
    """Open and fully decode an image file, or raise ``ValueError`` naming it and the reason.

    Decoding (not just the header) is what finds a truncated file. Files over
    ``MAX_IMAGE_PIXELS`` are refused before decoding, and PIL's own decompression-bomb warning
    is an error here. A missing file raises ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: {what} {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {str(path)!r}: cannot be read: the file is empty (0 bytes)")
    limit = _pixel_limit()
    try:
        # catch_warnings is process-wide, but decoding runs in loader worker processes and the
        # CLI, not in threads sharing the filters.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > limit:
                    raise Image.DecompressionBombError(
                        f"{width}x{height} = {width * height} pixels exceeds the limit of "
                        f"{limit} (defectaug.datasets.MAX_IMAGE_PIXELS)"
                    )
                image.load()
                return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ValueError(
            f"{what} {str(path)!r}: refused as a possible decompression bomb: {error}"
        ) from error
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Image.UnidentifiedImageError as error:
        raise ValueError(
            f"{what} {str(path)!r}: cannot be read: not an image format PIL recognises"
        ) from error
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as error:
        raise ValueError(
            f"{what} {str(path)!r}: cannot be read (truncated or corrupt?): "
            f"{type(error).__name__}: {error}"
        ) from error


def _integer_bits(image: Image.Image, name: str) -> int:
    if image.mode.startswith("I;16"):
        return 16
    if image.format in _SIXTEEN_BIT_FORMATS:
        return 16
    if image.format == "TIFF":
        bits = image.tag_v2.get(_TIFF_BITS_PER_SAMPLE)
        bits = bits[0] if isinstance(bits, tuple) else bits
        if isinstance(bits, int) and 8 < bits <= 16:
            return bits
        raise ValueError(
            f"image {name!r}: {bits}-bit integer images are not supported; expected 8 or "
            "16 bits per sample"
        )
    raise ValueError(
        f"image {name!r}: cannot tell the bit depth of a mode {image.mode!r} "
        f"{image.format} image; save it as an 8- or 16-bit PNG or TIFF"
    )


def image_to_tensor(
    image: Image.Image, name: str | os.PathLike[str], channels: int | None = None
) -> torch.Tensor:
    """A decoded PIL image as a float32 ``[C, H, W]`` tensor in [0, 1], scaled by its bit depth.

    8-bit modes are divided by 255 and 16-bit ones (``I;16*``, or mode ``I`` from a 16-bit PNG,
    PGM or TIFF) by 65535, whatever the pixels hold: a 16-bit file of 200s is dark, not 78 % grey.
    Float (mode ``F``) images must already lie in [0, 1]. ``name`` (a path, or a description
    such as ``"backgrounds item 3"``) names the image in errors.
    """
    name = str(name)
    if image.mode == "F" or image.mode == "I" or image.mode.startswith("I;"):
        array = np.asarray(image)
        if image.mode == "F":
            low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
            if not (low >= -UNIT_RANGE_TOLERANCE and high <= 1.0 + UNIT_RANGE_TOLERANCE):
                raise ValueError(
                    f"image {name!r}: a float image must hold values in [0, 1], found "
                    f"[{low:.4g}, {high:.4g}]"
                )
            array = np.clip(array, 0.0, 1.0).astype(np.float32)
        else:
            bits = _integer_bits(image, name)
            if array.size and int(array.min()) < 0:
                raise ValueError(
                    f"image {name!r}: negative pixel values in a {bits}-bit integer image"
                )
            array = array.astype(np.float32) / float(2**bits - 1)
        gray = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        return gray.expand(3, -1, -1).clone() if channels == 3 else gray
    native = 1 if image.mode in _GRAY_MODES else 3
    mode = "L" if (channels or native) == 1 else "RGB"
    array = np.array(image.convert(mode))
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def load_image(path: str | os.PathLike[str], channels: int | None = None) -> torch.Tensor:
    """An image file as a float32 ``[C, H, W]`` tensor in [0, 1].

    ``channels=None`` keeps the file's own: 1 for grayscale (L, LA, 1, I, I;16, F), 3 otherwise
    (alpha dropped). ``1`` or ``3`` converts. Pixels are scaled by the file's bit depth
    (:func:`image_to_tensor`). A file that cannot be decoded (empty, truncated, not an image,
    larger than ``MAX_IMAGE_PIXELS``) raises ``ValueError`` naming it (:func:`open_image`).
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels: expected None, 1 or 3, got {channels!r}")
    return image_to_tensor(open_image(path, "image"), path, channels)


def load_mask(path: str | os.PathLike[str]) -> torch.Tensor:
    """A mask file as a bool ``[1, H, W]`` tensor: pixels at half intensity or above are defective.

    Half of the file's own range: 128 of 255 for 8-bit masks, 32768 of 65535 for 16-bit ones.
    """
    gray = image_to_tensor(open_image(path, "mask"), path, channels=1)
    return gray >= 0.5


def _as_bool_mask(mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.ndim != 3 or mask.shape[0] != 1:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a [1, H, W] tensor, got {shape}")
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"mask: size {tuple(mask.shape[-2:])} does not match the image's "
            f"{tuple(image.shape[-2:])}"
        )
    return mask if mask.dtype == torch.bool else mask >= 0.5


def defect_regions(mask: torch.Tensor, min_area: int = 1) -> list[torch.Tensor]:
    """One bool ``[1, H, W]`` mask per 8-connected region of ``mask`` of ``min_area`` px or more."""
    binary = mask[0].to("cpu", torch.uint8).numpy()
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    regions = torch.from_numpy(labels)
    out = []
    for index in range(1, count):
        region = regions == index
        if int(region.sum()) >= min_area:
            out.append(region[None])
    return out


def defect_crops(
    image: torch.Tensor, mask: torch.Tensor, margin: int = 8, min_area: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Crop each connected defect region of ``mask`` out of ``image`` with ``margin`` px around it.

    Args:
        image: ``[C, H, W]`` float image.
        mask: ``[1, H, W]`` bool (or float, ``>= 0.5`` is defective), same size as ``image``.
        margin: context kept on each side of the region's tight box (clipped at the border).
        min_area: regions with fewer pixels are dropped.

    Returns:
        ``[(content [C, h, w], alpha [1, h, w]), ...]``: the image pixels of the box and that
        region's own binary mask (other regions in the box are excluded) as float 0/1.
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a float [C, H, W] tensor, got {shape}")
    check_int(margin, "margin", 0)
    binary = _as_bool_mask(mask, image)
    _, height, width = image.shape
    crops = []
    for region in defect_regions(binary, min_area):
        rows = torch.nonzero(region[0].any(dim=1)).flatten()
        cols = torch.nonzero(region[0].any(dim=0)).flatten()
        top, bottom = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height)
        left, right = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, width)
        content = image[:, top:bottom, left:right].clone()
        alpha = region[:, top:bottom, left:right].to(device=image.device, dtype=image.dtype)
        crops.append((content, alpha))
    return crops


def records_by_label(records: Sequence[DefectRecord]) -> dict[str, list[DefectRecord]]:
    """Group records by label, labels sorted."""
    grouped: dict[str, list[DefectRecord]] = {}
    for record in records:
        grouped.setdefault(record.label, []).append(record)
    return dict(sorted(grouped.items()))
