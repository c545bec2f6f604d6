"""Dataset readers: MVTec-AD folders, manifest.csv, image/mask loading and defect crops."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectaug.datasets import (
    DefectRecord,
    defect_crops,
    defect_regions,
    load_image,
    load_mask,
    read_defect_dataset,
    records_by_label,
)

SIZE = (40, 48)  # (H, W) of every fixture image


def _surface(seed: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(*SIZE, channels), dtype=np.uint8)
    return base[..., 0] if channels == 1 else base


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def fixture_masks() -> dict[str, np.ndarray]:
    """Masks by image stem: two regions, an empty mask, a disk, a disk plus a 3-px speck."""
    two = np.zeros(SIZE, np.uint8)
    two[5:8, 4:30] = 255  # a scratch-like bar, 78 px
    two[20:30, 35:44] = 255  # a block at the right border region, 90 px
    disk = np.zeros(SIZE, np.uint8)
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    disk[(yy - 20) ** 2 + (xx - 20) ** 2 <= 36] = 255
    speck = disk.copy()
    speck[0:1, 45:48] = 255  # 3 px touching the border: below min_area=16
    return {"s1": two, "s2": np.zeros(SIZE, np.uint8), "h1": disk, "h2": speck}


def write_mvtec(root: Path, channels: int = 1) -> Path:
    """A tiny MVTec-AD-style set: train/good, test/good, test/scratch (an empty mask), test/hole."""
    masks = fixture_masks()
    for stem, split, label in [
        ("g1", "train", "good"),
        ("g2", "train", "good"),
        ("g3", "test", "good"),
        ("s1", "test", "scratch"),
        ("s2", "test", "scratch"),
        ("h1", "test", "hole"),
        ("h2", "test", "hole"),
    ]:
        _save(
            root / split / label / f"{stem}.png",
            _surface(len(stem) + ord(stem[0]) + int(stem[1]), channels),
        )
        if stem in masks:
            _save(root / "ground_truth" / label / f"{stem}_mask.png", masks[stem])
    return root


def write_manifest(root: Path, channels: int = 3, split_column: str = "split") -> Path:
    """The same images in the manifest.csv layout (paths relative to ``root``)."""
    masks = fixture_masks()
    rows = []
    for stem, split, label in [
        ("n1", "train", "normal"),
        ("s1", "train", "scratch"),
        ("h1", "test", "hole"),
    ]:
        image = f"images/{stem}.jpg" if channels == 3 else f"images/{stem}.png"
        _save(root / image, _surface(int(stem[1]), channels))
        mask = ""
        if stem in masks:
            mask = f"masks/{stem}_mask.png"
            _save(root / mask, masks[stem])
        rows.append(
            {"image": image, "label": label, split_column: split, "mask": mask, "width": SIZE[1]}
        )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


# ---------------------------------------------------------------------------------- MVTec
def test_mvtec_layout(tmp_path):
    records = read_defect_dataset(write_mvtec(tmp_path))
    assert len(records) == 7
    by_label = records_by_label(records)
    assert list(by_label) == ["good", "hole", "scratch"]
    assert all(r.mask is None and not r.has_mask for r in by_label["good"])
    assert all(
        r.mask is not None and r.mask.name == f"{r.image.stem}_mask.png" for r in by_label["hole"]
    )
    assert {r.split for r in records} == {"train", "test"}
    assert isinstance(records[0], DefectRecord)


def test_split_and_type_filters(tmp_path):
    write_mvtec(tmp_path)
    assert {r.label for r in read_defect_dataset(tmp_path, split="train")} == {"good"}
    holes = read_defect_dataset(tmp_path, split="test", types="hole")
    assert [r.image.name for r in holes] == ["h1.png", "h2.png"]
    both = read_defect_dataset(tmp_path, types=["hole", "scratch"])
    assert len(both) == 4


def test_defect_image_without_mask_has_none(tmp_path):
    write_mvtec(tmp_path)
    (tmp_path / "ground_truth" / "hole" / "h1_mask.png").unlink()
    records = {r.image.stem: r for r in read_defect_dataset(tmp_path, types="hole")}
    assert records["h1"].mask is None and records["h2"].mask is not None


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="root: .*nowhere' is not a folder"):
        read_defect_dataset(tmp_path / "nowhere")


def test_no_images(tmp_path):
    (tmp_path / "train" / "good").mkdir(parents=True)
    (tmp_path / "train" / "good" / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="root: no images found in MVTec-AD folders"):
        read_defect_dataset(tmp_path)


def test_unknown_split_and_type(tmp_path):
    write_mvtec(tmp_path)
    with pytest.raises(ValueError, match="split: 'val' not found .*available: test, train"):
        read_defect_dataset(tmp_path, split="val")
    with pytest.raises(
        ValueError, match="types: 'dent' not found .*available: good, hole, scratch"
    ):
        read_defect_dataset(tmp_path, types=["hole", "dent"])
    with pytest.raises(ValueError, match=r"\(split 'train'\); available: good"):
        read_defect_dataset(tmp_path, split="train", types="hole")


# ---------------------------------------------------------------------------------- manifest
def test_manifest_layout(tmp_path):
    records = read_defect_dataset(write_manifest(tmp_path))
    assert [(r.label, r.split, r.has_mask) for r in records] == [
        ("hole", "test", True),
        ("normal", "train", False),
        ("scratch", "train", True),
    ]
    assert records[0].image == tmp_path / "images" / "h1.jpg"


def test_manifest_paper_split_column(tmp_path):
    write_manifest(tmp_path, split_column="paper_split")
    assert [r.label for r in read_defect_dataset(tmp_path, split="train")] == ["normal", "scratch"]


def test_manifest_missing_file(tmp_path):
    write_manifest(tmp_path)
    (tmp_path / "masks" / "h1_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 listed file.* do not exist, e.g. .*h1_mask.png"):
        read_defect_dataset(tmp_path)


def test_manifest_missing_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label\na.png,good\n")
    with pytest.raises(ValueError, match="missing column.* image"):
        read_defect_dataset(tmp_path)


def test_empty_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("image,label,mask\n")
    with pytest.raises(FileNotFoundError, match="no images found in .*manifest.csv"):
        read_defect_dataset(tmp_path)


# ---------------------------------------------------------------------------------- loading
def test_load_image_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    _save(tmp_path / "g.png", gray)
    image = load_image(tmp_path / "g.png")
    assert image.shape == (1, 3, 4) and image.dtype == torch.float32
    assert torch.allclose(image[0], torch.from_numpy(gray).float() / 255)
    assert load_image(tmp_path / "g.png", channels=3).shape == (3, 3, 4)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 10
    _save(tmp_path / "c.png", rgba)
    color = load_image(tmp_path / "c.png")
    assert (
        color.shape == (3, 3, 4) and float(color[0].min()) == 1.0 and float(color[1].max()) == 0.0
    )
    assert load_image(tmp_path / "c.png", channels=1).shape == (1, 3, 4)


def test_load_sixteen_bit_image(tmp_path):
    array = np.full((5, 6), 65535, dtype=np.uint16)
    array[0, 0] = 0
    Image.fromarray(array).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (1, 5, 6) and float(image.max()) == 1.0 and float(image.min()) == 0.0


@pytest.mark.parametrize("value", [200, 300])
def test_sixteen_bit_images_are_scaled_by_their_depth_not_their_content(tmp_path, value):
    Image.fromarray(np.full((3, 4), value, dtype=np.uint16)).save(tmp_path / "deep.png")
    torch.testing.assert_close(
        load_image(tmp_path / "deep.png"), torch.full((1, 3, 4), value / 65535)
    )
    eight = np.full((3, 4), 200, dtype=np.uint8)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    torch.testing.assert_close(load_image(tmp_path / "eight.png"), torch.full((1, 3, 4), 200 / 255))


def test_sixteen_bit_tiff_pgm_and_channels(tmp_path):
    array = np.full((3, 4), 300, dtype=np.uint16)
    for name in ("deep.tif", "deep.pgm"):
        Image.fromarray(array).save(tmp_path / name)
        image = load_image(tmp_path / name, channels=3)
        assert image.shape == (3, 3, 4)
        torch.testing.assert_close(image, torch.full((3, 3, 4), 300 / 65535))


def test_float_and_thirty_two_bit_images(tmp_path):
    Image.fromarray(np.full((3, 4), 0.25, dtype=np.float32)).save(tmp_path / "unit.tif")
    torch.testing.assert_close(load_image(tmp_path / "unit.tif"), torch.full((1, 3, 4), 0.25))
    Image.fromarray(np.full((3, 4), 7.5, dtype=np.float32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match=r"wide.tif.*values in \[0, 1\], found \[7.5, 7.5\]"):
        load_image(tmp_path / "wide.tif")
    Image.fromarray(np.full((3, 4), 300, dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(ValueError, match="wide.tif.*32-bit integer images are not supported"):
        load_image(tmp_path / "wide.tif")


def test_sixteen_bit_mask_is_cut_at_half_its_range(tmp_path):
    array = np.zeros((4, 5), np.uint16)
    array[1, 2] = 65535
    array[2, 2] = 300  # above 255 but far below half of 65535
    Image.fromarray(array).save(tmp_path / "m.png")
    assert int(load_mask(tmp_path / "m.png").sum()) == 1


def _truncated_png(path: Path) -> Path:
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("truncated", "truncated or corrupt"),
        ("empty", r"empty \(0 bytes\)"),
        ("text", "not an image format"),
    ],
)
def test_unreadable_files_raise_naming_the_file(tmp_path, kind, reason):
    path = tmp_path / "bad.png"
    if kind == "truncated":
        _truncated_png(path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an image")
    with pytest.raises(ValueError, match=f"image '.*bad.png': cannot be read.*{reason}"):
        load_image(path)
    with pytest.raises(ValueError, match=f"mask '.*bad.png': cannot be read.*{reason}"):
        load_mask(path)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    import defectaug.datasets as datasets

    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", 1999)
    with pytest.raises(ValueError, match="big.png'.*decompression bomb.*2000 pixels exceeds"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", 2000)
    assert load_image(tmp_path / "big.png").shape == (1, 40, 50)
    # PIL's own limit, warning and error alike, is an error here too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
    with pytest.raises(ValueError, match="big.png'.*decompression bomb"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)
    with pytest.raises(ValueError, match="big.png'.*decompression bomb"):
        load_image(tmp_path / "big.png")


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image .*missing.png' does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="mask .*missing.png' does not exist"):
        load_mask(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="channels: expected None, 1 or 3"):
        load_image(tmp_path / "missing.png", channels=2)


def test_load_mask(tmp_path):
    array = np.zeros((4, 5), np.uint8)
    array[1, 2] = 255
    array[2, 2] = 100  # below half: not defective
    _save(tmp_path / "m.png", array)
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == torch.bool and mask.shape == (1, 4, 5) and int(mask.sum()) == 1


# ---------------------------------------------------------------------------------- crops
def test_defect_crops_one_per_region():
    image = torch.rand(3, *SIZE)
    mask = torch.from_numpy(fixture_masks()["s1"] > 0)[None]
    crops = defect_crops(image, mask, margin=2)
    assert len(crops) == 2
    (bar, bar_alpha), (block, block_alpha) = sorted(
        crops, key=lambda c: c[0].shape[-1], reverse=True
    )
    # Bar rows 5..7, cols 4..29 plus 2 px margin; the block sits at cols 35..43 (+2, clipped at 48).
    assert bar.shape == (3, 3 + 4, 26 + 4) and torch.equal(bar, image[:, 3:10, 2:32])
    assert block.shape == (3, 10 + 4, 9 + 4)
    assert int(bar_alpha.sum()) == 78 and int(block_alpha.sum()) == 90
    assert bar_alpha.dtype == torch.float32 and set(bar_alpha.unique().tolist()) == {0.0, 1.0}


def test_defect_crops_excludes_other_regions_and_clips():
    image = torch.rand(1, 20, 20)
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 0:3, 0:3] = True  # at the corner: margin clipped
    mask[0, 5:7, 5:7] = True  # inside the first region's margin box
    crops = defect_crops(image, mask, margin=4)
    first = next(alpha for content, alpha in crops if content.shape[-1] == 7)
    assert int(first.sum()) == 9  # the neighbour's 4 px are not in this region's alpha
    assert [c.shape for c, _ in crops] == [(1, 7, 7), (1, 10, 10)]


def test_defect_crops_min_area_and_float_mask():
    image = torch.rand(1, *SIZE)
    mask = torch.from_numpy(fixture_masks()["h2"] > 0).float()[None] * 0.9
    assert len(defect_crops(image, mask, margin=0)) == 2
    assert len(defect_crops(image, mask, margin=0, min_area=16)) == 1
    assert [int(r.sum()) for r in defect_regions(mask >= 0.5, min_area=16)] == [113]


def test_defect_crops_errors():
    image = torch.rand(1, 10, 12)
    with pytest.raises(
        ValueError, match=r"mask: size \(10, 11\) does not match the image's \(10, 12\)"
    ):
        defect_crops(image, torch.zeros(1, 10, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask: expected a \[1, H, W\] tensor"):
        defect_crops(image, torch.zeros(10, 12, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"image: expected a float \[C, H, W\] tensor"):
        defect_crops(torch.zeros(1, 10, 12, dtype=torch.uint8), torch.zeros(1, 10, 12))
    with pytest.raises(ValueError, match="margin: expected an int >= 0"):
        defect_crops(image, torch.zeros(1, 10, 12), margin=-1)
    assert defect_crops(image, torch.zeros(1, 10, 12)) == []


# ---------------------------------------------------------------------------------- real data
def test_shared_magnetic_tile(shared_data):
    records = read_defect_dataset(shared_data / "magnetic_tile")
    assert len(records) == 489 + 153 + 38 + 26 + 14 + 10 + 32 + 19 + 19 + 9 + 4 + 9
    train_cracks = read_defect_dataset(shared_data / "magnetic_tile", split="train", types="crack")
    assert len(train_cracks) == 14 and all(r.has_mask for r in train_cracks)
    record = train_cracks[0]
    image, mask = load_image(record.image), load_mask(record.mask)
    assert image.shape[0] == 1 and mask.shape[-2:] == image.shape[-2:]
    crops = defect_crops(image, mask, margin=8)
    assert crops and all(alpha.sum() > 0 for _, alpha in crops)


def test_shared_bsdata(shared_data):
    records = read_defect_dataset(shared_data / "bsdata", types="pitting")
    assert len(records) == 324 and all(r.split == "train" for r in records)
    assert load_image(records[0].image).shape[0] == 3
