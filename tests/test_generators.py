"""The DefectGenerator contract over every registered generator, and the procedural generator."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
import torch
from test_datasets import write_mvtec

from defectaug import inject_defects
from defectaug.batch import NO_DEFECT
from defectaug.generators import (
    DEFECT_TYPES,
    DefectGenerator,
    ProceduralGenerator,
    ScratchParams,
    SpotParams,
    list_generators,
    load_generator,
)
from defectaug.layer import VISIBILITY, DefectLayer


@pytest.fixture(scope="module")
def bank_root(tmp_path_factory):
    return write_mvtec(tmp_path_factory.mktemp("bank"))


@pytest.fixture(scope="module", params=list_generators())
def any_generator(request, bank_root) -> DefectGenerator:
    """Every name ``list_generators()`` offers, built with the arguments it requires."""
    required = {"bank": {"root": bank_root}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_generator(request.param, **required.get(request.param, {}))


def _inputs(generator: DefectGenerator, n: int, channels: int) -> dict:
    extra = {}
    if generator.needs_background:
        extra["background"] = torch.rand(
            n, channels, 96, 96, generator=torch.Generator().manual_seed(9)
        )
    if generator.needs_reference:
        extra["reference"] = torch.rand(n, channels, *generator.layer_size)
    return extra


def _sample(source: DefectGenerator, n: int, defect_type=None, **kwargs) -> DefectLayer:
    channels = source.resolve_channels(kwargs.get("channels"))
    return source.sample(n, defect_type, **_inputs(source, n, channels), **kwargs)


# ------------------------------------------------------------------------------ contract
def test_contract_shapes_ranges_dtype_device(any_generator):
    layer = _sample(any_generator, 5, generator=0)
    channels = any_generator.resolve_channels(None)
    h, w = layer.size
    assert layer.content.shape == (5, channels, h, w) and layer.alpha.shape == (5, 1, h, w)
    assert layer.content.dtype == torch.float32 and layer.alpha.dtype == torch.float32
    assert layer.content.device.type == "cpu" and layer.labels.device.type == "cpu"
    for tensor in (layer.content, layer.alpha):
        assert bool(torch.isfinite(tensor).all())
        assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    assert layer.type_names == tuple(any_generator.defect_types)
    assert all(0 <= label < len(layer.type_names) for label in layer.labels.tolist())
    double = _sample(any_generator, 2, generator=0, dtype=torch.float64)
    assert double.content.dtype == torch.float64 and double.alpha.dtype == torch.float64


def test_contract_determinism(any_generator):
    first = _sample(any_generator, 4, generator=11)
    again = _sample(any_generator, 4, generator=torch.Generator().manual_seed(11))
    assert torch.equal(first.content, again.content) and torch.equal(first.alpha, again.alpha)
    assert torch.equal(first.labels, again.labels)
    other = _sample(any_generator, 4, generator=12)
    # A fixed shape (CutPaste's rectangle) may repeat; the layer as a whole must not.
    assert not (torch.equal(first.alpha, other.alpha) and torch.equal(first.content, other.content))


def test_contract_every_type_has_a_nonempty_alpha(any_generator):
    for offset, name in enumerate(any_generator.defect_types):
        layer = _sample(any_generator, 6, name, generator=100 + offset)
        assert layer.names == [name] * 6
        # Every layer carries a defect; a learned card's faint one may peak under the 0.5 of
        # ``mask()`` (its composite is labelled by the visible change), but not by much.
        peaks = layer.alpha.flatten(1).amax(1)
        assert bool((peaks >= 0.25).all()), f"{name}: a layer without a defect: {peaks.tolist()}"
        assert bool(layer.mask().flatten(1).any(1).any()), f"{name}: every mask empty"


def test_contract_bad_inputs(any_generator):
    accepted = ", ".join(any_generator.defect_types)
    with pytest.raises(KeyError, match=f"unknown defect type 'no-such-type'.*accepted: {accepted}"):
        _sample(any_generator, 2, "no-such-type")
    with pytest.raises(ValueError, match="channels: expected 1 or 3, got 2"):
        any_generator.sample(2, channels=2)
    with pytest.raises(ValueError, match="channels: expected 1 or 3, got True"):
        any_generator.sample(2, channels=True)
    with pytest.raises(ValueError, match="n: expected a positive int"):
        any_generator.sample(0)
    with pytest.raises(ValueError, match="defect_type: expected one name or a sequence of 3 names"):
        _sample(any_generator, 3, list(any_generator.defect_types[:1]) * 2)


@pytest.mark.parametrize("channels", [1, 3])
def test_contract_every_channel_count(any_generator, channels):
    """Every generator serves 1- and 3-channel requests, its own count or not."""
    layer = _sample(any_generator, 3, generator=5, channels=channels)
    assert layer.content.shape[1] == channels and layer.alpha.shape[1] == 1
    assert float(layer.content.min()) >= 0.0 and float(layer.content.max()) <= 1.0
    again = _sample(any_generator, 3, generator=5, channels=channels)
    assert torch.equal(layer.content, again.content) and torch.equal(layer.alpha, again.alpha)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_generator_injects_into_grey_and_rgb_images(any_generator, channels):
    """``inject_defects`` with every registered generator on L and RGB images."""
    base = torch.linspace(0.35, 0.65, 96).view(1, 1, 1, 96).expand(3, channels, 80, 96)
    tint = torch.tensor([1.0, 0.9, 0.8])[:channels].view(1, channels, 1, 1)
    images = (base * tint).contiguous()
    kinds = any_generator.defect_types
    result = inject_defects(images, kinds, any_generator, scale=(0.3, 0.5), seed=3)
    assert result.images.shape == images.shape and result.masks.shape == (3, 1, 80, 96)
    assert bool((result.labels != NO_DEFECT).any()), "no defect showed on any image"
    changed = (result.images - images).abs().amax(1, keepdim=True) > VISIBILITY
    assert not bool((changed & ~result.masks).any()), "a visible change outside the label mask"
    again = inject_defects(images, kinds, any_generator, scale=(0.3, 0.5), seed=3)
    assert torch.equal(result.images, again.images) and torch.equal(result.masks, again.masks)


def test_grey_layer_on_rgb_is_a_luminance_change_of_the_landing_patch():
    from defectaug.generators.base import LUMA, convert_layer, luminance

    rng = torch.Generator().manual_seed(0)
    grey = DefectLayer(
        torch.rand(2, 1, 16, 16, generator=rng),
        torch.rand(2, 1, 16, 16, generator=rng),
        torch.zeros(2, dtype=torch.int64),
        ("dent",),
    )
    patch = 0.25 + 0.5 * torch.rand(2, 3, 16, 16, generator=rng)
    rgb = convert_layer(grey, 3, patch)
    expected = (patch + grey.content - luminance(patch)).clamp(0, 1)
    assert torch.allclose(rgb.content, expected, atol=1e-6)
    assert torch.equal(rgb.alpha, grey.alpha) and torch.equal(rgb.labels, grey.labels)
    inside = ((expected > 0) & (expected < 1)).all(dim=1, keepdim=True)
    # Where nothing clamps, the layer's luminance is the grey value: a grey image would get the
    # same defect.
    assert torch.allclose(luminance(rgb.content)[inside], grey.content[inside], atol=1e-5)
    replicated = convert_layer(grey, 3, None)
    assert torch.equal(replicated.content, grey.content.expand(-1, 3, -1, -1))
    back = convert_layer(replicated, 1, None)
    weights = torch.tensor(LUMA).view(1, 3, 1, 1)
    assert torch.allclose(back.content, (replicated.content * weights).sum(1, keepdim=True))
    assert torch.allclose(back.content, grey.content, atol=1e-6)


def test_fixed_channel_generators_convert_their_layers():
    class RedDent(DefectGenerator):
        defect_types = ("dent",)
        channels = 3
        accepts_background = True

        def _generate(self, labels, *, generator, device, dtype, channels, background, **_):
            assert channels == 3 and (background is None or background.shape[1] == 3)
            n = len(labels)
            content = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1).expand(n, 3, 8, 8)
            return DefectLayer(content.clone(), torch.ones(n, 1, 8, 8), labels, self.defect_types)

    layer = RedDent().sample(2, channels=1, background=torch.rand(2, 1, 8, 8))
    assert layer.content.shape == (2, 1, 8, 8)
    assert torch.allclose(
        layer.content, torch.full_like(layer.content, 0.299 * 0.9 + (0.587 + 0.114) * 0.1)
    )


def test_missing_required_inputs_are_named():
    class NeedsEverything(DefectGenerator):
        defect_types = ("dent",)
        needs_background = True
        needs_reference = True

    with pytest.raises(ValueError, match="background: NeedsEverything needs the background images"):
        NeedsEverything().sample(1)
    with pytest.raises(ValueError, match="reference: NeedsEverything needs reference defect crops"):
        NeedsEverything().sample(1, background=torch.rand(1, 3, 8, 8))


# ------------------------------------------------------------------------------ procedural
@pytest.fixture(scope="module")
def procedural() -> ProceduralGenerator:
    return ProceduralGenerator()


def test_procedural_declares_its_types(procedural):
    assert (
        procedural.defect_types
        == DEFECT_TYPES
        == ("scratch", "spot", "crack", "stain", "uneven", "pit")
    )
    assert procedural.channels == "any" and procedural.layer_size == (64, 64)
    assert "procedural" in list_generators()


def test_procedural_layer_size_overrides(procedural):
    assert ProceduralGenerator(layer_size=(40, 96)).sample(2, generator=0).size == (40, 96)
    assert ProceduralGenerator(layer_size=32).layer_size == (32, 32)
    assert procedural.sample(2, generator=0, layer_size=(24, 30)).size == (24, 30)
    big = procedural.sample(2, "crack", generator=0, layer_size=160)
    assert big.size == (160, 160) and bool(big.mask().flatten(1).any(1).all())


def test_procedural_grayscale_is_replicated(procedural):
    gray = procedural.sample(6, "scratch", generator=5, channels=1)
    color = procedural.sample(6, "scratch", generator=5, channels=3)
    assert gray.content.shape[1] == 1 and color.content.shape[1] == 3
    assert torch.equal(color.content[:, :1], color.content[:, 1:2])
    assert torch.equal(gray.alpha, color.alpha) and torch.allclose(
        gray.content, color.content[:, :1]
    )


def test_procedural_stains_can_be_tinted(procedural):
    layer = procedural.sample(8, "stain", generator=2, channels=3, base_color=0.5)
    inside = layer.mask().expand_as(layer.content)
    red, blue = layer.content[:, 0][inside[:, 0]], layer.content[:, 2][inside[:, 2]]
    assert float((red - blue).mean()) > 0.0


def test_procedural_mixed_batch_matches_labels(procedural):
    names = ["pit", "scratch", "uneven", "pit", "spot", "crack", "stain"]
    layer = procedural.sample(7, names, generator=1)
    assert layer.names == names
    assert bool(layer.mask().flatten(1).any(1).all())


def test_alpha_fades_out_at_the_layer_border(procedural):
    layer = procedural.sample(60, generator=4)
    alpha = layer.alpha[:, 0]
    border = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], dim=1)
    assert float(border.max()) < 1e-6


def test_thin_defects_have_soft_edges(procedural):
    layer = procedural.sample(8, "scratch", generator=6)
    soft = (layer.alpha > 0.05) & (layer.alpha < 0.45)
    assert bool(soft.flatten(1).any(1).all())


def test_crack_masks_stay_in_one_piece(procedural):
    layer = procedural.sample(24, "crack", generator=7)
    pieces = [
        cv2.connectedComponents(mask[0].numpy().astype(np.uint8), connectivity=8)[0] - 1
        for mask in layer.mask()
    ]
    assert sum(p == 1 for p in pieces) >= 18, pieces


def _sideways_spread(mask: torch.Tensor) -> float:
    """Standard deviation of a mask's pixels across its principal axis, in pixels."""
    points = torch.nonzero(mask).double()
    centred = points - points.mean(dim=0)
    return float(torch.linalg.eigvalsh(centred.T @ centred / len(points))[0].sqrt())


