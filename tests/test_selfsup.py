"""Self-supervised anomaly generators (CutPaste, NSA, DRAEM-style texture) and their mask shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from defectaug import DefectInject, DefectInjector, inject_defects
from defectaug.batch import NO_DEFECT, composite_visible, render_plan
from defectaug.generators import (
    MASK_SHAPES,
    CutPasteGenerator,
    NSAGenerator,
    TextureGenerator,
    list_generators,
    load_generator,
    shapes,
)
from defectaug.generators.selfsup import load_image_pool
from defectaug.per_sample import SamplePlan, place_sample
from defectaug.placement import PlacementOptions
from defectaug.plan import draw_plan

NAMES = ("cutpaste", "nsa", "texture")
BLENDS = ("alpha", "poisson", "improved_poisson")


def textured(batch: int, channels: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Stripes, blobs and grain in [0.05, 0.95]: every shifted or foreign patch shows."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size) * 1.0, torch.arange(size) * 1.0, indexing="ij")
    phase = torch.rand(batch, channels, 1, 1, generator=g) * 6.28
    pattern = 0.25 * torch.sin(xx / 2.5 + phase) * torch.cos(yy / 4.0 + 2 * phase)
    grain = 0.2 * (torch.rand(batch, channels, size, size, generator=g) - 0.5)
    return (0.5 + pattern + grain).clamp(0.05, 0.95)


def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return F.max_pool2d(mask.float(), 2 * pixels + 1, stride=1, padding=pixels) > 0


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("name", NAMES)
def test_inject_reproducible_and_masked(name: str, blend: str, channels: int) -> None:
    images = textured(2, channels)
    out, masks, labels = inject_defects(images, None, name, blend=blend, seed=5)
    again, masks_again, _ = inject_defects(images, None, name, blend=blend, seed=5)
    assert torch.equal(out, again) and torch.equal(masks, masks_again)
    assert out.shape == images.shape and masks.shape == (2, 1, 64, 64)
    # p=1: every image gets a defect; an image may only go without one where the injection
    # drops a defect as invisible (a faint texture at low beta), and then it is left unchanged.
    shown = labels == 0
    assert bool((labels[~shown] == NO_DEFECT).all())
    assert torch.equal(masks.flatten(1).any(1), shown)
    assert torch.equal(out[~shown], images[~shown])
    assert bool(shown.all()) if name != "texture" else bool(shown.any())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    if blend == "alpha":
        outside = ~dilate(masks, 2).expand_as(images)
        assert torch.equal(out[outside], images[outside])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_alpha_blend_changes_the_masked_pixels(name: str, channels: int) -> None:
    changes = []
    for seed in range(4):
        images = textured(4, channels, size=96, seed=seed)
        out, masks, _ = inject_defects(images, None, name, blend="alpha", seed=seed)
        diff = (out - images).abs().mean(1, keepdim=True)
        changes += [float(diff[i][masks[i]].mean()) for i in range(4) if bool(masks[i].any())]
    assert len(changes) >= 12
    assert sum(changes) / len(changes) > 8 / 255


def test_registered_and_loadable() -> None:
    names = list_generators()
    for name, kind in zip(NAMES, (CutPasteGenerator, NSAGenerator, TextureGenerator), strict=True):
        assert name in names
        generator = load_generator(name)
        assert type(generator) is kind and generator.defect_types == (name,)
        assert generator.channels == "any"
    pool = textured(3, 3, size=40)
    assert load_generator("nsa", pool=pool).pool.shape[0] == 3
    with pytest.raises(TypeError, match="nsa"):
        load_generator("nsa", not_an_option=1)


def test_injector_module_with_selfsup_generator() -> None:
    injector = DefectInjector(generator="texture", blend="poisson", seed=1)
    out, masks, labels = injector(textured(2, 3))
    assert out.shape == (2, 3, 64, 64) and bool(masks.any()) and labels.tolist() == [0, 0]


def test_nsa_pool_tensor_is_bounded_and_used() -> None:
    pool = textured(10, 3, size=300)
    generator = NSAGenerator(pool, max_pool=4, max_side=64)
    assert generator.pool.shape == (4, 3, 64, 64)
    assert generator.pool_sizes.tolist() == [[64, 64]] * 4
    assert not generator.needs_background
    layer = generator.sample(3, generator=7, layer_size=24)
    assert layer.content.shape == (3, 3, 24, 24) and layer.names == ["nsa"] * 3
    # Pool crops do not depend on the landing patch: the background is ignored.
    with_background = generator.sample(
        3, generator=7, layer_size=24, background=torch.zeros(3, 3, 24, 24)
    )
    assert torch.equal(layer.content, with_background.content)
    grey = generator.sample(2, generator=7, channels=1)
    assert grey.content.shape[1] == 1
    out, masks, _ = inject_defects(textured(2, 1), None, generator, blend="poisson", seed=0)
    assert out.shape == (2, 1, 64, 64) and bool(masks.flatten(1).any(1).all())


def test_pool_folder_reads_few_files_and_mixes_modes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        pixels = rng.integers(0, 256, (120, 80, 3) if i % 2 else (90, 150), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images, sizes = load_image_pool(tmp_path, max_pool=3, max_side=60)
    # Files 0, 2 and 4 (evenly spaced), the grey ones, shrunk to a longer side of 60.
    assert images.shape == (3, 1, 36, 60)
    assert sizes.tolist() == [[36, 60], [36, 60], [36, 60]]
    generator = NSAGenerator(str(tmp_path), max_side=60)
    assert generator.pool.shape == (5, 3, 60, 60)  # grey and colour files: colour, padded
    assert generator.pool_sizes.tolist() == [[36, 60], [60, 40]] * 2 + [[36, 60]]
    out, masks, _ = inject_defects(textured(1, 3), None, generator, blend="alpha", seed=2)
    assert bool(masks.any())


def test_nsa_without_pool_needs_background() -> None:
    generator = NSAGenerator()
    assert generator.needs_background
    with pytest.raises(ValueError, match="background: NSAGenerator needs"):
        generator.sample(2, generator=0)
    layer = generator.sample(2, generator=0, background=textured(2, 3, size=32), layer_size=32)
    assert layer.content.shape == (2, 3, 32, 32)


def test_nsa_single_patch_is_never_a_copy() -> None:
    # One item borrows its own landing patch; the forced mirror keeps it from matching itself.
    background = textured(1, 1, size=32)
    for seed in range(8):
        layer = NSAGenerator().sample(1, generator=seed, background=background, layer_size=32)
        assert float((layer.content - background).abs().mean()) > 0.02


def test_cutpaste_moves_the_patch_own_pixels() -> None:
    background = textured(3, 3, size=40)
    layer = CutPasteGenerator(jitter=0.0).sample(
        3, generator=1, background=background, layer_size=40
    )
    # Shifted and mirrored: the same pixel values, in other places.
    for i in range(3):
        assert torch.equal(
            layer.content[i].flatten(1).sort(1).values, background[i].flatten(1).sort(1).values
        )
        assert float((layer.content[i] - background[i]).abs().mean()) > 0.05
    with pytest.raises(ValueError, match="background"):
        CutPasteGenerator().sample(1, generator=0)


def test_cutpaste_scar_is_a_thin_strip() -> None:
    background = textured(16, 3, size=48)
    scar = CutPasteGenerator(variant="scar").sample(
        16, generator=0, background=background, layer_size=48
    )
    patch = CutPasteGenerator().sample(16, generator=0, background=background, layer_size=48)
    scar_area = scar.mask().flatten(1).float().mean(1)
    assert bool((scar_area > 0).all()) and float(scar_area.max()) < 0.3
    assert float(patch.mask().flatten(1).float().mean()) > 0.8


def test_texture_mixes_source_at_beta() -> None:
    landing = textured(2, 3, size=32)
    red = torch.zeros(1, 3, 16, 16)
    red[:, 0] = 1.0
    full = TextureGenerator(red, beta_range=(1.0, 1.0), augment=0, mask_shape="rectangle")
    layer = full.sample(2, generator=0, background=landing, layer_size=32)
    assert torch.allclose(layer.content, red[:, :, :1, :1].expand(2, 3, 32, 32))
    grey = full.sample(2, generator=0, background=landing[:, :1], channels=1, layer_size=32)
    assert torch.allclose(grey.content, torch.full((2, 1, 32, 32), 0.299), atol=1e-6)
    none = TextureGenerator(red, beta_range=(0.0, 0.0))
    layer = none.sample(2, generator=0, background=landing, layer_size=32)
    assert torch.allclose(layer.content, landing, atol=1e-6)
    half = TextureGenerator(red, beta_range=(0.5, 0.5), augment=0)
    layer = half.sample(2, generator=0, background=landing, layer_size=32)
    assert torch.allclose(layer.content, 0.5 * red[:, :, :1, :1] + 0.5 * landing, atol=1e-6)


def test_opaque_texture_always_shows() -> None:
    generator = TextureGenerator(beta_range=(0.8, 1.0))
    for seed in range(3):
        # At least 12 px (not min_size's 8): the one-plan draws give seed 1 an 8 px defect whose
        # mask shape covers under MIN_VISIBLE_PIXELS, which would not show however opaque.
        _, masks, labels = inject_defects(textured(4, 1), None, generator, seed=seed, min_size=12)
        assert labels.tolist() == [0] * 4 and bool(masks.flatten(1).any(1).all())


def test_texture_without_source_uses_the_landing_patches() -> None:
    landing = textured(3, 3, size=32)
    layer = TextureGenerator(beta_range=(1.0, 1.0)).sample(
        3, generator=4, background=landing, layer_size=32
    )
    assert layer.content.shape == (3, 3, 32, 32)
    assert float((layer.content - landing).abs().mean()) > 0.05
    with pytest.raises(ValueError, match="background"):
        TextureGenerator().sample(1, generator=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_sample_dtype_keeps_the_mask(name: str, dtype: torch.dtype) -> None:
    generator = load_generator(name, mask_shape="perlin")
    background = textured(4, 3, size=24)
    reference = generator.sample(4, generator=3, background=background, layer_size=24)
    other = generator.sample(4, generator=3, background=background, layer_size=24, dtype=dtype)
    assert other.alpha.dtype == dtype and other.content.dtype == dtype
    assert torch.equal(reference.mask(), other.mask())


def test_sample_options_are_checked() -> None:
    generator = CutPasteGenerator()
    background = textured(1, 3, size=64)
    with pytest.raises(TypeError, match="options.*layer_size"):
        generator.sample(1, generator=0, background=background, colour=1)
    with pytest.raises(ValueError, match="reference"):
        generator.sample(1, generator=0, background=background, reference=background)
    with pytest.raises(ValueError, match="layer_size"):
        generator.sample(1, generator=0, background=background, layer_size=4)
    # A background of another size is resized to the layer.
    layer = generator.sample(1, generator=0, background=background, layer_size=16)
    assert layer.content.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: CutPasteGenerator(variant="stripe"), ValueError, "variant"),
        (lambda: CutPasteGenerator(variant="scar", mask_shape="ellipse"), ValueError, "mask_shape"),
        (lambda: CutPasteGenerator(mask_shape="star"), ValueError, "mask_shape"),
        (lambda: CutPasteGenerator(mask_shape=3), TypeError, "mask_shape"),
        (lambda: CutPasteGenerator(shift=(0.8, 0.2)), ValueError, "shift"),
        (lambda: CutPasteGenerator(shift=0.5), TypeError, "shift"),
        (lambda: CutPasteGenerator(jitter=1.5), ValueError, "jitter"),
        (lambda: CutPasteGenerator(scar_width=(0.1, 2.0)), ValueError, "scar_width"),
        (lambda: CutPasteGenerator(layer_size=4), ValueError, "layer_size"),
        (lambda: CutPasteGenerator(layer_size="big"), TypeError, "layer_size"),
        (lambda: CutPasteGenerator(perlin_scale=(3, 3)), ValueError, "perlin_scale"),
        (lambda: CutPasteGenerator(perlin_threshold=1.0), ValueError, "perlin_threshold"),
        (lambda: NSAGenerator(pool=torch.rand(2, 4, 32, 32)), ValueError, "pool"),
        (lambda: NSAGenerator(pool=torch.rand(2, 3, 32, 32) * 4), ValueError, "pool"),
        (
            lambda: NSAGenerator(pool=torch.ones(2, 3, 32, 32, dtype=torch.uint8)),
            ValueError,
            "pool",
        ),
        (lambda: NSAGenerator(pool=[1, 2]), TypeError, "pool"),
        (lambda: NSAGenerator(pool="/no/such/folder"), ValueError, "pool"),
        (lambda: NSAGenerator(crop_scale=(0.0, 0.5)), ValueError, "crop_scale"),
        (lambda: NSAGenerator(max_pool=0), ValueError, "max_pool"),
        (lambda: NSAGenerator(max_side=10**6), ValueError, "max_side"),
        (lambda: NSAGenerator(max_side=2.5), TypeError, "max_side"),
        (lambda: TextureGenerator(beta_range=(0.5, 1.5)), ValueError, "beta_range"),
        (lambda: TextureGenerator(augment=7), ValueError, "augment"),
        (lambda: TextureGenerator(source=torch.rand(3, 32, 32)), ValueError, "source"),
    ],
)
def test_bad_arguments_name_themselves(make, error, argument) -> None:
    with pytest.raises(error, match=argument):
        make()


def test_empty_pool_folder(tmp_path) -> None:
    with pytest.raises(ValueError, match="pool: no images"):
        NSAGenerator(tmp_path)


# ---- mask shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 13, (24, 40), 64])
def test_perlin_masks_never_empty(size) -> None:
    alpha = shapes.perlin_masks(128, size, torch.Generator().manual_seed(0), scale_range=(0, 6))
    h, w = (size, size) if isinstance(size, int) else size
    assert alpha.shape == (128, 1, h, w)
    assert bool((alpha >= 0.5).flatten(1).any(1).all())
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0


def test_perlin_masks_reproducible_and_dtype_free() -> None:
    def draw(seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return shapes.perlin_masks(16, 48, torch.Generator().manual_seed(seed), dtype=dtype)

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    for dtype in (torch.float64, torch.bfloat16, torch.float16):
        assert torch.equal(draw(1) >= 0.5, draw(1, dtype) >= 0.5)


def test_perlin_threshold_is_monotone() -> None:
    masks = [
        shapes.perlin_masks(32, 48, torch.Generator().manual_seed(3), threshold=t) >= 0.5
        for t in (0.2, 0.4, 0.6, 0.8)
    ]
    areas = [float(m.float().mean()) for m in masks]
    for larger, smaller in zip(masks, masks[1:], strict=False):
        assert not bool((smaller & ~larger).any())
    assert areas[0] > areas[-1]


def test_perlin_noise_scale_range_sets_the_periods() -> None:
    smooth = shapes.perlin_noise(8, 64, torch.Generator().manual_seed(0), scale_range=(0, 1))
    rough = shapes.perlin_noise(8, 64, torch.Generator().manual_seed(0), scale_range=(4, 5))

    def roughness(noise: torch.Tensor) -> float:
        return float(noise.diff(dim=-1).abs().mean())

    assert roughness(rough) > 3 * roughness(smooth)
    assert float(smooth.abs().max()) <= math.sqrt(2) / 2 * math.sqrt(2) + 1e-4


@pytest.mark.parametrize("shape", MASK_SHAPES)
@pytest.mark.parametrize("size", [8, 9, (20, 33)])
def test_every_shape_is_inside_the_layer_and_non_empty(shape: str, size) -> None:
    alpha = shapes.sample_masks(shape, 64, size, torch.Generator().manual_seed(2))
    mask = alpha >= 0.5
    assert bool(mask.flatten(1).any(1).all())
    ring = torch.ones_like(mask)
    ring[..., 1:-1, 1:-1] = False
    assert not bool(mask[ring].any())
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0
    again = shapes.sample_masks(shape, 64, size, torch.Generator().manual_seed(2))
    assert torch.equal(alpha, again)


def test_strip_masks_and_shape_arguments() -> None:
    alpha = shapes.strip_masks(32, 40, torch.Generator().manual_seed(0))
    assert bool((alpha >= 0.5).flatten(1).any(1).all())
    with pytest.raises(ValueError, match="shape"):
        shapes.sample_masks("star", 1, 16, torch.Generator())
    with pytest.raises(ValueError, match="threshold"):
        shapes.perlin_masks(1, 16, torch.Generator(), threshold=0.0)
    with pytest.raises(ValueError, match="scale_range"):
        shapes.perlin_masks(1, 16, torch.Generator(), scale_range=(2, 1))
    with pytest.raises(TypeError, match="generator"):
        shapes.polygon_masks(1, 16, 0)
    with pytest.raises(ValueError, match="n"):
        shapes.ellipse_masks(0, 16, torch.Generator())
    with pytest.raises(ValueError, match="size"):
        shapes.ellipse_masks(1, 10**5, torch.Generator())
    with pytest.raises(ValueError, match="vertices"):
        shapes.polygon_masks(1, 16, torch.Generator(), vertices=(2, 5))


# ---- the compiled per-sample renderer (DefectInject's fast path) -------------------------------


def _selfsup_generator(name: str) -> CutPasteGenerator | NSAGenerator | TextureGenerator:
    if name == "cutpaste":
        return CutPasteGenerator()
    if name == "nsa":
        return NSAGenerator(pool=textured(3, 3, size=48, seed=9))
    if name == "texture":
        return TextureGenerator()  # DRAEM-style, the landing patches as its source
    return NSAGenerator()  # "nsa_patches": crops of the landing patches, no pool


def _as_kind(floats: torch.Tensor, kind: str):
    """``floats [3, H, W]`` as a float32 / uint8 tensor or an RGB PIL image."""
    as_uint8 = (floats * 255).round().to(torch.uint8)
    if kind == "float32":
        return floats
    if kind == "uint8":
        return as_uint8
    return Image.fromarray(as_uint8.permute(1, 2, 0).numpy(), "RGB")


def _pixels(image) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)
    return image


def _placement(count: tuple[int, int]) -> PlacementOptions:
    return PlacementOptions.check(
        count=count,
        scale=(0.15, 0.5),
        rotation=(-180.0, 180.0),
        aspect=(0.75, 4.0 / 3.0),
        min_size=8,
        roi=None,
        confine=True,
    )


@pytest.mark.parametrize("kind", ["float32", "uint8", "pil"])
@pytest.mark.parametrize("blend", BLENDS)
@pytest.mark.parametrize("name", ["cutpaste", "nsa", "nsa_patches", "texture"])
def test_the_compiled_and_torch_renderers_agree_on_one_plan(name, blend, kind) -> None:
    # The same plan, the same layers (sampled from the same seeds and landing patches): the same
    # label mask, and images one 8-bit level (float rounding) apart at most.
    generator = _selfsup_generator(name)
    options = _placement(count=(1, 3))
    shown = 0
    for seed in range(4):
        image = _as_kind(textured(1, 3, size=64, seed=seed)[0], kind)
        pixels = _pixels(image)
        plan = draw_plan(options, generator.defect_types, 1, tuple(pixels.shape[-2:]), seed)
        compiled = place_sample(plan, image, generator, blend=blend)
        out = _pixels(compiled.source_composite())
        floats = pixels[None].to(torch.float32)
        rounded = pixels.dtype == torch.uint8
        floats = floats / 255.0 if rounded else floats
        result = composite_visible(
            floats, render_plan(floats, plan, generator), blend, 255 if rounded else None
        )
        expected = result.images[0]
        if rounded:
            expected = torch.round(expected * 255.0).to(torch.uint8)
        assert torch.equal(result.masks[0, 0], compiled.mask)
        difference = (expected.double() - out.double()).abs().max().item()
        assert difference <= (1 if rounded else 1e-5)
        shown += int(compiled.mask.any())
    assert shown >= 3


@pytest.mark.parametrize("kind", ["float32", "uint8", "pil"])
@pytest.mark.parametrize("blend", ["alpha", "poisson"])
@pytest.mark.parametrize("name", ["cutpaste", "nsa"])
def test_defect_inject_renders_selfsup_layers_with_the_compiled_renderer(
    name, blend, kind, monkeypatch
) -> None:
    generator = _selfsup_generator(name)
    images = [_as_kind(textured(1, 3, size=64, seed=seed)[0], kind) for seed in range(4)]
    # Today's output: the torch renderer renders every sample.
    reference = DefectInject(None, p=1.0, generator=generator, blend=blend, seed=3)
    reference._compiled = None
    expected = [
        reference(image, tv_tensors.Mask(torch.zeros(64, 64, dtype=torch.uint8)))
        for image in images
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("the torch renderer rendered")

    monkeypatch.setattr("defectaug.transforms.render_plan", refuse)
    monkeypatch.setattr("defectaug.transforms.composite_visible", refuse)
    transform = DefectInject(None, p=1.0, generator=generator, blend=blend, seed=3)
    assert transform._compiled is generator
    for image, (expected_out, expected_mask) in zip(images, expected, strict=True):
        params = transform.make_params([image])
        assert isinstance(params["plan"], SamplePlan)
        out = transform.transform(image, params)
        mask = transform.transform(tv_tensors.Mask(torch.zeros(64, 64, dtype=torch.uint8)), params)
        assert type(out) is type(image)
        assert torch.equal(mask, expected_mask) and bool(mask.any())
        out, expected_out = _pixels(out), _pixels(expected_out)
        assert out.dtype == expected_out.dtype
        tolerance = 1e-5 if out.is_floating_point() else 1
        assert (out.double() - expected_out.double()).abs().max().item() <= tolerance


@pytest.mark.parametrize("name", ["cutpaste", "nsa"])
def test_selfsup_inputs_outside_the_fast_path_and_bad_inputs(name) -> None:
    generator = _selfsup_generator(name)
    options = dict(p=1.0, generator=generator, blend="poisson", min_size=1, seed=0)
    transform, reference = DefectInject(None, **options), DefectInject(None, **options)
    reference._compiled = None
    # float16 takes the torch renderer, as for every generator.
    half = textured(1, 3, size=48)[0].half()
    assert not isinstance(transform.make_params([half])["plan"], SamplePlan)
    # The same errors, with the same words, whichever renderer would render.
    bad = [
        (textured(1, 3, size=48)[0] * 255, "expected float values in \\[0, 1\\]"),
        (torch.full((3, 24, 24), float("nan")), "NaN or infinite"),
        (textured(2, 3, size=48), "one sample at a time"),
        (torch.full((3, 1, 16), 0.5), "1x16 is too small for a defect"),
    ]
    for image, words in bad:
        with pytest.raises(ValueError, match=words) as compiled_error:
            transform(image)
        with pytest.raises(ValueError, match=words) as torch_error:
            reference(image)
        assert str(compiled_error.value) == str(torch_error.value)
    # A 2 x 2 image still works.
    out = transform(torch.full((3, 2, 2), 0.5))
    assert out.shape == (3, 2, 2) and not torch.isnan(out).any()
    # The compiled renderer samples only generators that sample per call: a relief generator's
    # layers come from its reservoir, so sampling them here would not match the torch renderer.
    image = textured(1, 3, size=48)[0]
    plan = draw_plan(_placement(count=(1, 1)), ("spot",), 1, (48, 48), 0)
    with pytest.raises(ValueError, match="samples_per_call only, got ProceduralGenerator"):
        place_sample(plan, image, load_generator("procedural"))
