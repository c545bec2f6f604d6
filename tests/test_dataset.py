from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, TensorDataset
from torchvision import tv_tensors
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from defectaug.dataset import SyntheticDefectDataset
from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer


class GrayBlob(DefectGenerator):
    """A single-channel generator, to exercise the channel checks."""

    defect_types = ("blob",)
    channels = 1
    layer_size = (12, 12)

    def _generate(self, labels, *, generator, device, dtype, channels, background, reference):
        alpha = torch.zeros(labels.shape[0], 1, 12, 12, device=device, dtype=dtype)
        alpha[:, :, 3:9, 3:9] = 1
        return DefectLayer(torch.zeros_like(alpha), alpha, labels, self.defect_types)


def _write_backgrounds(folder: Path, count=3, mode="RGB", size=(40, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        array = (150 + 40 * rng.random(shape)).astype(np.uint8)
        path = folder / f"normal_{index}.png"
        Image.fromarray(array, mode=mode).save(path)
        paths.append(path)
    return paths


def _tensor_backgrounds(count=3):
    g = torch.Generator().manual_seed(0)
    return [0.5 + 0.2 * torch.rand(3, 32, 40, generator=g) for _ in range(count)]


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_sources_folder_paths_dataset_and_list(tmp_path):
    paths = _write_backgrounds(tmp_path / "normals")
    (tmp_path / "normals" / "notes.txt").write_text("not an image")
    tensors = torch.stack(_tensor_backgrounds())
    for source in (
        tmp_path / "normals",
        str(tmp_path / "normals"),
        paths,
        TensorDataset(tensors, torch.zeros(3)),
        list(tensors),
    ):
        data = SyntheticDefectDataset(source, defect_types=["spot", "pit"], length=4)
        image, label = data[0]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
        assert image.shape == (3, 32, 40) and label in (0, 1)
        assert len(data.backgrounds) == 3


def test_targets_and_labels():
    backgrounds = _tensor_backgrounds()
    as_dict = SyntheticDefectDataset(
        backgrounds, defect_types=["spot", "crack"], length=6, target="dict", count=(1, 3)
    )
    sample = as_dict[2]
    assert set(sample) == {"image", "mask", "label", "boxes", "defect_types"}
    assert isinstance(sample["mask"], tv_tensors.Mask) and sample["mask"].shape == (1, 32, 40)
    assert sample["mask"].dtype == torch.bool and sample["mask"].any()
    assert isinstance(sample["boxes"], tv_tensors.BoundingBoxes)
    assert len(sample["defect_types"]) == len(sample["boxes"]) >= 1
    assert as_dict.classes == ["spot", "crack"]  # the requested order (labels: index in it)
    assert sample["label"] == as_dict.classes.index(sample["defect_types"][0])
    for x0, y0, x1, y1 in sample["boxes"].tolist():
        assert sample["mask"][0, y0:y1, x0:x1].any()
    masks = SyntheticDefectDataset(
        backgrounds, defect_types=["spot", "crack"], length=6, target="mask", count=(1, 3)
    )
    image, mask = masks[2]
    assert torch.equal(image, sample["image"]) and torch.equal(mask, sample["mask"])
    mapped = SyntheticDefectDataset(
        backgrounds, defect_types=["spot", "crack"], length=6, label_map={"spot": 5, "crack": 9}
    )
    assert {mapped[i][1] for i in range(6)} <= {5, 9}


def test_item_is_a_pure_function_of_seed_and_index():
    backgrounds = _tensor_backgrounds(5)
    make = lambda seed: SyntheticDefectDataset(backgrounds, length=20, seed=seed, target="dict")  # noqa: E731
    first, again, other = make(0), make(0), make(1)
    order = [7, 3, 7, 19, 0]
    items = [first[i] for i in order]
    assert _equal(items[0], items[2])
    assert all(_equal(a, again[i]) for a, i in zip(items, order, strict=True))
    assert not _equal(first[7]["mask"], other[7]["mask"])
    assert _equal(first[-1], first[19])
    with pytest.raises(IndexError):
        first[20]


def test_dataloader_workers_and_ddp_ranks_see_the_same_items():
    data = SyntheticDefectDataset(_tensor_backgrounds(), length=8, seed=3, target="mask")
    direct = [data[i] for i in range(8)]
    loader = DataLoader(data, batch_size=2, num_workers=2)
    images, masks = (torch.cat(part) for part in zip(*loader, strict=True))
    assert torch.equal(images, torch.stack([image for image, _ in direct]))
    assert torch.equal(masks, torch.stack([mask for _, mask in direct]))

    ranks = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(1)
        ranks.append(list(sampler))
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == list(range(8))
    replica = SyntheticDefectDataset(_tensor_backgrounds(), length=8, seed=3, target="mask")
    for index in ranks[1]:
        assert _equal(replica[index], direct[index])


def test_transform_sees_image_mask_and_boxes_together():
    flip = v2.RandomHorizontalFlip(p=1.0)
    backgrounds = _tensor_backgrounds()
    plain = SyntheticDefectDataset(backgrounds, length=3, target="dict")
    flipped = SyntheticDefectDataset(backgrounds, length=3, target="dict", transform=flip)
    a, b = plain[1], flipped[1]
    assert torch.equal(b["image"], a["image"].flip(-1)) and torch.equal(
        b["mask"], a["mask"].flip(-1)
    )
    width = a["image"].shape[-1]
    assert torch.equal(b["boxes"][:, 0], width - a["boxes"][:, 2])
    as_label = SyntheticDefectDataset(backgrounds, length=3, transform=v2.Resize((16, 20)))
    assert as_label[0][0].shape == (3, 16, 20)


def test_concat_with_an_imagefolder(tmp_path):
    _write_backgrounds(tmp_path / "real" / "good", count=2)
    _write_backgrounds(tmp_path / "real" / "scratch", count=2)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    real = ImageFolder(tmp_path / "real", transform=to_tensor)
    synthetic = SyntheticDefectDataset(
        _tensor_backgrounds(), defect_types="scratch", length=4, label_map=real.class_to_idx
    )
    data = ConcatDataset([real, synthetic])
    images, labels = next(iter(DataLoader(data, batch_size=8)))
    assert images.shape == (8, 3, 32, 40) and labels.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]


def test_documented_concat_snippet_batches(tmp_path):
    """The module docs' ConcatDataset snippet: RGB ImageFolder + grey backgrounds, one pipeline."""
    for name in ("good", "scratch", "spot"):
        _write_backgrounds(tmp_path / "train" / name, count=2)
    _write_backgrounds(tmp_path / "normals", count=2, mode="L")  # grey backgrounds
    transform = v2.Compose(
        [v2.ToImage(), v2.RandomResizedCrop(224), v2.ToDtype(torch.float32, scale=True)]
    )
    real = ImageFolder(tmp_path / "train", transform=transform)
    synthetic = SyntheticDefectDataset(
        tmp_path / "normals",
        defect_types=["scratch", "spot"],
        label_map={name: real.class_to_idx[name] for name in ("scratch", "spot")},
        length=6,
        transform=transform,
        to_rgb=True,
    )
    loader = DataLoader(ConcatDataset([real, synthetic]), batch_size=4, shuffle=False)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [4, 4, 4]
    for images, labels in batches:
        assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    synthetic_labels = torch.cat([labels for _, labels in batches])[6:]
    assert set(synthetic_labels.tolist()) <= {
        real.class_to_idx["scratch"],
        real.class_to_idx["spot"],
    }


def test_channels(tmp_path):
    gray = _write_backgrounds(tmp_path / "gray", mode="L")
    rgb = _write_backgrounds(tmp_path / "rgb", mode="RGB")
    assert SyntheticDefectDataset(gray, length=2)[0][0].shape == (1, 32, 40)
    # A grey generator on RGB backgrounds: its layers become a luminance change.
    on_rgb = SyntheticDefectDataset(rgb, generator=GrayBlob(), length=2)
    assert on_rgb[0][0].shape == (3, 32, 40)
    converted = SyntheticDefectDataset(rgb, generator=GrayBlob(), length=2, to_grayscale=True)
    assert converted[0][0].shape == (1, 32, 40)
    assert SyntheticDefectDataset(gray, length=2, to_rgb=True)[0][0].shape == (3, 32, 40)
    mixed = SyntheticDefectDataset([gray[0], rgb[0]], length=30)
    with pytest.raises(ValueError, match=r"item 1 \('.*normal_0.png'\) has 3 channel"):
        [mixed[i] for i in range(30)]
    with pytest.raises(ValueError, match="to_grayscale, to_rgb"):
        SyntheticDefectDataset(gray, to_grayscale=True, to_rgb=True)


def test_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        SyntheticDefectDataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        SyntheticDefectDataset(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not found"):
        SyntheticDefectDataset([tmp_path / "missing.png"])
    with pytest.raises(ValueError, match="empty"):
        SyntheticDefectDataset([])
    backgrounds = _tensor_backgrounds()
    with pytest.raises(KeyError, match="unknown defect type 'dent'"):
        SyntheticDefectDataset(backgrounds, defect_types=["dent"])
    with pytest.raises(ValueError, match="target"):
        SyntheticDefectDataset(backgrounds, target="boxes")
    with pytest.raises(ValueError, match="count"):
        SyntheticDefectDataset(backgrounds, count=(0, 2))
    with pytest.raises(ValueError, match="label_map"):
        SyntheticDefectDataset(backgrounds, defect_types=["spot", "pit"], label_map={"spot": 1})
    with pytest.raises(TypeError, match="backgrounds"):
        SyntheticDefectDataset(42)


def _break(path: Path, kind: str) -> Path:
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[:80])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an image")
    return path


@pytest.mark.parametrize("kind", ["truncated", "empty", "text"])
def test_check_and_items_name_the_unreadable_file(tmp_path, kind):
    paths = _write_backgrounds(tmp_path / "normals", count=3)
    bad = _break(paths[2], kind)
    data = SyntheticDefectDataset(tmp_path / "normals", length=12, seed=0)  # reads item 0 only
    with pytest.raises(ValueError, match=f"'{bad}': cannot be read"):
        data.check()
    loaded = []
    for index in range(12):
        try:
            data[index]
            loaded.append(True)
        except ValueError as error:
            assert f"'{bad}': cannot be read" in str(error)
            loaded.append(False)
    assert True in loaded and False in loaded


def test_check_passes_on_good_backgrounds_and_refuses_bombs(tmp_path, monkeypatch):
    import defectaug.datasets as datasets

    _write_backgrounds(tmp_path / "normals", count=2)
    data = SyntheticDefectDataset(tmp_path / "normals", length=4)
    assert data.check() is None
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(tmp_path / "normals" / "z.png")
    data = SyntheticDefectDataset(tmp_path / "normals", length=4)
    monkeypatch.setattr(datasets, "MAX_IMAGE_PIXELS", 40 * 32)
    with pytest.raises(ValueError, match="z.png'.*decompression bomb"):
        data.check()


def test_check_reports_backgrounds_too_small_or_deleted(tmp_path):
    paths = _write_backgrounds(tmp_path / "normals", count=2)
    Image.fromarray(np.full((6, 40), 128, np.uint8), mode="L").convert("RGB").save(
        tmp_path / "normals" / "thin.png"
    )
    data = SyntheticDefectDataset(tmp_path / "normals", length=4, min_size=8)
    with pytest.raises(ValueError, match="thin.png'.*6x40 is smaller than the smallest"):
        data.check()
    (tmp_path / "normals" / "thin.png").unlink()
    with pytest.raises(ValueError, match="thin.png'.*does not exist"):
        data.check()
    assert SyntheticDefectDataset(paths, length=4, min_size=8).check() is None


def test_sixteen_bit_backgrounds_keep_their_tone(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    Image.fromarray(np.full((32, 40), 200, np.uint16)).save(folder / "dark.png")
    data = SyntheticDefectDataset(folder, length=2)
    torch.testing.assert_close(data.load_background(0), torch.full((1, 1, 32, 40), 200 / 65535))
    as_pil = SyntheticDefectDataset([Image.open(folder / "dark.png")], length=2)
    assert as_pil.load_background(0).shape == (1, 1, 32, 40)


@pytest.mark.parametrize("scale", [255.0, -1.0])
def test_float_backgrounds_outside_the_unit_range_are_refused(scale):
    backgrounds = [background * scale for background in _tensor_backgrounds(2)]
    with pytest.raises(ValueError, match=r"backgrounds item 0: expected float values in \[0, 1\]"):
        SyntheticDefectDataset(backgrounds, length=2)
    # Rounding a hair outside [0, 1] is accepted.
    nearly = [background.clamp(0, 1) + 5e-4 for background in _tensor_backgrounds(2)]
    assert SyntheticDefectDataset(nearly, length=2).check() is None