def test_crack_bend_sets_how_far_the_course_drifts():
    fixed = {"jaggedness": (0.0, 0.0), "branches": (0, 0), "heading": (0.0, 0.0)}
    spreads = {}
    for bend in (0.0, 0.3):
        generator = ProceduralGenerator(crack=fixed | {"bend": bend}, layer_size=96)
        masks = generator.sample(8, "crack", generator=3).mask()[:, 0]
        spreads[bend] = max(_sideways_spread(mask) for mask in masks)
    # A straight path of a few px spreads under 1 px across its axis (the default bend
    # reaches about 1.4 px, a bend of 0.3 about 4).
    assert spreads[0.0] < 1.0 < 3.0 < spreads[0.3], spreads
    with pytest.raises(ValueError, match=r"CrackParams.bend: expected a number in \[0.0, 0.5\]"):
        ProceduralGenerator(crack={"bend": 0.9})


def test_params_drive_the_look():
    small = ProceduralGenerator(spot=SpotParams(radius=(0.05, 0.05)))
    large = ProceduralGenerator(spot={"radius": (0.3, 0.3)})
    area = lambda g: float(g.sample(8, "spot", generator=0).mask().float().sum())
    assert area(large) > 10 * area(small)
    one = ProceduralGenerator(scratch={"count": [1, 1], "width": (0.02, 0.02)})
    assert one.params["scratch"].count == (1, 1)


