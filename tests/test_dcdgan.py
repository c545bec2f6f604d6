import json

import pytest
import torch

from defectaug.generators.dcdgan import (
    DCDGAN,
    DCDGANConfig,
    DCDGANDiscriminator,
    DCDGANEncoder,
    class_constant_map,
    fill_outside_mask,
    prepare_defect_crop,
    refine_alpha_mask,
)
from defectaug.generators.hub import PretrainedDefectGenerator
from defectaug.generators.registry import load_generator
from defectaug.layer import DefectLayer

TYPES = ("blowhole", "crack", "fray")


def small_config(**overrides) -> DCDGANConfig:
    values = {"defect_types": TYPES, "layer_size": 16, "latent_dim": 6, "width": 4, "max_width": 8}
    values.update(overrides)
    return DCDGANConfig(**values)


def randomized(model: DCDGAN) -> DCDGAN:
    """Give the OD-SPADE layers (identity at initialisation) random weights, as training would."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "to_scale_shift" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model


@pytest.fixture(scope="module")
def model() -> DCDGAN:
    torch.manual_seed(0)
    return randomized(DCDGAN(small_config())).eval()


def test_class_constant_map_values_follow_the_paper_formula():
    weights = torch.eye(4)
    levels = class_constant_map(weights, 3)
    assert levels.shape == (4, 1, 3, 3)
    assert torch.allclose(levels[:, 0, 0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5]))
    assert bool((levels == levels[:, :, :1, :1]).all())
    mixed = class_constant_map(torch.tensor([[0.5, 0.0, 0.5, 0.0]]), 2)
    assert torch.allclose(mixed, torch.full((1, 1, 2, 2), -0.5))


def test_sample_shapes_ranges_and_labels(model):
    layer = model.sample(5, "crack", generator=0)
    assert isinstance(layer, DefectLayer)
    assert layer.content.shape == (5, 1, 16, 16) and layer.alpha.shape == (5, 1, 16, 16)
    assert layer.names == ["crack"] * 5
    for tensor in (layer.content, layer.alpha):
        assert bool(((tensor >= 0) & (tensor <= 1)).all())
    mixed = model.sample(6, generator=1)
    assert set(mixed.names) <= set(TYPES)


def test_sampling_is_deterministic_and_seed_dependent(model):
    first = model.sample(4, "fray", generator=3)
    again = model.sample(4, "fray", generator=torch.Generator().manual_seed(3))
    other = model.sample(4, "fray", generator=4)
    assert torch.equal(first.content, again.content) and torch.equal(first.alpha, again.alpha)
    assert not torch.equal(first.content, other.content)


def test_samples_do_not_depend_on_the_rest_of_the_batch(model):
    code = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    together = model.sample(3, ["blowhole", "crack", "fray"], latent=code)
    alone = model.sample(1, "crack", latent=code[1:2])
    assert torch.allclose(together.content[1:2], alone.content, atol=1e-6)


def test_class_weights_interpolate_and_match_one_hot_at_the_ends(model):
    code = torch.randn(1, 6, generator=torch.Generator().manual_seed(1)).expand(3, -1)
    ends = model.sample(3, ["blowhole", "crack", "fray"], latent=code)
    one_hot = model.sample(3, class_weights=torch.eye(3), latent=code)
    assert torch.allclose(ends.content, one_hot.content, atol=1e-6)
    halfway = model.sample(1, class_weights={"blowhole": 0.5, "fray": 0.5}, latent=code[:1])
    assert halfway.labels.tolist() == [0]  # ties go to the first heaviest class
    assert not torch.allclose(halfway.content, ends.content[:1])
    assert not torch.allclose(halfway.content, ends.content[2:])


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"scratch": 1.0}, "unknown defect type"),
        (torch.tensor([0.5, 0.2, 0.2]), "sum to 1"),
        (torch.tensor([1.5, -0.5, 0.0]), "non-negative"),
        (torch.ones(2, 3) / 3, r"\[3\] or \[4, 3\]"),
    ],
)
def test_bad_class_weights_are_refused_with_the_argument_named(model, weights, message):
    with pytest.raises((ValueError, KeyError), match=message):
        model.sample(4, class_weights=weights, generator=0)


def test_reference_sampling_varies_a_given_defect(model):
    content = torch.rand(2, 1, 20, 30, generator=torch.Generator().manual_seed(0))
    alpha = torch.zeros(2, 1, 20, 30)
    alpha[:, :, 5:15, 8:25] = 1.0
    exact = model.sample(
        2, "crack", reference=content, reference_alpha=alpha, variation=0.0, generator=0
    )
    exact_again = model.sample(
        2, "crack", reference=content, reference_alpha=alpha, variation=0.0, generator=9
    )
    varied = model.sample(2, "crack", reference=content, reference_alpha=alpha, generator=0)
    packed = model.sample(
        2, "crack", reference=torch.cat([content, alpha], 1), variation=0.0, generator=0
    )
    assert torch.equal(exact.content, exact_again.content)
    assert torch.allclose(exact.content, packed.content)
    assert not torch.allclose(exact.content, varied.content)
    with pytest.raises(ValueError, match="reference"):
        model.sample(2, "crack", reference=content, generator=0)


def test_unknown_options_and_conflicting_codes_are_refused(model):
    with pytest.raises(TypeError, match="unknown options"):
        model.sample(1, "crack", temperature=2.0)
    with pytest.raises(ValueError, match="latent"):
        model.sample(2, "crack", latent=torch.zeros(3, 6))


def test_refine_alpha_threshold_and_watershed_give_binary_masks(model):
    layer = model.sample(3, "fray", generator=0)
    for method in ("threshold", "watershed"):
        refined = refine_alpha_mask(layer.content, layer.alpha, method)
        assert refined.shape == layer.alpha.shape
        assert set(refined.unique().tolist()) <= {0.0, 1.0}
    # A clean two-level alpha: the watershed keeps the sure defect and drops the sure surface.
    content = torch.zeros(1, 1, 16, 16)
    content[..., 4:12, 4:12] = 1.0
    alpha = torch.zeros(1, 1, 16, 16)
    alpha[..., 5:11, 5:11] = 0.9
    refined = refine_alpha_mask(content, alpha, "watershed")
    assert refined[0, 0, 7, 7] == 1 and refined[0, 0, 0, 0] == 0
    assert refine_alpha_mask(content, alpha, None) is alpha
    with pytest.raises(ValueError, match="refine_alpha"):
        refine_alpha_mask(content, alpha, "otsu")


def test_save_and_load_round_trip(model, tmp_path):
    assert isinstance(model, PretrainedDefectGenerator)
    model.save_pretrained(tmp_path / "card", datasets=["synthetic"], metrics=["kid"])
    config = json.loads((tmp_path / "card" / "config.json").read_text())
    assert config["architecture"] == "dcdgan"
    assert config["kwargs"]["defect_types"] == list(TYPES)
    loaded = load_generator(tmp_path / "card")
    assert isinstance(loaded, DCDGAN) and loaded.config == model.config
    before, after = model.sample(3, "crack", generator=5), loaded.sample(3, "crack", generator=5)
    assert torch.equal(before.content, after.content) and torch.equal(before.alpha, after.alpha)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="layer_size"):
        small_config(layer_size=48)
    with pytest.raises(ValueError, match="defect_types"):
        small_config(defect_types=("a", "a"))
    with pytest.raises(ValueError, match="native_sizes"):
        small_config(native_sizes={"scratch": [10]})
    with pytest.raises(ValueError, match="unknown DCDGAN fields"):
        DCDGANConfig.from_dict({**small_config().to_dict(), "depth": 3})
    assert DCDGANConfig.from_dict(small_config().to_dict()) == small_config()


def test_encoder_and_critic_shapes():
    config = small_config()
    content, alpha = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    mu, logvar = DCDGANEncoder(config)(content, alpha)
    assert mu.shape == logvar.shape == (2, 6)
    critic = DCDGANDiscriminator(config)
    scores = critic(content, alpha, torch.tensor([0, 2]))
    assert scores.shape == (2,)
    # Class-conditional: the same image scores differently under another class.
    critic.class_embedding.weight.data.normal_()
    assert not torch.allclose(scores, critic(content, alpha, torch.tensor([1, 1])))


def test_prepare_defect_crop_removes_the_surface_and_keeps_the_aspect():
    content = torch.full((1, 1, 10, 40), 0.8)
    content[..., 4:6, 5:35] = 0.1
    alpha = torch.zeros(1, 1, 10, 40)
    alpha[..., 4:6, 5:35] = 1.0
    out_content, out_alpha = prepare_defect_crop(content, alpha, 32)
    assert out_content.shape == out_alpha.shape == (1, 1, 32, 32)
    # Outside the defect only the defect's own tone remains (no 0.8 surface).
    assert float(out_content.max()) < 0.3
    rows = torch.nonzero(out_alpha[0, 0].amax(dim=1) > 0.25).flatten()
    assert len(rows) <= 4  # a thin horizontal defect stays thin
    filled = fill_outside_mask(content, alpha)
    assert torch.allclose(filled, torch.full_like(filled, 0.1))


def test_alpha_floor_clears_the_haze_and_keeps_the_range(model):
    raw = model.sample(4, "crack", generator=2, alpha_floor=0.0)
    floored = model.sample(4, "crack", generator=2, alpha_floor=0.2)
    assert torch.equal(raw.content, floored.content)
    expected = ((raw.alpha - 0.2) / 0.8).clamp(0, 1)
    assert torch.allclose(floored.alpha, expected)
    assert bool((floored.alpha[raw.alpha <= 0.2] == 0).all())
    with pytest.raises(ValueError, match="alpha_floor"):
        model.sample(1, "crack", alpha_floor=1.0)
