import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from defectaug.generators.dcdgan import DCDGAN
from defectaug.generators.registry import load_generator
from defectaug.training import (
    DCDGANTrainer,
    DefectCropSet,
    TrainConfig,
    crops_from_regions,
    diff_augment,
    load_defect_crops,
)
from defectaug.training.__main__ import main as train_main

TINY_ARCH = {"width": 4, "max_width": 8, "latent_dim": 4}


def tiny_crops(layer_size: int = 16) -> DefectCropSet:
    generator = torch.Generator().manual_seed(0)
    regions = []
    for index in range(12):
        h, w = (int(v) for v in torch.randint(8, 30, (2,), generator=generator))
        alpha = torch.zeros(1, h, w)
        alpha[:, 2:-2, 2:-2] = 1.0
        content = torch.rand(1, h, w, generator=generator) * (0.3 if index % 2 else 1.0)
        regions.append((content, alpha, "ab"[index % 2]))
    return crops_from_regions(regions, ["a", "b"], layer_size)


def tiny_config(**overrides) -> TrainConfig:
    values = {"iterations": 20, "batch_size": 4, "gp_every": 2, "architecture": dict(TINY_ARCH)}
    return TrainConfig(**{**values, **overrides})


def test_crops_from_regions_drops_specks_and_records_native_sizes():
    big = (torch.rand(1, 20, 10), torch.ones(1, 20, 10), "a")
    speck = (torch.rand(1, 3, 3), torch.ones(1, 3, 3), "b")
    other = (torch.rand(1, 6, 6), torch.ones(1, 6, 6), "b")
    crops = crops_from_regions([big, speck, other], ["a", "b"], 16, min_area=16)
    assert len(crops) == 2 and crops.counts() == {"a": 1, "b": 1}
    assert crops.content.shape == (2, 1, 16, 16) and crops.alpha.shape == (2, 1, 16, 16)
    assert crops.native_sizes == {"a": [24], "b": [8]}
    with pytest.raises(ValueError, match="every defect type"):
        crops_from_regions([big], ["a", "b"], 16)
    with pytest.raises(ValueError, match="not one of"):
        crops_from_regions([(*big[:2], "c")], ["a", "b"], 16)


def test_diff_augment_is_deterministic_and_keeps_masks_sharp():
    content = torch.rand(6, 1, 16, 16)
    alpha = (torch.rand(6, 1, 16, 16) > 0.5).float()
    first = diff_augment(content, alpha, torch.Generator().manual_seed(1))
    again = diff_augment(content, alpha, torch.Generator().manual_seed(1))
    other = diff_augment(content, alpha, torch.Generator().manual_seed(2))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    # Whole-pixel flips and shifts: a binary alpha stays binary (no resampling blur).
    assert set(first[1].unique().tolist()) <= {0.0, 1.0}
    content.requires_grad_(True)
    diff_augment(content, alpha, torch.Generator().manual_seed(1))[0].sum().backward()
    assert content.grad is not None and bool(content.grad.abs().sum() > 0)


def test_training_smoke_finite_losses_and_bit_exact_resume(tmp_path):
    torch.set_num_threads(1)
    crops = tiny_crops()
    config = tiny_config()
    unbroken = DCDGANTrainer(crops, config)
    summary = unbroken.fit(
        tmp_path / "unbroken", checkpoint_every=10, sample_every=10, progress=False
    )
    assert summary["iterations"] == 20
    assert all(math.isfinite(v) for entry in unbroken.history for v in entry.values())
    assert (tmp_path / "unbroken" / "samples" / "iter_000010.png").is_file()

    first_half = DCDGANTrainer(crops, dataclasses.replace(config, iterations=10))
    first_half.fit(tmp_path / "split", checkpoint_every=0, sample_every=0, progress=False)
    resumed = DCDGANTrainer(crops, config)
    resumed.resume(tmp_path / "split")
    assert resumed.iteration == 10
    resumed.fit(tmp_path / "split", checkpoint_every=0, sample_every=0, progress=False)
    for name, module in unbroken.modules().items():
        other = resumed.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, other[key]), f"{name}.{key} differs after resume"
    assert unbroken.history == resumed.history

    exported = unbroken.export_generator()
    assert isinstance(exported, DCDGAN)
    assert exported.config.native_sizes == crops.native_sizes
    layer = exported.sample(4, "b", generator=0)
    assert bool(torch.isfinite(layer.content).all()) and layer.names == ["b"] * 4


