"""Bank and learned layers sampled ahead (``SampledReservoir``): reproducible, shared by both
renderers, and no generator call per sample."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from defectaug import DefectInject
from defectaug.batch import composite_visible, render_plan
from defectaug.generators.bank import DefectBank
from defectaug.generators.base import Landing, support_boxes
from defectaug.generators.registry import load_generator
from defectaug.per_sample import FIRST_CHUNK, USES_PER_LAYER, SampledReservoir, place_sample
from defectaug.placement import PlacementOptions
from defectaug.plan import draw_plan


def _crop(seed: int, size: tuple[int, int], channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    rng = torch.Generator().manual_seed(seed)
    height, width = size
    content = 0.2 + 0.5 * torch.rand(channels, height, width, generator=rng)
    alpha = torch.zeros(1, height, width)
    alpha[:, 2:-2, 3:-3] = 1.0
    return content, alpha


@pytest.fixture(scope="module")
def bank() -> DefectBank:
    # A grey bank, as magnetic tile's: on RGB images its crops shift the landing patch's
    # luminance, and each is tone-matched to where it lands.
    return DefectBank(
        {
            "blowhole": [_crop(0, (12, 16)), _crop(1, (20, 14))],
            "crack": [_crop(2, (30, 8)), _crop(3, (10, 26))],
        },
        layer_size=48,
    )


@pytest.fixture(scope="module")
def card():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # shipped with the repository: nothing to fetch
        yield load_generator("dcdgan-magnetic-tile-64")


def _images(count: int, dtype: torch.dtype = torch.uint8, size=(64, 80)) -> list[torch.Tensor]:
    rng = torch.Generator().manual_seed(7)
    images = [torch.randint(40, 220, (3, *size), dtype=torch.uint8, generator=rng)]
    images += [torch.randint(40, 220, (3, *size), dtype=torch.uint8, generator=rng)]
    images = [images[i % 2] for i in range(count)]
    return images if dtype == torch.uint8 else [image.to(dtype) / 255.0 for image in images]


def _run(transform: DefectInject, images: list[torch.Tensor]) -> list[tuple]:
    outputs = []
    for image in images:
        out, mask = transform(
            image, tv_tensors.Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
        )
        outputs.append((out, mask))
    return outputs


@pytest.mark.parametrize("which", ["bank", "card"])
def test_the_same_seed_gives_the_same_images_and_masks(which, bank, card):
    generator = bank if which == "bank" else card
    images = _images(24)

    def run(seed):
        return _run(DefectInject(None, p=1.0, generator=generator, seed=seed, count=(1, 2)), images)

    first, again, other = run(3), run(3), run(4)
    shown = 0
    for (out, mask), (out_again, mask_again) in zip(first, again, strict=True):
        assert torch.equal(out, out_again) and torch.equal(mask, mask_again)
        shown += int(mask.any())
    # Every sample drew a defect (p=1), and what changed is exactly the mask.
    assert shown == len(images)
    for (out, mask), image in zip(first, images, strict=True):
        changed = (out.int() - image.int()).abs().amax(0) > 8
        mask = mask.bool()
        assert not bool((changed & ~mask).any())
        assert int((mask & ~changed).sum()) <= int(mask.sum()) // 10  # filled one-pixel holes
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def test_a_pickled_transform_continues_where_the_original_was(bank):
    images = _images(40)
    transform = DefectInject("crack", p=1.0, generator=bank, seed=1, scale=0.4)
    _run(transform, images[:20])  # the copy must carry the reservoir's positions
    copy = pickle.loads(pickle.dumps(transform))
    for (out, mask), (out_copy, mask_copy) in zip(
        _run(transform, images[20:]), _run(copy, images[20:]), strict=True
    ):
        assert torch.equal(out, out_copy) and torch.equal(mask, mask_copy)


def _options() -> PlacementOptions:
    return PlacementOptions.check(
        count=(1, 1),
        scale=(0.15, 0.5),
        rotation=(-180.0, 180.0),
        aspect=(0.75, 4.0 / 3.0),
        min_size=8,
        roi=None,
        confine=True,
    )


@pytest.mark.parametrize("which", ["bank", "card"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_compiled_and_torch_renderers_agree_on_one_plan(which, dtype, bank, card):
    # The same layers (each renderer's own reservoir, same seed), the same landing patches:
    # the same mask, and images one 8-bit level apart (float rounding) at most.
    generator = bank if which == "bank" else card
    tolerance = 1 if dtype == torch.uint8 else 1e-5
    for seed, image in enumerate(_images(12, dtype)):
        plan = draw_plan(_options(), generator.defect_types, 1, tuple(image.shape[-2:]), seed)
        compiled = place_sample(plan, image, SampledReservoir(generator, seed))
        out = compiled.source_composite()
        floats = image[None].to(torch.float32)
        floats = floats / 255.0 if dtype == torch.uint8 else floats
        layout = render_plan(floats, plan, generator, reservoir=SampledReservoir(generator, seed))
        levels = 255 if dtype == torch.uint8 else None
        result = composite_visible(floats, layout, "alpha", levels)
        expected = result.images[0]
        if dtype == torch.uint8:
            expected = torch.round(expected * 255.0).to(torch.uint8)
        assert torch.equal(result.masks[0, 0], compiled.mask)
        assert bool(compiled.mask.any())
        difference = (expected.double() - out.double()).abs().max().item()
        assert difference <= tolerance


def test_the_compiled_renderer_takes_the_alpha_blend_only(bank):
    image = _images(1)[0]
    plan = draw_plan(_options(), bank.defect_types, 1, tuple(image.shape[-2:]), 0)
    with pytest.raises(ValueError, match="blend='alpha' only"):
        place_sample(plan, image, SampledReservoir(bank, 0), blend="poisson")
    # DefectInject sends the Poisson blends of sampled layers to the torch renderer instead.
    transform = DefectInject(None, p=1.0, generator=bank, blend="poisson", seed=0)
    out = transform(image)
    assert out.shape == image.shape and out.dtype == torch.uint8


def _count_calls(monkeypatch, owner: type, name: str) -> list[int]:
    calls = []
    original = getattr(owner, name)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_a_bank_sample_no_longer_calls_the_generator(bank, monkeypatch):
    sampled = _count_calls(monkeypatch, DefectBank, "sample")
    ahead = _count_calls(monkeypatch, DefectBank, "sample_ahead")
    transform = DefectInject("crack", p=1.0, generator=bank, seed=0, scale=0.3)
    images = _images(20)
    assert len(images) <= FIRST_CHUNK * USES_PER_LAYER
    for image in images:
        assert transform(image).shape == image.shape
    # One defect type at one size: the first chunk (sampled at once, FIRST_CHUNK layers of
    # USES_PER_LAYER uses each) serves all 20 samples.
    assert sampled == [] and len(ahead) == 1


def test_a_card_sample_no_longer_calls_the_generator(card, monkeypatch):
    sampled = _count_calls(monkeypatch, type(card), "sample")
    transform = DefectInject(None, p=1.0, generator=card, seed=0)
    images = _images(20)
    for image in images:
        assert transform(image).shape == image.shape
    # A card renders at its own layer size: one chunk per defect type at most.
    assert 1 <= len(sampled) <= len(card.defect_types) < len(images)


@pytest.mark.parametrize("which", ["bank", "card"])
@pytest.mark.parametrize("channels", [1, 3])
def test_sampling_ahead_then_landing_gives_the_layers_sample_gives(which, channels, bank, card):
    # The contract of samples_ahead: the reservoir's layers are the generator's own.
    generator = bank if which == "bank" else card
    assert generator.samples_ahead
    size = (40, 40) if which == "bank" else None
    options = {} if size is None else {"layer_size": size}
    side = 40 if which == "bank" else card.layer_size[0]
    patch = torch.rand(4, channels, side, side, generator=torch.Generator().manual_seed(2))
    expected = generator.sample(
        4, "crack", generator=3, channels=channels, background=patch, **options
    )
    ahead = generator.sample_ahead(4, "crack", generator=3, channels=channels, layer_size=size)
    landed = generator.land(ahead, channels, patch)
    assert torch.equal(landed.labels, expected.labels)
    torch.testing.assert_close(landed.content, expected.content, rtol=0, atol=1e-6)
    torch.testing.assert_close(landed.alpha, expected.alpha, rtol=0, atol=1e-6)


@pytest.mark.parametrize("which", ["bank", "card"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("whole", [False, True])
def test_land_planes_is_land(which, channels, whole, bank, card):
    # The compiled renderer's landing: the layer land gives, where compositing reads it
    # (next to its alpha, unless low-passed: everywhere).
    generator = bank if which == "bank" else card
    size = (40, 40) if which == "bank" else None
    ahead = generator.sample_ahead(4, "crack", generator=3, channels=channels, layer_size=size)
    rng = torch.Generator().manual_seed(2)
    surface = torch.randint(0, 256, (channels, 90, 100), dtype=torch.uint8, generator=rng)
    to_image = np.array([[0.9, -0.4, 30.0], [0.4, 0.9, 12.0]])
    landing = Landing(surface.numpy(), to_image, 255.0, whole)
    for layer in ahead:
        planes = torch.from_numpy(generator.land_planes(layer, channels, landing))
        side = layer.alpha.shape[-1]
        patch = torch.from_numpy(landing.patch((side, side)))
        landed = generator.land([layer], channels, patch[None])
        expected = torch.cat([landed.content, landed.alpha], 1)[0]
        rows, cols = (slice(None), slice(None))
        if not whole:
            top, bottom, left, right = layer.region
            rows, cols = slice(top, bottom), slice(left, right)
            assert bool((layer.alpha[0, rows, cols] > 0).sum() == (layer.alpha > 0).sum())
        torch.testing.assert_close(
            planes[:, rows, cols], expected[:, rows, cols], rtol=0, atol=1e-5
        )
        assert torch.equal(planes[channels], expected[channels])


def test_support_boxes_hold_the_bilinear_taps_of_the_mask():
    mask = torch.zeros(3, 10, 12, dtype=torch.bool)
    mask[0, 2:4, 5] = True
    mask[1, 0, 11] = True
    assert support_boxes(mask) == [(1, 5, 4, 7), (0, 2, 10, 12), (0, 0, 0, 0)]


class _Tiles(Dataset):
    def __init__(self, transform):
        self.transform = transform
        self.images = _images(8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = tv_tensors.Image(self.images[index])
        mask = torch.zeros(image.shape[-2:], dtype=torch.uint8)
        return self.transform(image, tv_tensors.Mask(mask))


def test_dataloader_workers_are_reproducible_and_keep_their_own_layers(bank):
    # Every worker starts its own reservoir, seeded by its id: one chunk type and size here, so
    # workers sharing layers would put the same layer on their first samples.
    def load(seed):
        transform = DefectInject("crack", p=1.0, generator=bank, seed=seed, scale=0.4)
        loader = DataLoader(
            _Tiles(transform),
            batch_size=2,
            num_workers=2,
            generator=torch.Generator().manual_seed(0),
        )
        images, masks = zip(*loader, strict=True)
        return torch.cat(images), torch.cat(masks)

    images, masks = load(7)
    again_images, again_masks = load(7)
    assert torch.equal(images, again_images) and torch.equal(masks, again_masks)
    assert masks.flatten(1).any(1).all()
    # Items 0 and 2 are the first call in worker 0 and worker 1 (the same image): they differ.
    assert not torch.equal(masks[0], masks[2])
