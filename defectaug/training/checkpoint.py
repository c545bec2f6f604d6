"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint named ``<stem>`` (``checkpoint`` by default) in a run folder is two files:

- ``<stem>.safetensors``: every tensor (module weights, optimiser moments and step counters,
  RNG byte states) under a stable key (``modules/<module>/<key>``,
  ``optimizers/<optimizer>/state/<param>/<key>``, ``rng/<generator>``);
- ``<stem>.json``: format name and version, iteration, wall time, loss history, the training and
  model configs, the optimisers' parameter groups and non-tensor state, RNG metadata, and the
  SHA-256 of the tensor file it belongs with.

Loading parses JSON and reads safetensors, neither of which can run code. The JSON is the
commit record: a save writes both files under temporary names, moves the committed tensor file
aside to ``<stem>.previous.safetensors``, then renames the new tensors and, last, the new JSON into
place. A kill at any point leaves a JSON whose recorded digest matches either
``<stem>.safetensors`` or ``<stem>.previous.safetensors``, and loading picks the one that matches.

Checkpoints of defectaug 0.1 (``checkpoint.pt``, a pickle) are refused;
``convert_legacy_checkpoint`` (``defectaug convert-checkpoint``) reads them with torch's restricted
``weights_only`` loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_NAME = "defectaug-training-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_STEM = "checkpoint"
JSON_SUFFIX = ".json"
TENSORS_SUFFIX = ".safetensors"
#: The pickle checkpoint defectaug 0.1 wrote into a run folder.
LEGACY_NAME = "checkpoint.pt"
_LEGACY_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
# A torch zip archive, or a raw pickle (protocol 2 and later start with the PROTO opcode 0x80).
_LEGACY_MAGIC = (b"PK\x03\x04", b"\x80")
_TOP_LEVEL_KEYS = ("architecture", "iteration", "elapsed_s", "history", "train_config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (foreign, damaged, old format or another run's)."""


@dataclass(frozen=True)
class CheckpointFiles:
    json: Path
    tensors: Path
    previous: Path

    @classmethod
    def of(cls, folder: str | os.PathLike[str], stem: str = CHECKPOINT_STEM) -> CheckpointFiles:
        folder = Path(folder)
        return cls(
            folder / f"{stem}{JSON_SUFFIX}",
            folder / f"{stem}{TENSORS_SUFFIX}",
            folder / f"{stem}.previous{TENSORS_SUFFIX}",
        )


# ----------------------------------------------------------------------------- flattening
def _tensor_to_save(key: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"checkpoint: {key} is a {type(value).__name__}, not a tensor")
    # safetensors wants contiguous CPU tensors that share no storage.
    return value.detach().to("cpu", copy=True).contiguous()


def _json_value(key: str, value: Any) -> Any:
    """``value`` as JSON data, or a ``CheckpointError`` naming ``key``."""
    if isinstance(value, tuple | list):
        return [_json_value(key, item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(f"{key}.{k}", v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(
        f"checkpoint: {key} holds a {type(value).__name__}, which has no JSON form; "
        "only tensors and plain values can be checkpointed"
    )


def flatten(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a trainer state (as ``GeneratorTrainer.state_dict`` gives it) into tensors + JSON."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
    }
    for key in _TOP_LEVEL_KEYS:
        meta[key] = _json_value(key, state[key])
    meta["model_config"] = _json_value("model_config", state.get("model_config"))
    if state.get("converted_from") is not None:
        meta["converted_from"] = str(state["converted_from"])

    meta["modules"] = {}
    for name, module_state in state["modules"].items():
        meta["modules"][name] = list(module_state)
        for key, value in module_state.items():
            tensors[f"modules/{name}/{key}"] = _tensor_to_save(f"modules.{name}.{key}", value)

    meta["optimizers"] = {}
    for name, optimizer_state in state["optimizers"].items():
        skeleton: dict[str, Any] = {}
        for param, entries in optimizer_state["state"].items():
            plain = {}
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizers/{name}/state/{param}/{key}"] = _tensor_to_save(
                        f"optimizers.{name}.state.{param}.{key}", value
                    )
                else:
                    plain[key] = _json_value(f"optimizers.{name}.state.{param}.{key}", value)
            skeleton[str(param)] = plain
        meta["optimizers"][name] = {
            "param_groups": _json_value(
                f"optimizers.{name}.param_groups", optimizer_state["param_groups"]
            ),
            "state": skeleton,
        }

    rng = state["rng"]
    cuda_states = list(rng.get("torch_cuda", []))
    for key in ("cpu_rng", "device_rng", "torch_global"):
        tensors[f"rng/{key}"] = _tensor_to_save(f"rng.{key}", rng[key])
    for index, value in enumerate(cuda_states):
        tensors[f"rng/torch_cuda/{index}"] = _tensor_to_save(f"rng.torch_cuda.{index}", value)
    meta["rng"] = {
        "device_type": state.get("rng_device_type"),
        "torch_cuda_states": len(cuda_states),
    }
    return tensors, meta


def unflatten(meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Rebuild the trainer state from a checkpoint's JSON and tensors (``CheckpointError`` if
    they do not fit together)."""
    try:
        state: dict[str, Any] = {key: meta[key] for key in _TOP_LEVEL_KEYS}
        state["model_config"] = meta.get("model_config")
        state["modules"] = {
            name: {key: tensors[f"modules/{name}/{key}"] for key in keys}
            for name, keys in meta["modules"].items()
        }
        state["optimizers"] = {}
        for name, skeleton in meta["optimizers"].items():
            prefix = f"optimizers/{name}/state/"
            entries: dict[int, dict[str, Any]] = {
                int(param): dict(plain) for param, plain in skeleton["state"].items()
            }
            for key, value in tensors.items():
                if key.startswith(prefix):
                    param, _, entry = key[len(prefix) :].partition("/")
                    entries[int(param)][entry] = value
            state["optimizers"][name] = {
                "state": entries,
                "param_groups": [dict(group) for group in skeleton["param_groups"]],
            }
        rng_meta = meta["rng"]
        state["rng"] = {
            key: tensors[f"rng/{key}"] for key in ("cpu_rng", "device_rng", "torch_global")
        }
        cuda_count = int(rng_meta["torch_cuda_states"])
        state["rng"]["torch_cuda"] = [
            tensors[f"rng/torch_cuda/{index}"] for index in range(cuda_count)
        ]
        state["rng_device_type"] = rng_meta.get("device_type")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint: the JSON and the tensors do not fit together ({type(error).__name__}: "
            f"{error}); not a checkpoint defectaug wrote"
        ) from None
    return state


# ----------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    # Makes the renames durable across a power cut; folders cannot be opened like this everywhere.
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def _committed_digest(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["tensors"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_checkpoint(
    state: Mapping[str, Any], folder: str | os.PathLike[str], stem: str = CHECKPOINT_STEM
) -> Path:
    """Write ``state`` as ``folder/<stem>.safetensors`` + ``folder/<stem>.json``; returns the JSON.

    See the module docstring for the write order that keeps the previous checkpoint loadable.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = CheckpointFiles.of(folder, stem)
    tensors, meta = flatten(state)
    partial_tensors = files.tensors.with_name(files.tensors.name + ".partial")
    partial_json = files.json.with_name(files.json.name + ".partial")

    save_file(tensors, partial_tensors, metadata={"format": FORMAT_NAME})
    _fsync(partial_tensors)
    meta["tensors"] = {
        "sha256": _sha256(partial_tensors),
        "bytes": partial_tensors.stat().st_size,
    }
    partial_json.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    _fsync(partial_json)

    # Keep the tensors the committed JSON points at until the new JSON replaces it. A tensor
    # file that matches no JSON (left by an earlier kill) is simply overwritten.
    committed = _committed_digest(files.json)
    if committed is not None and files.tensors.is_file() and _sha256(files.tensors) == committed:
        os.replace(files.tensors, files.previous)
    os.replace(partial_tensors, files.tensors)
    os.replace(partial_json, files.json)
    _fsync_folder(folder)
    files.previous.unlink(missing_ok=True)
    return files.json


def _looks_legacy(path: Path) -> bool:
    if path.suffix.lower() in _LEGACY_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return any(head.startswith(magic) for magic in _LEGACY_MAGIC)


def legacy_message(path: Path, what: str = "resume") -> str:
    target = path.parent if path.name == LEGACY_NAME else path.parent / path.stem
    return (
        f"{what}: {str(path)!r} is an old-format (pickle) checkpoint, which defectaug no longer "
        "loads because unpickling can run code; convert it once with `defectaug "
        f"convert-checkpoint {path} {target}` (reads plain tensors only) and resume from "
        f"{str(target)!r}"
    )


def locate_checkpoint(path: str | os.PathLike[str], what: str = "resume") -> Path:
    """The ``<stem>.json`` of the checkpoint ``path`` names: a run folder, the JSON or the
    safetensors file. Old pickle checkpoints and foreign files raise ``CheckpointError``."""
    path = Path(path)
    if path.is_dir():
        files = CheckpointFiles.of(path)
        if files.json.is_file():
            return files.json
        if (path / LEGACY_NAME).is_file():
            raise CheckpointError(legacy_message(path / LEGACY_NAME, what))
        raise FileNotFoundError(
            f"{what}: no checkpoint in {str(path)!r} (expected {files.json.name} and "
            f"{files.tensors.name})"
        )
    if not path.exists():
        raise FileNotFoundError(f"{what}: no checkpoint at {str(path)!r}")
    if path.name.endswith(JSON_SUFFIX):
        return path
    if path.name.endswith(TENSORS_SUFFIX):
        stem = path.name[: -len(TENSORS_SUFFIX)].removesuffix(".previous")
        sibling = path.with_name(stem + JSON_SUFFIX)
        if not sibling.is_file():
            raise FileNotFoundError(
                f"{what}: {str(path)!r} has no {sibling.name} next to it; a checkpoint is both "
                "files"
            )
        return sibling
    if _looks_legacy(path):
        raise CheckpointError(legacy_message(path, what))
    raise CheckpointError(
        f"{what}: {str(path)!r} is not a defectaug checkpoint; expected a run folder or its "
        f"{CHECKPOINT_STEM}{JSON_SUFFIX} / {CHECKPOINT_STEM}{TENSORS_SUFFIX}"
    )


def read_meta(json_path: Path, what: str = "resume") -> dict[str, Any]:
    """Parse and check a checkpoint's JSON (format and version); never touches the tensors."""
    try:
        raw = json_path.read_bytes()
    except OSError as error:
        raise CheckpointError(
            f"{what}: cannot read {str(json_path)!r} ({_first_line(error)})"
        ) from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{what}: {str(json_path)!r} is not valid JSON (truncated, or not a checkpoint): "
            f"{error}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{what}: {str(json_path)!r} is not a defectaug training checkpoint "
            f"(format {found!r}, expected {FORMAT_NAME!r})"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{what}: {str(json_path)!r} has format_version {version!r}; this defectaug reads "
            f"up to {FORMAT_VERSION} (upgrade defectaug)"
        )
    tensors = meta.get("tensors")
    if not isinstance(tensors, dict) or not isinstance(tensors.get("sha256"), str):
        raise CheckpointError(
            f"{what}: {str(json_path)!r} does not record its tensor file's digest"
        )
    return meta


def load_checkpoint(path: str | os.PathLike[str], what: str = "resume") -> dict[str, Any]:
    """Read the checkpoint ``path`` names (see ``locate_checkpoint``) into a trainer state with
    CPU tensors. Every problem is one ``CheckpointError`` or ``FileNotFoundError`` line."""
    json_path = locate_checkpoint(path, what)
    meta = read_meta(json_path, what)
    stem = json_path.name[: -len(JSON_SUFFIX)]
    files = CheckpointFiles.of(json_path.parent, stem)
    expected = meta["tensors"]["sha256"]
    try:
        source = next(
            (
                candidate
                for candidate in (files.tensors, files.previous)
                if candidate.is_file() and _sha256(candidate) == expected
            ),
            None,
        )
    except OSError as error:
        raise CheckpointError(
            f"{what}: cannot read {str(files.tensors)!r} ({_first_line(error)})"
        ) from None
    if source is None:
        state = "is missing" if not files.tensors.is_file() else "does not match it"
        raise CheckpointError(
            f"{what}: {str(json_path)!r} records tensors with SHA-256 {expected[:12]}..., and "
            f"{files.tensors.name} {state} (truncated, or from another save)"
        )
    try:
        tensors = load_file(source, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{what}: {str(source)!r} is not a readable safetensors file ({_first_line(error)})"
        ) from None
    return unflatten(meta, tensors)


# ----------------------------------------------------------------------------- conversion
def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _refusal_reason(error: BaseException) -> str:
    """Why torch's restricted loader refused a file, without torch's advice to turn it off."""
    text = str(error)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, re.S)
    reason = match.group(1) if match else re.split(r"\.\s", _first_line(error))[0]
    return " ".join(reason.split())[:200]


def _check_legacy_state(state: Any) -> list[str]:
    if not isinstance(state, dict):
        return [f"the file holds a {type(state).__name__}, not a dict"]
    problems = [
        f"no {key!r} entry"
        for key in (*_TOP_LEVEL_KEYS, "modules", "optimizers", "rng")
        if key not in state
    ]
    if problems:
        return problems
    # Every shape flatten() relies on, so a foreign dict is refused here rather than failing
    # there with an AttributeError or a bare KeyError.
    problems = [
        f"{key!r} is not a dict"
        for key in ("modules", "optimizers", "rng")
        if not isinstance(state[key], Mapping)
    ]
    if problems:
        return problems
    for name, module_state in state["modules"].items():
        if not isinstance(module_state, Mapping) or not all(
            isinstance(value, torch.Tensor) for value in module_state.values()
        ):
            problems.append(f"module {name!r} is not a dict of tensors")
    for name, optimizer_state in state["optimizers"].items():
        if (
            not isinstance(optimizer_state, Mapping)
            or not isinstance(optimizer_state.get("state"), Mapping)
            or not all(isinstance(entry, Mapping) for entry in optimizer_state["state"].values())
            or not isinstance(optimizer_state.get("param_groups"), list | tuple)
        ):
            problems.append(f"optimizer {name!r} is not an optimizer state dict")
    rng_keys = ("cpu_rng", "device_rng", "torch_global")
    if not all(isinstance(state["rng"].get(k), torch.Tensor) for k in rng_keys):
        problems.append("no RNG states")
    return problems


def convert_legacy_checkpoint(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str]
) -> Path:
    """Convert an old ``checkpoint.pt`` into ``out_dir/checkpoint.{safetensors,json}``.

    The file is read with ``torch.load(weights_only=True)``, whose unpickler accepts only tensors
    and plain containers and refuses any other global; anything it refuses (and anything that is
    not the dict defectaug 0.1 wrote) is refused here, never retried with the full unpickler.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"OLD: no file at {str(source)!r}")
    major, minor = (int(part) for part in re.findall(r"\d+", torch.__version__)[:2])
    if (major, minor) < (2, 6):
        # Before 2.6, weights_only loading could still be made to run code (CVE-2025-32434).
        raise CheckpointError(
            f"convert-checkpoint: needs torch >= 2.6 for a safe weights_only load; this is "
            f"torch {torch.__version__}"
        )
    files = CheckpointFiles.of(out_dir)
    if files.json.exists():
        raise CheckpointError(
            f"OUT_DIR: {str(files.json)!r} already exists; convert into another folder"
        )
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    # Any failure at all means the file is not what we accept; the type does not matter.
    except Exception as error:
        raise CheckpointError(
            f"OLD: {str(source)!r} is not a plain-tensor checkpoint, refusing to convert it "
            f"({_refusal_reason(error)})"
        ) from None
    problems = _check_legacy_state(state)
    if problems:
        raise CheckpointError(
            f"OLD: {str(source)!r} is not a defectaug training checkpoint ({'; '.join(problems)})"
        )
    state = {
        **state,
        # 0.1 checkpoints did not record the resolved model config or the RNG's device; resume
        # then relies on the tensor shapes and RNG state sizes, which it checks.
        "model_config": None,
        "rng_device_type": None,
        "converted_from": source.name,
    }
    return save_checkpoint(state, out_dir)
