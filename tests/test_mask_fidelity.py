"""Issue #13: the label mask is exactly what visibly changed, in every blend mode, with no tells.

Recall = share of the pixels that visibly changed (some channel by more than 8/255) that the mask
covers; precision = share of the mask's pixels that visibly changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from defectaug import inject_defects
from defectaug._kernels import settle_window
from defectaug.batch import BLEND_MODES, NO_DEFECT, settle_composite
from defectaug.dataset import SyntheticDefectDataset
from defectaug.generators.bank import DefectBank
from defectaug.generators.base import DefectGenerator
from defectaug.generators.procedural import DEFECT_TYPES
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY, DefectLayer
from defectaug.transforms import DefectInject

SIZE = 96
SEEDS = 6


def _texture(seed: int, channels: int = 1) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, channels, SIZE + 4, SIZE + 4, generator=rng)
    return F.avg_pool2d(noise, 5, 1)[0] * 0.5 + 0.25


def _magnetic_tiles() -> torch.Tensor | None:
    root = Path(
        os.environ.get(
            "DEFECTAUG_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        )
    )
    folder = root / "magnetic_tile" / "train" / "good"
    files = sorted(folder.glob("*.jpg"))[:SEEDS] if folder.is_dir() else []
    if not files:
        return None
    from defectaug.dataset import read_image

    tiles = [
        F.interpolate(read_image(path)[:, :1], size=(SIZE, SIZE), mode="area")[0] for path in files
    ]
    return torch.stack(tiles)


def _backgrounds(kind: str) -> torch.Tensor:
    """``[SEEDS, 1, SIZE, SIZE]`` float backgrounds of one kind."""
    if kind == "flat":
        return torch.full((SEEDS, 1, SIZE, SIZE), 0.5)
    if kind == "texture":
        return torch.stack([_texture(seed) for seed in range(SEEDS)])
    tiles = _magnetic_tiles()
    if tiles is None:
        pytest.skip("magnetic-tile normals not found (set DEFECTAUG_SHARED_DATA)")
    return tiles


def _units(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()


def visible(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` bool: some channel changed by more than 8/255 (8 levels of uint8)."""
    if after.dtype == torch.uint8:
        return (after.int() - before.int()).abs().amax(-3) > 8
    return (_units(after) - _units(before)).abs().amax(-3) > VISIBILITY


def fidelity(before, after, masks) -> tuple[float, float]:
    changed = visible(before, after)
    masks = masks.reshape(changed.shape).bool()
    both = int((changed & masks).sum())
    return both / max(int(changed.sum()), 1), both / max(int(masks.sum()), 1)


def assert_faithful(before, after, masks, what: str) -> None:
    recall, precision = fidelity(before, after, masks)
    assert recall >= 0.9 and precision >= 0.9, (
        f"{what}: recall {recall:.3f} precision {precision:.3f}"
    )


def assert_no_tells(before, after, masks, what: str) -> None:
    """Outside the mask dilated by 2 px the image is unchanged to within 1/255."""
    masks = masks.reshape(before.shape[0], 1, *before.shape[-2:]).float()
    near = F.max_pool2d(masks, 5, stride=1, padding=2) > 0
    change = (_units(after) - _units(before)).abs().amax(1, keepdim=True)
    worst = float(change[~near].max()) if bool((~near).any()) else 0.0
    assert worst <= 1.0 / 255.0 + 1e-6, (
        f"{what}: a change of {worst * 255:.2f}/255 outside the mask"
    )


# ----------------------------------------------------------------------- batched path
@pytest.mark.parametrize("kind", ["flat", "texture", "magnetic_tile"])
@pytest.mark.parametrize("blend", BLEND_MODES)
def test_batched_masks_are_what_visibly_changed(kind, blend):
    images = _backgrounds(kind)
    for defect_type in DEFECT_TYPES:
        result = inject_defects(images, defect_type, blend=blend, seed=3)
        what = f"{defect_type} / {blend} / {kind}"
        assert_faithful(images, result.images, result.masks, what)
        if blend == "alpha":
            assert_no_tells(images, result.images, result.masks, what)
        shown = result.masks.flatten(1).any(1)
        assert torch.equal(result.labels != NO_DEFECT, shown), what
        unlabelled = result.labels == NO_DEFECT
        assert torch.equal(result.images[unlabelled], images[unlabelled]), what


