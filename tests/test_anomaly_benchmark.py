"""Anomaly-track benchmark: its protocol end to end on a tiny generated dataset, the paired effect
statistics, and that the test split never decides the checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from benchmarks import anomaly
from tests.test_downstream import _write_fixture


def test_anomaly_track_end_to_end_on_a_tiny_fixture(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_fixture(data)
    out = tmp_path / "out"
    result = anomaly.main(
        ["--train-data", str(data), "--out", str(out), "--image-size", "32", "--crop", "16",
         "--seeds", "2", "--first-seed", "3", "--steps", "3", "--eval-every", "2",
         "--batch-size", "4", "--threads", "1", "--arms", "procedural:alpha",
         "nsa:poisson:scale=0.3-0.8"]
    )  # fmt: skip
    assert sorted((run["seed"], run["arm"]) for run in result["runs"]) == [
        (seed, arm) for seed in (3, 4) for arm in ("nsa:poisson:scale=0.3-0.8", "procedural:alpha")
    ]
    for run in result["runs"]:
        # Evaluated at steps 2 and 3; the kept checkpoint is one of those.
        assert [point["step"] for point in run["curve"]] == [2, 3]
        assert run["best_step"] in (2, 3)
        for group, metrics in run["test"].items():
            assert group in ("all", "blowhole", "crack")
            assert all(0.0 <= metrics[name] <= 1.0 for name in anomaly.METRICS)
    # No peer in this run: the defectaug arms carry means but no paired difference.
    assert "diff" not in result["effects"]["procedural:alpha"]["all/pixel_ap"]
    assert result["effects"]["procedural:alpha"]["all/pixel_ap"]["n"] == 2
    written = json.loads((out / "anomaly.json").read_text())
    assert written["effects"] == json.loads(json.dumps(result["effects"]))
    assert "| nsa:poisson:scale=0.3-0.8 |" in (out / "anomaly.md").read_text()
    with Image.open(out / "anomaly_samples.png") as grid:
        assert grid.height == 3 * 2 * 32  # real defects + one row per arm, image over outline
    # Drawing samples never decodes the test split.
    decoded = []
    load_image_set = anomaly.data_lib.load_image_set

    def recording_load(records, *rest):
        decoded.extend(str(record.image) for record in records)
        return load_image_set(records, *rest)

    monkeypatch.setattr(anomaly.data_lib, "load_image_set", recording_load)
    drawn = anomaly.main(
        ["--train-data", str(data), "--out", str(tmp_path / "look"), "--image-size", "32",
         "--crop", "16", "--samples-only",
         "--arms", "procedural:alpha", anomaly.PEER_ARM, "cutpaste:alpha"]
    )  # fmt: skip
    assert decoded and not any("/test/" in path for path in decoded)
    assert drawn == {"samples": ["anomaly_samples.png"]}
    assert sorted(path.name for path in (tmp_path / "look").iterdir()) == ["anomaly_samples.png"]
    with Image.open(tmp_path / "look" / "anomaly_samples.png") as grid:
        assert grid.height == 4 * 2 * 32


def test_validation_holds_out_normals_and_uses_training_defects_only(tmp_path):
    data = tmp_path / "data"
    _write_fixture(data)
    args = anomaly.parse_args(["--train-data", str(data), "--image-size", "32", "--crop", "16"])
    splits = anomaly.load_splits(args)
    assert all("/train/" in path for path in splits.validation.paths)
    assert all("/test/" in path for path in splits.test.paths)
    # 6 training normals: one held out for validation, five to train on.
    assert len(splits.train_normals) == 5
    assert int((splits.validation.labels == 0).sum()) == 1
    assert int((splits.validation.labels != 0).sum()) == 6


def test_paired_effects_against_the_peer():
    def run(arm, seed, ap):
        return {
            "arm": arm,
            "seed": seed,
            "test": {"all": dict(pixel_ap=ap, pixel_auroc=0.5, image_auroc=0.5)},
        }

    runs = [run("perlin-anomalib", s, 0.10) for s in range(3)]
    runs += [run("procedural:alpha", s, 0.20 + 0.01 * s) for s in range(3)]
    runs += [run("procedural:poisson", s, 0.05) for s in range(3)]
    effects = anomaly.paired_effects(
        runs, ["procedural:alpha", "procedural:poisson", anomaly.PEER_ARM]
    )
    better = effects["procedural:alpha"]["all/pixel_ap"]
    assert better["diff"] == pytest.approx(0.11)
    assert better["ci"][0] > 0 and better["verdict"] == "helps"
    assert effects["procedural:poisson"]["all/pixel_ap"]["verdict"] == "hurts"
    assert "diff" not in effects[anomaly.PEER_ARM]["all/pixel_ap"]
    two_seeds = anomaly.paired_effects(
        [run for run in runs if run["seed"] < 2], ["procedural:alpha", anomaly.PEER_ARM]
    )
    assert two_seeds["procedural:alpha"]["all/pixel_ap"]["verdict"] == "2 seeds: no verdict"


def test_training_views_are_shared_by_every_arm_of_a_seed():
    normals = torch.rand(10, 1, 32, 32)
    budget = anomaly.Budget(seeds=1, steps=1, batch_size=4, crop=16, eval_every=1)
    first = anomaly.training_views(normals, 5, 0, budget)
    again = anomaly.training_views(normals, 5, 0, budget)
    other = anomaly.training_views(normals, 5, 1, budget)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize(
    "arm",
    [
        "procedural:sparkle",
        "sparkle:alpha",
        "bank:alpha",
        "nsa:poisson:scale=0.5",
        "nsa:alpha:scale=0-1",
        "cutpaste:alpha+sparkle:alpha",
    ],
)
def test_unknown_arm_is_refused(arm):
    with pytest.raises(SystemExit):
        anomaly.parse_args(["--arms", arm])


def test_a_mixture_gives_each_image_the_anomaly_of_one_source_drawn_from_the_seed():
    def constant(value, marked):
        def synthesize(images, seed):
            return torch.full_like(images, value), torch.full(
                (images.shape[0], 1, *images.shape[-2:]), marked
            )

        return synthesize

    mixture = anomaly.mixed_source([constant(0.25, True), constant(0.75, False)])
    images = torch.rand(64, 1, 8, 8)
    augmented, masks = mixture(images, 3)
    first = augmented[:, 0, 0, 0] == 0.25
    assert 10 < int(first.sum()) < 54  # both sources drawn, about half each
    assert torch.equal(
        augmented, torch.where(first[:, None, None, None], 0.25, 0.75).expand_as(images)
    )
    assert torch.equal(masks, first[:, None, None, None].expand(-1, 1, 8, 8))
    assert torch.equal(mixture(images, 3)[0], augmented)
    assert not torch.equal(mixture(images, 4)[0], augmented)


def test_a_mixture_of_defectaug_generators_is_an_arm():
    args = anomaly.parse_args(["--arms", "cutpaste:alpha:scale=0.3-0.8+texture:alpha"])
    synthesize = anomaly.make_source(args.arms[0])
    images = torch.rand(6, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    augmented, masks = synthesize(images, 0)
    assert augmented.shape == images.shape and masks.shape == (6, 1, 48, 48)
    # An image whose defect stayed invisible after the redraws keeps an empty mask.
    assert masks.dtype == torch.bool and int(masks.flatten(1).any(dim=1).sum()) >= 4
    changed = (augmented - images).abs().amax(dim=1, keepdim=True) > 8 / 255
    assert torch.equal(changed & ~masks, torch.zeros_like(masks))  # no visible change unlabelled


def test_runs_made_in_parts_merge_into_one_paired_report(tmp_path):
    def part(arms, seeds, ap, name):
        runs = [
            {"arm": arm, "seed": seed, "curve": [{"step": 1, "pixel_ap": ap}],
             "test": {"all": dict(pixel_ap=ap + 0.01 * seed, pixel_auroc=0.5, image_auroc=0.5)}}
            for arm in arms for seed in seeds
        ]  # fmt: skip
        result = {"dataset": "magnetic_tile", "budget": "b", "command": name, "commit": f"c-{name}",
                  "date": f"d-{name}", "machine": "m", "wall_s": 1.0, "arms": arms, "runs": runs,
                  "samples": [f"{name}_samples.png"]}  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(result))
        return path

    peer = part([anomaly.PEER_ARM], range(3), 0.10, "peer")
    ours = part(["procedural:alpha"], range(3), 0.20, "ours")
    merged = anomaly.main(["--merge", str(peer), str(ours), "--out", str(tmp_path / "m")])
    assert merged["arms"] == ["procedural:alpha", anomaly.PEER_ARM]
    assert merged["effects"]["procedural:alpha"]["all/pixel_ap"]["diff"] == pytest.approx(0.10)
    assert merged["samples"] == ["peer_samples.png", "ours_samples.png"]
    assert "ours_samples.png" in (tmp_path / "m" / "anomaly.md").read_text()
    (tmp_path / "m" / "anomaly_samples.png").write_bytes(b"")  # as --samples-only draws it
    merged = anomaly.main(["--merge", str(peer), str(ours), "--out", str(tmp_path / "m")])
    assert merged["samples"] == ["anomaly_samples.png"]
    again = anomaly.main(
        ["--merge", str(tmp_path / "m" / "anomaly.json"), str(ours), "--out", str(tmp_path / "a")]
    )
    # Merged again with one of its parts: each part once, its wall time counted once.
    assert again["commit"] == "c-peer, c-ours" and again["date"] == "d-peer, d-ours"
    assert len(again["runs"]) == 6 and again["wall_s"] == 2.0
    assert [(part["command"], part["seeds"]) for part in again["parts"]] == [
        ("peer", [0, 1, 2]),
        ("ours", [0, 1, 2]),
    ]
    report = (tmp_path / "a" / "anomaly.md").read_text()
    line = "- `ours` (procedural:alpha; seeds 0, 1, 2): d-ours, commit c-ours, wall 0.0 min"
    assert line in report
    only_peer = anomaly.main(
        ["--merge", str(peer), str(ours), "--arms", anomaly.PEER_ARM, "--out", str(tmp_path / "p")]
    )
    assert only_peer["arms"] == [anomaly.PEER_ARM] and len(only_peer["runs"]) == 3
    assert [part["command"] for part in only_peer["parts"]] == ["peer"]
    assert only_peer["wall_s"] == 1.0
    other = json.loads(ours.read_text()) | {"budget": "other"}
    ours.write_text(json.dumps(other))
    with pytest.raises(ValueError, match="budget"):
        anomaly.main(["--merge", str(peer), str(ours), "--out", str(tmp_path / "m")])


def test_commands_of_parts_are_joined_once_with_what_each_part_changed():
    from benchmarks.recording import joined_commands

    base = "uv run --group bench python -m benchmarks.fewshot --shots 10 --steps 3000"
    arms = ("real", "real+bank")
    parts = [f"{base} --first-seed {seed} --arms {arm}" for seed in (0, 1) for arm in arms]
    assert joined_commands(parts) == (
        f"{base} — per part: --first-seed 0 --arms real; --first-seed 0 --arms real+bank; "
        "--first-seed 1 --arms real; --first-seed 1 --arms real+bank"
    )
    assert joined_commands([parts[0], parts[0]]) == parts[0]
    assert joined_commands(["peer", "ours"]) == "peer + ours"
    # A merged report merged again: its line counts as the commands it was made of.
    assert joined_commands([joined_commands(parts[:2]), *parts[2:]]) == joined_commands(parts)
    assert joined_commands(["peer + ours", "third"]) == "peer + ours + third"
