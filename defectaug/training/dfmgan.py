"""DFMGAN training, both stages, on the shared :class:`GeneratorTrainer` loop.

Stage 1 trains the StyleGAN2-style backbone on crops of the normal images; stage 2 loads a
stage-1 checkpoint (its EMA backbone and its image discriminator), freezes the backbone and
trains the defect-aware residual blocks, the ToMask layers, the defect mapping network and the
class embedding on the defect windows and their masks. Importing this module registers the
trainer as ``TRAINERS["dfmgan"]`` (``defectaug.training`` imports it).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid

from defectaug._io import to_uint8
from defectaug.generators.dfmgan import (
    BACKBONE_FIELDS,
    DFMGAN,
    DFMGANBackbone,
    DFMGANConfig,
    DFMGANDiscriminator,
    DFMGANGenerator,
    image_discriminator,
    make_noise,
    match_discriminator,
    normalize_code,
)
from defectaug.generators.hub import CardConfig
from defectaug.training import memory
from defectaug.training.augment import diff_augment
from defectaug.training.checkpoint import CheckpointError, load_checkpoint
from defectaug.training.data import DefectCropSet, SceneCropSet
from defectaug.training.trainer import (
    _DCDGAN_BYTES_PER_FEATURE,
    TRAINERS,
    DefectGANTrainer,
    GeneratorTrainer,
    TrainConfig,
    _adam_bytes,
    _flip,
)

STAGES = (1, 2)


class DFMGANTrainer(GeneratorTrainer):
    """DFMGAN training (Duan et al. 2023, Sec. 3) in two stages.

    Stage 1, on a batch of normal crops ``n``: generator loss ``softplus(-D(G(z)))`` (StyleGAN2's
    non-saturating logistic loss); discriminator ``softplus(D(G(z))) + softplus(-D(n))`` plus the
    R1 penalty ``gp_weight / 2 * |grad D(n)|^2`` every ``gp_every`` steps (weighted by
    ``gp_every``, StyleGAN2's lazy regularisation).

    Stage 2, on a class-balanced batch of defect windows ``d`` with masks ``m`` and classes ``c``:
    pairs of fakes share an object code and differ in their defect code. Generator loss
    ``softplus(-D(x, c)) + softplus(-D_match(x, M, c)) + MODE_SEEKING * L_ms`` with ``L_ms =
    mean_pairs(|w1 - w2|_1 / (|M1 - M2|_1 + MS_EPS))`` (the seed's Eq. 2 on the mask
    probabilities, both norms as means); both discriminators as in stage 1 (real: ``d`` and
    ``(d, m)``) with R1. ``D`` starts from the stage-1 discriminator (fine-tuned, as the seed
    does) plus a class projection; ``D_match`` is new, a quarter of the channels.

    DiffAugment on every discriminator input (geometry shared by image and mask), random flips
    of the real crops, an EMA of the generator as the shipped weights, as the other trainers.
    Not used from ``TrainConfig``: ``adversarial_weight`` / ``adversarial_warmup`` (the loss is
    adversarial only, and Adam is blind to its scale) and the DCDGAN-specific weights.

    Departures from the seed: no path-length regulariser (its cost on a CPU budget); the
    seed's D_match loss is Wasserstein with R1, here the logistic loss of D (the same loss for
    both discriminators keeps their balance comparable; R1 is kept).
    """

    architecture: ClassVar[str] = "dfmgan"
    config_class: ClassVar[type[CardConfig]] = DFMGANConfig
    #: The seed's lambda for the mode-seeking loss.
    MODE_SEEKING: ClassVar[float] = 0.1
    #: Keeps the mode-seeking ratio finite when two masks coincide.
    MS_EPS: ClassVar[float] = 1e-2

    @classmethod
    def default_gp_weight(cls, layer_size: int, batch_size: int) -> float:
        """StyleGAN2-ADA's R1 heuristic ``0.0002 * size**2 / batch`` (0.1 at 64 px, batch 8).

        The other trainers' 10 weighs WGAN-GP's penalty on interpolates of a Wasserstein critic;
        R1 on this logistic critic's real inputs wants a weight that scales with the image area.
        """
        return 0.0002 * layer_size**2 / batch_size

    def __init__(
        self,
        crops: DefectCropSet,
        config: TrainConfig,
        device: torch.device | str = "cpu",
        *,
        stage: int = 1,
        backbone: str | Path | None = None,
    ) -> None:
        if not isinstance(crops, SceneCropSet):
            raise ValueError(
                "crops: DFMGAN trains on a SceneCropSet (defect windows with their masks, and "
                f"normal crops; see load_scene_crops), got {type(crops).__name__}"
            )
        if stage not in STAGES:
            raise ValueError(f"stage: expected 1 or 2, got {stage!r}")
        if stage == 2 and backbone is None:
            raise ValueError("backbone: stage 2 needs a stage-1 run folder or checkpoint")
        if stage == 1 and backbone is not None:
            raise ValueError("backbone: only stage 2 starts from a stage-1 checkpoint")
        if stage == 2 and config.batch_size < 2:
            raise ValueError("batch_size: stage 2 needs at least 2 (fakes come in pairs)")
        arch = self.architecture_config(
            config,
            defect_types=crops.type_names,
            channels=crops.content.shape[1],
            layer_size=crops.content.shape[-1],
            native_sizes=crops.native_sizes,
        )
        super().__init__(crops, config, device)
        self.arch, self.stage = arch, stage
        betas = (config.beta1, config.beta2)
        if stage == 1:
            self.generator: nn.Module = DFMGANBackbone(arch).to(self.device)
            self.discriminator = image_discriminator(arch, 0).to(self.device)
            self.match: DFMGANDiscriminator | None = None
            trained = list(self.generator.parameters())
        else:
            self.generator = DFMGANGenerator(arch).to(self.device)
            self.discriminator = image_discriminator(arch, arch.num_classes).to(self.device)
            self.match = match_discriminator(arch).to(self.device)
            self._load_backbone(backbone)
            self.generator.backbone.requires_grad_(False)
            trained = [p for p in self.generator.parameters() if p.requires_grad]
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False)
        self.opt_g = torch.optim.Adam(trained, lr=config.lr, betas=betas)
        critics = list(self.discriminator.parameters())
        if self.match is not None:
            critics += list(self.match.parameters())
        self.opt_d = torch.optim.Adam(critics, lr=config.lr, betas=betas)
        grid_rng = torch.Generator().manual_seed(config.seed + 2)
        self.grid_columns = 8 if stage == 1 else 6
        rows = 2 if stage == 1 else arch.num_classes
        count = rows * self.grid_columns
        self.grid_z = torch.randn(count, arch.latent_dim, generator=grid_rng)
        self.grid_z_defect = torch.randn(count, arch.latent_dim, generator=grid_rng)
        sides = self.generator.noise_sides()
        self.grid_noise = make_noise(sides, count, grid_rng, torch.device("cpu"))

    # ---------------------------------------------------------------- setup
    @staticmethod
    def cli_options(args: argparse.Namespace) -> dict[str, Any]:
        """``stage`` and ``backbone`` from ``defectaug train --stage --backbone``."""
        stage = 1 if args.stage is None else args.stage
        if stage == 2 and not args.backbone:
            raise ValueError("--backbone: --stage 2 needs the stage-1 run folder or checkpoint")
        if stage == 1 and args.backbone:
            raise ValueError("--backbone: only --stage 2 starts from a stage-1 checkpoint")
        return {"stage": stage, "backbone": args.backbone}

    def _load_backbone(self, path: str | Path | None) -> None:
        """The stage-1 EMA backbone and discriminator of the checkpoint at ``path``."""
        assert path is not None and isinstance(self.generator, DFMGANGenerator)
        state = load_checkpoint(path, what="backbone")
        saved = state.get("model_config") or {}
        if state.get("architecture") != self.architecture or saved.get("stage") != 1:
            raise CheckpointError(
                f"backbone: {str(path)!r} is not a stage-1 dfmgan checkpoint (architecture "
                f"{state.get('architecture')!r}, stage {saved.get('stage')!r})"
            )
        differences = [
            f"{name} {saved.get(name)!r} -> {getattr(self.arch, name)!r}"
            for name in BACKBONE_FIELDS
            if saved.get(name) != getattr(self.arch, name)
        ]
        if differences:
            raise CheckpointError(
                f"backbone: {str(path)!r} was trained with another backbone: "
                f"{'; '.join(differences)} (stage 1 -> this run)"
            )
        modules = state["modules"]
        self.generator.backbone.load_state_dict(modules["ema_generator"])
        missing, unexpected = self.discriminator.load_state_dict(
            modules["discriminator"], strict=False
        )
        if unexpected or set(missing) - {"projection.weight"}:
            raise CheckpointError(
                f"backbone: the discriminator of {str(path)!r} does not fit (missing {missing}, "
                f"unexpected {unexpected})"
            )

    # Stage 1 reads the normal crops (at the defect windows' range of scales), stage 2 the
    # defect windows and masks: Defect-GAN's data.
    load_data = staticmethod(DefectGANTrainer.load_data)

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
        # The larger stage (2): the whole generator, both discriminators; on the meta device.
        with torch.device("meta"):
            generator = DFMGANGenerator(arch)
            critics = (image_discriminator(arch, arch.num_classes), match_discriminator(arch))
        fixed = _adam_bytes((generator, *critics), generator) + crops_bytes
        resolutions = arch.resolutions()
        # Per item: the backbone pyramid and, from defect_from, a second one and the residual
        # blocks (about four feature maps per styled layer), and three critic passes.
        generator_features = sum(
            4 * arch.width_at(r) * r * r * (3 if r >= arch.defect_from else 1) for r in resolutions
        )
        critic_features = 3 * sum(2 * arch.width_at(r) * r * r for r in resolutions)
        per_item = _DCDGAN_BYTES_PER_FEATURE * 2 * (generator_features + critic_features)
        return memory.MemoryEstimate(per_item=per_item, fixed=fixed)

    def model_config(self) -> dict[str, Any]:
        return {**self.arch.to_dict(), "stage": self.stage}

    def modules(self) -> dict[str, nn.Module]:
        modules = {
            "generator": self.generator,
            "discriminator": self.discriminator,
            "ema_generator": self.ema_generator,
        }
        if self.match is not None:
            modules["match_discriminator"] = self.match
        return modules

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminators": self.opt_d}

    # ---------------------------------------------------------------- steps
    def draw_normals(self) -> torch.Tensor:
        """A batch of normal crops, uniformly drawn and randomly flipped."""
        normals = self.crops_on_device.normals
        size = self.config.batch_size
        index = torch.randint(len(normals), (size,), generator=self.cpu_rng).to(self.device)
        flips = torch.rand(size, 2, generator=self.cpu_rng).to(self.device) < 0.5
        picked = normals[index]
        return _flip(picked, picked[:, :1], flips)[0]

    def _noise(self, batch: int) -> list[torch.Tensor]:
        return make_noise(self.generator.noise_sides(), batch, self.device_rng, self.device)

    def _z(self, batch: int) -> torch.Tensor:
        return torch.randn(
            batch, self.arch.latent_dim, generator=self.device_rng, device=self.device
        )

    def _judge(
        self,
        critic: DFMGANDiscriminator,
        images: torch.Tensor,
        masks: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``critic``'s scores of images (and masks, stacked after them), DiffAugmented."""
        second = images[:, :1] if masks is None else masks
        if self.config.diff_augment:
            images, second = diff_augment(images, second, self.device_rng)
        inputs = images if masks is None else torch.cat([images, second], dim=1)
        return critic(inputs, labels)

    def _r1(
        self,
        critic: DFMGANDiscriminator,
        images: torch.Tensor,
        masks: torch.Tensor | None,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """R1: the squared norm of the critic's gradient at the real inputs."""
        inputs = [images.detach().requires_grad_(True)]
        if masks is not None:
            inputs.append(masks.detach().requires_grad_(True))
        scores = self._judge(critic, inputs[0], inputs[1] if masks is not None else None, labels)
        grads = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
        return sum(g.square().flatten(1).sum(dim=1) for g in grads).mean()

    def training_step(self) -> dict[str, float]:
        return self._stage1_step() if self.stage == 1 else self._stage2_step()

    def _critic_update(self, loss: torch.Tensor, penalties: list[torch.Tensor]) -> float:
        cfg = self.config
        penalty = sum(penalties) if penalties else None
        if penalty is not None:
            loss = loss + cfg.gp_weight / 2.0 * cfg.gp_every * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return float("nan") if penalty is None else float(penalty.detach())

    def _stage1_step(self) -> dict[str, float]:
        real = self.draw_normals()
        batch = real.shape[0]
        self.discriminator.requires_grad_(False)
        w = self.generator.mapping(normalize_code(self._z(batch)))
        fake = self.generator(w, self._noise(batch)) * 0.5 + 0.5
        adv = F.softplus(-self._judge(self.discriminator, fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        adv.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)

        d_loss = (
            F.softplus(self._judge(self.discriminator, fake.detach())).mean()
            + F.softplus(-self._judge(self.discriminator, real)).mean()
        )
        penalties = []
        if self.iteration % self.config.gp_every == 0:
            penalties.append(self._r1(self.discriminator, real, None, None))
        r1 = self._critic_update(d_loss, penalties)
        self._update_ema()
        losses = {"d": float(d_loss.detach()), "adv": float(adv.detach())}
        if penalties:
            losses["r1"] = r1
        return losses

    def _stage2_step(self) -> dict[str, float]:
        assert isinstance(self.generator, DFMGANGenerator) and self.match is not None
        real, masks, labels = self.draw_batch()
        pairs = self.config.batch_size // 2
        generator = self.generator
        self.discriminator.requires_grad_(False)
        self.match.requires_grad_(False)
        with torch.no_grad():  # the frozen backbone's code
            w_object = generator.object_code(self._z(pairs)).repeat(2, 1)
        fake_labels = labels[:pairs].repeat(2)
        w_defect = generator.defect_code(self._z(2 * pairs), fake_labels)
        noise = [n.repeat(2, 1, 1, 1) for n in self._noise(pairs)]
        _, image, logits = generator(w_object, w_defect, noise)
        assert image is not None and logits is not None
        fake = image * 0.5 + 0.5
        fake_masks = torch.sigmoid(logits)
        adv = F.softplus(-self._judge(self.discriminator, fake, None, fake_labels)).mean()
        adv_match = F.softplus(-self._judge(self.match, fake, fake_masks, fake_labels)).mean()
        w_gap = (w_defect[:pairs] - w_defect[pairs:]).abs().mean(dim=1)
        mask_gap = (fake_masks[:pairs] - fake_masks[pairs:]).abs().mean(dim=(1, 2, 3))
        mode_seeking = (w_gap / (mask_gap + self.MS_EPS)).mean()
        loss_g = adv + adv_match + self.MODE_SEEKING * mode_seeking
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)
        self.match.requires_grad_(True)

        fake, fake_masks = fake.detach(), fake_masks.detach()
        d_image = (
            F.softplus(self._judge(self.discriminator, fake, None, fake_labels)).mean()
            + F.softplus(-self._judge(self.discriminator, real, None, labels)).mean()
        )
        d_match = (
            F.softplus(self._judge(self.match, fake, fake_masks, fake_labels)).mean()
            + F.softplus(-self._judge(self.match, real, masks, labels)).mean()
        )
        penalties = []
        if self.iteration % self.config.gp_every == 0:
            penalties += [
                self._r1(self.discriminator, real, None, labels),
                self._r1(self.match, real, masks, labels),
            ]
        r1 = self._critic_update(d_image + d_match, penalties)
        self._update_ema()
        with torch.no_grad():
            coverage = float((fake_masks >= 0.5).float().mean())
        losses = {
            "d": float(d_image.detach()),
            "d_match": float(d_match.detach()),
            "adv": float(adv.detach()),
            "adv_match": float(adv_match.detach()),
            "mode_seeking": float(mode_seeking.detach()),
            "mask_coverage": coverage,
            "g": float(loss_g.detach()),
        }
        if penalties:
            losses["r1"] = r1
        return losses

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1.0 + self.iteration) / (10.0 + self.iteration))
        for ema, live in zip(
            self.ema_generator.parameters(), self.generator.parameters(), strict=True
        ):
            ema.lerp_(live, 1.0 - decay)

    # ---------------------------------------------------------------- outputs
    def export_generator(self) -> DFMGAN | None:
        """Stage 2: the trained DFMGAN (CPU, eval mode). Stage 1: ``None``, the backbone lives
        in the run's checkpoint, which ``--stage 2 --backbone`` reads."""
        if self.stage == 1:
            return None
        exported = DFMGAN(self.arch)
        exported.generator.load_state_dict(self.ema_generator.state_dict())
        return exported.cpu().eval()

    @torch.no_grad()
    def sample_grid(self) -> np.ndarray:
        """Stage 1: two rows of generated normals. Stage 2: per class a row of defect-free
        images, the defective images of the same object codes, and their masks."""
        model = self.ema_generator.eval()
        device = self.device
        noise = [n.to(device) for n in self.grid_noise]
        z = self.grid_z.to(device)
        if self.stage == 1:
            w = model.mapping(normalize_code(z))
            tiles = (model(w, noise) * 0.5 + 0.5).clamp(0.0, 1.0)
        else:
            columns = self.grid_columns
            labels = torch.arange(self.arch.num_classes, device=device).repeat_interleave(columns)
            clean, defective, logits = model(
                model.object_code(z), model.defect_code(self.grid_z_defect.to(device), labels),
                noise,
            )  # fmt: skip
            masks = (logits >= 0).float()
            rows = []
            for row in range(self.arch.num_classes):
                part = slice(row * columns, (row + 1) * columns)
                rows += [clean[part] * 0.5 + 0.5, defective[part] * 0.5 + 0.5, masks[part]]
            tiles = torch.cat(rows).clamp(0.0, 1.0)
        tiles = tiles[:, :1].expand(-1, 3, -1, -1) if tiles.shape[1] == 1 else tiles[:, :3]
        canvas = make_grid(tiles.cpu(), nrow=self.grid_columns, padding=2, pad_value=1.0)
        return to_uint8(canvas).permute(1, 2, 0).numpy()


TRAINERS[DFMGANTrainer.architecture] = DFMGANTrainer