@pytest.mark.parametrize("blend", ["poisson", "improved_poisson"])
def test_poisson_keeps_the_contrast_of_every_type(blend):
    images = torch.cat([_backgrounds("flat"), _backgrounds("texture")])
    for defect_type in DEFECT_TYPES:
        alpha = inject_defects(images, defect_type, blend="alpha", seed=5)
        blended = inject_defects(images, defect_type, blend=blend, seed=5)
        for item in range(len(images)):
            if int(alpha.labels[item]) == NO_DEFECT:
                continue
            wanted = float((alpha.images[item] - images[item])[:, alpha.masks[item, 0]].mean())
            got_mask = blended.masks[item, 0]
            assert bool(got_mask.any()), f"{defect_type} / {blend}: the defect vanished"
            got = float((blended.images[item] - images[item])[:, got_mask].mean())
            assert got * wanted > 0 and abs(got) >= 0.5 * abs(wanted), (
                f"{defect_type} / {blend} item {item}: mean change {got:+.4f} vs alpha's "
                f"{wanted:+.4f}"
            )


# ----------------------------------------------------------------------- per-sample path
@pytest.mark.parametrize("kind", ["flat", "texture", "magnetic_tile"])
def test_per_sample_masks_are_what_visibly_changed(kind):
    images = _backgrounds(kind).expand(-1, 3, -1, -1).contiguous()
    for defect_type in DEFECT_TYPES:
        inject = DefectInject(defect_type, p=1.0, seed=11)
        assert inject._reservoir is not None  # the fast path
        outs, masks = [], []
        for image in images:
            out, mask = inject(
                image, tv_tensors.Mask(torch.zeros(1, SIZE, SIZE, dtype=torch.uint8))
            )
            outs.append(out)
            masks.append(mask)
        outs, masks = torch.stack(outs), torch.stack(masks)
        what = f"{defect_type} / per-sample / {kind}"
        assert_faithful(images, outs, masks, what)
        assert_no_tells(images, outs, masks, what)


def test_per_sample_uint8_masks_follow_the_rounded_image():
    image = (_texture(2, 3) * 255).round().to(torch.uint8)
    for defect_type in DEFECT_TYPES:
        inject = DefectInject(defect_type, p=1.0, seed=4)
        for _ in range(3):
            out, mask = inject(image, tv_tensors.Mask(torch.zeros(SIZE, SIZE, dtype=torch.bool)))
            # Exactly what changed by more than 8 levels, plus filled pinholes.
            changed = visible(image, out)
            mask = mask.as_subclass(torch.Tensor)
            assert not bool((changed & ~mask).any())
            assert fidelity(image, out, mask)[1] >= 0.9
            assert_no_tells(image[None], out[None], mask[None], defect_type)


def test_compiled_settle_matches_the_batched_one():
    before = _texture(7, 3)
    after = before.clone()
    rng = torch.Generator().manual_seed(0)
    blob = torch.zeros(SIZE, SIZE)
    blob[30:50, 20:60] = 1.0
    blob = F.avg_pool2d(blob[None, None], 9, 1, 4)[0, 0]
    after += -0.2 * blob * (1 + 0.1 * torch.rand(3, SIZE, SIZE, generator=rng))
    after[1, 40, 40] = before[1, 40, 40]  # a pinhole
    after = after.clamp(0, 1)
    settled, masks = settle_composite(before[None], after[None])
    window = after.numpy().copy()
    mask = settle_window(window, before.numpy(), float(VISIBILITY), MIN_VISIBLE_PIXELS, False)
    assert torch.equal(torch.from_numpy(mask).bool(), masks[0, 0])
    torch.testing.assert_close(torch.from_numpy(window), settled[0], atol=1e-7, rtol=0)
    assert bool(masks[0, 0, 40, 40])


# ----------------------------------------------------------------------- other generators
def _bank() -> DefectBank:
    crops = []
    for seed in range(4):
        yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
        region = ((yy - 11.5) ** 2 / 36 + (xx - 11.5) ** 2 / (9 + 9 * seed)) < 1
        content = _texture(seed)[:, :24, :24] * 0.6 + 0.3
        content = torch.where(region, content * 0.4, content)
        alpha = F.avg_pool2d(region.float()[None, None], 3, 1, 1)[0]
        crops.append((content, alpha))
    return DefectBank({"blob": crops}, layer_size=32)