def test_background_sets_the_surface_tone(procedural):
    dark_surface = torch.full((8, 1, 100, 100), 0.15)
    light_surface = torch.full((8, 1, 100, 100), 0.75)

    def tone(background):
        layer = procedural.sample(8, "stain", generator=3, channels=1, background=background)
        return float((layer.content * layer.alpha).sum() / layer.alpha.sum())

    assert tone(dark_surface) < 0.2 < 0.5 < tone(light_surface)


def test_layer_sized_background_keeps_its_texture(procedural):
    stripes = torch.zeros(2, 1, 64, 64)
    stripes[..., ::2] = 0.8
    layer = procedural.sample(2, "uneven", generator=0, channels=1, background=stripes)
    inside = layer.mask()[:, 0]
    even, odd = layer.content[:, 0, :, ::2], layer.content[:, 0, :, 1::2]
    assert float(even[inside[:, :, ::2]].mean()) > float(odd[inside[:, :, 1::2]].mean()) + 0.2


def test_base_color(procedural):
    gray = procedural.sample(4, "pit", generator=0, channels=3, base_color=0.6)
    per_item = procedural.sample(
        4, "pit", generator=0, channels=3, base_color=torch.full((4, 3), 0.6)
    )
    assert torch.equal(gray.content, per_item.content)
    with pytest.raises(ValueError, match=r"base_color: expected a float, \[n=4\] or \[n=4, C=3\]"):
        procedural.sample(4, generator=0, channels=3, base_color=torch.rand(4, 2))
    with pytest.raises(ValueError, match=r"base_color: expected values in \[0, 1\]"):
        procedural.sample(4, generator=0, base_color=1.5)
    with pytest.raises(ValueError, match="give either background or base_color"):
        procedural.sample(1, base_color=0.5, background=torch.rand(1, 3, 8, 8))


