"""DefectBank: building from folders, feathered alphas, geometric/photometric sampling, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_datasets import fixture_masks, write_manifest, write_mvtec

from defectaug.datasets import read_defect_dataset
from defectaug.generators.bank import DefectBank, feather_alpha


@pytest.fixture
def mvtec_root(tmp_path):
    return write_mvtec(tmp_path / "mvtec")


@pytest.fixture
def bank(mvtec_root) -> DefectBank:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DefectBank.from_folder(mvtec_root, layer_size=48)


def _plain_bank(crops, **options) -> DefectBank:
    """A bank with every random variation switched off."""
    fixed = dict(scale=(1.0, 1.0), rotation=(0.0, 0.0), flip=False, rot90=False)
    fixed |= dict(brightness=(0.0, 0.0), contrast=(1.0, 1.0))
    return DefectBank(crops, **(fixed | options))


def test_from_folder_counts_and_skips(mvtec_root):
    with pytest.warns(UserWarning, match="DefectBank: skipped 1 empty mask"):
        bank = DefectBank.from_folder(mvtec_root)
    assert bank.defect_types == ("hole", "scratch")
    assert bank.counts() == {"hole": 2, "scratch": 2}
    assert bank.skipped_empty == 1 and bank.skipped_small == 1
    assert len(bank) == 4 and bank.channels == 1
    assert "skipped_empty=1" in repr(bank)


def test_channels_follow_the_data(tmp_path):
    rgb = DefectBank.from_folder(write_manifest(tmp_path / "rgb", channels=3))
    assert rgb.channels == 3 and rgb.defect_types == ("hole", "scratch")
    layer = rgb.sample(2, generator=0)
    assert layer.content.shape[1] == 3
    # The other channel count is served by conversion: the same draw, its ITU-R 601 luminance.
    gray_request = rgb.sample(2, generator=0, channels=1)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert gray_request.content.shape[1] == 1 and torch.equal(gray_request.alpha, layer.alpha)
    expected = (layer.content * weights).sum(dim=1, keepdim=True)
    assert torch.allclose(gray_request.content, expected, atol=1e-6)
    gray = DefectBank.from_folder(write_manifest(tmp_path / "gray", channels=1), channels=3)
    assert gray.channels == 3
    grey_bank = DefectBank.from_folder(write_manifest(tmp_path / "grey", channels=1))
    assert grey_bank.channels == 1
    # A grey bank on RGB images: a luminance change of the patch each crop lands on.
    patch = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    rgb_request = grey_bank.sample(2, generator=0, channels=3, background=patch)
    assert rgb_request.content.shape[1] == 3
    colour = rgb_request.content - (rgb_request.content * weights).sum(dim=1, keepdim=True)
    patch_colour = patch - (patch * weights).sum(dim=1, keepdim=True)
    unclamped = ((rgb_request.content > 0) & (rgb_request.content < 1)).all(dim=1, keepdim=True)
    unclamped = unclamped.expand_as(colour)
    assert torch.allclose(colour[unclamped], patch_colour[unclamped], atol=1e-5)
    # A background of another size than the layer is resized to it, as convert_layer does.
    other = grey_bank.sample(2, generator=0, background=torch.rand(2, 1, 50, 60))
    assert other.content.shape[-2:] == layer.content.shape[-2:]


def test_split_and_types_are_passed_on(mvtec_root):
    bank = DefectBank.from_folder(mvtec_root, split="test", types="hole")
    assert bank.defect_types == ("hole",)
    with pytest.raises(ValueError, match="types: 'dent' not found"):
        DefectBank.from_folder(mvtec_root, types="dent")


def test_feathered_alpha_keeps_the_mask_exact(bank):
    region = torch.from_numpy(fixture_masks()["h1"] > 0)[None]
    soft = feather_alpha(region, 2.0)
    assert torch.equal(soft >= 0.5, region)
    assert bool(((soft > 0) & (soft < 1)).any())
    assert float(soft.max()) <= 1.0 and float(soft.min()) >= 0.0
    assert torch.equal(feather_alpha(region, 0.0), region.float())
    for alpha in bank._alphas:
        inner = alpha >= 0.5
        assert inner.any() and bool(((alpha > 0.01) & (alpha < 0.99)).any())
    with pytest.raises(ValueError, match="feather: expected a number >= 0"):
        feather_alpha(region, -1.0)


def test_sample_contract(bank):
    layer = bank.sample(6, generator=3)
    assert layer.content.shape == (6, 1, 48, 48) and layer.alpha.shape == (6, 1, 48, 48)
    assert layer.content.dtype == torch.float32 and layer.type_names == ("hole", "scratch")
    assert float(layer.content.min()) >= 0 and float(layer.content.max()) <= 1
    assert bool(layer.mask().flatten(1).any(1).all())
    again = bank.sample(6, generator=3)
    assert torch.equal(layer.content, again.content) and torch.equal(layer.alpha, again.alpha)
    other = bank.sample(6, generator=4)
    assert not torch.equal(layer.alpha, other.alpha)
    assert bank.sample(2, "hole", generator=0, layer_size=(20, 30)).size == (20, 30)
    assert bank.sample(2, generator=0, dtype=torch.float64).alpha.dtype == torch.float64


def test_identity_sampling_copies_the_crop():
    content = torch.rand(1, 10, 12)
    alpha = torch.zeros(1, 10, 12)
    alpha[:, 2:8, 3:9] = 1.0
    bank = _plain_bank({"dent": [(content, alpha)]}, layer_size=(20, 22))
    layer = bank.sample(3, generator=0)
    # Even size differences centre the crop on whole pixels: an exact copy at (5, 5).
    assert torch.allclose(layer.alpha[:, :, 5:15, 5:17], alpha.expand(3, 1, 10, 12), atol=1e-5)
    assert torch.allclose(layer.content[:, :, 5:15, 5:17], content.expand(3, 1, 10, 12), atol=1e-5)
    assert float(layer.alpha.sum()) == pytest.approx(3 * 36, abs=1e-3)


def test_quarter_turns_and_flips_are_exact():
    content = torch.rand(1, 8, 8)
    alpha = torch.zeros(1, 8, 8)
    alpha[:, 1:7, 2:5] = 1.0
    variants = [torch.rot90(content, k, dims=(1, 2)) for k in range(4)]
    variants += [torch.flip(v, dims=(2,)) for v in variants] + [
        torch.flip(v, dims=(1,)) for v in variants
    ]
    bank = _plain_bank({"dent": [(content, alpha)]}, layer_size=(8, 8), rot90=True, flip=True)
    layer = bank.sample(16, generator=1)
    seen = set()
    for item in layer.content:
        matches = [i for i, v in enumerate(variants) if torch.allclose(item, v, atol=1e-5)]
        assert matches, "a sample is not a flip/quarter turn of the crop"
        seen.add(matches[0] % 4)
    assert len(seen) > 1


def test_preserve_scale_shrinks_only_what_does_not_fit():
    big = (torch.rand(1, 60, 30), torch.ones(1, 60, 30))
    small = (torch.rand(1, 6, 6), torch.ones(1, 6, 6))
    kept = _plain_bank({"big": [big], "small": [small]}, layer_size=(32, 32))
    box = kept.sample(1, "big", generator=0).bounding_box()[0].tolist()
    assert box[3] - box[1] == 32 and 15 <= box[2] - box[0] <= 17  # shrunk, aspect kept
    box = kept.sample(1, "small", generator=0).bounding_box()[0].tolist()
    assert (box[2] - box[0], box[3] - box[1]) == (6, 6)  # real size kept
    filled = _plain_bank(
        {"big": [big], "small": [small]}, layer_size=(32, 32), preserve_scale=False
    )
    box = filled.sample(1, "small", generator=0).bounding_box()[0].tolist()
    assert box[2] - box[0] >= 31 and box[3] - box[1] >= 31


def test_rotation_keeps_the_defect_inside():
    crop = (torch.rand(1, 10, 40), torch.ones(1, 10, 40))
    bank = _plain_bank({"bar": [crop]}, layer_size=(40, 40), rotation=(30.0, 60.0))
    layer = bank.sample(8, generator=2)
    assert bool(layer.mask().any())
    border = torch.cat([layer.alpha[..., 0, :], layer.alpha[..., -1, :]], dim=-1)
    assert float(border.max()) < 0.5


def test_brightness_and_contrast_jitter():
    content = torch.full((1, 8, 8), 0.5)
    content[:, :4] = 0.3
    crop = (content, torch.ones(1, 8, 8))
    plain = _plain_bank({"x": [crop]}, layer_size=8).sample(1, generator=0).content
    brighter = _plain_bank({"x": [crop]}, layer_size=8, brightness=(0.1, 0.1)).sample(
        1, generator=0
    )
    assert torch.allclose(brighter.content, plain + 0.1, atol=1e-5)
    stronger = _plain_bank({"x": [crop]}, layer_size=8, contrast=(2.0, 2.0)).sample(1, generator=0)
    assert torch.allclose(stronger.content[0, 0, 0, 0], torch.tensor(0.2), atol=1e-5)
    assert torch.allclose(stronger.content[0, 0, -1, 0], torch.tensor(0.6), atol=1e-5)


def test_to_moves_and_casts_crops(bank):
    bank = bank.to(torch.float64)
    assert bank._contents[0].dtype == torch.float64
    assert bank.sample(2, generator=0).content.dtype == torch.float32


def test_bad_inputs(bank, tmp_path):
    with pytest.raises(
        KeyError, match="unknown defect type 'crack' for DefectBank; accepted: hole, scratch"
    ):
        bank.sample(1, "crack")
    with pytest.raises(TypeError, match="unknown sample option.* angle for DefectBank"):
        bank.sample(1, angle=3)
    with pytest.raises(ValueError, match="layer_size: expected an int or an"):
        bank.sample(1, layer_size=(2, 2))
    with pytest.raises(ValueError, match="scale: expected a \\(low, high\\) pair"):
        DefectBank({"x": [(torch.rand(1, 4, 4), torch.ones(1, 4, 4))]}, scale=(2.0, 1.0))
    with pytest.raises(ValueError, match="crops: expected a non-empty mapping"):
        DefectBank({})
    with pytest.raises(
        ValueError, match="crops\\['x'\\]\\[0\\]: alpha must be a float \\[1, h, w\\]"
    ):
        DefectBank({"x": [(torch.rand(1, 4, 4), torch.ones(1, 4, 5))]})
    with pytest.raises(ValueError, match="all crops must have one channel count"):
        DefectBank(
            {
                "x": [(torch.rand(1, 4, 4), torch.ones(1, 4, 4))],
                "y": [(torch.rand(3, 4, 4), torch.ones(1, 4, 4))],
            }
        )
    with pytest.raises(ValueError, match="min_area: expected an int >= 1"):
        DefectBank.from_records([], min_area=0)


def test_only_empty_masks(mvtec_root):
    with pytest.raises(ValueError) as info:
        DefectBank.from_folder(mvtec_root, types="scratch", min_area=1000)
    assert "no defect region of at least 1000 px" in str(info.value)
    assert "1 of them empty, 2 region(s) below min_area" in str(info.value)


def test_mask_size_mismatch(mvtec_root):
    from PIL import Image

    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(
        mvtec_root / "ground_truth" / "hole" / "h1_mask.png"
    )
    with pytest.raises(
        ValueError, match=r"mask: .*h1_mask.png is \(10, 10\) but its image .*h1.png is \(40, 48\)"
    ):
        DefectBank.from_folder(mvtec_root, types="hole")


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        DefectBank.from_folder(tmp_path / "absent")


def test_shared_magnetic_tile_bank(shared_data):
    with pytest.warns(UserWarning, match="skipped 1 empty mask"):
        bank = DefectBank.from_folder(
            shared_data / "magnetic_tile", split="train", types=["crack", "uneven"]
        )
    assert bank.channels == 1 and bank.skipped_empty == 1
    assert set(bank.defect_types) == {"crack", "uneven"}
    layer = bank.sample(8, generator=0, layer_size=64)
    assert layer.content.shape == (8, 1, 64, 64)
    assert bool(layer.mask().flatten(1).any(1).all())


def test_shared_bsdata_bank(shared_data):
    records = read_defect_dataset(shared_data / "bsdata", types="pitting")[:6]
    bank = DefectBank.from_records(records, source="bsdata")
    assert bank.channels == 3 and bank.defect_types == ("pitting",)
    layer = bank.sample(4, generator=0)
    assert layer.content.shape[1] == 3 and bool(layer.mask().flatten(1).any(1).all())
