"""Training loop shared by learned generators, and the DCDGAN and Defect-GAN trainers on it.

``GeneratorTrainer`` owns everything that is not the model: the iteration counter, the random
state, checkpoints that resume bit-exactly (modules, optimisers, EMA weights, every RNG state;
safetensors + JSON, see ``checkpoint``), the progress bar, periodic sample grids, a wall-time
budget and the final export to a folder that ``load_generator`` reads. An architecture subclasses
it and implements ``training_step``, ``export_generator``, ``sample_grid`` and
``memory_estimate``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.func import functional_call
from torchvision.utils import make_grid
from tqdm.auto import tqdm

from defectaug import _checks as checks
from defectaug._io import to_uint8
from defectaug.generators.dcdgan import (
    DCDGAN,
    DCDGANConfig,
    DCDGANDiscriminator,
)
from defectaug.generators.defectgan import (
    DefectGAN,
    DefectGANConfig,
    DefectGANDiscriminator,
    DefectGANGenerator,
    compose,
    control_map,
    restoration_control,
)
from defectaug.generators.hub import CardConfig, PretrainedDefectGenerator
from defectaug.training import memory
from defectaug.training.augment import diff_augment
from defectaug.training.checkpoint import (
    CHECKPOINT_STEM,
    JSON_SUFFIX,
    TENSORS_SUFFIX,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from defectaug.training.data import DefectCropSet, SceneCropSet, load_defect_crops, load_scene_crops

#: The file of a run folder that names its checkpoint (tensors are in ``CHECKPOINT_TENSORS``).
CHECKPOINT_NAME = CHECKPOINT_STEM + JSON_SUFFIX
CHECKPOINT_TENSORS = CHECKPOINT_STEM + TENSORS_SUFFIX
#: ``TrainConfig`` fields a resumed run may change: everything else must match the checkpoint.
RESUMABLE_CHANGES = ("iterations",)
# Activation bytes a DCDGAN training step keeps per batch item, per float of the feature maps of
# one generator pass plus one critic pass. Measured peak resident memory on CPU was 32-35x across
# layer sizes 32-128, widths 4-16 and batches 8-64 on an Intel Xeon, up to 41x on an AMD EPYC
# (allocator slack varies from run to run); 48 covers both.
_DCDGAN_BYTES_PER_FEATURE = 48


def _adam_bytes(trained: Sequence[nn.Module], averaged: nn.Module) -> int:
    """Float32 bytes of the weights, gradients and Adam's two moments of ``trained``, plus the
    EMA copy of ``averaged``."""
    weights = sum(p.numel() for network in trained for p in network.parameters())
    return 4 * (4 * weights + sum(p.numel() for p in averaged.parameters()))


@dataclass
class TrainConfig:
    """Optimisation settings of a training run (the architecture has its own config).

    ``reconstruction_weight`` (lambda_p = 10), ``latent_weight`` (lambda_l = 1), ``kl_weight``
    (lambda_KL = 0.01) and ``gp_weight`` (10) are the DCDGANc paper's. Departures, for a run of a
    few thousand steps on a CPU with one critic step per generator step:

    * ``adversarial_weight`` 0.05 instead of 1. In probes on the magnetic-tile crops, at weight 1
      (and at 0.1) the young critic's gradients outweighed the reconstruction loop and every
      sample collapsed to one class-independent shape within 150 steps, while the reconstruction
      loop alone already gave class-dependent, varied shapes. At 0.05 (with the penalty every
      step, so the critic's input gradients stay near norm 1) the reconstruction loop shapes the
      layers and the critic sharpens them. A GPU run with many more steps can raise it.
    * ``lr`` 2e-4 instead of 5e-4 and ``beta2`` 0.99 instead of 0.999: the WGAN critic's gradient
      scale changes fast early on and the second moment must follow it.
    * ``adversarial_warmup`` ramps the adversarial weight up from 0 over that many steps, so the
      reconstruction loop lays out class-dependent shapes before the critic starts to pull.
    * ``gp_every`` > 1 applies the penalty lazily (StyleGAN2's lazy regularisation, weight times
      ``gp_every``) to save the double backward pass; 1 (every step) is the default because the
      lazy variant let the critic's gradients grow between penalties.
    """

    iterations: int = 2400
    batch_size: int = 8
    seed: int = 0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.99
    adversarial_weight: float = 0.05
    adversarial_warmup: int = 0
    gp_weight: float = 10.0
    gp_every: int = 1
    reconstruction_weight: float = 10.0
    latent_weight: float = 1.0
    kl_weight: float = 0.01
    drift_weight: float = 1e-3
    ema_decay: float = 0.999
    diff_augment: bool = True
    flip_real: bool = True
    architecture: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The device types a generator trains on.
TRAINING_DEVICES = ("cpu", "cuda", "mps")


def check_device(device: torch.device | str, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` this machine has (cpu, cuda, cuda:N or mps), or a
    one-line ``ValueError``."""
    return checks.check_device(device, name, kinds=TRAINING_DEVICES)


def _rng_states(cpu_rng: torch.Generator, device_rng: torch.Generator) -> dict[str, Any]:
    states: dict[str, Any] = {
        "cpu_rng": cpu_rng.get_state(),
        "device_rng": device_rng.get_state(),
        "torch_global": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return states


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


class GeneratorTrainer(ABC):
    """Loop, checkpoints, RNG and export for one learned generator on one ``DefectCropSet``."""

    architecture: ClassVar[str] = ""
    #: The architecture's config dataclass (:class:`~defectaug.generators.hub.CardConfig`).
    config_class: ClassVar[type[CardConfig]]

    @classmethod
    def default_gp_weight(cls, layer_size: int, batch_size: int) -> float:
        """The critic penalty's weight when ``--gp-weight`` is not given: WGAN-GP's 10."""
        return TrainConfig.gp_weight

    @classmethod
    def architecture_config(
        cls,
        config: TrainConfig,
        *,
        defect_types: tuple[str, ...] | list[str],
        channels: int,
        layer_size: int,
        native_sizes: dict[str, list[int]] | None = None,
        **data_fields: Any,
    ) -> Any:
        """The config a run trains: the data's shape (and the architecture's ``data_fields``
        taken from the data) plus ``config.architecture``."""
        return cls.config_class(
            **{
                "defect_types": tuple(defect_types),
                "channels": channels,
                "layer_size": layer_size,
                "native_sizes": native_sizes or {},
                **data_fields,
                **config.architecture,
            }
        )

    def __init__(
        self, crops: DefectCropSet, config: TrainConfig, device: torch.device | str = "cpu"
    ) -> None:
        self.crops = crops
        self.config = config
        self.device = check_device(device)
        memory.check_fits(
            type(self).memory_estimate(
                config,
                defect_types=crops.type_names,
                channels=crops.content.shape[1],
                layer_size=crops.content.shape[-1],
                crops_bytes=0
                if self.device.type == "cpu"
                else crops.content.nbytes + crops.alpha.nbytes,
            ),
            config.batch_size,
            crops.content.shape[-1],
            self.device,
        )
        # All draws come from two generators the checkpoint stores: indices on CPU, noise on device.
        self.cpu_rng = torch.Generator().manual_seed(config.seed)
        self.device_rng = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        torch.manual_seed(config.seed)
        self.iteration = 0
        self.elapsed_s = 0.0
        self.history: list[dict[str, float]] = []
        self.crops_on_device = crops.to(self.device)

    # ---------------------------------------------------------------- to implement
    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every module whose state a checkpoint holds."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser whose state a checkpoint holds."""

    @abstractmethod
    def training_step(self) -> dict[str, float]:
        """One optimisation step; returns the losses to log."""

    @abstractmethod
    def export_generator(self) -> PretrainedDefectGenerator:
        """The generator to ship (CPU, eval mode)."""

    @classmethod
    @abstractmethod
    def memory_estimate(
        cls,
        config: TrainConfig,
        *,
        defect_types: tuple[str, ...],
        channels: int,
        layer_size: int,
        crops_bytes: int = 0,
    ) -> memory.MemoryEstimate:
        """Peak memory of one training step, computed without allocating the model."""

    def model_config(self) -> dict[str, Any] | None:
        """The resolved architecture a checkpoint must match (``None``: shapes only)."""
        return None

    @staticmethod
    def load_data(
        root: str | Path,
        *,
        split: str | None,
        types: list[str],
        layer_size: int,
        margin: int,
        min_area: int,
        seed: int,
    ) -> DefectCropSet:
        """The training data of this architecture from a dataset folder (``defectaug train``)."""
        return load_defect_crops(
            root, split=split, types=types, layer_size=layer_size, margin=margin, min_area=min_area
        )

    # ---------------------------------------------------------------- batches
    def draw_batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A class-balanced batch: a uniform class per item, then a uniform crop of that class.

        Uniform classes keep the rare types (crack, fray: about a dozen crops each) from being
        drowned by the common ones, which class control needs.
        """
        crops = self.crops_on_device
        size = self.config.batch_size
        classes = torch.randint(0, len(crops.by_class), (size,), generator=self.cpu_rng)
        picks = torch.rand(size, generator=self.cpu_rng)
        index = torch.stack(
            [
                crops.by_class[c][min(int(p * len(crops.by_class[c])), len(crops.by_class[c]) - 1)]
                for c, p in zip(classes.tolist(), picks.tolist(), strict=True)
            ]
        ).to(self.device)
        content, alpha, labels = crops.content[index], crops.alpha[index], crops.labels[index]
        if self.config.flip_real:
            flips = torch.rand(size, 2, generator=self.cpu_rng).to(self.device) < 0.5
            content, alpha = _flip(content, alpha, flips)
        return content, alpha, labels

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as nested dicts of tensors and plain values."""
        return {
            "architecture": self.architecture,
            "iteration": self.iteration,
            "elapsed_s": self.elapsed_s,
            "history": self.history,
            "train_config": self.config.to_dict(),
            "model_config": self.model_config(),
            "modules": {name: module.state_dict() for name, module in self.modules().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "rng": _rng_states(self.cpu_rng, self.device_rng),
            "rng_device_type": self.device.type,
        }

    def setting_differences(self, state: Mapping[str, Any]) -> list[str]:
        """``field checkpoint-value -> this-run-value`` for every setting that differs.

        ``iterations`` may change (train on); the architecture is compared in its resolved form
        (``model_config``) rather than as the overrides given, except for native crop sizes, which
        describe the data and are not part of the model's shapes.
        """
        differences = []

        def compare(name: str, saved: Any, current: Any) -> None:
            if saved != current:
                differences.append(f"{name} {_describe(saved)} -> {_describe(current)}")

        compare("architecture", state.get("architecture"), self.architecture)
        saved_config = state.get("train_config")
        if not isinstance(saved_config, Mapping):
            return [*differences, "train_config missing"]
        current = json.loads(json.dumps(self.config.to_dict()))
        ignored = {*RESUMABLE_CHANGES, "architecture"}
        for name in sorted((set(current) | set(saved_config)) - ignored):
            compare(name, saved_config.get(name, "<missing>"), current.get(name, "<missing>"))
        saved_model = state.get("model_config")
        current_model = self.model_config()
        if isinstance(saved_model, Mapping) and current_model is not None:
            current_model = json.loads(json.dumps(current_model))
            for name in sorted((set(current_model) | set(saved_model)) - {"native_sizes"}):
                compare(
                    name, saved_model.get(name, "<missing>"), current_model.get(name, "<missing>")
                )
        saved_device = state.get("rng_device_type")
        if saved_device is not None:
            compare("device", saved_device, self.device.type)
        return differences

    def _shape_problems(self, state: Mapping[str, Any]) -> list[str]:
        problems = []
        saved_modules = state.get("modules", {})
        for name, module in self.modules().items():
            if name not in saved_modules:
                problems.append(f"module {name} missing")
                continue
            expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
            given = {k: tuple(v.shape) for k, v in saved_modules[name].items()}
            for key in sorted(set(expected) | set(given)):
                if expected.get(key) != given.get(key):
                    saved_shape, shape = given.get(key, "missing"), expected.get(key, "missing")
                    problems.append(f"{name}.{key} {saved_shape} vs {shape}")
        saved_optimizers = state.get("optimizers", {})
        for name, optimizer in self.optimizers().items():
            saved = saved_optimizers.get(name)
            if saved is None:
                problems.append(f"optimizer {name} missing")
                continue
            groups = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
            if [len(g.get("params", ())) for g in saved["param_groups"]] != groups:
                problems.append(f"optimizer {name} parameter groups")
                continue
            params = [p for group in optimizer.param_groups for p in group["params"]]
            for index, entries in saved["state"].items():
                for key, value in entries.items():
                    if not (0 <= int(index) < len(params)):
                        problems.append(f"optimizer {name} state for parameter {index}")
                    elif (
                        isinstance(value, torch.Tensor)
                        and value.dim()
                        and (value.shape != params[int(index)].shape)
                    ):
                        problems.append(f"optimizer {name} {index}.{key} {tuple(value.shape)}")
        current_rng = _rng_states(self.cpu_rng, self.device_rng)
        for key in ("cpu_rng", "device_rng", "torch_global"):
            saved_rng = state.get("rng", {}).get(key)
            if not isinstance(saved_rng, torch.Tensor):
                problems.append(f"rng {key} missing")
            elif saved_rng.dtype != torch.uint8 or saved_rng.shape != current_rng[key].shape:
                problems.append(
                    f"rng {key} {saved_rng.dtype} {tuple(saved_rng.shape)} vs "
                    f"{current_rng[key].dtype} {tuple(current_rng[key].shape)}"
                )
        return problems

    def load_state_dict(self, state: Mapping[str, Any], source: str = "checkpoint") -> None:
        """Restore a state from ``state_dict``, after checking it belongs to this run.

        Settings that differ (other than ``iterations``) are refused rather than applied: the
        optimiser moments and RNG states in the checkpoint belong to the old settings, so running
        on would record settings the run did not have.
        """
        differences = self.setting_differences(state)
        if differences:
            raise CheckpointError(
                f"resume: {source} was written with other settings: {'; '.join(differences)} "
                "(checkpoint -> this run); resume with the checkpoint's settings or train into "
                "a new folder"
            )
        try:
            problems = self._shape_problems(state)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            problems = [f"malformed state ({type(error).__name__}: {error})"]
        if problems:
            shown = ", ".join(problems[:4])
            if len(problems) > 4:
                shown += f" and {len(problems) - 4} more"
            raise CheckpointError(
                f"resume: {source} does not fit this run's model (checkpoint vs this run: {shown})"
            )
        try:
            for name, module in self.modules().items():
                module.load_state_dict(state["modules"][name])
            for name, optimizer in self.optimizers().items():
                saved = state["optimizers"][name]
                template = optimizer.state_dict()["param_groups"]
                # JSON has no tuples; Adam's betas and the like come back as lists.
                groups = [
                    {
                        key: tuple(value)
                        if isinstance(current.get(key), tuple) and isinstance(value, list)
                        else value
                        for key, value in group.items()
                    }
                    for group, current in zip(saved["param_groups"], template, strict=True)
                ]
                optimizer.load_state_dict({"state": saved["state"], "param_groups": groups})
            rng = state["rng"]
            self.cpu_rng.set_state(rng["cpu_rng"])
            self.device_rng.set_state(rng["device_rng"])
            torch.set_rng_state(rng["torch_global"])
            cuda_states = rng.get("torch_cuda") or []
            # No step draws from the global CUDA generators (all noise comes from device_rng), so
            # a machine with another GPU count resumes exactly without them.
            if (
                cuda_states
                and torch.cuda.is_available()
                and len(cuda_states) == torch.cuda.device_count()
            ):
                torch.cuda.set_rng_state_all(cuda_states)
            self.iteration = int(state["iteration"])
            self.elapsed_s = float(state["elapsed_s"])
            self.history = [dict(entry) for entry in state["history"]]
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"resume: {source} could not be applied ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''})"
            ) from None

    def save_checkpoint(self, folder: str | Path, stem: str = CHECKPOINT_STEM) -> Path:
        """Write ``folder/<stem>.safetensors`` + ``folder/<stem>.json``; returns the JSON path."""
        return save_checkpoint(self.state_dict(), folder, stem)

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: a run folder, its ``checkpoint.json`` or
        ``checkpoint.safetensors``. Nothing in it is executed; see ``checkpoint``."""
        state = load_checkpoint(path)
        self.load_state_dict(state, source=repr(str(path)))

    # ---------------------------------------------------------------- loop
    def fit(
        self,
        out_dir: str | Path,
        *,
        checkpoint_every: int = 500,
        sample_every: int = 500,
        time_budget_s: float | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train to ``config.iterations`` (or for ``time_budget_s`` of wall time) into ``out_dir``.

        Writes ``checkpoint.safetensors`` + ``checkpoint.json`` every ``checkpoint_every`` steps
        and at the end (0: only at the end), a sample grid ``samples/iter_XXXXXX.png`` every
        ``sample_every`` steps, and the loss history to ``history.json``. Returns a summary
        (iterations done, wall time, whether the budget stopped it, last losses).
        """
        for name, value in (("checkpoint_every", checkpoint_every), ("sample_every", sample_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{name}: expected 0 (only at the end) or a positive number of steps, "
                    f"got {value!r}"
                )
        out_dir = Path(out_dir)
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        total = self.config.iterations
        start = time.perf_counter()
        elapsed_before = self.elapsed_s
        stopped_by_budget = False
        bar = tqdm(
            total=total,
            initial=self.iteration,
            disable=not progress,
            desc=self.architecture,
            unit="it",
        )
        while self.iteration < total:
            losses = self.training_step()
            self.iteration += 1
            self.elapsed_s = elapsed_before + time.perf_counter() - start
            if not all(math.isfinite(v) for v in losses.values()):
                self.save_checkpoint(out_dir, stem="checkpoint_nonfinite")
                raise FloatingPointError(
                    f"training diverged at iteration {self.iteration}: losses {losses}"
                )
            self.history.append({"iteration": self.iteration, **losses})
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items() if k in ("d", "adv", "rec")})
            if sample_every and self.iteration % sample_every == 0:
                self.write_samples(out_dir / "samples" / f"iter_{self.iteration:06d}.png")
            if checkpoint_every and self.iteration % checkpoint_every == 0:
                self.save_checkpoint(out_dir)
            if time_budget_s is not None and self.elapsed_s >= time_budget_s:
                stopped_by_budget = self.iteration < total
                break
        bar.close()
        self.save_checkpoint(out_dir)
        self.write_samples(out_dir / "samples" / f"iter_{self.iteration:06d}.png")
        (out_dir / "history.json").write_text(json.dumps(self.history), encoding="utf-8")
        return {
            "iterations": self.iteration,
            "wall_time_s": self.elapsed_s,
            "stopped_by_time_budget": stopped_by_budget,
            "last_losses": self.history[-1] if self.history else {},
        }

    def write_samples(self, path: str | Path) -> Path:
        grid = self.sample_grid()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        return path

    @abstractmethod
    def sample_grid(self) -> np.ndarray:
        """An ``uint8`` image of current samples, one row pair per class."""


def _flip(
    content: torch.Tensor, alpha: torch.Tensor, flips: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    horizontal = flips[:, 0].view(-1, 1, 1, 1)
    vertical = flips[:, 1].view(-1, 1, 1, 1)
    content = torch.where(horizontal, content.flip(-1), content)
    alpha = torch.where(horizontal, alpha.flip(-1), alpha)
    return torch.where(vertical, content.flip(-2), content), torch.where(
        vertical, alpha.flip(-2), alpha
    )


def layer_grid(
    content: torch.Tensor, alpha: torch.Tensor, rows: int, *, gap: int = 2
) -> np.ndarray:
    """Tile layers row-major into a uint8 grid: each row of layers over mid-grey, then its alpha.

    Showing the layer over a flat grey (``alpha * content + (1 - alpha) * 0.5``) reveals what a
    composite would show; the alpha row below shows the mask the layer carries.
    """
    count, size = content.shape[0], content.shape[-1]
    columns = math.ceil(count / rows)
    blank = torch.ones(rows * columns - count, 3, size, size)
    shown = (alpha * content + (1.0 - alpha) * 0.5).expand(-1, 3, -1, -1).cpu()
    masks = alpha.expand(-1, 3, -1, -1).cpu()
    shown = torch.cat([shown, blank]).view(rows, 1, columns, 3, size, size)
    masks = torch.cat([masks, blank]).view(rows, 1, columns, 3, size, size)
    tiles = torch.cat([shown, masks], dim=1).flatten(0, 2)
    canvas = make_grid(tiles, nrow=columns, padding=gap, pad_value=1.0)
    return to_uint8(canvas).permute(1, 2, 0).numpy()


class DCDGANTrainer(GeneratorTrainer):
    """DCDGANc training (paper Table 1) with WGAN-GP, DiffAugment and an EMA generator.

    Per step, on a class-balanced batch of real layers ``I`` with classes ``c``:

    * encoder and generator: ``mu, logvar = E(I)``, ``I_r = G(z_r, c)`` with ``z_r``
      reparameterised, ``I_s = G(z_s, c)`` with ``z_s ~ N(0, 1)``; loss ``adv(I_r) + adv(I_s)
      + lambda_p |I - I_r|_1 + lambda_KL KL + lambda_l |z_s - mu(E(I_s))|_1``. The latent term
      updates G only (the paper updates E with the first three and G with the latent term): it
      goes through a frozen copy of E's parameters.
    * critic: WGAN loss ``D(I_r) + D(I_s) - 2 D(I)`` (the paper weights real twice against the two
      kinds of fakes) + ``gp_weight`` * gradient penalty on real/random-sample mixes + a small drift
      term ``drift_weight * D(I)^2`` that keeps the unbounded critic output from wandering.

    Few-shot additions and why: DiffAugment on every critic input (see ``augment``), random flips of
    the real crops (4x the data for the reconstruction loop as well), class-balanced batches, and an
    exponential moving average of the generator's weights as the shipped generator (GAN weights
    oscillate on tiny data; the average samples cleaner than any single iterate).
    """

    architecture: ClassVar[str] = "dcdgan"
    config_class: ClassVar[type[CardConfig]] = DCDGANConfig

    def __init__(
        self, crops: DefectCropSet, config: TrainConfig, device: torch.device | str = "cpu"
    ) -> None:
        arch = self.architecture_config(
            config,
            defect_types=crops.type_names,
            channels=crops.content.shape[1],
            layer_size=crops.content.shape[-1],
            native_sizes=crops.native_sizes,
        )
        if arch.layer_size != crops.content.shape[-1] or arch.channels != crops.content.shape[1]:
            raise ValueError(
                f"architecture: layer_size/channels ({arch.layer_size}, {arch.channels}) "
                "do not match the "
                f"crops ({crops.content.shape[-1]}, {crops.content.shape[1]})"
            )
        super().__init__(crops, config, device)
        self.arch = arch
        self.model = DCDGAN(arch).to(self.device)
        self.discriminator = DCDGANDiscriminator(arch).to(self.device)
        self.ema_generator = copy.deepcopy(self.model.generator).requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_ge = torch.optim.Adam(self.model.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        grid_rng = torch.Generator().manual_seed(config.seed + 2)
        self.grid_columns = 8
        self.grid_z = torch.randn(
            arch.num_classes * self.grid_columns, arch.latent_dim, generator=grid_rng
        )

    @classmethod
    def memory_estimate(
        cls,
        config: TrainConfig,
        *,
        defect_types: tuple[str, ...],
        channels: int,
        layer_size: int,
        crops_bytes: int = 0,
    ) -> memory.MemoryEstimate:
        arch = cls.architecture_config(
            config, defect_types=defect_types, channels=channels, layer_size=layer_size
        )
        # Built on the meta device: exact parameter counts for any width without allocating.
        with torch.device("meta"):
            model, critic = DCDGAN(arch), DCDGANDiscriminator(arch)
        fixed = _adam_bytes((model, critic), model.generator) + crops_bytes
        resolutions = arch.resolutions()
        generator_features = sum(arch.width_at(r) * r * r for r in resolutions)
        critic_features = arch.width * layer_size**2 + sum(
            arch.width_at(r) * r * r for r in resolutions[:-1]
        )
        per_item = _DCDGAN_BYTES_PER_FEATURE * 4 * (generator_features + critic_features)
        return memory.MemoryEstimate(per_item=per_item, fixed=fixed)

    def model_config(self) -> dict[str, Any]:
        return self.arch.to_dict()

    def modules(self) -> dict[str, nn.Module]:
        return {
            "model": self.model,
            "discriminator": self.discriminator,
            "ema_generator": self.ema_generator,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator_encoder": self.opt_ge, "discriminator": self.opt_d}

    def _critic(
        self, content: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.config.diff_augment:
            content, alpha = diff_augment(content, alpha, self.device_rng)
        return self.discriminator(content, alpha, labels)

    def training_step(self) -> dict[str, float]:
        cfg = self.config
        real_content, real_alpha, labels = self.draw_batch()
        onehot = F.one_hot(labels, self.arch.num_classes).float()
        batch = labels.shape[0]
        generator, encoder = self.model.generator, self.model.encoder

        # ---- encoder + generator
        self.discriminator.requires_grad_(False)
        mu, logvar = encoder(real_content, real_alpha)
        eps = torch.randn(mu.shape, generator=self.device_rng, device=self.device)
        z_r = mu + eps * torch.exp(0.5 * logvar)
        z_s = torch.randn(mu.shape, generator=self.device_rng, device=self.device)
        fake_content, fake_alpha = generator(torch.cat([z_r, z_s]), torch.cat([onehot, onehot]))
        rec_content, rec_alpha = fake_content[:batch], fake_alpha[:batch]
        smp_content, smp_alpha = fake_content[batch:], fake_alpha[batch:]
        adv = -self._critic(fake_content, fake_alpha, torch.cat([labels, labels])).mean() * 2.0
        rec = F.l1_loss(rec_content, real_content) + F.l1_loss(rec_alpha, real_alpha)
        kl = -0.5 * torch.mean(torch.sum(1.0 + logvar - mu.square() - logvar.exp(), dim=1))
        frozen = {name: p.detach() for name, p in encoder.named_parameters()}
        mu_hat, _ = functional_call(encoder, frozen, (smp_content, smp_alpha))
        latent = F.l1_loss(mu_hat, z_s)
        loss_ge = (
            self.adversarial_scale() * adv
            + cfg.reconstruction_weight * rec
            + cfg.kl_weight * kl
            + cfg.latent_weight * latent
        )
        self.opt_ge.zero_grad(set_to_none=True)
        loss_ge.backward()
        self.opt_ge.step()
        self.discriminator.requires_grad_(True)

        # ---- critic, on this step's fakes (detached: one generator pass serves both updates)
        fake_content, fake_alpha = fake_content.detach(), fake_alpha.detach()
        d_real = self._critic(real_content, real_alpha, labels)
        d_fake = self._critic(fake_content, fake_alpha, torch.cat([labels, labels]))
        wasserstein = d_fake.mean() * 2.0 - 2.0 * d_real.mean()
        drift = d_real.square().mean()
        loss_d = wasserstein + cfg.drift_weight * drift
        losses: dict[str, float] = {}
        if self.iteration % cfg.gp_every == 0:
            penalty = self._gradient_penalty(
                real_content, real_alpha, smp_content.detach(), smp_alpha.detach(), labels
            )
            loss_d = loss_d + cfg.gp_weight * cfg.gp_every * penalty
            losses["gp"] = float(penalty.detach())
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self._update_ema()
        return {
            **losses,
            "d": float(loss_d.detach()),
            "wdist": float(-wasserstein.detach()) / 2.0,
            "adv": float(adv.detach()),
            "rec": float(rec.detach()),
            "kl": float(kl.detach()),
            "latent": float(latent.detach()),
        }

    def adversarial_scale(self) -> float:
        """The adversarial weight at this step: ramped up linearly over ``adversarial_warmup``."""
        cfg = self.config
        if cfg.adversarial_warmup <= 0:
            return cfg.adversarial_weight
        return cfg.adversarial_weight * min(1.0, self.iteration / cfg.adversarial_warmup)

    def _gradient_penalty(
        self,
        real_content: torch.Tensor,
        real_alpha: torch.Tensor,
        fake_content: torch.Tensor,
        fake_alpha: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """WGAN-GP: ``(|grad D(x_mix)| - 1)^2`` on random per-item mixes of real and fake layers."""
        mix = torch.rand(labels.shape[0], 1, 1, 1, generator=self.device_rng, device=self.device)
        mixed_content = (mix * real_content + (1 - mix) * fake_content).requires_grad_(True)
        mixed_alpha = (mix * real_alpha + (1 - mix) * fake_alpha).requires_grad_(True)
        d_mixed = self._critic(mixed_content, mixed_alpha, labels)
        grads = torch.autograd.grad(d_mixed.sum(), [mixed_content, mixed_alpha], create_graph=True)
        grad_norm = torch.cat([g.flatten(1) for g in grads], dim=1).norm(dim=1)
        return (grad_norm - 1.0).square().mean()

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up: early on the average would be dominated by the random initial weights.
        decay = min(self.config.ema_decay, (1.0 + self.iteration) / (10.0 + self.iteration))
        for ema, live in zip(
            self.ema_generator.parameters(), self.model.generator.parameters(), strict=True
        ):
            ema.lerp_(live, 1.0 - decay)

    def export_generator(self) -> DCDGAN:
        exported = DCDGAN(self.arch)
        exported.encoder.load_state_dict(self.model.encoder.state_dict())
        exported.generator.load_state_dict(self.ema_generator.state_dict())
        return exported.cpu().eval()

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        num_classes = self.arch.num_classes
        labels = torch.arange(num_classes).repeat_interleave(self.grid_columns)
        onehot = F.one_hot(labels, num_classes).float().to(self.device)
        self.ema_generator.eval()
        content, alpha = self.ema_generator(self.grid_z.to(self.device), onehot)
        return layer_grid(content, alpha, rows=num_classes)


class DefectGANTrainer(GeneratorTrainer):
    """Defect-GAN training (Zhang et al. 2021, Sec. 3.1) on unpaired normal and defect images.

    Per step, on a class-balanced batch of real defect windows ``d`` with masks ``m`` and classes
    ``c`` and a batch of normal crops ``n``, with ``A(m, c)`` the control map of region ``m`` for
    class ``c`` and ``A_n`` the "normal" (restore) map:

    * generator, both cycles of the paper in two batched passes: ``n -> d' = G(n, A(m, c)) ->
      n^ = G(d', A_n)`` and ``d -> r = G(d, A_n) -> d^ = G(r, A(m, c))``. Loss ``adv(d') +
      adv(r) + CLS_FAKE * (ce(d', c) + ce(r, normal)) + REC * (|n - n^| + |d - d^|) + SD_CYC *
      (|s_d' - s_n^| + |s_r - s_d^|) + SD_CON * mean of the four maps + OUTSIDE * mean of the
      four maps outside ``m`` + MASK * (|s_r - m| + |s_d^ - m|)``. The normal crops are paired
      with the batch's real masks at random: what a defacement is asked to draw is a real
      defect's region.
    * discriminator: non-saturating GAN loss (the paper's log-likelihood form) on its patch
      logits, real: ``d`` and ``n``; fake: ``d'`` and ``r``; plus ``CLS_REAL * ce`` of the real
      images' classes (``normal`` for ``n``).

    DiffAugment on every discriminator input and an EMA of the generator (the shipped weights)
    as in :class:`DCDGANTrainer`, for the same few-shot reasons. ``TrainConfig``'s
    ``adversarial_weight`` scales the adversarial term (1 is the paper's); its DCDGAN-specific
    weights are not used.
    """

    architecture: ClassVar[str] = "defectgan"
    config_class: ClassVar[type[CardConfig]] = DefectGANConfig
    #: The paper's lambda_cls^r, lambda_cls^f, lambda_rec, lambda_sd-cyc, lambda_sd-con.
    CLS_REAL: ClassVar[float] = 2.0
    CLS_FAKE: ClassVar[float] = 5.0
    REC: ClassVar[float] = 5.0
    SD_CYC: ClassVar[float] = 5.0
    SD_CON: ClassVar[float] = 1.0
    #: Not in the paper (its control maps are constant): map mass outside the requested region,
    #: ten times the overall area term so placement wins over the shape the data suggests.
    OUTSIDE: ClassVar[float] = 10.0
    #: Not in the paper (it has image labels only): the maps of the real defect images (restore
    #: ``s_r``, re-deface ``s_d^``) pulled toward their real masks. Without it every map is 0
    #: and both cycles hold trivially (nothing painted, nothing to repaint) until the
    #: adversarial and class terms break the tie, which a CPU budget of a few thousand steps
    #: does not reach; at the weight of the cycle terms, the area term cannot outweigh it.
    MASK: ClassVar[float] = 5.0

    def __init__(
        self, crops: DefectCropSet, config: TrainConfig, device: torch.device | str = "cpu"
    ) -> None:
        if not isinstance(crops, SceneCropSet):
            raise ValueError(
                "crops: Defect-GAN trains on a SceneCropSet (defect windows with their "
                f"surface, and normal crops; see load_scene_crops), got {type(crops).__name__}"
            )
        arch = self.architecture_config(
            config,
            defect_types=crops.type_names,
            channels=crops.content.shape[1],
            layer_size=crops.content.shape[-1],
            native_sizes=crops.native_sizes,
            prior_counts=crops.counts(),
        )
        super().__init__(crops, config, device)
        self.arch = arch
        self.generator = DefectGANGenerator(arch).to(self.device)
        self.discriminator = DefectGANDiscriminator(arch).to(self.device)
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        # Fixed inputs of the sample grids: the same normals and regions at every grid.
        grid_rng = torch.Generator().manual_seed(config.seed + 2)
        self.grid_columns = 6
        normals = crops.normals
        self.grid_normals = normals[
            torch.randint(len(normals), (self.grid_columns,), generator=grid_rng)
        ]
        self.grid_masks = torch.stack(
            [
                crops.alpha[members[torch.randint(len(members), (1,), generator=grid_rng)][0]]
                for members in crops.by_class
                for _ in range(self.grid_columns)
            ]
        )

    @staticmethod
    def load_data(
        root: str | Path,
        *,
        split: str | None,
        types: list[str],
        layer_size: int,
        margin: int,
        min_area: int,
        seed: int,
    ) -> SceneCropSet:
        # ``margin`` does not apply: windows get prepare_defect_crop's proportional border.
        return load_scene_crops(
            root, split=split, types=types, layer_size=layer_size, min_area=min_area, seed=seed
        )

    @classmethod
    def memory_estimate(
        cls,
        config: TrainConfig,
        *,
        defect_types: tuple[str, ...],
        channels: int,
        layer_size: int,
        crops_bytes: int = 0,
    ) -> memory.MemoryEstimate:
        arch = cls.architecture_config(
            config, defect_types=defect_types, channels=channels, layer_size=layer_size
        )
        with torch.device("meta"):
            generator, critic = DefectGANGenerator(arch), DefectGANDiscriminator(arch)
        fixed = _adam_bytes((generator, critic), generator) + crops_bytes
        w, s = arch.width, layer_size
        # Feature floats of one generator pass (encoder, blocks with their SPADE maps, decoder)
        # and one critic pass per image; four generator passes and four critic passes per item.
        generator_features = (
            3 * w * s * s
            + 2 * 2 * w * (s // 2) ** 2
            + (2 + 6 * arch.blocks) * 4 * w * (s // 4) ** 2
            + 3 * (2 * w * (s // 2) ** 2 + w * s * s)
        )
        critic_features = 2 * w * (s // 2) ** 2 * 2
        per_item = _DCDGAN_BYTES_PER_FEATURE * 4 * 4 * (generator_features + critic_features)
        return memory.MemoryEstimate(per_item=per_item, fixed=fixed)

    def model_config(self) -> dict[str, Any]:
        return self.arch.to_dict()

    def modules(self) -> dict[str, nn.Module]:
        return {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "ema_generator": self.ema_generator,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    def draw_normals(self) -> torch.Tensor:
        """A batch of normal crops, uniformly drawn and randomly flipped."""
        normals = self.crops_on_device.normals
        size = self.config.batch_size
        index = torch.randint(len(normals), (size,), generator=self.cpu_rng).to(self.device)
        flips = torch.rand(size, 2, generator=self.cpu_rng).to(self.device) < 0.5
        picked = normals[index]
        return _flip(picked, picked[:, :1], flips)[0]

    def _discriminate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.diff_augment:
            images, _ = diff_augment(images, images[:, :1], self.device_rng)
        return self.discriminator(images)

    def training_step(self) -> dict[str, float]:
        real_d, masks, labels = self.draw_batch()
        normals = self.draw_normals()
        batch, num_classes = labels.shape[0], self.arch.num_classes
        normal_label = torch.full_like(labels, num_classes)
        deface = control_map(masks, labels, num_classes)
        restore = restoration_control(batch, num_classes, self.arch.layer_size, real_d)
        generator = self.generator

        # ---- generator: both cycles, each pass batched over the two directions
        self.discriminator.requires_grad_(False)
        f1, s1 = generator(
            torch.cat([normals, real_d]), torch.cat([deface, restore]), self.device_rng
        )
        fake_d = compose(normals, f1[:batch], s1[:batch])
        restored = compose(real_d, f1[batch:], s1[batch:])
        f2, s2 = generator(
            torch.cat([fake_d, restored]), torch.cat([restore, deface]), self.device_rng
        )
        cycled_n = compose(fake_d, f2[:batch], s2[:batch])
        cycled_d = compose(restored, f2[batch:], s2[batch:])
        fakes = torch.cat([fake_d, restored])
        fake_labels = torch.cat([labels, normal_label])
        source, classes = self._discriminate(fakes)
        adv = F.binary_cross_entropy_with_logits(source, torch.ones_like(source))
        cls_fake = F.cross_entropy(classes, fake_labels)
        rec = F.l1_loss(cycled_n, normals) + F.l1_loss(cycled_d, real_d)
        sd_cyc = F.l1_loss(s1[:batch], s2[:batch]) + F.l1_loss(s1[batch:], s2[batch:])
        maps = torch.cat([s1, s2])
        sd_con = maps.mean() * 2.0
        outside = (maps * (1.0 - masks.repeat(4, 1, 1, 1))).mean() * 2.0
        mask = F.l1_loss(s1[batch:], masks) + F.l1_loss(s2[batch:], masks)
        loss_g = (
            self.adversarial_scale() * adv
            + self.CLS_FAKE * cls_fake
            + self.REC * rec
            + self.SD_CYC * sd_cyc
            + self.SD_CON * sd_con
            + self.OUTSIDE * outside
            + self.MASK * mask
        )
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)

        # ---- discriminator, on this step's fakes
        real_source, real_classes = self._discriminate(torch.cat([real_d, normals]))
        fake_source, _ = self._discriminate(fakes.detach())
        d_adv = F.binary_cross_entropy_with_logits(
            real_source, torch.ones_like(real_source)
        ) + F.binary_cross_entropy_with_logits(fake_source, torch.zeros_like(fake_source))
        cls_real = F.cross_entropy(real_classes, torch.cat([labels, normal_label]))
        loss_d = d_adv + self.CLS_REAL * cls_real
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self._update_ema()
        with torch.no_grad():
            inside = (s1[:batch] * masks).sum() / s1[:batch].sum().clamp_min(1e-6)
        return {
            "d": float(d_adv.detach()),
            "cls_real": float(cls_real.detach()),
            "adv": float(adv.detach()),
            "cls_fake": float(cls_fake.detach()),
            "rec": float(rec.detach()),
            "sd_cyc": float(sd_cyc.detach()),
            "sd_con": float(sd_con.detach()),
            "outside": float(outside.detach()),
            "mask": float(mask.detach()),
            "inside_share": float(inside),
            "g": float(loss_g.detach()),
        }

    def adversarial_scale(self) -> float:
        cfg = self.config
        if cfg.adversarial_warmup <= 0:
            return cfg.adversarial_weight
        return cfg.adversarial_weight * min(1.0, self.iteration / cfg.adversarial_warmup)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1.0 + self.iteration) / (10.0 + self.iteration))
        for ema, live in zip(
            self.ema_generator.parameters(), self.generator.parameters(), strict=True
        ):
            ema.lerp_(live, 1.0 - decay)

    def export_generator(self) -> DefectGAN:
        exported = DefectGAN(self.arch)
        exported.generator.load_state_dict(self.ema_generator.state_dict())
        exported.set_prior_masks(self.crops.alpha, self.crops.labels)
        return exported.cpu().eval()

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """Per class a row of defacements of fixed normals, then the maps; last, restorations
        of real defects, then their maps."""
        num_classes, columns = self.arch.num_classes, self.grid_columns
        normals = self.grid_normals.to(self.device).repeat(num_classes, 1, 1, 1)
        masks = self.grid_masks.to(self.device)
        labels = torch.arange(num_classes, device=self.device).repeat_interleave(columns)
        rng = torch.Generator(device=self.device).manual_seed(self.config.seed + 3)
        self.ema_generator.eval()
        f, s = self.ema_generator(normals, control_map(masks, labels, num_classes), rng)
        defaced = compose(normals, f, s)
        real = self.crops_on_device.content[
            torch.stack([members[0] for members in self.crops_on_device.by_class])
        ]
        control = restoration_control(len(real), num_classes, self.arch.layer_size, real)
        f_r, s_r = self.ema_generator(real, control, rng)
        restored = compose(real, f_r, s_r)
        rows = []
        for row in range(num_classes):
            part = slice(row * columns, (row + 1) * columns)
            rows += [defaced[part], s[part]]
        blank = torch.ones(max(0, columns - len(real)), *real.shape[1:], device=self.device)
        rows += [torch.cat([restored, blank])[:columns], torch.cat([s_r, blank])[:columns]]
        tiles = torch.cat(rows).expand(-1, 3, -1, -1).cpu()
        canvas = make_grid(tiles, nrow=columns, padding=2, pad_value=1.0)
        return to_uint8(canvas).permute(1, 2, 0).numpy()


TRAINERS: dict[str, type[GeneratorTrainer]] = {
    DCDGANTrainer.architecture: DCDGANTrainer,
    DefectGANTrainer.architecture: DefectGANTrainer,
}
