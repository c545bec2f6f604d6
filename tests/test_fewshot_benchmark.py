"""Few-shot track: end to end on a tiny generated dataset, the shot subsets, the shared views and
that the validation split holds neither a shot nor a test image."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import fewshot
from defectaug.generators.dfmgan import DFMGAN, DFMGANConfig
from defectaug.layer import VISIBILITY
from tests.test_downstream import _write_fixture

TINY = ["--image-size", "32", "--crop", "16", "--batch-size", "4", "--real-per-batch", "2"]


def _args(data, *extra):
    return fewshot.parse_args(["--train-data", str(data), *TINY, *extra])


def test_few_shot_track_end_to_end_on_a_tiny_fixture(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    out = tmp_path / "out"
    arms = ["real", "real+bank", "real+fitted", "real+cutpaste:alpha"]
    result = fewshot.main(
        ["--train-data", str(data), "--out", str(out), *TINY, "--shots", "1", "--seeds", "2",
         "--steps", "3", "--eval-every", "2", "--arms", *arms]
    )  # fmt: skip
    assert len(result["runs"]) == 8
    for run in result["runs"]:
        assert run["shot_counts"] == {"good": 0, "blowhole": 1, "crack": 1}
        assert [point["step"] for point in run["curve"]] == [2, 3]
        for metrics in run["test"].values():
            assert all(0.0 <= metrics[name] <= 1.0 for name in fewshot.METRICS)
    effects = result["effects"]
    assert "diff" not in effects["real"]["all/pixel_ap"]
    for arm in arms[1:]:
        # Two paired seeds: a difference to the real-only arm with a CI.
        assert effects[arm]["all/pixel_f1"]["n"] == 2
        assert len(effects[arm]["all/pixel_ap"]["ci"]) == 2
    report = (out / "data_k1.md").read_text()
    assert "pixel AP vs `real`" in report and "| real+fitted |" in report
    assert json.loads((out / "data_k1.json").read_text())["shots"] == 1
    # Merging keeps the arms given, in the order given.
    kept = ["real", "real+cutpaste:alpha", "real+bank"]
    merged = fewshot.main(
        ["--merge", str(out / "data_k1.json"), "--arms", *kept, "--out", str(out), "--stem", "m"]
    )
    assert merged["arms"] == kept and len(merged["runs"]) == 6


def test_shots_are_stratified_nested_and_shared_by_every_arm(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    splits = fewshot.load_splits(_args(data))
    one, two = (fewshot.shot_index(splits.pool, k, seed=3) for k in (1, 2))
    assert torch.equal(one, fewshot.shot_index(splits.pool, 1, seed=3))
    assert set(one.tolist()) <= set(two.tolist())
    assert torch.bincount(splits.pool.labels[one]).tolist() == [0, 1, 1]
    assert len(fewshot.shot_index(splits.pool, None, seed=3)) == len(splits.pool)


def test_validation_comes_from_training_and_holds_no_shot(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    splits = fewshot.load_splits(_args(data))
    assert all("/train/" in path for path in splits.validation.paths)
    assert all("/test/" in path for path in splits.test.paths)
    assert not set(splits.validation.paths) & set(splits.pool.paths)
    # One of each class held out (6 good, 3 + 3 defects in the fixture's training split).
    assert splits.validation.class_counts() == {"good": 1, "blowhole": 1, "crack": 1}
    assert len(splits.normals) == 5 and len(splits.pool) == 4
    assert [record.label for record in splits.pool_records] == ["blowhole"] * 2 + ["crack"] * 2


def test_step_views_depend_on_seed_and_step_only(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    args = _args(data, "--shots", "all")
    splits = fewshot.load_splits(args)
    first = fewshot.step_views(splits, splits.pool, 5, 0, args.budget)
    again = fewshot.step_views(splits, splits.pool, 5, 0, args.budget)
    other = fewshot.step_views(splits, splits.pool, 6, 0, args.budget)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[2], other[2]) or not torch.equal(first[0], other[0])
    images, masks, corners, coins = first
    # Real defects lead the batch, normals (blank masks) follow; one coin per normal.
    assert masks[: args.budget.real_per_batch].flatten(1).any(dim=1).all()
    assert not masks[args.budget.real_per_batch :].any()
    assert coins.shape == (args.budget.batch_size - args.budget.real_per_batch,)
    assert int(corners.max()) <= 32 - 16


def test_a_card_arm_places_the_cards_layers_where_the_bank_of_the_shots_would(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    torch.manual_seed(0)
    card = DFMGAN(
        DFMGANConfig(
            defect_types=("blowhole", "crack"), layer_size=16, width=4, max_width=8,
            latent_dim=8, mapping_layers=1, defect_from=8,
        )
    )  # fmt: skip
    with torch.no_grad():
        card.generator.defect_blocks[0].to_out.bias.fill_(0.0)  # masks over part of the layer
    card.save_pretrained(tmp_path / "card")
    splits = fewshot.load_splits(_args(data))
    arm = f"real+card:{tmp_path / 'card'}"
    fewshot.check_arm(arm)
    source = fewshot.make_source(arm, splits.pool_records)
    images = splits.normals[:4]
    out, masks = source(images, 1)
    again, _ = source(images, 1)
    assert torch.equal(out, again) and out.shape == images.shape
    assert bool(masks.any())
    changed = (out - images).abs() > VISIBILITY
    assert not bool((changed & ~masks).any())  # every visible change is labelled
    with pytest.raises(ValueError, match="card could not be loaded"):
        fewshot.check_arm(f"real+card:{tmp_path / 'missing'}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shots", "0"], "--shots"),
        (["--shots", "few"], "--shots"),
        (["--real-per-batch", "4"], "--real-per-batch"),
        (["--synthetic-p", "1.5"], "--synthetic-p"),
        (["--arms", "bank"], "unknown arm"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        _args(tmp_path, *extra)
    assert message in capsys.readouterr().err


def test_a_dataset_without_test_split_is_split_by_path_hash(tmp_path):
    import csv

    import numpy as np
    from PIL import Image

    from benchmarks import downstream_data

    rows = []
    for label, count in (("pitting", 30), ("unannotated", 60)):
        (tmp_path / label).mkdir()
        for k in range(count):
            name = f"{label}/{k}.png"
            Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / name)
            rows.append({"image": name, "label": label, "paper_split": "train"})
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "paper_split"])
        writer.writeheader()
        writer.writerows(rows)
    train = downstream_data.read_split(tmp_path, "train")
    test = downstream_data.read_split(tmp_path, "test")
    assert not {r.image for r in train} & {r.image for r in test}
    assert len(train) + len(test) == 90
    # Unannotated images are the normals; about HASH_TEST_FRACTION of each label is test.
    assert {r.label for r in test} == {"good", "pitting"}
    assert 0.1 < len(test) / 90 < 0.5
    again = downstream_data.read_split(tmp_path, "test")
    assert [r.image for r in test] == [r.image for r in again]
    with pytest.raises(ValueError, match="split"):
        downstream_data.read_split(tmp_path, "val")
