import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectaug.cli import build_parser, main
from defectaug.datasets import read_defect_dataset


def _backgrounds(folder: Path, count=3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (120 + 50 * rng.random((40, 48, 3))).astype(np.uint8)
        Image.fromarray(pixels, mode="RGB").save(folder / f"part_{index}.png")
    return folder


def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_demo_writes_grids_and_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(
        ["demo", "--out", str(out), "--size", "64", "--types", "scratch", "pit", "--no-progress"]
    )
    assert code == 0
    for blend in ("alpha", "poisson", "improved_poisson"):
        grid = Image.open(out / f"procedural_{blend}.png")
        assert grid.mode == "RGB" and grid.height > 2 * 64 and grid.width > 3 * 64
    summary = (out / "summary.txt").read_text()
    assert "procedural" in summary and "scratch" in summary and "pit" in summary
    assert "3 grid(s) written" in summary
    assert "wrote 3 grids" in capsys.readouterr().out


def test_synth_writes_an_mvtec_style_dataset_and_resumes(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    out = tmp_path / "synthetic"
    base = [
        "synth",
        "--backgrounds",
        str(backgrounds),
        "--out",
        str(out),
        "--types",
        "spot",
        "crack",
    ]
    assert main([*base, "--n", "4", "--count", "1-2", "--no-progress"]) == 0
    rows = _manifest(out)
    assert [int(row["index"]) for row in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row["label"] in ("spot", "crack") and row["split"] == "test"
        assert row["image"] == f"test/{row['label']}/{int(row['index']):06d}.png"
        assert row["mask"] == f"ground_truth/{row['label']}/{int(row['index']):06d}_mask.png"
        image, mask = Image.open(out / row["image"]), np.asarray(Image.open(out / row["mask"]))
        assert image.size == (48, 40) and mask.shape == (40, 48)
        assert set(np.unique(mask)) <= {0, 255}
        assert abs((mask > 0).mean() - float(row["defect_area_frac"])) < 1e-6
    records = read_defect_dataset(out)
    assert len(records) == 4 and all(record.has_mask for record in records)
    first_image = (out / rows[0]["image"]).stat().st_mtime_ns
    capsys.readouterr()

    assert main([*base, "--n", "6", "--count", "1-2", "--no-progress"]) == 0
    assert "wrote 2 image(s) (4 already there)" in capsys.readouterr().out
    assert (out / rows[0]["image"]).stat().st_mtime_ns == first_image
    assert len(_manifest(out)) == 6

    assert main([*base, "--n", "6", "--count", "1-2", "--seed", "1", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "other settings (seed)" in error and error.count("\n") == 1


def test_synth_is_deterministic_across_runs(tmp_path):
    backgrounds = _backgrounds(tmp_path / "normals")
    for name in ("a", "b"):
        args = [
            "synth",
            "--backgrounds",
            str(backgrounds),
            "--out",
            str(tmp_path / name),
            "--n",
            "2",
        ]
        options = ["--types", "stain", "--generator-arg", "base_level=[0.2, 0.4]", "--no-progress"]
        assert main([*args, *options]) == 0
    for row in _manifest(tmp_path / "a"):
        assert (tmp_path / "a" / row["image"]).read_bytes() == (
            tmp_path / "b" / row["image"]
        ).read_bytes()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--backgrounds", "{missing}", "--n", "2"], "--backgrounds: folder not found"),
        (["--backgrounds", "{empty}", "--n", "2"], "--backgrounds: no images found"),
        (
            ["--backgrounds", "{normals}", "--n", "2", "--types", "dent"],
            "unknown defect type 'dent'",
        ),
        (["--backgrounds", "{normals}", "--n", "0"], "--n: expected a positive number"),
        (["--backgrounds", "{normals}", "--n", "2", "--generator", "nope"], "--generator: "),
        (["--backgrounds", "{normals}", "--n", "2", "--generator-arg", "nope=1"], "--generator: "),
    ],
)
def test_synth_errors_are_one_line(tmp_path, capsys, arguments, message):
    places = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "normals": _backgrounds(tmp_path / "normals"),
    }
    (tmp_path / "empty").mkdir()
    filled = [a.format(**places) if a.startswith("{") else a for a in arguments]
    assert main(["synth", "--out", str(tmp_path / "out"), *filled, "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("defectaug synth: error: ") and message in error
    assert error.count("\n") == 1 and "Traceback" not in error


def test_subprocess_exit_code_and_help(tmp_path):
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "defectaug",
            "synth",
            "--backgrounds",
            str(missing),
            "--out",
            str(tmp_path / "o"),
            "--n",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"defectaug synth: error: --backgrounds: folder not found: {missing}"
    )


def test_train_is_registered_when_the_training_cli_exists():
    commands = next(
        action for action in build_parser()._actions if action.dest == "command"
    ).choices
    assert {"demo", "synth"} <= set(commands)
    has_training = importlib.util.find_spec("defectaug.training.cli") is not None
    assert ("train" in commands) == has_training