def test_resume_refuses_a_missing_or_foreign_checkpoint(tmp_path):
    trainer = DCDGANTrainer(tiny_crops(), tiny_config())
    with pytest.raises(FileNotFoundError, match="resume"):
        trainer.resume(tmp_path)
    state = trainer.state_dict()
    state["architecture"] = "other"
    with pytest.raises(ValueError, match="architecture"):
        trainer.load_state_dict(state)


def test_time_budget_stops_early_and_still_exports(tmp_path):
    trainer = DCDGANTrainer(tiny_crops(), tiny_config(iterations=1000))
    summary = trainer.fit(
        tmp_path, sample_every=0, checkpoint_every=0, time_budget_s=0.0, progress=False
    )
    assert summary["iterations"] == 1 and summary["stopped_by_time_budget"]
    assert (tmp_path / "checkpoint.json").is_file()
    assert (tmp_path / "checkpoint.safetensors").is_file()


def write_fixture_dataset(root):
    """A tiny manifest-layout dataset: dark blobs ('pit') and dark lines ('line') on grey."""
    rng = np.random.default_rng(0)
    rows = []
    (root / "train" / "pit").mkdir(parents=True)
    (root / "train" / "line").mkdir(parents=True)
    (root / "ground_truth").mkdir()
    for index in range(6):
        label = "pit" if index % 2 == 0 else "line"
        image = np.full((48, 56), 150, np.uint8) + rng.integers(0, 20, (48, 56), dtype=np.uint8)
        mask = np.zeros((48, 56), np.uint8)
        if label == "pit":
            mask[18:28, 20 + index : 30 + index] = 255
        else:
            mask[8:40, 25 + index : 28 + index] = 255
        image[mask > 0] = 40
        name = f"train/{label}/{index}.png"
        mask_name = f"ground_truth/{index}_mask.png"
        Image.fromarray(image).save(root / name)
        Image.fromarray(mask).save(root / mask_name)
        rows.append({"image": name, "label": label, "split": "train", "mask": mask_name})
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "mask"])
        writer.writeheader()
        writer.writerows(rows)


def test_train_command_writes_a_loadable_generator_with_a_card(tmp_path):
    write_fixture_dataset(tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        "--arch", "dcdgan", "--data", str(tmp_path / "data"), "--split", "train",
        "--types", "pit,line", "--layer-size", "16", "--out", str(out), "--iters", "4",
        "--batch-size", "4", "--width", "4", "--max-width", "8", "--latent-dim", "4",
        "--checkpoint-every", "2", "--sample-every", "2", "--no-progress",
    ]  # fmt: skip
    assert train_main(argv) == 0
    generator = load_generator(out)
    assert isinstance(generator, DCDGAN) and generator.defect_types == ("pit", "line")
    assert generator.sample(2, "line", generator=0).content.shape == (2, 1, 16, 16)
    card = (out / "README.md").read_text()
    assert card.startswith("---") and "library_name: defectaug" in card
    assert "defectaug train --arch dcdgan" in card and "4 iterations" in card
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["crop_counts"] == {"pit": 3, "line": 3}
    assert (out / "samples" / "iter_000004.png").is_file()
    # Resuming a finished run with a higher --iters continues from the checkpoint.
    argv[argv.index("--iters") + 1] = "6"
    assert train_main([*argv, "--resume"]) == 0
    assert json.loads((out / "training_summary.json").read_text())["iterations"] == 6