def _generators() -> dict[str, DefectGenerator]:
    generators: dict[str, DefectGenerator] = {"bank": _bank()}
    try:
        from defectaug.generators import load_generator

        generators["dcdgan"] = load_generator("dcdgan-magnetic-tile-64")
    except Exception as error:  # noqa: BLE001 - the shipped card is optional here
        generators["dcdgan"] = error
    return generators


@pytest.fixture(scope="module")
def generators() -> dict[str, DefectGenerator]:
    return _generators()


@pytest.mark.parametrize("name", ["bank", "dcdgan"])
@pytest.mark.parametrize("blend", BLEND_MODES)
def test_other_generators_masks_and_no_tells(generators, name, blend):
    generator = generators[name]
    if isinstance(generator, Exception):
        pytest.skip(f"the shipped dcdgan card is unavailable: {generator}")
    images = torch.cat([_backgrounds("flat"), _backgrounds("texture")])
    result = inject_defects(images, generator=generator, blend=blend, seed=9)
    what = f"{name} / {blend}"
    assert bool((result.labels != NO_DEFECT).any()), what
    assert_faithful(images, result.images, result.masks, what)
    if blend == "alpha":
        assert_no_tells(images, result.images, result.masks, what)


def test_bank_matches_the_landing_tone():
    bank = _bank()
    dark = torch.full((4, 1, 64, 64), 0.15)
    result = inject_defects(dark, generator=bank, blend="alpha", seed=1, scale=(0.3, 0.4))
    for item in range(4):
        ring = F.max_pool2d(result.masks[item : item + 1].float(), 7, 1, 3)[0, 0] > 0
        ring &= ~result.masks[item, 0]
        # The crop's surroundings (~0.6 bright in the bank) land at the patch's tone.
        assert abs(float(result.images[item, 0][ring].mean()) - 0.15) < 0.03


# ----------------------------------------------------------------------- invisible defects
class Invisible(DefectGenerator):
    """Content equal to a 0.5 grey: on a 0.5 grey image it changes nothing."""

    defect_types = ("ghost",)
    channels = "any"
    layer_size = (16, 16)

    def _generate(self, labels, *, generator, device, dtype, channels, background, reference):
        n = len(labels)
        content = torch.full((n, channels, 16, 16), 0.5 + 2.0 / 255.0, device=device, dtype=dtype)
        alpha = torch.ones(n, 1, 16, 16, device=device, dtype=dtype)
        return DefectLayer(content, alpha, labels, self.defect_types)


def test_an_invisible_defect_gets_no_defect_label():
    images = torch.full((3, 1, 32, 32), 0.5)
    for blend in BLEND_MODES:
        result = inject_defects(images, generator=Invisible(), blend=blend, seed=0)
        assert (result.labels == NO_DEFECT).all(), blend
        assert not result.masks.any(), blend
        assert torch.equal(result.images, images), blend
    inject = DefectInject(p=1.0, generator=Invisible(), label=7)
    image, mask, label = inject(
        images[0], tv_tensors.Mask(torch.zeros(1, 32, 32, dtype=torch.uint8)), 3
    )
    assert label == 3 and not mask.any() and torch.equal(image, images[0])
    with pytest.raises(RuntimeError, match="invisible"):
        SyntheticDefectDataset([images[0]], generator=Invisible(), length=1)[0]


def test_dataset_boxes_follow_the_visible_mask():
    data = SyntheticDefectDataset(
        [_texture(seed) for seed in range(3)], length=12, seed=1, target="dict", count=(1, 2)
    )
    for index in range(len(data)):
        item = data.synthesize(index)
        mask = item["mask"][0]
        assert bool(mask.any())
        covered = torch.zeros_like(mask)
        for x0, y0, x1, y1 in item["boxes"].tolist():
            box = mask[y0:y1, x0:x1]
            assert bool(box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any())
            covered[y0:y1, x0:x1] = True
        assert not bool((mask & ~covered).any())
