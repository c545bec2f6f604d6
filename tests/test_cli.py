import csv
import errno
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectaug import cli
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


@pytest.mark.parametrize(
    "command, shown",
    [
        ("synth", ["(default: procedural)", "(default: alpha)", "(default: 0.1,0.3)"]),
        ("demo", ["(default: 192)", "(default: 0)"]),
    ],
)
def test_help_shows_the_defaults(capsys, monkeypatch, command, shown):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option: no default split by wrapping
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for default in shown:
        assert default in text, text
    # Nothing to show for options that are off unless given; no default stated twice.
    assert "(default: None)" not in text and "(default: False)" not in text, text
    assert all(line.count("default") <= 1 for line in text.splitlines()), text


def test_train_is_registered_when_the_training_cli_exists():
    commands = next(
        action for action in build_parser()._actions if action.dest == "command"
    ).choices
    assert {"demo", "synth"} <= set(commands)
    has_training = importlib.util.find_spec("defectaug.training.cli") is not None
    assert ("train" in commands) == has_training


# ------------------------------------------------------------------- reliability (issue #16)
def _synth(backgrounds: Path, out: Path, *extra: str) -> list[str]:
    return [
        "synth",
        "--backgrounds",
        str(backgrounds),
        "--out",
        str(out),
        "--types",
        "spot",
        "crack",
        "--no-progress",
        *extra,
    ]


def _one_line_error(capsys, command: str = "synth") -> str:
    error = capsys.readouterr().err
    assert error.startswith(f"defectaug {command}: error: "), error
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("split", ["../../escape", "{absolute}", "a/b", "..", "", "ground_truth"])
def test_synth_refuses_a_split_that_is_not_one_folder_inside_out(tmp_path, capsys, split):
    backgrounds = _backgrounds(tmp_path / "normals")
    split = split.format(absolute=tmp_path / "absolute")
    out = tmp_path / "a" / "b" / "out"
    assert main([*_synth(backgrounds, out, "--n", "1"), "--split", split]) == 2
    assert "--split: expected one folder name inside --out" in _one_line_error(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "absolute").exists()
    assert not (tmp_path / "escape").exists()


def test_synth_rerun_with_a_smaller_n_removes_the_images_it_no_longer_lists(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    out = tmp_path / "out"
    assert main([*_synth(backgrounds, out, "--n", "6")]) == 0
    # Files the tool did not write stay, even inside its folders and with look-alike names.
    foreign = ["notes.txt", "test/spot/notes.png", "test/spot/0000009.png", "ground_truth/x.png"]
    for name in foreign:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"mine")
    interrupted = out / "test" / "crack" / "000001.png.partial"
    interrupted.write_bytes(b"half a png")
    capsys.readouterr()

    assert main([*_synth(backgrounds, out, "--n", "3")]) == 0
    rows = _manifest(out)
    assert [int(row["index"]) for row in rows] == [0, 1, 2]
    listed = {row["image"] for row in rows} | {row["mask"] for row in rows}
    written = {
        name
        for name in _files(out)
        if name not in foreign and name not in ("manifest.csv", "synth_config.json")
    }
    assert written == listed
    assert all((out / name).read_bytes() == b"mine" for name in foreign)
    assert "(3 already there; removed 7 stale file(s))" in capsys.readouterr().out


def _truncated_png(path: Path) -> None:
    pixels = (np.arange(40 * 48 * 3) % 251).astype(np.uint8).reshape(40, 48, 3)
    Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("a_first.png", "truncated"),  # read by the dataset's constructor
        ("z_last.png", "truncated"),  # read only by the up-front check
        ("z_last.png", "empty"),
    ],
)
def test_synth_names_a_damaged_background_before_writing(tmp_path, capsys, name, damage):
    backgrounds = _backgrounds(tmp_path / "normals")
    bad = backgrounds / name
    if damage == "empty":
        bad.write_bytes(b"")
    else:
        _truncated_png(bad)
    out = tmp_path / "out"
    assert main([*_synth(backgrounds, out, "--n", "2")]) == 2
    error = _one_line_error(capsys)
    assert str(bad) in error
    assert not out.exists()


