"""DCDGANc-style few-shot defect-layer generator: class constant map + OD-SPADE style code.

The design follows the DCDGANc paper (Wang et al.): the generator starts from a *class constant
map* (every pixel of class ``n`` of ``N`` holds ``n * 2 / N - 1``) and receives the style code
``[z, one_hot(c)]`` through OD-SPADE, a fully connected layer that turns the 1-D code into a
per-channel scale and shift applied to the normalised features of every block. A VAE encoder maps a
real defect to ``(mu, log sigma^2)`` so a real defect can be varied (reference-guided sampling), and
mixing the one-hot code and the class map interpolates between classes.

Departures from the paper, each for a reason:

* The generator writes an alpha channel next to the content instead of leaving the mask to a
  watershed pass afterwards: the layer then carries an exact mask by construction. The paper's
  "fine image processing" survives as the optional ``refine_alpha`` ("threshold" / "watershed").
* A learned 4x4 tensor is concatenated to the class constant map at the start. A constant map holds
  no spatial information at all, so without it every shape would have to come out of zero-padding
  artefacts; the learned canvas plays the role of StyleGAN's constant input.
* Normalisation is per instance, so a sample never depends on what else is in its batch and the
  same seed gives the same defect at any batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectaug.generators.hub import (
    CardConfig,
    PretrainedDefectGenerator,
    lift_alpha_floor,
    register_architecture,
)
from defectaug.layer import DefectLayer

AlphaRefinement = Literal["threshold", "watershed"] | None


@dataclass(frozen=True)
class DCDGANConfig(CardConfig):
    """Architecture of a DCDGAN; everything needed to rebuild the modules before loading weights.

    Attributes:
        defect_types: class names, in the order of the class index ``n``.
        channels: image channels of the content (1 grayscale, 3 RGB).
        layer_size: side of the square layers the generator writes (a power of two >= 8).
        latent_dim: size of the random style code ``z``.
        width: feature channels at full resolution; doubled at every halving up to ``max_width``.
        max_width: cap on feature channels at the coarse resolutions.
        base_size: side of the coarsest feature map (the learned canvas).
        style_canvas: also add a linear projection of the style code to the starting canvas, so
            the code sets the defect's coarse layout and not only per-channel statistics.
        native_sizes: per class, the pixel side lengths of the real training crops before they
            were resized to ``layer_size``; lets a compositor paste a layer at a realistic scale.
    """

    defect_types: tuple[str, ...]
    channels: int = 1
    layer_size: int = 64
    latent_dim: int = 32
    width: int = 8
    max_width: int = 64
    base_size: int = 4
    style_canvas: bool = True
    native_sizes: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defect_types", tuple(self.defect_types))
        if not self.defect_types or len(set(self.defect_types)) != len(self.defect_types):
            raise ValueError(f"defect_types: expected distinct names, got {self.defect_types!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
        for name in ("layer_size", "base_size"):
            value = getattr(self, name)
            if value < 4 or value & (value - 1):
                raise ValueError(f"{name}: expected a power of two >= 4, got {value!r}")
        if self.base_size >= self.layer_size:
            raise ValueError(
                f"base_size: expected less than layer_size={self.layer_size}, got {self.base_size}"
            )
        for name in ("latent_dim", "width", "max_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive int, got {getattr(self, name)!r}")
        unknown = set(self.native_sizes) - set(self.defect_types)
        if unknown:
            raise ValueError(f"native_sizes: names not in defect_types: {sorted(unknown)}")

    @property
    def num_classes(self) -> int:
        return len(self.defect_types)

    @property
    def style_dim(self) -> int:
        return self.latent_dim + self.num_classes

    def resolutions(self) -> list[int]:
        """Feature-map sides from ``base_size`` up to ``layer_size``."""
        return [
            self.base_size * 2**i
            for i in range(int(math.log2(self.layer_size // self.base_size)) + 1)
        ]

    def width_at(self, resolution: int) -> int:
        return min(self.max_width, self.width * (self.layer_size // resolution))


def class_constant_map(class_weights: torch.Tensor, size: int) -> torch.Tensor:
    """The class constant map ``[B, 1, size, size]`` of per-item class weights ``[B, N]``.

    Class ``n`` of ``N`` maps to ``n * 2 / N - 1``; weights that mix classes give the weighted mean
    of those values, which is how the class map takes part in class interpolation.
    """
    num_classes = class_weights.shape[1]
    values = torch.arange(num_classes, device=class_weights.device, dtype=class_weights.dtype)
    level = class_weights @ (values * 2.0 / num_classes - 1.0)
    return level.view(-1, 1, 1, 1).expand(-1, 1, size, size)


class ODSPADE(nn.Module):
    """One-dimensional SPADE: instance-normalise, then scale and shift per channel by a 1-D code."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.to_scale_shift = nn.Linear(style_dim, 2 * channels)
        # Start as the identity modulation (scale 1, shift 0): training begins from plain IN.
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(style)[:, :, None, None].chunk(2, dim=1)
        return self.norm(features) * (1.0 + scale) + shift


class ODSPADEResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.mod1 = ODSPADE(in_channels, style_dim)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.mod2 = ODSPADE(out_channels, style_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, features: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(F.leaky_relu(self.mod1(features, style), 0.2))
        hidden = self.conv2(F.leaky_relu(self.mod2(hidden, style), 0.2))
        return (self.skip(features) + hidden) / math.sqrt(2.0)


class DCDGANGenerator(nn.Module):
    """``G(class map, [z, c]) -> (content, alpha)``, each ``[B, *, size, size]`` in (0, 1)."""

    def __init__(self, config: DCDGANConfig) -> None:
        super().__init__()
        self.config = config
        resolutions = config.resolutions()
        base_width = config.width_at(resolutions[0])
        self.canvas = nn.Parameter(torch.randn(1, base_width, config.base_size, config.base_size))
        self.stem = nn.Conv2d(base_width + 1, base_width, 3, padding=1)
        self.to_canvas = (
            nn.Linear(config.style_dim, base_width * config.base_size**2)
            if config.style_canvas
            else None
        )
        self.blocks = nn.ModuleList()
        previous = base_width
        for resolution in resolutions:
            self.blocks.append(
                ODSPADEResBlock(previous, config.width_at(resolution), config.style_dim)
            )
            previous = config.width_at(resolution)
        self.out_mod = ODSPADE(previous, config.style_dim)
        self.to_layer = nn.Conv2d(previous, config.channels + 1, 3, padding=1)

    def forward(
        self, z: torch.Tensor, class_weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Unit-RMS codes (StyleGAN's pixel norm): only the direction of z matters, so the encoder
        # cannot make its codes count by inflating them, and sampled N(0, 1) codes land on the
        # same sphere as encoded ones instead of in a small ball near the origin.
        z = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        style = torch.cat([z, class_weights], dim=1)
        size = self.config.base_size
        # The map is constant, so building it at the coarsest size equals average-pooling the
        # full-size map the paper describes, without the wasted full-resolution convolutions.
        class_map = class_constant_map(class_weights, size)
        canvas = self.canvas.expand(z.shape[0], -1, -1, -1)
        if self.to_canvas is not None:
            canvas = canvas + self.to_canvas(style).view_as(canvas)
        features = torch.cat([canvas, class_map], dim=1)
        features = F.leaky_relu(self.stem(features), 0.2)
        for index, block in enumerate(self.blocks):
            if index:
                # Nearest-neighbour doubling, bit for bit F.interpolate(..., mode="nearest"),
                # which on CPU takes several times as long on these small maps.
                features = features.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
            features = block(features, style)
        out = torch.sigmoid(self.to_layer(F.leaky_relu(self.out_mod(features, style), 0.2)))
        return out[:, : self.config.channels], out[:, self.config.channels :]


def _downsampling_trunk(config: DCDGANConfig, in_channels: int) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, config.width, 3, padding=1),
        nn.LeakyReLU(0.2),
    ]
    previous = config.width
    for resolution in reversed(config.resolutions()[:-1]):
        width = config.width_at(resolution)
        layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        previous = width
    return nn.Sequential(*layers), previous


class DCDGANEncoder(nn.Module):
    """VAE encoder ``E(content, alpha) -> (mu, logvar)``, each ``[B, latent_dim]``."""

    def __init__(self, config: DCDGANConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk, width = _downsampling_trunk(config, config.channels + 1)
        self.to_moments = nn.Linear(width * config.base_size**2, 2 * config.latent_dim)

    def forward(
        self, content: torch.Tensor, alpha: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(torch.cat([content, alpha], dim=1) * 2.0 - 1.0).flatten(1)
        mu, logvar = self.to_moments(features).chunk(2, dim=1)
        # Bounded log-variance keeps exp() finite early in training when the encoder is untrained.
        return mu, logvar.clamp(-10.0, 10.0)


class DCDGANDiscriminator(nn.Module):
    """Class-conditional critic on content + alpha with a projection head (Miyato & Koyama).

    No normalisation layers: the WGAN-GP penalty is defined per sample, which batch statistics
    would break.
    """

    def __init__(self, config: DCDGANConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk, width = _downsampling_trunk(config, config.channels + 1)
        self.final = nn.Conv2d(width, width, 3, padding=1)
        self.linear = nn.Linear(width, 1)
        self.class_embedding = nn.Embedding(config.num_classes, width)
        nn.init.normal_(self.class_embedding.weight, std=0.02)

    def forward(
        self, content: torch.Tensor, alpha: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        features = self.trunk(torch.cat([content, alpha], dim=1) * 2.0 - 1.0)
        pooled = F.leaky_relu(self.final(features), 0.2).sum(dim=(2, 3))
        projection = (self.class_embedding(labels) * pooled).sum(dim=1, keepdim=True)
        return (self.linear(pooled) + projection).squeeze(1)


def fill_outside_mask(content: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Replace everything outside the defect by one constant: the mean of the defect's own pixels.

    DCDGANc learns only defect content, so the surrounding surface is removed. Filling with the
    defect's mean (not black) keeps the half-covered rim pixels close to the defect's own tone, so a
    soft alpha edge does not draw a dark halo when the layer is composited.
    """
    weight = alpha.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    fill = (content * alpha).sum(dim=(2, 3), keepdim=True) / weight
    return content * alpha + fill * (1.0 - alpha)


def square_resize(image: torch.Tensor, size: int, mode: str = "area") -> torch.Tensor:
    """Pad ``[B, C, h, w]`` symmetrically to a square with edge values, then resize to ``size``.

    Squaring first keeps the defect's aspect ratio (a crack stays thin).
    """
    h, w = image.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    padded = F.pad(image, (left, side - w - left, top, side - h - top), mode="replicate")
    if side == size:
        return padded
    if side > size:
        return F.interpolate(padded, size=(size, size), mode=mode)
    return F.interpolate(padded, size=(size, size), mode="bilinear", align_corners=False)


def prepare_defect_crop(
    content: torch.Tensor, alpha: torch.Tensor, size: int, border: float = 0.08
) -> tuple[torch.Tensor, torch.Tensor]:
    """A real crop as the generator sees one: squared, resized to ``size``, surface removed.

    ``content`` ``[B, C, h, w]`` and ``alpha`` ``[B, 1, h, w]`` (float in [0, 1]). The square gets
    an extra ``border`` fraction of its side on every edge, so the defect never touches the layer's
    edge at any scale and a composited layer fades out inside its own box. Alpha is padded with
    zeros, content with its edge values.
    """
    h, w = content.shape[-2:]
    side = padded_side(h, w, border)
    top, left = (side - h) // 2, (side - w) // 2
    padding = (left, side - w - left, top, side - h - top)
    # Remove the surface at the crop's own resolution: after resizing, rim pixels would mix
    # surface and defect and the fill would no longer be the defect's tone.
    content = fill_outside_mask(content, alpha)
    content = square_resize(F.pad(content, padding, mode="replicate"), size)
    alpha = square_resize(F.pad(alpha, padding, value=0.0), size).clamp(0.0, 1.0)
    return content, alpha


def padded_side(h: int, w: int, border: float = 0.08) -> int:
    """Side in pixels of the square ``prepare_defect_crop`` cuts around an ``h`` x ``w`` crop."""
    return max(h, w) + 2 * max(1, round(border * max(h, w)))


def refine_alpha_mask(
    content: torch.Tensor, alpha: torch.Tensor, method: AlphaRefinement
) -> torch.Tensor:
    """Optional post-processing of a generated alpha, as the paper's "fine image processing".

    ``"threshold"`` makes the alpha binary at 0.5. ``"watershed"`` keeps pixels with alpha >= 0.8
    as sure defect and <= 0.2 as sure surface and lets OpenCV's watershed on the content decide the
    uncertain band between them, so the mask edge follows the defect's intensity edge.
    """
    if method is None:
        return alpha
    if method == "threshold":
        return (alpha >= 0.5).to(alpha.dtype)
    if method != "watershed":
        raise ValueError(f"refine_alpha: expected None, 'threshold' or 'watershed', got {method!r}")
    import cv2

    refined = []
    for image, soft in zip(content.detach().cpu(), alpha.detach().cpu(), strict=True):
        gray = image.mean(dim=0).numpy()
        rgb = np.repeat((gray * 255.0).round().astype(np.uint8)[..., None], 3, axis=2)
        markers = np.zeros(gray.shape, dtype=np.int32)
        markers[soft[0].numpy() <= 0.2] = 1
        markers[soft[0].numpy() >= 0.8] = 2
        if not (markers == 2).any():
            refined.append(torch.zeros_like(soft))
            continue
        labels = cv2.watershed(rgb, markers)
        refined.append(torch.from_numpy((labels == 2).astype(np.float32))[None])
    return torch.stack(refined).to(device=alpha.device, dtype=alpha.dtype)


@register_architecture
class DCDGAN(PretrainedDefectGenerator):
    """A trained DCDGANc-style generator of defect layers (content + alpha) for a set of classes.

    It makes ``config.channels``-channel content; requests for the other count (a grey model on
    RGB images) are converted by :class:`~defectaug.generators.base.DefectGenerator`.

    ``sample`` options:
        class_weights: ``[n, N]`` / ``[N]`` tensor or sequence, or ``{name: weight}`` mapping of
            non-negative weights summing to 1; mixes the class code and class map (interpolation
            between classes, paper Fig. 5). The layers' labels are the heaviest class.
        reference_alpha: ``[n, 1, h, w]`` masks of the ``reference`` crops; may be omitted when
            ``reference`` carries the mask as its last channel (``C + 1`` channels).
        variation: scale on the encoder's standard deviation for reference-guided sampling
            (0 reconstructs the reference, 1 samples its posterior; default 1).
        latent: ``[n, latent_dim]`` explicit style codes ``z`` instead of random ones (e.g. one
            code repeated while ``class_weights`` varies, to morph one defect between classes).
        alpha_floor: alpha values up to this are set to 0 and the rest rescaled to [0, 1]
            (default 0.05). The sigmoid alpha never reaches exactly 0, and the faint haze it
            leaves over the whole layer would draw the layer's square outline when composited.
        refine_alpha: ``None`` (default), ``"threshold"`` or ``"watershed"``; see
            ``refine_alpha_mask``.
    """

    config_class: ClassVar[type[CardConfig]] = DCDGANConfig
    architecture: ClassVar[str] = "dcdgan"
    #: ``background`` is optional and does not change the layer itself: given, a grey layer
    #: requested for RGB images becomes a luminance change of the patch it lands on (see
    #: :func:`defectaug.generators.base.convert_layer`) instead of a grey patch.
    accepts_background: ClassVar[bool] = True
    #: The layers do not depend on where they land, so they can be sampled ahead in batches.
    samples_ahead: ClassVar[bool] = True
    #: A layer costs a network pass, some 2 ms on one CPU thread (a bank crop's warp some
    #: 0.05 ms): at the reservoir's default 32 uses that would outweigh the rest of a sample.
    uses_per_layer: ClassVar[int | None] = 64
    card_defaults: ClassVar[Mapping[str, Any]] = {
        "tags": ["gan", "few-shot", "dcdgan"],
        "metrics": ["kid", "fid"],
    }

    def __init__(self, config: DCDGANConfig | Mapping[str, Any]) -> None:
        super().__init__()
        config = self.adopt_config(config)
        self.generator = DCDGANGenerator(config)
        self.encoder = DCDGANEncoder(config)

    def class_weights_for(
        self, labels: torch.Tensor, class_weights: Any, *, device: torch.device
    ) -> torch.Tensor:
        """Per-item class weights ``[n, N]``: one-hot of ``labels``, or the caller's mix."""
        n, num_classes = labels.shape[0], self.config.num_classes
        if class_weights is None:
            return F.one_hot(labels.to(device), num_classes).float()
        if isinstance(class_weights, Mapping):
            weights = torch.zeros(num_classes)
            for name, value in class_weights.items():
                weights[self.type_index(name)] = float(value)
        else:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).cpu()
        if weights.ndim == 1:
            weights = weights.expand(n, -1)
        if weights.shape != (n, num_classes):
            raise ValueError(
                f"class_weights: expected [{num_classes}] or [{n}, {num_classes}] weights, "
                "got shape "
                f"{tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("class_weights: expected finite, non-negative weights")
        if not torch.allclose(weights.sum(dim=1), torch.ones(n), atol=1e-4):
            raise ValueError(
                f"class_weights: each row must sum to 1, got sums {weights.sum(dim=1).tolist()}"
            )
        return weights.to(device)

    def encode_reference(
        self, reference: torch.Tensor, reference_alpha: torch.Tensor | None, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of real crops, prepared exactly as the training crops were."""
        channels = self.config.channels
        reference = reference.to(device=device, dtype=torch.float32)
        if reference_alpha is None:
            if reference.shape[1] != channels + 1:
                raise ValueError(
                    f"reference: expected {channels + 1} channels (content + alpha) or a "
                    f"reference_alpha option, got {reference.shape[1]} channels"
                )
            reference, reference_alpha = reference[:, :channels], reference[:, channels:]
        else:
            reference_alpha = reference_alpha.to(device=device, dtype=torch.float32)
            if reference.shape[1] != channels:
                raise ValueError(
                    f"reference: expected {channels} content channel(s), got {reference.shape[1]}"
                )
            if reference_alpha.shape != (reference.shape[0], 1, *reference.shape[-2:]):
                raise ValueError(
                    "reference_alpha: expected shape "
                    f"{(reference.shape[0], 1, *reference.shape[-2:])}, "
                    f"got {tuple(reference_alpha.shape)}"
                )
        content, alpha = prepare_defect_crop(
            reference, reference_alpha.clamp(0.0, 1.0), self.config.layer_size
        )
        return self.encoder(content, alpha)

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
        class_weights: Any = None,
        reference_alpha: torch.Tensor | None = None,
        variation: float = 1.0,
        latent: torch.Tensor | None = None,
        alpha_floor: float = 0.05,
        refine_alpha: AlphaRefinement = None,
        **options: Any,
    ) -> DefectLayer:
        if options:
            raise TypeError(f"DCDGAN.sample: unknown options {sorted(options)}")
        self._place_on(device)
        n = labels.shape[0]
        weights = self.class_weights_for(labels, class_weights, device=device)
        if class_weights is not None:
            labels = weights.argmax(dim=1)
        noise = torch.randn(n, self.config.latent_dim, generator=generator, device=device)
        if latent is not None:
            if reference is not None:
                raise ValueError(
                    "latent: give either explicit style codes or a reference, not both"
                )
            noise = torch.as_tensor(latent, dtype=torch.float32).to(device)
            if noise.shape != (n, self.config.latent_dim) or not bool(torch.isfinite(noise).all()):
                raise ValueError(
                    f"latent: expected finite codes of shape ({n}, {self.config.latent_dim}), got "
                    f"{tuple(noise.shape)}"
                )
        if reference is not None:
            mu, logvar = self.encode_reference(reference, reference_alpha, device)
            z = mu + noise * torch.exp(0.5 * logvar) * float(variation)
        else:
            z = noise
        with self._inference():
            content, alpha = self.generator(z, weights)
        alpha = lift_alpha_floor(alpha, alpha_floor)
        alpha = refine_alpha_mask(content, alpha, refine_alpha)
        return DefectLayer(
            content.to(dtype), alpha.to(dtype), labels.to(torch.int64), self.defect_types
        )
