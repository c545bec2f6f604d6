import numpy as np
import pytest
import torch

from defectaug.batch import (
    BLEND_MODES,
    NO_DEFECT,
    DefectInjector,
    inject_defects,
    mix_seed,
    plan_defects,
    render_sides,
)
from defectaug.generators import ProceduralGenerator
from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer
from defectaug.placement import sample_placements


class GrayDisks(DefectGenerator):
    """A tiny single-channel generator: a black disk with a hard edge, for exact-value checks."""

    defect_types = ("disk", "ring")
    channels = 1
    layer_size = (16, 16)

    def _generate(self, labels, *, generator, device, dtype, channels, background, reference):
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        radius = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2).sqrt()
        disk = (radius < 6).to(dtype)
        ring = ((radius < 6) & (radius > 3)).to(dtype)
        alpha = torch.where(labels.view(-1, 1, 1, 1) == 0, disk, ring).to(device)
        content = torch.zeros(labels.shape[0], channels, 16, 16, device=device, dtype=dtype)
        return DefectLayer(content, alpha, labels, self.defect_types)


def _backgrounds(batch=4, channels=3, size=(48, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.6 + 0.1 * torch.rand(batch, channels, *size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("blend", BLEND_MODES)
def test_p1_changes_every_masked_region_and_nothing_far_away(blend):
    images = _backgrounds()
    before = images.clone()
    # Seed 2: with seed 1 the plan's last stain shows on none of the pixels (the draws changed
    # with the one plan scheme; the test needs every image to show its defect).
    plan = plan_defects(images, ("scratch", "spot", "stain"), ProceduralGenerator(), seed=2)
    result = inject_defects(images, ["scratch", "spot", "stain"], blend=blend, seed=2)
    assert torch.equal(images, before), "inputs must not be modified"
    assert result.images.shape == images.shape and result.masks.shape == (4, 1, 48, 64)
    assert result.masks.dtype == torch.bool and result.labels.dtype == torch.int64
    assert torch.equal(result.labels, plan.labels)
    assert ((result.labels >= 0) & (result.labels < 3)).all()
    difference = (result.images - images).abs().amax(1, keepdim=True)
    for item in range(4):
        mask = result.masks[item]
        assert mask.any(), f"image {item} got an empty mask"
        assert difference[item][mask].mean() > 0.02
    outside = torch.ones_like(result.masks)
    for (x0, y0, x1, y1), image in zip(
        plan.warped.boxes.tolist(), plan.placements.image_index.tolist(), strict=True
    ):
        outside[image, :, y0:y1, x0:x1] = False
    if blend == "alpha":
        # Alpha compositing touches nothing outside the layers' boxes.
        assert float(difference[outside].max()) == 0.0
    else:
        # A Poisson solve also eases the tone around the defect, far less than inside it.
        assert difference[outside].mean() < 0.1 * difference[result.masks].mean()


def test_p0_is_identity():
    images = _backgrounds()
    result = inject_defects(images, "scratch", p=0.0, seed=0)
    assert torch.equal(result.images, images)
    assert not result.masks.any()
    assert (result.labels == NO_DEFECT).all()


def test_probability_mixes_touched_and_untouched_images():
    images = _backgrounds(batch=32, size=(24, 24))
    result = inject_defects(images, "spot", p=0.5, seed=3)
    touched = result.labels != NO_DEFECT
    assert 0 < int(touched.sum()) < 32
    assert torch.equal(result.images[~touched], images[~touched])
    assert not result.masks[~touched].any()


def test_seed_reproduces_and_differs():
    images = _backgrounds()
    first = inject_defects(images, ["crack", "pit"], count=(1, 3), seed=5)
    again = inject_defects(images, ["crack", "pit"], count=(1, 3), seed=5)
    other = inject_defects(images, ["crack", "pit"], count=(1, 3), seed=6)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.masks, other.masks)
    # A torch.Generator seeds the plan with one draw of it (an int keys the draws directly, so
    # seed=5 and a generator seeded with 5 are different streams): reproducible from its state,
    # and a second call on the same generator draws anew.
    rng = torch.Generator().manual_seed(5)
    generator_seeded = inject_defects(images, ["crack", "pit"], count=(1, 3), seed=rng)
    same_state = inject_defects(
        images, ["crack", "pit"], count=(1, 3), seed=torch.Generator().manual_seed(5)
    )
    assert torch.equal(generator_seeded.images, same_state.images)
    advanced = inject_defects(images, ["crack", "pit"], count=(1, 3), seed=rng)
    assert not torch.equal(advanced.masks, generator_seeded.masks)


def test_exact_values_with_a_hard_edged_generator():
    images = torch.full((3, 1, 40, 40), 0.8)
    result = inject_defects(images, "disk", GrayDisks(), rotation=0, aspect=1, scale=0.4, seed=0)
    # Inside the mask alpha >= 0.5 over black content: value <= 0.4; outside: alpha < 0.5.
    assert (result.images[result.masks] <= 0.4 + 1e-6).all()
    assert (result.images[~result.masks] > 0.4 - 1e-6).all()


def test_roi_confines_defects():
    images = _backgrounds(batch=6, size=(40, 40))
    roi = torch.zeros(40, 40, dtype=torch.bool)
    roi[10:30, 5:20] = True
    result = inject_defects(images, ["stain", "uneven"], roi=roi, count=(1, 2), seed=2)
    assert result.masks.any()
    assert not (result.masks & ~roi).any()
    changed = (result.images - images).abs().amax(1, keepdim=True) > 0
    assert not (changed & ~roi).any()


def test_one_type_per_image_and_counts():
    images = _backgrounds(batch=8, size=(32, 32))
    plan = plan_defects(images, ("scratch", "pit"), ProceduralGenerator(), count=(2, 4), seed=4)
    counts = plan.placements.counts()
    assert counts.min() >= 2 and counts.max() <= 4
    assert plan.boxes.shape == (int(counts.sum()), 4)
    layer_types = plan.warped.layer.labels
    for image in range(8):
        drawn = set(layer_types[plan.placements.image_index == image].tolist())
        assert len(drawn) == 1


def test_channels_and_errors():
    gray = _backgrounds(channels=1)
    result = inject_defects(gray, "ring", GrayDisks(), seed=0)
    assert result.images.shape == gray.shape
    # A grey generator on RGB images lands as a luminance change: under the mask every channel
    # moves the same way by about the same amount (the landing patch is resampled per channel).
    rgb = _backgrounds(channels=3)
    colour = inject_defects(rgb, "ring", GrayDisks(), seed=0)
    masked = colour.masks.expand_as(rgb)
    change = ((colour.images - rgb) * masked).sum(dim=(0, 2, 3)) / masked[:, 0].sum()
    assert bool(colour.masks.any()) and float(change.abs().min()) > 8 / 255
    torch.testing.assert_close(change, change.mean().expand(3), rtol=0.2, atol=0)
    with pytest.raises(KeyError, match="scratches"):
        inject_defects(_backgrounds(), "scratches")
    with pytest.raises(ValueError, match="blend"):
        inject_defects(_backgrounds(), "spot", blend="multiply")
    with pytest.raises(ValueError, match="p: "):
        inject_defects(_backgrounds(), "spot", p=1.5)
    with pytest.raises(TypeError, match="images"):
        inject_defects(_backgrounds().to(torch.int32), "spot")
    with pytest.raises(ValueError, match="16x16 is smaller than the smallest allowed defect"):
        inject_defects(torch.rand(1, 3, 16, 16), "spot", min_size=20)
    with pytest.raises(TypeError, match="generator"):
        inject_defects(_backgrounds(), "spot", generator=3)


def test_module_form():
    injector = DefectInjector(["scratch", "spot"], blend="alpha", p=1.0, seed=9)
    images = _backgrounds()
    first = injector(images)
    second = injector(images)
    assert not torch.equal(first.masks, second.masks), "each call draws anew"
    fresh = DefectInjector(["scratch", "spot"], blend="alpha", p=1.0, seed=9)
    assert torch.equal(fresh(images).images, first.images), "the call stream is reproducible"
    assert torch.equal(injector(images, seed=1).images, fresh(images, seed=1).images)
    assert "scratch" in repr(injector)
    moved = injector.to(torch.float64)
    assert moved(images.double()).images.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_stays_on_device():
    injector = DefectInjector(["scratch", "spot"], p=1.0, seed=0).to("cuda")
    images = _backgrounds().cuda()
    result = injector(images)
    assert result.images.is_cuda and result.masks.is_cuda and result.labels.is_cuda
    levels = (images * 255).round().to(torch.uint8)
    for blend in BLEND_MODES:
        out = inject_defects(images, "stain", blend=blend, seed=0)
        assert out.images.is_cuda and out.masks.any()
        out = inject_defects(levels, "stain", blend=blend, seed=0)
        assert out.images.is_cuda and out.images.dtype == torch.uint8 and out.masks.is_cuda


def _uint8_batch(batch=4, channels=3, size=(48, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, channels, size[0] // 8, size[1] // 8, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=size, mode="bilinear")
    return (255 * (0.2 + 0.6 * smooth)).round().to(torch.uint8)


@pytest.mark.parametrize("blend", BLEND_MODES)
def test_uint8_batches_are_their_float_composite_at_8_bit_levels(blend):
    # The documented rule: a uint8 batch is composited as its float copy x / 255 and measured
    # as 8-bit levels (levels=255), whatever part of it the composite converts.
    from defectaug._io import to_uint8
    from defectaug.batch import composite_visible

    types = ("scratch", "spot", "stain")
    options = dict(count=(1, 3), p=0.8, scale=(0.1, 0.6))
    for seed in range(4):
        images = _uint8_batch(batch=5, size=(40 + 8 * seed, 56), seed=seed)
        before = images.clone()
        result = inject_defects(images, types, blend=blend, seed=seed, **options)
        assert torch.equal(images, before), "inputs must not be modified"
        assert result.images.dtype == torch.uint8
        unit = images.to(torch.float32) / 255
        plan = plan_defects(unit, types, ProceduralGenerator(), seed=seed, **options)
        expected = composite_visible(unit, plan, blend, levels=255)
        assert torch.equal(result.images, to_uint8(expected.images)), seed
        assert torch.equal(result.masks, expected.masks), seed
        assert torch.equal(result.labels, expected.labels), seed
        regions = composite_visible(images, plan, blend)
        assert torch.equal(regions.boxes, expected.boxes), seed


class _LargestFloat(torch.overrides.TorchFunctionMode):
    """Records the most elements of any dense floating-point tensor a torch call returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            # Sparse tensors count their dense size.
            dense = isinstance(value, torch.Tensor) and value.layout == torch.strided
            if dense and value.is_floating_point():
                self.largest = max(self.largest, value.numel())
        return out


@pytest.mark.parametrize("blend", BLEND_MODES)
def test_uint8_batches_are_converted_to_float_only_around_their_defects(blend):
    images = _uint8_batch(batch=8, size=(128, 160), seed=5)
    options = dict(scale=(0.05, 0.1), seed=3, blend=blend)
    with _LargestFloat() as uint8_run:
        result = inject_defects(images, ["spot", "scratch"], **options)
    assert uint8_run.largest < images.numel() / 8, "a float copy of (nearly) the whole batch"
    with _LargestFloat() as float_run:
        inject_defects(images.float() / 255, ["spot", "scratch"], **options)
    assert float_run.largest >= images.numel(), "the probe sees whole-batch float tensors"
    assert bool(result.masks.any())
    # Pixels farther than TELL_MARGIN from every mask are the input's own bytes.
    near = torch.nn.functional.max_pool2d(result.masks.float(), 5, stride=1, padding=2) > 0
    far = ~near.expand_as(images)
    assert torch.equal(result.images[far], images[far])


def test_mix_seed_is_pinned():
    # Dataset items are a function of mix_seed(seed, index): a change here silently changes every
    # SyntheticDefectDataset, so its values are pinned (blake2b: no PYTHONHASHSEED dependence).
    assert mix_seed(3, 14) == 4593472305856811619
    assert mix_seed(0, 0) == 2552086458221780553
    assert 0 <= mix_seed(14, 3) < 2**62 and mix_seed(14, 3) != mix_seed(3, 14)


def test_render_sides_group_defects_by_size():
    placements = sample_placements(40, (256, 256), scale=(0.05, 0.9), generator=0)
    sides = render_sides(ProceduralGenerator(), placements)
    # Each size renders at the middle of its sqrt(2) step: within 2 ** 0.25 either way (the one
    # render size of both renderers; it used to be the largest member's size of the batch).
    wanted = placements.size.ceil().clamp(min=8)
    assert (sides.double() >= wanted / 2**0.25 - 1).all()
    assert (sides.double() <= wanted * 2**0.25 + 1).all()
    assert len(torch.unique(sides)) <= 9
    assert render_sides(GrayDisks(), placements) is None
    # A defect's side is its own: the same alone as among 40 (image 0 has the same plan in both).
    single = sample_placements(1, (256, 256), scale=(0.05, 0.9), generator=0)
    first = placements.select(placements.image_index == 0)
    assert torch.equal(render_sides(ProceduralGenerator(), single), sides[: len(first)])


@pytest.mark.parametrize("scale", [255.0, -1.0])
def test_batches_outside_the_unit_range_are_refused(scale):
    images = _backgrounds() * scale
    with pytest.raises(ValueError, match=r"images: expected float values in \[0, 1\], found"):
        inject_defects(images, "spot", seed=0)
    with pytest.raises(ValueError, match="inject before normalising"):
        DefectInjector("spot", seed=0)(images)
    with pytest.raises(ValueError, match="NaN or infinite"):
        inject_defects(torch.full((1, 3, 16, 16), float("inf")), "spot")
    nearly = _backgrounds()
    nearly[0, 0, 0, 0] = 1 + 5e-4
    assert inject_defects(nearly, "spot", seed=0).images.shape == nearly.shape


def test_p_takes_numpy_scalars_and_defect_types_must_be_names():
    images = _backgrounds(batch=2)
    result = inject_defects(images, "spot", p=np.float32(0.0), seed=0)
    assert (result.labels == NO_DEFECT).all()
    assert DefectInjector("spot", p=np.float64(0.5)).p == 0.5
    with pytest.raises(TypeError, match="p: expected a probability"):
        inject_defects(images, "spot", p=True)
    with pytest.raises(ValueError, match="p: expected a probability"):
        inject_defects(images, "spot", p=float("nan"))
    with pytest.raises(TypeError, match="defect_types: expected a type name .* got 3"):
        inject_defects(images, 3)
    with pytest.raises(TypeError, match="defect_types: expected a type name"):
        DefectInjector({"spot"})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_images_wider_than_256_px(dtype):
    # Half-precision resampling grids misplace samples (CPU grid_sample even returned NaN) on
    # images a few hundred px wide, and half-precision sums overflowed on large defects.
    images = _backgrounds(batch=1, size=(320, 320))
    reference = inject_defects(images, "spot", blend="poisson", scale=(0.5, 0.6), seed=3)
    result = inject_defects(images.to(dtype), "spot", blend="poisson", scale=(0.5, 0.6), seed=3)
    assert result.images.dtype == dtype and torch.isfinite(result.images).all()
    assert (result.labels == reference.labels).all() and result.masks.any()
    overlap = (result.masks & reference.masks).sum() / (result.masks | reference.masks).sum()
    assert overlap > 0.9


def _boxes_of_full_maps(masks, image_index, reach_rows, reach_cols):
    """Reference: each defect's mask pixels in its reach as a full-size map, then its tight box."""
    boxes = []
    for defect, image in enumerate(image_index.tolist()):
        own = masks[image, 0] & reach_rows[defect][:, None] & reach_cols[defect][None, :]
        rows, cols = own.any(dim=1).nonzero()[:, 0], own.any(dim=0).nonzero()[:, 0]
        if len(rows) == 0:
            boxes.append([0, 0, 0, 0])
        else:
            boxes.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
    return torch.tensor(boxes, dtype=torch.int64).view(-1, 4)


def test_visible_boxes_match_full_size_maps():
    from defectaug.batch import _visible_boxes

    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        batch, height, width = 3, 17 + trial, 23
        count = 2 * batch
        masks = torch.rand(batch, 1, height, width, generator=g) < 0.05 * (trial % 4)
        image_index = torch.arange(batch).repeat_interleave(2)
        # Reaches with gaps, touching the image's edges, or empty (trial 0's masks are empty).
        reach_rows = torch.rand(count, height, generator=g) < 0.3
        reach_cols = torch.rand(count, width, generator=g) < 0.3
        reach_rows[0, -1] = reach_cols[1, -1] = True
        reach_rows[2] = False
        boxes = _visible_boxes(masks, image_index, reach_rows, reach_cols)
        expected = _boxes_of_full_maps(masks, image_index, reach_rows, reach_cols)
        assert torch.equal(boxes, expected), trial


@pytest.mark.parametrize("blend", BLEND_MODES)
def test_defect_boxes_are_the_tight_boxes_of_their_visible_pixels(blend):
    from defectaug.batch import composite_visible

    images = _backgrounds(batch=3, size=(40, 48), seed=1)
    for seed in range(6):
        plan = plan_defects(
            images, ("spot", "scratch"), ProceduralGenerator(), count=(1, 3), seed=seed
        )
        result = composite_visible(images, plan, blend)
        assert result.boxes.shape == (len(plan.placements.image_index), 4)
        for box, image in zip(
            result.boxes.tolist(), plan.placements.image_index.tolist(), strict=True
        ):
            x0, y0, x1, y1 = box
            if x1 == x0:
                continue
            # Every side of a box touches a mask pixel of its image.
            window = result.masks[image, 0, y0:y1, x0:x1]
            assert bool(window[0].any() and window[-1].any())
            assert bool(window[:, 0].any() and window[:, -1].any())
