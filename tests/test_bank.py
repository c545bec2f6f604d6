"""DefectBank: building from folders, feathered alphas, geometric/photometric sampling, errors,
placement by the location prior of the real defects (edge classes against an image side)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_datasets import fixture_masks, write_manifest, write_mvtec

from defectaug.datasets import DefectRecord, read_defect_dataset
from defectaug.generators.bank import CropSite, DefectBank, feather_alpha
from defectaug.location import SIDES


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


# ------------------------------------------------------------------ placement (issue #13)
PLACE_SIZE = (48, 64)  # (H, W) of the placement fixture's images


def _write_record(folder, name: str, image: np.ndarray, mask: np.ndarray) -> DefectRecord:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{name}_mask.png")
    label = name.split("_")[0]
    return DefectRecord(folder / f"{name}.png", label, folder / f"{name}_mask.png", "train")


@pytest.fixture(scope="module")
def placed_records(tmp_path_factory) -> list[DefectRecord]:
    """``chip``: a dark half-disc on the left border, rows 16-31 (widest at the border);
    ``spot``: two dark discs either side of the centre of every image."""
    folder = tmp_path_factory.mktemp("placed")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: PLACE_SIZE[0], : PLACE_SIZE[1]]
    records = []
    for index in range(6):
        image = 0.6 + rng.normal(0.0, 0.01, PLACE_SIZE)
        row = 16 + 3 * index
        mask = ((yy - row) / 6.0) ** 2 + (xx / 10.0) ** 2 <= 1.0
        image[mask] = 0.2
        records.append(_write_record(folder, f"chip_{index}", image, mask))
        image = 0.6 + rng.normal(0.0, 0.01, PLACE_SIZE)
        mask = np.zeros(PLACE_SIZE, bool)
        for dx in (-7, 7):
            mask |= (yy - 24 + index % 2) ** 2 + (xx - 32 - dx) ** 2 <= 9
        image[mask] = 0.25
        records.append(_write_record(folder, f"spot_{index}", image, mask))
    return records


@pytest.fixture(scope="module")
def placed_bank(placed_records) -> DefectBank:
    return DefectBank.from_records(placed_records, preserve_scale=False, layer_size=32)


def _gap(mask: torch.Tensor, side: str) -> int:
    """Pixels between a bool ``[H, W]`` mask and image ``side``."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    height, width = mask.shape
    return {
        "top": int(rows[0]),
        "bottom": height - 1 - int(rows[-1]),
        "left": int(cols[0]),
        "right": width - 1 - int(cols[-1]),
    }[side]


def test_placement_follows_where_the_real_defects_were(placed_bank, placed_records):
    from defectaug.fitting import fit_defects

    assert placed_bank.edge_types == {"chip"}
    assert placed_bank.side_shares("chip") == {"top": 0.0, "bottom": 0.0, "left": 1.0, "right": 0.0}
    assert placed_bank.side_shares("spot") == dict.fromkeys(SIDES, 0.0)
    # The fitted generator's own rules, on the same real defects.
    fitted = fit_defects(placed_records).classes
    for name in ("chip", "spot"):
        assert placed_bank.side_shares(name) == fitted[name]["sides"]
    spot = placed_bank.placement("spot")
    assert spot["roi"].prior == fitted["spot"]["location"] and spot["roi"].side is None
    assert spot["count"] == (2, 2) and spot["rotation"] == (0.0, 0.0)
    assert spot["aspect"] == 1.0 and spot["confine"] is False
    # Each spot's crop: a 7-px disc and 8 px of context a side, over the 48-px shorter side.
    assert spot["scale"] == (round(23 / 48, 4), round(23 / 48, 4))
    roi = spot["roi"](torch.zeros(1, 1, *PLACE_SIZE))[0, 0]
    for dx in (-7, 7):
        assert bool(roi[24, 32 + dx]) and bool(roi[25, 32 + dx])
    assert not bool(roi[:8].any() or roi[-8:].any() or roi[:, :12].any() or roi[:, -12:].any())

    chip = placed_bank.placement("chip")
    assert chip["rotation"] == (90.0, 90.0) and chip["roi"].side == "left"
    band = chip["roi"](torch.zeros(1, 1, *PLACE_SIZE))[0, 0]
    # A band along the left border, over the rows the chips were seen on, nowhere else.
    assert not bool(band[:, 2:].any())
    assert bool(band[16:32, :2].all())
    assert not bool(band[:9].any() or band[-9:].any())


