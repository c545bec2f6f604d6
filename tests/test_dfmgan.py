import json

import numpy as np
import pytest
import torch
from _generators import scene_set
from safetensors.torch import load_file, save_file
from test_training import write_fixture_dataset_with_normals

from defectaug import SyntheticDefectDataset, inject_defects
from defectaug._seeding import child_seed, mix_seed
from defectaug.generators.dfmgan import DFMGAN, DFMGANConfig, make_noise, normalize_code
from defectaug.generators.registry import load_generator
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY, DefectLayer
from defectaug.training import TRAINERS
from defectaug.training.__main__ import main as train_main
from defectaug.training.checkpoint import load_checkpoint
from defectaug.training.data import SceneCropSet
from defectaug.training.dfmgan import DFMGANTrainer
from defectaug.training.trainer import TrainConfig

TYPES = ("dark", "bright")
SIZE = 16
ARCH = {"width": 4, "max_width": 8, "latent_dim": 8, "mapping_layers": 1, "defect_from": 8}


def tiny_model() -> DFMGAN:
    torch.manual_seed(0)
    model = DFMGAN(DFMGANConfig(defect_types=TYPES, layer_size=SIZE, **ARCH))
    with torch.no_grad():
        for layer in model.generator.modules():
            if hasattr(layer, "noise_strength"):
                layer.noise_strength.fill_(0.3)
        # Masks over a part of the image, so both sides of the gate show in the tests.
        model.generator.defect_blocks[0].to_out.bias.fill_(0.0)
    return model.eval()


