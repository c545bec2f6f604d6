"""DFMGAN-style few-shot generator: a StyleGAN2 backbone plus defect-aware residual blocks.

After Duan et al., "Few-Shot Defect Image Generation via Defect-Aware Feature Manipulation"
(AAAI 2023), Sec. 3. Two training stages (``defectaug train --arch dfmgan --stage 1|2``):

1. A small StyleGAN2-style backbone learns defect-free surfaces: a mapping network ``z -> w``,
   a learned constant, modulated/demodulated 3 x 3 convolutions with per-layer noise inputs, and
   the *skip* architecture (a ToRGB at every resolution, summed up the pyramid).
2. The backbone is frozen. From resolution ``defect_from`` on (the seed attaches them at 64 of
   256; here a quarter of the output side too, 16 of 64), a defect-aware residual block ``R``
   next to each synthesis block ``S`` reads the same input and writes residual features,
   modulated by ``w_defect`` from a second mapping network fed the defect code. A ToMask turns
   the residual features into mask logits ``M``; residuals are added to the object features only
   where ``M >= 0`` (the seed's Eq. 1), and the manipulated features feed the next block.

For one object code the model therefore gives the defect-free image (the backbone alone), the
defective image and its mask: paired data, the defect the only change. The defect-free and
defective paths share every noise input.

One model for all defect types, with a class embedding: the embedding of the type is
concatenated to the (normalised) defect code before the defect mapping network. Why: one card
then serves ``sample(n, defect_type)`` for every type, as the library's other generators do, and
the rare types (about a dozen magnetic-tile crops of crack or fray) share the residual blocks and
the ToMask with the common ones instead of fitting about 1.5 k parameters per crop alone. The
seed's one model per type is the special case of training stage 2 with a single ``--types``
entry (the embedding is then a constant).

Departures from the seed, each for a reason:

* ToMask works like ToRGB (the skip architecture): every defect-aware resolution adds its mask
  logits to the upsampled ones of the coarser resolution, and the gate at each resolution is the
  sum so far. The seed has one ToMask at the first defect resolution and upsamples it; at 64 px
  output that mask would be 16 x 16, far too coarse for the thin cracks of the magnetic tiles.
* The defective image is the manipulated pyramid's image inside the mask (logits >= 0) and
  the defect-free image outside it. The seed gates the features only, and the convolutions of
  the next blocks spread the change a few pixels past the mask (about half of the change lay
  outside it on a tiny model); the image-level gate makes the pair differ exactly inside the
  mask, so the mask is an exact label of the change.
* Upsampling is bilinear before a 3 x 3 modulated convolution (not StyleGAN2's transposed
  convolution with an FIR filter), no style mixing, no path-length regulariser and no
  equalised learning rate: the model is a few hundred thousand parameters trained on a CPU, and
  these are the parts that cost the most time for the least effect at that size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defectaug._checks import check_int
from defectaug._seeding import SeedLike, as_generator
from defectaug.generators.base import DefectTypeArg, check_device
from defectaug.generators.dcdgan import padded_side, square_resize
from defectaug.generators.hub import (
    CardConfig,
    PretrainedDefectGenerator,
    lift_alpha_floor,
    register_architecture,
)
from defectaug.layer import DefectLayer

#: Gain that keeps a leaky ReLU(0.2) activation's second moment near 1 (StyleGAN's).
ACTIVATION_GAIN = math.sqrt(2.0)
#: Fields of ``DFMGANConfig`` that shape the backbone: a stage-1 checkpoint must match them.
BACKBONE_FIELDS = ("channels", "layer_size", "latent_dim", "mapping_layers", "width", "max_width")


def _power_of_two(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value > 0
        and not (value & (value - 1))
    )


@dataclass(frozen=True)
class DFMGANConfig(CardConfig):
    """Architecture of a DFMGAN; everything needed to rebuild the modules before loading weights.

    Attributes:
        defect_types: class names, in the order of the class embedding.
        channels: image channels (1 grayscale, 3 RGB).
        layer_size: side of the square images the generator writes (a power of two >= 8).
        latent_dim: size of both codes (object and defect) and of both ``w``.
        mapping_layers: fully connected layers of each mapping network.
        width: feature channels at full resolution; doubled at every halving up to ``max_width``.
        max_width: cap on feature channels at the coarse resolutions.
        defect_from: first resolution with a defect-aware residual block (a power of two above
            the 4 x 4 constant, at most ``layer_size``).
        native_sizes: per class, the pixel sides of the real training windows before they were
            resized to ``layer_size``; lets a compositor paste a layer at a realistic scale.
    """

    defect_types: tuple[str, ...]
    channels: int = 1
    layer_size: int = 64
    latent_dim: int = 64
    mapping_layers: int = 2
    width: int = 16
    max_width: int = 128
    defect_from: int = 16
    native_sizes: dict[str, list[int]] = field(default_factory=dict)

    #: Side of the learned constant the synthesis starts from.
    base_size: ClassVar[int] = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "defect_types", tuple(self.defect_types))
        if not self.defect_types or len(set(self.defect_types)) != len(self.defect_types):
            raise ValueError(f"defect_types: expected distinct names, got {self.defect_types!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
        if not _power_of_two(self.layer_size) or self.layer_size < 8:
            raise ValueError(f"layer_size: expected a power of two >= 8, got {self.layer_size!r}")
        for name in ("latent_dim", "mapping_layers", "width", "max_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if (
            not _power_of_two(self.defect_from)
            or not self.base_size < self.defect_from <= self.layer_size
        ):
            raise ValueError(
                f"defect_from: expected a power of two in ({self.base_size}, "
                f"{self.layer_size}], got {self.defect_from!r}"
            )
        unknown = set(self.native_sizes) - set(self.defect_types)
        if unknown:
            raise ValueError(f"native_sizes: names not in defect_types: {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return len(self.defect_types)

    def resolutions(self) -> list[int]:
        """Feature-map sides from the 4 x 4 constant up to ``layer_size``."""
        steps = int(math.log2(self.layer_size // self.base_size))
        return [self.base_size * 2**i for i in range(steps + 1)]

    def defect_resolutions(self) -> list[int]:
        return [r for r in self.resolutions() if r >= self.defect_from]

    def width_at(self, resolution: int) -> int:
        return min(self.max_width, self.width * (self.layer_size // resolution))


# ---------------------------------------------------------------------- layers
class MappingNetwork(nn.Module):
    """``z`` (normalised to unit second moment) through fully connected leaky-ReLU layers."""

    def __init__(self, in_dim: int, out_dim: int, layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [out_dim] * layers
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:], strict=False))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = code
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2) * ACTIVATION_GAIN
        return x


def normalize_code(code: torch.Tensor) -> torch.Tensor:
    """StyleGAN's pixel norm of a latent code: unit second moment per item."""
    return code * torch.rsqrt(code.square().mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: the weights scaled per input channel by a style from
    ``w``, then (``demodulate``) each output filter rescaled to unit norm; one grouped
    convolution for the whole batch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        w_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2
        fan_in = in_channels * kernel * kernel
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, kernel, kernel) / math.sqrt(fan_in)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = nn.Linear(w_dim, in_channels)
        nn.init.ones_(self.affine.bias)  # styles start near 1: the plain convolution

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        style = self.affine(w)
        weight = self.weight[None] * style[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        _, channels, height, width = x.shape
        out = F.conv2d(
            x.reshape(1, batch * channels, height, width),
            weight.reshape(-1, channels, *weight.shape[-2:]),
            padding=self.padding,
            groups=batch,
        )
        return out.reshape(batch, -1, height, width) + self.bias.view(1, -1, 1, 1)


class StyledLayer(nn.Module):
    """Modulated 3 x 3 convolution, noise input (strength learned, starting at 0), leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, upsample: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.conv(x, w) + self.noise_strength * noise
        return F.leaky_relu(x, 0.2) * ACTIVATION_GAIN


class SynthesisBlock(nn.Module):
    """Double the resolution: two styled layers (the first upsamples); its ToRGB (or ToMask)
    maps the features to ``out_dim`` planes."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv0 = StyledLayer(in_channels, out_channels, w_dim, upsample=True)
        self.conv1 = StyledLayer(out_channels, out_channels, w_dim, upsample=False)
        self.to_out = ModulatedConv2d(out_channels, out_dim, 1, w_dim, demodulate=False)

    def features(
        self, x: torch.Tensor, w: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        return self.conv1(self.conv0(x, w, noise[0]), w, noise[1])


def _upsample(image: torch.Tensor) -> torch.Tensor:
    return F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)


class DFMGANBackbone(nn.Module):
    """Stage 1: the StyleGAN2-style generator of defect-free images (skip architecture)."""

    def __init__(self, config: DFMGANConfig) -> None:
        super().__init__()
        self.config = config
        resolutions = config.resolutions()
        base = config.width_at(resolutions[0])
        self.mapping = MappingNetwork(config.latent_dim, config.latent_dim, config.mapping_layers)
        self.constant = nn.Parameter(torch.randn(1, base, config.base_size, config.base_size))
        self.base_conv = StyledLayer(base, base, config.latent_dim, upsample=False)
        self.base_to_rgb = ModulatedConv2d(
            base, config.channels, 1, config.latent_dim, demodulate=False
        )
        self.blocks = nn.ModuleList(
            SynthesisBlock(
                config.width_at(r // 2), config.width_at(r), config.latent_dim, config.channels
            )
            for r in resolutions[1:]
        )

    def noise_sides(self) -> list[int]:
        """Sides of the noise maps one pass reads, in order (base layer, then two per block)."""
        sides = [self.config.base_size]
        for r in self.config.resolutions()[1:]:
            sides += [r, r]
        return sides

    def forward(self, w: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        """Defect-free images in roughly [-1, 1] (unclamped) for ``w`` ``[B, latent_dim]``."""
        return synthesize(self, None, w, None, noise)[0]


class DFMGANGenerator(nn.Module):
    """The backbone plus the defect mapping network, the class embedding, the defect-aware
    residual blocks and their ToMask layers."""

    def __init__(self, config: DFMGANConfig) -> None:
        super().__init__()
        self.config = config
        latent = config.latent_dim
        self.backbone = DFMGANBackbone(config)
        self.class_embedding = nn.Embedding(config.num_classes, latent)
        self.defect_mapping = MappingNetwork(2 * latent, latent, config.mapping_layers)
        self.defect_blocks = nn.ModuleList(
            SynthesisBlock(config.width_at(r // 2), config.width_at(r), latent, 1)
            for r in config.defect_resolutions()
        )
        with torch.no_grad():
            # Masks start mostly closed: a defect covers a minority of its window.
            self.defect_blocks[0].to_out.bias.fill_(-1.0)

    def defect_parts(self) -> list[nn.Module]:
        """The modules stage 2 trains (everything but the backbone)."""
        return [self.class_embedding, self.defect_mapping, self.defect_blocks]

    def object_code(self, z: torch.Tensor) -> torch.Tensor:
        return self.backbone.mapping(normalize_code(z))

    def defect_code(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        embedded = self.class_embedding(labels)
        return self.defect_mapping(torch.cat([normalize_code(z), embedded], dim=1))

    def noise_sides(self) -> list[int]:
        sides = self.backbone.noise_sides()
        for r in self.config.defect_resolutions():
            sides += [r, r]
        return sides

    def forward(
        self, w_object: torch.Tensor, w_defect: torch.Tensor | None, noise: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``(defect-free, defective, mask logits)``; images roughly in [-1, 1], unclamped.

        ``w_defect`` ``None`` gives the defect-free image only (the others ``None``).
        """
        return synthesize(
            self.backbone, self if w_defect is not None else None, w_object, w_defect, noise
        )


def synthesize(
    backbone: DFMGANBackbone,
    defect: DFMGANGenerator | None,
    w_object: torch.Tensor,
    w_defect: torch.Tensor | None,
    noise: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The synthesis pass: the backbone's pyramid, and from ``defect_from`` on (when ``defect``
    is given) a second, manipulated pyramid that shares its noise maps.

    The manipulated pyramid's image is taken only where the final mask logits are >= 0 (the
    defect-free image elsewhere), so the pair differs inside the mask and nowhere else.
    """
    config = backbone.config
    batch = w_object.shape[0]
    x = backbone.base_conv(backbone.constant.expand(batch, -1, -1, -1), w_object, noise[0])
    image = backbone.base_to_rgb(x, w_object)
    x_def = image_def = mask = None
    defect_index = 0
    for index, (resolution, block) in enumerate(
        zip(config.resolutions()[1:], backbone.blocks, strict=True)
    ):
        pair = (noise[1 + 2 * index], noise[2 + 2 * index])
        if defect is not None and resolution >= config.defect_from:
            if x_def is None or image_def is None:  # the paths split here
                x_def, image_def = x, image
            residual_block = defect.defect_blocks[defect_index]
            start = len(backbone.noise_sides()) + 2 * defect_index
            residual = residual_block.features(x_def, w_defect, (noise[start], noise[start + 1]))
            logits = residual_block.to_out(residual, w_defect)
            mask = logits if mask is None else _upsample(mask) + logits
            x_def = block.features(x_def, w_object, pair) + residual * (mask >= 0).to(x.dtype)
            image_def = _upsample(image_def) + block.to_out(x_def, w_object)
            defect_index += 1
        x = block.features(x, w_object, pair)
        image = _upsample(image) + block.to_out(x, w_object)
    if image_def is not None and mask is not None:
        image_def = torch.where(mask >= 0, image_def, image)
    return image, image_def, mask


# ---------------------------------------------------------------------- discriminators
class DiscriminatorBlock(nn.Module):
    """StyleGAN2's residual discriminator block: two 3 x 3 convolutions, then halve; a 1 x 1
    skip; the sum scaled by 1/sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skip(F.avg_pool2d(x, 2))
        x = F.leaky_relu(self.conv0(x), 0.2) * ACTIVATION_GAIN
        x = F.avg_pool2d(F.leaky_relu(self.conv1(x), 0.2) * ACTIVATION_GAIN, 2)
        return (x + skip) / math.sqrt(2.0)


class DFMGANDiscriminator(nn.Module):
    """A small StyleGAN2-like discriminator: FromRGB, residual blocks down to 4 x 4, minibatch
    standard deviation, a 3 x 3 convolution and two fully connected layers; class-conditional
    by projection (an embedding's dot product with the last features) when ``num_classes``.

    Inputs in [0, 1] (images, or image and mask stacked: the mask-matching discriminator).
    """

    def __init__(
        self, in_channels: int, size: int, width: int, max_width: int, num_classes: int = 0
    ) -> None:
        super().__init__()

        def width_at(resolution: int) -> int:
            return min(max_width, width * (size // resolution))

        self.from_rgb = nn.Conv2d(in_channels, width_at(size), 1)
        blocks, resolution = [], size
        while resolution > 4:
            blocks.append(DiscriminatorBlock(width_at(resolution), width_at(resolution // 2)))
            resolution //= 2
        self.blocks = nn.Sequential(*blocks)
        last = width_at(4)
        self.conv = nn.Conv2d(last + 1, last, 3, padding=1)
        self.fc = nn.Linear(last * 16, last)
        self.out = nn.Linear(last, 1)
        self.projection = nn.Embedding(num_classes, last) if num_classes else None

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = F.leaky_relu(self.from_rgb(images * 2.0 - 1.0), 0.2) * ACTIVATION_GAIN
        x = self.blocks(x)
        spread = x.std(dim=0, unbiased=False).mean() if x.shape[0] > 1 else x.new_zeros(())
        x = torch.cat([x, spread.expand(x.shape[0], 1, *x.shape[-2:])], dim=1)
        x = F.leaky_relu(self.conv(x), 0.2) * ACTIVATION_GAIN
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.2) * ACTIVATION_GAIN
        score = self.out(h).flatten()
        if self.projection is not None and labels is not None:
            score = score + (self.projection(labels) * h).sum(dim=1) / math.sqrt(h.shape[1])
        return score


def image_discriminator(config: DFMGANConfig, num_classes: int) -> DFMGANDiscriminator:
    return DFMGANDiscriminator(
        config.channels, config.layer_size, config.width, config.max_width, num_classes
    )


def match_discriminator(config: DFMGANConfig) -> DFMGANDiscriminator:
    """The mask-matching discriminator: image and mask stacked, a quarter of the channels
    (judging whether a mask fits its image is easier than judging realism)."""
    return DFMGANDiscriminator(
        config.channels + 1,
        config.layer_size,
        max(1, config.width // 2),
        max(1, config.max_width // 4),
        config.num_classes,
    )


# ---------------------------------------------------------------------- the library generator
def make_noise(
    sides: Sequence[int], batch: int, generator: torch.Generator, device: torch.device
) -> list[torch.Tensor]:
    """One ``[batch, 1, s, s]`` standard-normal map per side, drawn from ``generator``."""
    return [
        torch.randn(batch, 1, s, s, generator=generator, device=generator.device).to(device)
        for s in sides
    ]


def crop_around_masks(
    content: torch.Tensor, alpha: torch.Tensor, size: int, border: float = 0.08
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item, the square around the support of ``alpha`` (grown by ``border`` of its side,
    at least a quarter of the image, shifted to lie inside it), resized to ``size``.

    An item without support keeps its whole image (its alpha is all 0).
    """
    contents, alphas = [], []
    height, width = alpha.shape[-2:]
    minimum = max(1, min(height, width) // 4)
    for item_content, item_alpha in zip(content, alpha, strict=True):
        rows = torch.nonzero(item_alpha[0].amax(dim=1) > 0).flatten()
        cols = torch.nonzero(item_alpha[0].amax(dim=0) > 0).flatten()
        if len(rows) == 0:
            top, left, side = 0, 0, min(height, width)
        else:
            box_h = int(rows[-1]) - int(rows[0]) + 1
            box_w = int(cols[-1]) - int(cols[0]) + 1
            side = min(max(padded_side(box_h, box_w, border), minimum), height, width)
            centre_y = (int(rows[0]) + int(rows[-1]) + 1) // 2
            centre_x = (int(cols[0]) + int(cols[-1]) + 1) // 2
            top = min(max(centre_y - side // 2, 0), height - side)
            left = min(max(centre_x - side // 2, 0), width - side)
        rows_in, cols_in = slice(top, top + side), slice(left, left + side)
        contents.append(square_resize(item_content[None, :, rows_in, cols_in], size, "bilinear"))
        alphas.append(square_resize(item_alpha[None, :, rows_in, cols_in], size, "bilinear"))
    return torch.cat(contents).clamp(0.0, 1.0), torch.cat(alphas).clamp(0.0, 1.0)


@register_architecture
class DFMGAN(PretrainedDefectGenerator):
    """A trained DFMGAN: generated surfaces with defects, their defect-free twins and masks.

    ``sample(n, defect_type, ...)`` gives layers cut from generated defective images: the content
    is the defective image around its generated mask, the alpha the mask (its probability,
    ``sigmoid`` of the logits whose sign gates the manipulation, lifted by ``alpha_floor``), both
    resized to ``layer_size``; so ``DefectInject`` and the Poisson blends put DFMGAN defects on
    real images. :meth:`generate_images` gives the whole generated images.

    ``sample`` options:
        crop: ``False`` gives the whole generated image as the layer (default ``True``: the
            square around the mask).
        object_latent / defect_latent: ``[n, latent_dim]`` explicit codes instead of random ones
            (one object code with several defect codes varies the defect on one surface).
        alpha_floor: mask probabilities up to this are set to 0 and the rest rescaled to
            [0, 1] (default 0.5: the alpha is non-zero exactly where the features were
            manipulated, soft towards the mask's edge; lower values let the layer's generated
            surface show around the defect).
    """

    config_class: ClassVar[type[CardConfig]] = DFMGANConfig
    architecture: ClassVar[str] = "dfmgan"
    #: ``background`` is optional and does not change the layer itself (a grey layer requested
    #: for RGB images becomes a luminance change of the patch it lands on).
    accepts_background: ClassVar[bool] = True
    #: The layers do not depend on where they land, so they can be sampled ahead in batches.
    samples_ahead: ClassVar[bool] = True
    #: A layer costs a pass of the whole image pyramid twice over.
    uses_per_layer: ClassVar[int | None] = 64
    card_defaults: ClassVar[Mapping[str, Any]] = {
        "tags": ["gan", "few-shot", "stylegan2", "dfmgan"],
        "metrics": ["kid", "fid"],
    }

    def __init__(self, config: DFMGANConfig | Mapping[str, Any]) -> None:
        super().__init__()
        config = self.adopt_config(config)
        self.generator = DFMGANGenerator(config)

    def _codes(
        self,
        n: int,
        generator: torch.Generator,
        device: torch.device,
        object_latent: Any,
        defect_latent: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dim = self.config.latent_dim
        codes = []
        for name, given in (("object_latent", object_latent), ("defect_latent", defect_latent)):
            drawn = torch.randn(n, dim, generator=generator, device=generator.device).to(device)
            if given is not None:
                drawn = torch.as_tensor(given, dtype=torch.float32).to(device)
                if drawn.shape != (n, dim) or not bool(torch.isfinite(drawn).all()):
                    raise ValueError(
                        f"{name}: expected finite codes of shape ({n}, {dim}), got "
                        f"{tuple(drawn.shape)}"
                    )
            codes.append(drawn)
        return codes[0], codes[1]

    def _triplets(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        device: torch.device,
        object_latent: Any = None,
        defect_latent: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(defect-free, defective, mask logits)`` at the model's size; images in [0, 1]."""
        self._place_on(device)
        n = labels.shape[0]
        z_object, z_defect = self._codes(n, generator, device, object_latent, defect_latent)
        noise = make_noise(self.generator.noise_sides(), n, generator, device)
        with self._inference():
            w_object = self.generator.object_code(z_object)
            w_defect = self.generator.defect_code(z_defect, labels.to(device))
            clean, defective, logits = self.generator(w_object, w_defect, noise)
        assert clean is not None and defective is not None and logits is not None
        return (clean * 0.5 + 0.5).clamp(0.0, 1.0), (defective * 0.5 + 0.5).clamp(0.0, 1.0), logits

    @torch.no_grad()
    def generate_images(
        self,
        n: int,
        defect_type: DefectTypeArg = None,
        *,
        generator: SeedLike = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` whole generated images: ``(normal [n, C, S, S], defective [n, C, S, S], mask
        [n, 1, S, S])``, images float in [0, 1], the mask bool (where the defect-aware blocks
        manipulated the features: the logits' sign). One object code per item gives its normal
        and defective image, so the pair differs mainly inside the mask.

        ``defect_type``: one name, a name per item, or ``None`` (uniform over the types);
        ``generator``: seed or ``torch.Generator`` (the same value gives the same images).
        """
        n = check_int(n, "n", 1)
        if device is None:
            device = next(self.parameters()).device
        device = check_device(device)
        rng = as_generator(generator, device)
        labels = self.resolve_labels(n, defect_type, rng)
        clean, defective, logits = self._triplets(labels, rng, device)
        return clean, defective, logits >= 0

    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        crop: bool = True,
        object_latent: Any = None,
        defect_latent: Any = None,
        alpha_floor: float = 0.5,
        **options: Any,
    ) -> DefectLayer:
        if options:
            raise TypeError(f"DFMGAN.sample: unknown options {sorted(options)}")
        if reference is not None:
            raise ValueError("reference: DFMGAN takes no reference crops (give defect_latent=)")
        if not isinstance(crop, bool):
            raise ValueError(f"crop: expected True or False, got {crop!r}")
        _, defective, logits = self._triplets(
            labels, generator, device, object_latent, defect_latent
        )
        alpha = lift_alpha_floor(torch.sigmoid(logits), alpha_floor)
        content = defective
        if crop:
            content, alpha = crop_around_masks(defective, alpha, self.config.layer_size)
        return DefectLayer(
            content.to(dtype), alpha.to(dtype), labels.to(torch.int64), self.defect_types
        )