def test_edge_crops_are_stored_with_their_border_side_on_top(placed_bank):
    for content, alpha, label in zip(
        placed_bank._contents, placed_bank._alphas, placed_bank.crop_labels.tolist(), strict=True
    ):
        region = alpha[0] >= 0.5
        rows = torch.nonzero(region.any(dim=1)).flatten()
        if placed_bank.defect_types[label] == "chip":
            # Turned from the left border to the top: widest at the top row, 8 px of context
            # below and on either side, none above.
            assert int(rows[0]) == 0 and content.shape[-2:] == (19, 29)
            widths = region.sum(dim=1)
            assert int(widths[0]) == int(widths.max())
        else:
            assert int(rows[0]) == 8


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_edge_class_lands_against_the_requested_side(placed_bank, side):
    from defectaug import inject_defects
    from defectaug.location import edge_tolerance

    images = torch.full((8, 1, 96, 96), 0.6)
    placement = placed_bank.placement("chip", side)
    out = inject_defects(images, "chip", placed_bank, seed=3, **placement)
    turns = {"top": 0, "right": 1, "bottom": 2, "left": 3}[side]
    for mask in out.masks[:, 0]:
        assert bool(mask.any())
        assert _gap(mask, side) <= edge_tolerance(96), f"the chip left the {side} border"
        # Turned so the side it touches is on top: the chip is widest at the border.
        upright = torch.rot90(mask, turns)
        widths = upright.sum(dim=1)
        rows = torch.nonzero(widths).flatten()
        assert int(widths[rows[0]]) >= int(widths[rows[-1]]) + 4
    # The per-sample renderer (DefectInject) places it the same way.
    from torchvision import tv_tensors

    from defectaug import DefectInject

    inject = DefectInject("chip", p=1.0, generator=placed_bank, seed=5, **placement)
    for index in range(4):
        _, mask, _ = inject(
            images[index], tv_tensors.Mask(torch.zeros(1, 96, 96, dtype=torch.uint8)), 0
        )
        assert _gap(mask[0].bool(), side) <= edge_tolerance(96)


def test_edge_crops_are_neither_turned_nor_flipped_off_their_border():
    content = torch.rand(1, 10, 14, generator=torch.Generator().manual_seed(0))
    alpha = torch.zeros(1, 10, 14)
    alpha[:, :, :5] = 1.0  # the region touches the crop's (and the image's) left side
    site = CropSite(centre=(0.5, 0.05), extent=0.3, side="left", touches=("left",), image=0)
    bank = _plain_bank(
        {"chip": [(content, alpha)]},
        layer_size=(20, 20),
        sites={"chip": [site]},
        rot90=True,
        flip=True,
        rotation=(-30.0, 30.0),
    )
    upright = torch.rot90(content, 3, dims=(1, 2))  # left side on top: 14 x 10
    allowed = [upright, upright.flip(-1)]
    layers = bank.sample(12, generator=0)
    seen = set()
    for item, layer_alpha in zip(layers.content, layers.alpha, strict=True):
        # Drawn against the layer's top row, centred across it, never turned or flipped upside down.
        assert bool((layer_alpha[0, 0] >= 0.5).any()) and not bool(layer_alpha[0, 14:].any())
        window = item[:, :14, 5:15]
        matches = [i for i, v in enumerate(allowed) if torch.allclose(window, v, atol=1e-5)]
        assert matches, "an edge crop was turned or flipped off its border"
        seen.add(matches[0])
    assert seen == {0, 1}
    # The same crop in a class that is not on an edge is turned freely.
    free = CropSite(centre=(0.5, 0.5), extent=0.3, side="left", touches=(), image=0)
    loose = _plain_bank(
        {"chip": [(content, alpha)]}, layer_size=(20, 20), sites={"chip": [free]}, rot90=True
    )
    assert loose.edge_types == frozenset()
    assert torch.equal(loose._contents[0], content)


def test_non_edge_class_ignores_side(placed_bank):
    plain = placed_bank.placement("spot")
    for side in ("top", "bottom", "left", "right"):
        assert placed_bank.placement("spot", side) == plain


def test_placement_bad_arguments(placed_bank):
    expected = "class_name: expected one of chip, spot, got 'dent'"
    with pytest.raises(ValueError, match=expected):
        placed_bank.placement("dent")
    with pytest.raises(ValueError, match=expected):
        placed_bank.side_shares("dent")
    for name in ("chip", "spot"):
        with pytest.raises(
            ValueError, match="side: expected None or one of top, bottom, left, right, got 'up'"
        ):
            placed_bank.placement(name, side="up")
    crops = {"x": [(torch.rand(1, 4, 4), torch.ones(1, 4, 4))]}
    with pytest.raises(ValueError, match="sites: this bank was built without its crops' sites"):
        DefectBank(crops).placement("x")
    with pytest.raises(ValueError, match="sites: expected a mapping with the defect types"):
        DefectBank(crops, sites={"y": []})
    with pytest.raises(ValueError, match=r"sites\['x'\]: expected one CropSite per crop \(1\)"):
        DefectBank(crops, sites={"x": []})


def test_edge_crops_take_the_tone_of_where_they_land(placed_bank):
    from defectaug import inject_defects

    placement = placed_bank.placement("chip", "top")
    for level in (0.15, 0.85):
        images = torch.full((4, 1, 96, 96), level)
        out = inject_defects(images, "chip", placed_bank, seed=1, **placement)
        for item in range(4):
            mask = out.masks[item : item + 1].float()
            ring = F.max_pool2d(mask, 7, 1, 3)[0, 0] > 0
            ring &= ~out.masks[item, 0]
            # The crops' surroundings (0.6 in the bank) land at the image's tone.
            assert abs(float(out.images[item, 0][ring].mean()) - level) < 0.03


def test_placement_survives_pickling_and_moving(placed_bank):
    import pickle

    copy = pickle.loads(pickle.dumps(placed_bank))
    assert copy.placement("chip", "right") == placed_bank.placement("chip", "right")
    assert copy.sites == placed_bank.sites and copy.edge_types == placed_bank.edge_types
    moved = copy.to(torch.float64)
    assert moved.crop_anchored.dtype == torch.bool
    first = placed_bank.sample(4, "chip", generator=2)
    again = moved.sample(4, "chip", generator=2)
    assert torch.allclose(first.alpha, again.alpha, atol=1e-5)