def train_config(iterations: int, **overrides) -> TrainConfig:
    values = {
        "iterations": iterations,
        "batch_size": 4,
        "lr": 2e-3,
        "gp_weight": 1.0,
        "gp_every": 4,
        "architecture": dict(ARCH),
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A stage-1 run of 100 steps on the ramps: its folder and the trainer."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("stage1")
    trainer = DFMGANTrainer(scene_set(ramp=True), train_config(100))
    trainer.fit(folder, checkpoint_every=0, sample_every=0, progress=False)
    return folder, trainer


def test_sample_contract_shapes_ranges_dtype_and_determinism():
    model = tiny_model()
    layer = model.sample(6, "dark", generator=0)
    assert isinstance(layer, DefectLayer)
    assert layer.content.shape == (6, 1, SIZE, SIZE) and layer.alpha.shape == (6, 1, SIZE, SIZE)
    assert layer.names == ["dark"] * 6
    for tensor in (layer.content, layer.alpha):
        assert tensor.dtype == torch.float32
        assert 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
    assert float(layer.alpha.amax(dim=(1, 2, 3)).min()) > 0.0  # every layer carries a defect
    again = model.sample(6, "dark", generator=0)
    assert torch.equal(layer.content, again.content) and torch.equal(layer.alpha, again.alpha)
    other = model.sample(6, "dark", generator=1)
    assert not torch.equal(layer.alpha, other.alpha)
    mixed = model.sample(3, ["dark", "bright", "dark"], generator=0, dtype=torch.float64)
    assert mixed.content.dtype == torch.float64 and mixed.names == ["dark", "bright", "dark"]
    rgb = model.sample(2, "bright", generator=0, channels=3)
    assert rgb.content.shape == (2, 3, SIZE, SIZE)
    whole = model.sample(2, "dark", generator=0, crop=False)
    # Uncropped, the layer is the whole defective image; its alpha is the gate's support.
    _, defective, mask = model.generate_images(2, "dark", generator=0)
    assert torch.allclose(whole.content, defective)
    for tensor in (whole.content, whole.alpha, defective):
        assert 0.0 <= float(tensor.min()) <= float(tensor.max()) <= 1.0
    assert torch.equal(whole.alpha > 0, mask)


def test_bad_inputs_name_the_argument():
    model = tiny_model()
    with pytest.raises(ValueError, match="n"):
        model.sample(0, "dark")
    with pytest.raises(KeyError, match="defect_type"):
        model.sample(2, "scratch")
    with pytest.raises(TypeError, match="unknown options"):
        model.sample(2, "dark", colour=1)
    with pytest.raises(ValueError, match="object_latent"):
        model.sample(2, "dark", object_latent=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="defect_latent"):
        model.sample(2, "dark", defect_latent=torch.full((2, 8), float("nan")))
    with pytest.raises(ValueError, match="reference"):
        model.sample(2, "dark", reference=torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="crop"):
        model.sample(2, "dark", crop="yes")
    with pytest.raises(ValueError, match="alpha_floor"):
        model.sample(2, "dark", alpha_floor=1.5)
    with pytest.raises(ValueError, match="n"):
        model.generate_images(0)
    with pytest.raises(ValueError, match="defect_from"):
        DFMGANConfig(defect_types=TYPES, layer_size=16, defect_from=32)
    with pytest.raises(ValueError, match="layer_size"):
        DFMGANConfig(defect_types=TYPES, layer_size=24)
    with pytest.raises(ValueError, match="defect_types"):
        DFMGANConfig(defect_types=("a", "a"))


def test_works_through_inject_defects():
    model = tiny_model()
    images = torch.rand(4, 1, 48, 48) * 0.2 + 0.4
    result = inject_defects(images, ["dark"], model, seed=0, p=1.0)
    assert result.images.shape == images.shape and result.masks.shape == (4, 1, 48, 48)
    assert result.masks.dtype == torch.bool and bool(result.masks.any())
    change = (result.images - images).abs()
    assert float(change[result.masks].mean()) > float(change[~result.masks].mean())
    again = inject_defects(images, ["dark"], model, seed=0, p=1.0)
    assert torch.equal(result.images, again.images)


def test_dataset_without_backgrounds_yields_generated_images_masked_by_their_visible_change():
    model = tiny_model()
    dataset = SyntheticDefectDataset(None, None, model, length=6, seed=4, target="dict")
    assert dataset.channels == 1 and "backgrounds=None" in repr(dataset)
    dataset.check()  # nothing to read
    checked = 0
    for index in range(len(dataset)):
        item = dataset[index]
        image, mask = item["image"], item["mask"]
        assert image.shape == (1, SIZE, SIZE) and mask.shape == (1, SIZE, SIZE)
        assert mask.dtype == torch.bool and int(mask.sum()) >= MIN_VISIBLE_PIXELS
        # The mask is exactly where the generated pair differs visibly, its box that mask's.
        rng = torch.Generator().manual_seed(mix_seed(4, index))
        type_index = int(torch.randint(len(TYPES), (1,), generator=rng))
        assert item["label"] == type_index and item["defect_types"] == [TYPES[type_index]]
        clean, defective, _ = model.generate_images(1, TYPES[type_index], generator=child_seed(rng))
        if not torch.equal(defective[0], image.as_subclass(torch.Tensor)):
            continue  # that draw was invisible and redrawn; the next sub-seed made the item
        assert torch.equal(mask, (defective - clean).abs()[0] > VISIBILITY)
        rows, cols = torch.nonzero(mask[0], as_tuple=True)
        box = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
        assert item["boxes"].tolist() == [box]
        checked += 1
    assert checked >= 4
    assert torch.equal(dataset[2]["image"], dataset[2]["image"])
    rgb = SyntheticDefectDataset(None, ["bright"], model, length=2, to_rgb=True)
    assert rgb[0][0].shape == (3, SIZE, SIZE) and rgb[1][1] == 0


def test_dataset_without_backgrounds_refuses_layer_generators_and_compositing_options():
    with pytest.raises(ValueError, match="backgrounds: None needs a generator that makes whole"):
        SyntheticDefectDataset(None, ["scratch"], "procedural")
    model = tiny_model()
    with pytest.raises(ValueError, match="^blend, blend_options: with backgrounds=None"):
        SyntheticDefectDataset(None, None, model, blend="poisson", blend_options={"band": 3})
    with pytest.raises(ValueError, match="^scale, roi: with backgrounds=None"):
        SyntheticDefectDataset(None, None, model, scale=(0.2, 0.4), roi="auto")


def test_paired_images_differ_only_inside_the_mask():
    """By construction (the image-level gate), on an untrained model: the pair of one object code
    is equal outside the mask and differs inside it."""
    model = tiny_model()
    clean, defective, mask = model.generate_images(8, generator=3)
    assert clean.shape == defective.shape == (8, 1, SIZE, SIZE)
    assert mask.shape == (8, 1, SIZE, SIZE) and mask.dtype == torch.bool
    assert 0.02 < float(mask.float().mean()) < 0.98
    change = (defective - clean).abs()
    assert float(change[~mask].max()) == 0.0
    assert float(change[mask].mean()) > 0.01
    # The defect-free image is the backbone's alone: the defect code does not reach it.
    other_defect = model.sample(
        8, generator=0, crop=False, object_latent=torch.zeros(8, 8), defect_latent=torch.ones(8, 8)
    )
    same_object = model.sample(
        8, generator=0, crop=False, object_latent=torch.zeros(8, 8), defect_latent=-torch.ones(8, 8)
    )
    outside = (other_defect.alpha == 0) & (same_object.alpha == 0)
    assert torch.equal(other_defect.content[outside], same_object.content[outside])


def test_a_tiny_backbone_overfits_a_few_images(stage1):
    """Stage 1 on eight ramps: the EMA generator's samples come close to the training set."""
    _, trainer = stage1
    data = scene_set(ramp=True)
    rng = torch.Generator().manual_seed(9)
    z = torch.randn(16, 8, generator=rng)
    noise = make_noise(trainer.ema_generator.noise_sides(), 16, rng, torch.device("cpu"))

    def distance(generator) -> float:
        with torch.no_grad():
            images = generator(generator.mapping(normalize_code(z)), noise) * 0.5 + 0.5
        images = images.clamp(0.0, 1.0)
        gaps = (images[:, None] - data.normals[None]).abs().mean(dim=(2, 3, 4))
        return float(gaps.amin(dim=1).mean())

    torch.manual_seed(0)
    untrained = DFMGANTrainer(data, train_config(1)).ema_generator
    before, after = distance(untrained), distance(trainer.ema_generator)
    assert after < 0.5 * before, (before, after)
    assert len(trainer.history) == 100
    assert all(np.isfinite(list(h.values())).all() for h in trainer.history)


def test_stage2_freezes_the_backbone_and_trains_the_defect_blocks(stage1):
    folder, stage1_trainer = stage1
    trainer = DFMGANTrainer(scene_set(ramp=True), train_config(3), stage=2, backbone=folder)
    backbone = {k: v.clone() for k, v in trainer.generator.backbone.state_dict().items()}
    # Stage 2 starts from the stage-1 EMA backbone.
    for key, value in stage1_trainer.ema_generator.state_dict().items():
        assert torch.equal(backbone[key], value), key
    defect = {k: v.clone() for k, v in trainer.generator.defect_blocks.state_dict().items()}
    for _ in range(2):
        losses = trainer.training_step()
        trainer.iteration += 1
    assert {"d", "d_match", "adv", "adv_match", "mode_seeking"} <= set(losses)
    for key, value in trainer.generator.backbone.state_dict().items():
        assert torch.equal(value, backbone[key]), f"backbone {key} changed in stage 2"
    changed = [
        key
        for key, value in trainer.generator.defect_blocks.state_dict().items()
        if not torch.equal(value, defect[key])
    ]
    assert changed, "the defect-aware blocks did not train"
    grid = trainer.sample_grid()
    assert grid.dtype == np.uint8 and grid.ndim == 3
    exported = trainer.export_generator()
    assert isinstance(exported, DFMGAN) and exported.defect_types == TYPES
    assert stage1_trainer.export_generator() is None


def test_stage2_refuses_a_missing_or_foreign_backbone(tmp_path, stage1):
    folder, _ = stage1
    with pytest.raises(ValueError, match="backbone"):
        DFMGANTrainer(scene_set(ramp=True), train_config(2), stage=2)
    with pytest.raises(ValueError, match="stage"):
        DFMGANTrainer(scene_set(ramp=True), train_config(2), stage=3)
    with pytest.raises(ValueError, match="SceneCropSet"):
        plain = SceneCropSet.__mro__[1]
        data = scene_set(ramp=True)
        DFMGANTrainer(plain(data.content, data.alpha, data.labels, TYPES, {}), train_config(2))
    wider = train_config(2, architecture={**ARCH, "width": 8})
    with pytest.raises(Exception, match="width 4 -> 8"):
        DFMGANTrainer(scene_set(ramp=True), wider, stage=2, backbone=folder)
    stage2 = DFMGANTrainer(scene_set(ramp=True), train_config(1), stage=2, backbone=folder)
    stage2.save_checkpoint(tmp_path / "s2")
    with pytest.raises(Exception, match="not a stage-1 dfmgan checkpoint"):
        DFMGANTrainer(scene_set(ramp=True), train_config(1), stage=2, backbone=tmp_path / "s2")


def test_card_round_trip_is_strict_and_pickle_free(tmp_path):
    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "card")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "dfmgan" and config["kwargs"]["width"] == 4
    assert sorted(path.name for path in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = load_generator(str(folder))
    assert isinstance(loaded, DFMGAN) and loaded.defect_types == TYPES
    for (name, tensor), (other, value) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(tensor, value)
    assert torch.equal(
        model.sample(2, "dark", generator=0).content, loaded.sample(2, "dark", generator=0).content
    )
    weights = load_file(folder / "model.safetensors")
    weights["generator.extra"] = torch.zeros(1)
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(Exception, match="generator.extra"):
        load_generator(str(folder))


def test_train_command_runs_both_stages_and_resumes_exactly(tmp_path):
    torch.set_num_threads(1)
    assert "dfmgan" in TRAINERS
    write_fixture_dataset_with_normals(tmp_path / "data")
    common = [
        "--arch", "dfmgan", "--data", str(tmp_path / "data"), "--types", "pit,line",
        "--layer-size", "16", "--batch-size", "4", "--width", "4", "--max-width", "8",
        "--latent-dim", "8", "--checkpoint-every", "2", "--sample-every", "2", "--no-progress",
    ]  # fmt: skip

    def run(out, iters, *extra):
        return train_main([*common, "--out", str(tmp_path / out), "--iters", str(iters), *extra])

    # Stage 1: 3 steps, resumed to 5; an unbroken run of 5 ends in the same state.
    assert run("s1", 3, "--stage", "1") == 0
    assert not (tmp_path / "s1" / "model.safetensors").exists()  # stage 1 ships no card
    assert run("s1", 5, "--stage", "1", "--resume") == 0
    assert run("s1_unbroken", 5, "--stage", "1") == 0
    assert (tmp_path / "s1" / "samples" / "iter_000005.png").is_file()
    resumed, unbroken = load_checkpoint(tmp_path / "s1"), load_checkpoint(tmp_path / "s1_unbroken")
    assert resumed["iteration"] == 5
    # R1's weight by StyleGAN2-ADA's heuristic, not WGAN-GP's 10.
    assert resumed["train_config"]["gp_weight"] == pytest.approx(0.0002 * 16**2 / 4)
    for name, state in unbroken["modules"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed["modules"][name][key]), f"{name}.{key}"
    # Stage 2 from the stage-1 folder, resumed the same way; the export is a loadable card.
    backbone = ["--stage", "2", "--backbone", str(tmp_path / "s1")]
    assert run("s2", 3, *backbone) == 0
    assert run("s2", 5, *backbone, "--resume") == 0
    assert run("s2_unbroken", 5, *backbone) == 0
    resumed_model, unbroken_model = (
        load_generator(tmp_path / "s2"),
        load_generator(tmp_path / "s2_unbroken"),
    )
    assert isinstance(resumed_model, DFMGAN) and resumed_model.defect_types == ("pit", "line")
    for key, value in unbroken_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), f"{key} differs after resume"
    summary = json.loads((tmp_path / "s2" / "training_summary.json").read_text())
    assert summary["stage"] == 2 and summary["iterations"] == 5
    assert "defectaug train --arch dfmgan" in (tmp_path / "s2" / "README.md").read_text()
    layer = resumed_model.sample(2, "line", generator=0)
    assert layer.content.shape == (2, 1, 16, 16)
    # A stage-2 checkpoint does not resume as stage 1, nor stage 1 without a backbone flag.
    assert run("s2", 6, "--stage", "1", "--resume") != 0
    assert run("s3", 2, "--stage", "2") != 0
    dcdgan = ["--arch", "dcdgan", *common[2:], "--out", str(tmp_path / "d"), "--stage", "2"]
    assert train_main(dcdgan) != 0
    assert run("s1_gp", 1, "--stage", "1", "--gp-weight", "2.5") == 0
    assert load_checkpoint(tmp_path / "s1_gp")["train_config"]["gp_weight"] == 2.5
    assert (
        TRAINERS["dcdgan"].default_gp_weight(16, 4)
        == TRAINERS["defectgan"].default_gp_weight(16, 4)
        == 10.0
    )