def test_magnetic_tile_train_crops(shared_data):
    types = ["crack", "fray"]
    crops = load_defect_crops(
        shared_data / "magnetic_tile", split="train", types=types, layer_size=64
    )
    counts = crops.counts()
    assert set(counts) == set(types) and all(count >= 10 for count in counts.values())
    assert crops.content.shape[1] == 1  # grayscale data gives grayscale layers
    # Every crop carries a defect (thin cracks shrunk to 64 px keep a softer alpha) that stays
    # off the layer border.
    assert bool((crops.alpha.flatten(1).amax(dim=1) > 0.4).all())
    assert float(crops.alpha[..., 0, :].max()) < 0.5 and float(crops.alpha[..., :, -1].max()) < 0.5


def test_adversarial_weight_ramps_up_over_the_warmup():
    trainer = DCDGANTrainer(
        tiny_crops(), tiny_config(adversarial_weight=0.4, adversarial_warmup=10)
    )
    scales = []
    for iteration in (0, 5, 10, 50):
        trainer.iteration = iteration
        scales.append(trainer.adversarial_scale())
    assert scales == pytest.approx([0.0, 0.2, 0.4, 0.4])
    assert (
        DCDGANTrainer(tiny_crops(), tiny_config(adversarial_weight=0.4)).adversarial_scale() == 0.4
    )


def write_fixture_dataset_with_normals(root):
    """``write_fixture_dataset`` plus four defect-free ('good') train images."""
    write_fixture_dataset(root)
    rng = np.random.default_rng(1)
    (root / "train" / "good").mkdir(parents=True)
    with (root / "manifest.csv").open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "mask"])
        for index in range(4):
            image = np.full((48, 56), 150, np.uint8) + rng.integers(0, 20, (48, 56), dtype=np.uint8)
            name = f"train/good/{index}.png"
            Image.fromarray(image).save(root / name)
            writer.writerow({"image": name, "label": "good", "split": "train", "mask": ""})


def test_defectgan_train_command_resumes_bit_exactly_and_exports_a_card(tmp_path):
    from defectaug.generators.defectgan import DefectGAN
    from defectaug.training.data import load_scene_crops
    from defectaug.training.trainer import DefectGANTrainer

    torch.set_num_threads(1)
    write_fixture_dataset_with_normals(tmp_path / "data")
    scenes = load_scene_crops(
        tmp_path / "data", split="train", types=["pit", "line"], layer_size=16
    )
    assert scenes.counts() == {"pit": 3, "line": 3} and scenes.normals.shape == (16, 1, 16, 16)
    assert bool((scenes.alpha.flatten(1).amax(dim=1) > 0.5).all())
    out = tmp_path / "run"
    argv = [
        "--arch", "defectgan", "--data", str(tmp_path / "data"), "--types", "pit,line",
        "--layer-size", "16", "--out", str(out), "--iters", "3", "--batch-size", "4",
        "--width", "4", "--checkpoint-every", "2", "--sample-every", "2", "--no-progress",
    ]  # fmt: skip
    assert train_main(argv) == 0
    argv[argv.index("--iters") + 1] = "6"
    assert train_main([*argv, "--resume"]) == 0
    resumed = load_generator(out)
    assert isinstance(resumed, DefectGAN) and resumed.config.prior_counts == {"pit": 3, "line": 3}
    assert (out / "samples" / "iter_000006.png").is_file()
    unbroken = tmp_path / "unbroken"
    assert (
        train_main(
            [*argv[: argv.index("--out") + 1], str(unbroken), *argv[argv.index("--out") + 2 :]]
        )
        == 0
    )
    for key, value in load_generator(unbroken).state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), f"{key} differs after resume"
    layer = resumed.sample(2, "line", background=torch.rand(2, 1, 30, 30), generator=0)
    assert layer.content.shape == (2, 1, 16, 16) and layer.names == ["line"] * 2
    with pytest.raises(ValueError, match="SceneCropSet"):
        DefectGANTrainer(tiny_crops(), tiny_config())