def test_synth_corrupt_settings_and_manifest_name_the_file(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    out = tmp_path / "out"
    assert main([*_synth(backgrounds, out, "--n", "2")]) == 0
    capsys.readouterr()
    manifest = (out / "manifest.csv").read_text()
    config = (out / "synth_config.json").read_text()

    (out / "synth_config.json").write_text(config[: len(config) // 2])
    assert main([*_synth(backgrounds, out, "--n", "2")]) == 2
    error = _one_line_error(capsys)
    assert f"{out / 'synth_config.json'}: not valid JSON" in error
    (out / "synth_config.json").write_text(config)

    lines = manifest.splitlines()
    for bad_row, problem in [
        (lines[2].rsplit(",", 1)[0] + ",x", "index 'x'"),  # index is the last column
        (lines[2].replace("test/", "../../"), "expected 'test/"),
    ]:
        (out / "manifest.csv").write_text("\n".join([*lines[:2], bad_row]) + "\n")
        assert main([*_synth(backgrounds, out, "--n", "2")]) == 2
        error = _one_line_error(capsys)
        assert f"{out / 'manifest.csv'}: line 3: " in error and problem in error

    (out / "manifest.csv").write_text("a,b\n1,2\n")
    assert main([*_synth(backgrounds, out, "--n", "2")]) == 2
    assert "not a synth manifest" in _one_line_error(capsys)

    (out / "synth_config.json").unlink()
    assert main([*_synth(backgrounds, out, "--n", "2")]) == 2
    assert "holds a manifest.csv but no synth_config.json" in _one_line_error(capsys)


def _failing_save(error: OSError):
    def save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")  # as a real failure would: a started file
        raise error

    return save


@pytest.mark.parametrize(
    ("code", "reason"),
    [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")],
)
@pytest.mark.parametrize("command", ["synth", "demo"])
def test_failed_writes_are_one_line_and_leave_no_partial_file(
    tmp_path, capsys, monkeypatch, code, reason, command
):
    out = tmp_path / "out"
    if command == "synth":
        argv = _synth(_backgrounds(tmp_path / "normals"), out, "--n", "2")
    else:
        argv = ["demo", "--out", str(out), "--size", "32", "--types", "pit", "--no-progress"]
    monkeypatch.setattr(Image.Image, "save", _failing_save(OSError(code, reason)))
    assert main(argv) == 2
    error = _one_line_error(capsys, command)
    assert f"error: --out: cannot write {out}" in error and error.strip().endswith(reason)
    assert not [p for p in out.rglob("*.partial")]


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_out_is_one_line(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main([*_synth(backgrounds, locked / "out", "--n", "1")]) == 2
        assert "Permission denied" in _one_line_error(capsys)
        assert main(["demo", "--out", str(locked / "demo"), "--no-progress"]) == 2
        assert "Permission denied" in _one_line_error(capsys, "demo")
    finally:
        locked.chmod(0o755)


def test_out_that_cannot_be_created_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("in the way")
    assert main(["demo", "--out", str(blocker / "sub"), "--no-progress"]) == 2
    assert f"--out: cannot write {blocker / 'sub'}" in _one_line_error(capsys, "demo")
    assert main(["demo", "--out", str(blocker), "--no-progress"]) == 2
    assert f"--out: not a folder: {blocker}" in _one_line_error(capsys, "demo")


@pytest.mark.parametrize(("size", "ok"), [("0", False), ("-5", False), ("100000", False)])
def test_demo_size_is_bounded(tmp_path, capsys, size, ok):
    assert main(["demo", "--out", str(tmp_path / "d"), "--size", size, "--no-progress"]) == 2
    assert "--size: expected a side of 16 to 1024 px, got" in _one_line_error(capsys, "demo")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--n", "1000001"], "--n: expected a positive number of images up to 1000000"),
        (["--n", "1", "--workers", "-1"], "--workers: expected 0 to 64"),
    ],
)
def test_synth_sizes_are_bounded(tmp_path, capsys, option, message):
    backgrounds = _backgrounds(tmp_path / "normals")
    assert main(_synth(backgrounds, tmp_path / "out", *option)) == 2
    assert message in _one_line_error(capsys)


def test_defects_per_image_are_bounded(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    with pytest.raises(SystemExit) as info:
        main(_synth(backgrounds, tmp_path / "out", "--n", "1", "--count", "1-100000"))
    assert info.value.code == 2
    assert "expected 1 <= MIN <= MAX <= 64" in capsys.readouterr().err


def test_type_names_that_are_not_folder_names_are_refused(tmp_path, capsys, monkeypatch):
    from defectaug.generators import ProceduralGenerator, registry

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    def climbing() -> ProceduralGenerator:
        generator = ProceduralGenerator()
        generator.defect_types = ("../up", *generator.defect_types[1:])
        return generator

    registry.register_generator("climbing-types", climbing)
    backgrounds = _backgrounds(tmp_path / "normals")
    argv = ["synth", "--backgrounds", str(backgrounds), "--out", str(tmp_path / "out")]
    assert main([*argv, "--n", "1", "--generator", "climbing-types", "--no-progress"]) == 2
    assert "--types: '../up' cannot be a folder name inside --out" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_synth_unavailable_device_is_one_line(tmp_path, capsys):
    backgrounds = _backgrounds(tmp_path / "normals")
    device = "cuda:99" if torch.cuda.is_available() else "cuda"
    argv = _synth(backgrounds, tmp_path / "out", "--n", "1", "--generator-arg", f"device={device}")
    assert main(argv) == 2
    assert f"--generator: device: '{device}' asks for CUDA" in _one_line_error(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            RuntimeError("CUDA error: no kernel image\nCompile with TORCH_USE_CUDA_DSA"),
            "CUDA error: no kernel image",
        ),
        (
            OSError(errno.EIO, "Input/output error", "/data/x.png"),
            "/data/x.png: Input/output error",
        ),
        (
            OSError("image file is truncated (3 bytes not processed)"),
            "image file is truncated (3 bytes not processed)",
        ),
        (MemoryError(), "MemoryError"),
        (
            ValueError(
                "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most "
                'recent call last):\n  File "x.py", line 1, in f\nValueError: item 3: broken'
            ),
            "ValueError: item 3: broken",
        ),
    ],
)
def test_main_turns_errors_into_one_line(tmp_path, capsys, monkeypatch, error, expected):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "run_demo", fail)
    assert main(["demo", "--out", str(tmp_path)]) == 2
    assert _one_line_error(capsys, "demo").strip().endswith(expected)


def test_restore_refuses_a_generator_that_cannot_restore_in_one_line(tmp_path, capsys):
    source = _backgrounds(tmp_path / "in", count=1)
    code = main(["restore", str(source), str(tmp_path / "out"), "--card", "procedural"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("defectaug restore: error: --card: procedural is a ProceduralGenerator")
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["restore", str(empty), str(tmp_path / "out"), "--card", "procedural"]) == 2
    assert "IN: no images found" in capsys.readouterr().err
