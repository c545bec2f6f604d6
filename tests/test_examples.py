"""The examples run end to end on a tiny subset of the real data, on CPU."""

import importlib.util
import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from defectaug.heads import dann_schedule

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_with_synthetic.py"
TINY = ["--subset", "2", "--image-size", "48", "--batch-size", "4", "--device", "cpu"]
TINY += ["--log-every", "1", "--head-hidden", "64", "--arch", "mobilenet_v3_small"]


def _load_example():
    spec = importlib.util.spec_from_file_location("train_with_synthetic", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_train_with_synthetic_runs_and_resumes(shared_data, tmp_path, capsys, monkeypatch):
    data = str(shared_data / "magnetic_tile")
    checkpoint = tmp_path / "run.pt"
    # As a user runs it: the script's own entry point, with its command line (in this process, so
    # torch is not imported a second time).
    argv = [
        str(EXAMPLE),
        "--data",
        data,
        "--max-steps",
        "3",
        *TINY,
        "--checkpoint",
        str(checkpoint),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "synthetic 12" in out.splitlines()[0]
    records = _json_lines(out)
    steps = [r for r in records if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for record in steps:
        assert record["lambda"] == pytest.approx(dann_schedule(record["step"] / 3), abs=1e-4)
        assert record["class_loss"] > 0 and record["source_loss"] > 0
    summary = records[-1]["summary"]
    assert summary["steps"] == 3 and 0.0 <= summary["eval_accuracy"] <= 1.0
    assert summary["eval_images"] == 12  # 2 per class, 6 classes

    saved = torch.load(checkpoint, weights_only=True)
    assert int(saved["model"]["head.steps"]) == 3
    assert saved["classes"] == ["blowhole", "break", "crack", "fray", "good", "uneven"]

    # Resume in-process: the step counter and the DANN ramp continue from the checkpoint.
    example = _load_example()
    capsys.readouterr()
    resumed = example.main(
        ["--data", data, "--max-steps", "4", "--eval-split", "", "--resume", str(checkpoint), *TINY]
    )
    lines = _json_lines(capsys.readouterr().out)
    assert [r["step"] for r in lines if "step" in r] == [4]
    assert lines[0]["lambda"] == pytest.approx(dann_schedule(1.0), abs=1e-4)
    assert resumed["steps"] == 4 and "eval_accuracy" not in resumed


def _small_bank_folder(data: Path, folder: Path, per_class: int = 2) -> Path:
    """A copy of the first ``per_class`` defects of every class of ``data`` (manifest layout)."""
    import csv
    import shutil

    with open(data / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    kept, seen = [], {}
    for row in rows:
        if row["label"] == "good" or not row["mask"] or row.get("mask_empty") == "1":
            continue
        if seen.get(row["label"], 0) < per_class:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            kept.append(row)
    for row in kept:
        for key in ("image", "mask"):
            (folder / row[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / row[key], folder / row[key])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return folder


@pytest.mark.parametrize("mode", ["learned", "bank"])
def test_documented_generator_modes_run_on_rgb_images(mode, shared_data, tmp_path, capsys):
    """The README's ``--generator`` modes with ``--defect-map identity``.

    ImageFolder (and so the example) gives RGB images, while the shipped learned generator and a
    bank of the grey magnetic-tile defects make 1-channel layers; they are applied as luminance
    changes.
    """
    data = shared_data / "magnetic_tile"
    if mode == "learned":
        generator = "dcdgan-magnetic-tile-64"
    else:
        generator = str(_small_bank_folder(data, tmp_path / "bank"))
    example = _load_example()
    args = ["--data", str(data), "--max-steps", "2", "--eval-split", "", *TINY]
    summary = example.main([*args, "--generator", generator, "--defect-map", "identity"])
    out = capsys.readouterr().out
    assert f"via {generator}" in out.splitlines()[0]
    assert "synthetic 12" in out.splitlines()[0]
    steps = [record for record in _json_lines(out) if "step" in record]
    assert [record["step"] for record in steps] == [1, 2] and summary["steps"] == 2
    assert all(record["class_loss"] > 0 for record in steps)


def test_defect_map_parsing_and_errors():
    example = _load_example()
    class_to_idx = {"blowhole": 0, "break": 1, "crack": 2, "fray": 3, "good": 4, "uneven": 5}
    types, label_map = example.parse_defect_map(example.MAGNETIC_TILE_MAP, class_to_idx, "good")
    assert types == ["pit", "crack", "spot", "uneven"]
    assert label_map == {"pit": 0, "crack": 2, "spot": 3, "uneven": 5}
    types, label_map = example.parse_defect_map("identity", class_to_idx, "good")
    assert "good" not in types and label_map["break"] == 1
    for spec, message in [
        ("scratch=scratch", "unknown class 'scratch'"),
        ("good=pit", "unknown class 'good'"),
        ("crack", "CLASS=TYPE"),
        ("crack=crack,fray=crack", "mapped twice"),
        ("", "no CLASS=TYPE"),
    ]:
        with pytest.raises(SystemExit, match=message):
            example.parse_defect_map(spec, class_to_idx, "good")
    with pytest.raises(SystemExit):
        example.parse_args(["--max-steps", "0"])