def test_procedural_bad_inputs(procedural):
    with pytest.raises(
        TypeError, match="unknown sample option.* sharpness for ProceduralGenerator"
    ):
        procedural.sample(1, sharpness=2)
    with pytest.raises(ValueError, match="reference: ProceduralGenerator does not use reference"):
        procedural.sample(1, reference=torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="background: expected a float"):
        procedural.sample(1, background=torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="layer_size: expected an int or an"):
        procedural.sample(1, layer_size=(4, 64))
    with pytest.raises(ValueError, match="layer_size: expected an int or an"):
        ProceduralGenerator(layer_size=(64, 64, 3))
    with pytest.raises(ValueError, match="base_level: expected 0 <= low <= high <= 1"):
        ProceduralGenerator(base_level=(0.8, 0.2))


def test_params_are_validated():
    with pytest.raises(
        ValueError, match=r"ScratchParams.width: expected 0.005 <= low <= high <= 0.2"
    ):
        ScratchParams(width=(0.0, 0.1))
    with pytest.raises(ValueError, match=r"SpotParams.radius: expected a \(low, high\) pair"):
        SpotParams(radius=0.1)
    with pytest.raises(ValueError, match=r"bright_probability: expected a number in \[0.0, 1.0\]"):
        SpotParams(bright_probability=2.0)
    with pytest.raises(
        ValueError, match="scratch: unknown parameter.* thickness; accepted: .*width"
    ):
        ProceduralGenerator(scratch={"thickness": (1, 2)})
    with pytest.raises(TypeError, match="spot: expected a SpotParams or a mapping"):
        ProceduralGenerator(spot=ScratchParams())


