import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _generators import scene_set
from PIL import Image
from safetensors.torch import load_file, save_file

from defectaug import inject_defects
from defectaug.cli import main as cli_main
from defectaug.generators import defectgan
from defectaug.generators.defectgan import (
    DefectGAN,
    DefectGANConfig,
    control_map,
    ellipse_regions,
)
from defectaug.generators.registry import load_generator
from defectaug.layer import DefectLayer
from defectaug.training.data import SceneCropSet
from defectaug.training.trainer import DefectGANTrainer, TrainConfig

TYPES = ("dark", "bright")
SIZE = 16


def tiny_config(**overrides) -> DefectGANConfig:
    values = {
        "defect_types": TYPES,
        "layer_size": SIZE,
        "width": 4,
        "blocks": 1,
        "spade_hidden": 4,
        "prior_counts": {"dark": 2, "bright": 1},
    }
    return DefectGANConfig(**{**values, **overrides})


def tiny_model() -> DefectGAN:
    torch.manual_seed(0)
    model = DefectGAN(tiny_config())
    with torch.no_grad():
        # An untrained map sits near 0 by design; lift it so alphas are visible in the tests.
        model.generator.to_map.bias.fill_(0.5)
        for block in [*model.generator.encoder, *model.generator.blocks, *model.generator.up]:
            block.noise.scale.fill_(0.3)
    masks = ellipse_regions(3, SIZE, torch.Generator().manual_seed(0), torch.device("cpu"))
    model.set_prior_masks(masks, torch.tensor([0, 1, 0]))
    return model.eval()


def train_config(iterations: int, **overrides) -> TrainConfig:
    values = {
        "iterations": iterations,
        "batch_size": 4,
        "lr": 2e-3,
        "adversarial_weight": 1.0,
        "architecture": {"width": 4, "blocks": 1, "spade_hidden": 4},
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[DefectGAN, dict]:
    torch.set_num_threads(1)
    trainer = DefectGANTrainer(scene_set(), train_config(400))
    summary = trainer.fit(
        tmp_path_factory.mktemp("run"), checkpoint_every=0, sample_every=0, progress=False
    )
    return trainer.export_generator(), {"summary": summary, "history": trainer.history}


def test_sample_contract_shapes_ranges_labels_and_determinism():
    model = tiny_model()
    background = torch.rand(3, 1, SIZE, SIZE)
    layer = model.sample(
        3, "bright", background=background, generator=torch.Generator().manual_seed(1)
    )
    assert isinstance(layer, DefectLayer)
    assert layer.content.shape == (3, 1, SIZE, SIZE) and layer.alpha.shape == (3, 1, SIZE, SIZE)
    assert layer.names == ["bright"] * 3 and layer.labels.dtype == torch.int64
    for tensor in (layer.content, layer.alpha):
        assert (
            tensor.dtype == torch.float32
            and 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
        )
    assert float(layer.alpha.max()) > 0.0
    again = model.sample(
        3, "bright", background=background, generator=torch.Generator().manual_seed(1)
    )
    other = model.sample(
        3, "bright", background=background, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(layer.content, again.content) and torch.equal(layer.alpha, again.alpha)
    assert not torch.equal(layer.alpha, other.alpha)
    # Background-aware: another surface gives another layer for the same seed.
    darker = model.sample(3, "bright", background=background * 0.2, generator=1)
    assert not torch.equal(
        darker.content, model.sample(3, "bright", background=background, generator=1).content
    )
    # Backgrounds of another size are resized; RGB requests are converted.
    rgb = model.sample(2, None, background=torch.rand(2, 3, 40, 40), generator=0, channels=3)
    assert rgb.content.shape == (2, 3, SIZE, SIZE)


def test_needs_background_and_bad_options_are_named():
    model = tiny_model()
    assert model.needs_background
    with pytest.raises(ValueError, match="background"):
        model.sample(2, "dark", generator=0)
    background = torch.rand(2, 1, SIZE, SIZE)
    with pytest.raises(ValueError, match="control"):
        model.sample(2, "dark", background=background, control=torch.ones(5, SIZE, SIZE))
    with pytest.raises(TypeError, match="unknown options"):
        model.sample(2, "dark", background=background, colour=1)
    with pytest.raises(ValueError, match="prior_counts"):
        DefectGANConfig(defect_types=TYPES, prior_counts={"other": 1})


def test_control_maps_in_every_accepted_form_give_one_layer():
    model = tiny_model()
    background = torch.rand(2, 1, SIZE, SIZE)
    region = torch.zeros(1, 32, 32)
    region[:, 8:20, 4:28] = 1.0
    planes = torch.cat([region, torch.zeros_like(region)])  # class "dark" marked
    by_region = model.sample(2, "dark", background=background, control=region, generator=3)
    by_planes = model.sample(2, "dark", background=background, control=planes, generator=3)
    batched = model.sample(
        2, "dark", background=background, control=planes[None].expand(2, -1, -1, -1), generator=3
    )
    assert torch.allclose(by_region.alpha, by_planes.alpha)
    assert torch.allclose(by_planes.alpha, batched.alpha)
    assert torch.equal(
        control_map(torch.ones(1, 1, 2, 2), torch.tensor([1]), 2)[0, :, 0, 0],
        torch.tensor([0.0, 1.0, 0.0]),
    )


def test_works_through_inject_defects():
    model = tiny_model()
    images = torch.rand(4, 1, 48, 48) * 0.2 + 0.4
    result = inject_defects(images, ["dark"], model, seed=0, p=1.0)
    assert result.images.shape == images.shape and result.masks.shape == (4, 1, 48, 48)
    assert result.masks.dtype == torch.bool
    again = inject_defects(images, ["dark"], model, seed=0, p=1.0)
    assert torch.equal(result.images, again.images)


def map_everywhere_model() -> DefectGAN:
    """The tiny model with its map head forced high everywhere (as a padding artefact would be)."""
    model = tiny_model()
    with torch.no_grad():
        model.generator.to_map.weight.mul_(0.1)
        model.generator.to_map.bias.fill_(4.0)
    return model


def confined_and_raw(monkeypatch, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Alphas of 4 "dark" layers for ``region`` ``[1, S, S]``, sampled as shipped and with the
    confinement switched off (same seed, same noise)."""
    model = map_everywhere_model()
    background = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    confined = model.sample(4, "dark", background=background, control=region, generator=7).alpha
    with monkeypatch.context() as patch:
        patch.setattr(defectgan, "confine_to_control", lambda alpha, planes: alpha)
        raw = model.sample(4, "dark", background=background, control=region, generator=7).alpha
    assert float(raw.min()) > 0.9  # the head really does put alpha everywhere
    return confined, raw


def border_ring() -> torch.Tensor:
    ring = torch.ones(SIZE, SIZE, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    return ring


def test_sampled_alpha_is_confined_to_the_grown_control_region(monkeypatch):
    region = torch.zeros(1, SIZE, SIZE)
    region[:, 6:10, 5:11] = 1.0  # in the middle, 5 px from every border
    confined, raw = confined_and_raw(monkeypatch, region)
    inside = region[None].bool().expand_as(raw)
    assert torch.allclose(confined[inside], raw[inside], atol=1e-6)
    # Grown by a few pixels at most: nothing beyond S / 4 of the region, nothing on the border.
    reach = F.max_pool2d(region[None], 2 * (SIZE // 4) + 1, stride=1, padding=SIZE // 4)
    assert float(confined[(reach == 0).expand_as(confined)].abs().max()) < 1e-6
    assert float(confined[..., border_ring()].abs().max()) < 1e-6
    # The edge is soft: just outside the region the alpha is still there, then fades.
    assert float(confined[..., 6:10, 11].min()) > 0.0
    assert float(confined[..., 6:10, 12].max()) <= float(confined[..., 6:10, 11].min())


def test_a_control_region_touching_the_border_keeps_its_alpha_there(monkeypatch):
    region = torch.zeros(1, SIZE, SIZE)
    region[:, 0:5, 5:10] = 1.0  # an edge defect: its mask runs into the top rows
    confined, raw = confined_and_raw(monkeypatch, region)
    assert torch.allclose(confined[..., 0:5, 5:10], raw[..., 0:5, 5:10], atol=1e-6)
    assert float(confined[..., 0, 5:10].min()) > 0.9
    # The rest of the border carries nothing the region did not ask for.
    assert float(confined[..., 0, 13:].abs().max()) < 1e-6
    assert float(confined[..., 0, :2].abs().max()) < 1e-6
    assert float(confined[..., -1, :].abs().max()) < 1e-6
    assert float(confined[..., :, 0].abs().max()) < 1e-6
    assert float(confined[..., :, -1].abs().max()) < 1e-6
    # One pixel short of the border is not touching it: the grown edge stops before the border.
    region = region.roll(1, dims=1)
    confined, raw = confined_and_raw(monkeypatch, region)
    assert torch.allclose(confined[..., 1:6, 5:10], raw[..., 1:6, 5:10], atol=1e-6)
    assert float(confined[..., 0, :].abs().max()) < 1e-6


def test_region_constraint_drives_the_map_out_of_the_rest_of_an_untrained_model():
    torch.manual_seed(0)
    model = DefectGAN(tiny_config())
    with torch.no_grad():
        model.generator.to_map.bias.fill_(0.5)  # start with maps everywhere
    data = scene_set()
    control = control_map(data.alpha, data.labels, len(TYPES))
    optimizer = torch.optim.Adam(model.generator.parameters(), lr=1e-2)

    def outside() -> torch.Tensor:
        _, spatial_map = model.generator(
            data.normals[:4], control, torch.Generator().manual_seed(0)
        )
        return (spatial_map * (1 - data.alpha)).mean()

    before = float(outside().detach())
    for _ in range(15):
        loss = DefectGANTrainer.OUTSIDE * outside()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(outside().detach()) < 0.25 * before


def test_briefly_trained_model_keeps_its_alpha_inside_the_requested_region(trained):
    model, _ = trained
    rng = torch.Generator().manual_seed(5)
    # Regions of the training kind (6 px squares) at places the training set never used.
    regions = torch.zeros(8, 1, SIZE, SIZE)
    for index, (top, left) in enumerate(torch.randint(0, SIZE - 6, (8, 2), generator=rng).tolist()):
        regions[index, :, top : top + 6, left : left + 6] = 1.0
    background = 0.5 + 0.05 * torch.rand(8, 1, SIZE, SIZE, generator=rng)
    layer = model.sample(8, "dark", background=background, control=regions, generator=0)
    inside = float((layer.alpha * regions).sum() / layer.alpha.sum().clamp_min(1e-6))
    assert float(layer.alpha.sum()) > 1.0
    assert inside >= 0.9


def test_a_tiny_model_overfits_four_images(trained):
    model, record = trained
    history = record["history"]
    assert record["summary"]["iterations"] == 400

    def mean(key: str, part: slice) -> float:
        return float(np.mean([h[key] for h in history[part]]))

    assert mean("g", slice(-20, None)) < 0.5 * mean("g", slice(0, 20))
    assert mean("mask", slice(-20, None)) < 0.2 * mean("mask", slice(0, 20))
    # The samples approach the set: a "dark" defacement darkens its region, a "bright" one
    # brightens it.
    data = scene_set()
    region = data.alpha[:2]
    layer = model.sample(
        2, ["dark", "bright"], background=data.normals[:2], control=region, generator=0
    )
    defaced = data.normals[:2] * (1 - layer.alpha) + layer.content * layer.alpha
    tone = ((defaced * region).sum(dim=(1, 2, 3)) / region.sum(dim=(1, 2, 3))).tolist()
    surface = float(data.normals[:2].mean())
    assert tone[0] < surface - 0.2 and tone[1] > surface + 0.2


def test_restore_shapes_ranges_and_map(trained):
    model, _ = trained
    data = scene_set()
    restored, defect_map = model.restore(data.content)
    assert restored.shape == data.content.shape and defect_map.shape == data.alpha.shape
    for tensor in (restored, defect_map):
        assert 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
    # The repaint goes where the defects are, and takes them away.
    inside = float((defect_map * data.alpha).sum() / data.alpha.sum())
    outside = float((defect_map * (1 - data.alpha)).sum() / (1 - data.alpha).sum())
    assert inside > outside
    assert float((restored - 0.5).abs().mean()) < float((data.content - 0.5).abs().mean())
    rgb, rgb_map = model.restore(torch.rand(2, 3, 40, 30))
    assert rgb.shape == (2, 3, 40, 30) and rgb_map.shape == (2, 1, 40, 30)
    assert torch.equal(
        model.restore(data.content, generator=4)[0], model.restore(data.content, generator=4)[0]
    )
    with pytest.raises(ValueError, match="images"):
        model.restore(torch.rand(1, SIZE, SIZE))


def test_card_round_trip_is_strict_and_pickle_free(tmp_path):
    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "card")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "defectgan" and config["kwargs"]["width"] == 4
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.bin"))
    loaded = load_generator(str(folder))
    assert isinstance(loaded, DefectGAN)
    for (name, tensor), (other, value) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(tensor, value)
    background = torch.rand(2, 1, SIZE, SIZE)
    assert torch.equal(
        model.sample(2, "dark", background=background, generator=0).alpha,
        loaded.sample(2, "dark", background=background, generator=0).alpha,
    )
    weights = load_file(folder / "model.safetensors")
    weights["generator.extra"] = torch.zeros(1)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(Exception, match="generator.extra"):
        load_generator(str(folder))


def test_cli_restore_writes_images_and_maps_and_names_a_missing_input(tmp_path, capsys):
    card = tiny_model().save_pretrained(tmp_path / "card")
    source = tmp_path / "in"
    source.mkdir()
    for index in range(2):
        pixels = (np.random.default_rng(index).random((24, 20)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(source / f"tile{index}.png")
    out = tmp_path / "out"
    assert cli_main(["restore", str(source), str(out), "--card", str(card), "--no-progress"]) == 0
    for index in range(2):
        restored = np.array(Image.open(out / f"tile{index}.png"))
        defect_map = np.array(Image.open(out / f"tile{index}_map.png"))
        assert restored.shape == (24, 20) and defect_map.shape == (24, 20)
    capsys.readouterr()
    code = cli_main(["restore", str(tmp_path / "missing.png"), str(out), "--card", str(card)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "IN: no such file or folder" in err
    bank = tmp_path / "not_a_card"
    code = cli_main(["restore", str(source), str(out), "--card", str(bank)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("defectaug restore: error: --card")


def test_trainer_refuses_layer_crops_and_samples_its_grid(tmp_path):
    data = scene_set()
    plain = SceneCropSet.__mro__[1](data.content, data.alpha, data.labels, TYPES, data.native_sizes)
    with pytest.raises(ValueError, match="SceneCropSet"):
        DefectGANTrainer(plain, train_config(2))
    trainer = DefectGANTrainer(data, train_config(2))
    grid = trainer.sample_grid()
    assert grid.dtype == np.uint8 and grid.ndim == 3