def test_to_sets_the_default_device(procedural):
    moved = ProceduralGenerator().to(torch.float64)
    assert moved.sample(1, generator=0).content.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_procedural_on_cuda():
    generator = load_generator("procedural", device="cuda")
    layer = generator.sample(12, generator=0)
    assert layer.content.is_cuda and layer.alpha.is_cuda and layer.labels.is_cuda
    again = generator.sample(12, generator=0)
    assert torch.equal(layer.content, again.content)
    for name in generator.defect_types:
        assert bool(generator.sample(4, name, generator=1).mask().flatten(1).any(1).all())


def test_every_parameter_is_documented():
    from defectaug.generators.procedural import PARAMS_BY_TYPE

    assert set(PARAMS_BY_TYPE) == set(DEFECT_TYPES)
    for cls in PARAMS_BY_TYPE.values():
        table = cls.describe().splitlines()
        assert len(table) == 2 + len(cls.__dataclass_fields__)
        assert all(row.split(" | ")[-1].strip() for row in table[2:]), cls.__name__
    assert "width | (0.016, 0.035) | [0.005, 0.2] | stroke width" in ScratchParams.describe()


def test_paint_then_shade_is_sample(procedural):
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 5])
    layer = procedural.sample(8, [DEFECT_TYPES[i] for i in labels], generator=3, base_color=0.4)
    maps = procedural.paint(labels, generator=torch.Generator().manual_seed(3), layer_size=(64, 64))
    tone = torch.full((8, 3, 1, 1), 0.4)
    assert torch.equal(maps.alpha, layer.alpha) and torch.equal(maps.shade(tone), layer.content)


def _brute_force_distance(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Distance ``[n, height, width]`` of every pixel to the polylines ``points [n, P, 2]``."""
    a, b = points[:, :-1, None, None], points[:, 1:, None, None]
    grid = torch.meshgrid(torch.arange(float(height)), torch.arange(float(width)), indexing="ij")
    pixel = torch.stack(grid, -1)
    step = b - a
    u = (((pixel - a) * step).sum(-1) / (step * step).sum(-1)).clamp(0, 1)
    return (pixel - a - u[..., None] * step).norm(dim=-1).amin(dim=1)


def test_windowed_nearest_segments_match_brute_force():
    from defectaug.generators._paint_kernels import nearest_segments

    rng = torch.Generator().manual_seed(0)
    points = torch.rand(3, 7, 2, generator=rng) * torch.tensor([40.0, 50.0])
    reach = [4.0, 9.0, 60.0]
    distance = _brute_force_distance(points, 40, 50)
    for item in range(3):
        squared = np.full((40, 50), np.inf, np.float32)
        segment = np.full((40, 50), -1, np.int32)
        top, bottom, left, right = nearest_segments(
            points[item].numpy(), reach[item], squared, segment
        )
        near = distance[item] <= reach[item]
        found = torch.from_numpy(np.sqrt(squared))
        assert torch.allclose(found[near], distance[item][near], atol=1e-3)
        assert torch.isinf(found[~near]).all() and (segment[~near.numpy()] == -1).all()
        assert ((segment >= 0) & (segment < 6))[near.numpy()].all()
        rows, cols = near.nonzero(as_tuple=True)
        box = (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item())
        assert (top, bottom, left, right) == box


def test_crack_path_outline_is_its_width_around_the_polyline():
    from defectaug.generators._paint_kernels import paint_crack_path

    rng = torch.Generator().manual_seed(1)
    points = torch.rand(2, 5, 2, generator=rng) * 30.0 + 5.0
    width = torch.full((2, 5), 3.0)
    signed, alpha = np.zeros((2, 40, 40), np.float32), np.zeros((2, 40, 40), np.float32)
    paint_crack_path(
        points.numpy(),
        width.numpy(),
        np.ones((2, 5), np.float32),
        np.array([True, False]),
        np.array([12.0, 12.0], np.float32),
        np.array([0.5, 0.5], np.float32),
        signed,
        alpha,
    )
    distance = _brute_force_distance(points, 40, 40)[0]
    t = ((distance - 3.0 / 2 - 0.75) / -1.5).clamp(0, 1)
    assert torch.allclose(torch.from_numpy(alpha[0]), t * t * (3 - 2 * t), atol=1e-5)
    assert not alpha[1].any() and not signed[1].any()
    assert signed[0].max() <= 0.5 + 1e-6 and (signed[0][alpha[0] > 0.5] > 0.1).all()
