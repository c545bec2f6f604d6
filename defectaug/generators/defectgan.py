"""Defect-GAN-style background-aware generator: defacement and restoration of real surfaces.

After Zhang et al., "Defect-GAN: High-Fidelity Defect Synthesis for Automated Defect Inspection"
(WACV 2021), Sec. 3. One encoder-decoder ``G(image, A)`` takes an image and a spatial &
categorical control map ``A`` (one plane per defect class marking where, plus a "normal" plane
that asks for restoration) and writes a foreground ``f`` and a spatial distribution map ``s``:

* defacement ``d = n * (1 - s_d) + f_d * s_d`` paints a defect of the planes' class where they
  mark, in a context that matches the normal surface ``n`` it is given;
* restoration ``r = d * (1 - s_r) + f_r * s_r`` repaints a defective image as normal, and
  ``s_r`` says where it had to repaint (a defect localizer).

``A`` enters every block after the encoder through SPADE (its planes, average-pooled to the
block's size, predict a per-pixel scale and shift of the normalised features); Gaussian noise
with a learned per-block scale is added after every block (the paper's adaptive noise
injection).

Departures from the paper, each for a reason:

* The control planes mark real defect shapes during training (the magnetic-tile masks), not a
  constant label map: the data has masks, and training on shaped maps is what makes the
  spatial control hold at inference.
* A layer sampled without a control map takes a real training mask of its class (flipped and
  transposed at random) as its region. The masks are stored with the weights: they are the
  class's shape and location statistics, and cost a few hundred kilobytes.
* Normalisation is per instance, so a sample never depends on what else is in its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from defectaug._seeding import as_generator
from defectaug.generators.base import luminance
from defectaug.generators.hub import (
    CardConfig,
    PretrainedDefectGenerator,
    lift_alpha_floor,
    register_architecture,
)
from defectaug.layer import DefectLayer

#: Stride of the encoder (the paper's "encodes the input image by a stride of 4").
DOWNSAMPLING = 4


@dataclass(frozen=True)
class DefectGANConfig(CardConfig):
    """Architecture of a Defect-GAN generator; everything needed to rebuild it before loading.

    Attributes:
        defect_types: class names, in the order of the control planes.
        channels: image channels (1 grayscale, 3 RGB).
        layer_size: side of the square images the generator works on (a multiple of 4, >= 16).
        width: feature channels at full resolution; doubled at each of the two halvings.
        blocks: SPADE residual blocks at the coarsest resolution.
        spade_hidden: channels of the SPADE layers' shared convolution over the control map.
        prior_counts: per class, how many training masks are stored as default control regions.
        native_sizes: per class, the pixel sides of the training crops before they were resized
            to ``layer_size``; lets a compositor paste a layer at a realistic scale.
    """

    defect_types: tuple[str, ...]
    channels: int = 1
    layer_size: int = 64
    width: int = 16
    blocks: int = 2
    spade_hidden: int = 16
    prior_counts: dict[str, int] = field(default_factory=dict)
    native_sizes: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defect_types", tuple(self.defect_types))
        if not self.defect_types or len(set(self.defect_types)) != len(self.defect_types):
            raise ValueError(f"defect_types: expected distinct names, got {self.defect_types!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
        if self.layer_size < 16 or self.layer_size % DOWNSAMPLING:
            raise ValueError(
                f"layer_size: expected a multiple of {DOWNSAMPLING} >= 16, got {self.layer_size!r}"
            )
        for name in ("width", "blocks", "spade_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        for name in ("prior_counts", "native_sizes"):
            unknown = set(getattr(self, name)) - set(self.defect_types)
            if unknown:
                raise ValueError(f"{name}: names not in defect_types: {sorted(unknown)}")
        if any(int(v) < 0 for v in self.prior_counts.values()):
            raise ValueError(f"prior_counts: expected counts >= 0, got {self.prior_counts!r}")

    @property
    def num_classes(self) -> int:
        return len(self.defect_types)

    @property
    def control_planes(self) -> int:
        """Planes of the internal control map: one per defect class, then "normal"."""
        return self.num_classes + 1

    @property
    def prior_total(self) -> int:
        return sum(int(self.prior_counts.get(name, 0)) for name in self.defect_types)


class NoiseInjection(nn.Module):
    """``features + scale * N(0, 1)``, one noise value per pixel shared by all channels.

    The scale starts at 0 (StyleGAN's choice): training decides how much variation each block
    gets, and an untrained model is deterministic given its inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = features.shape
        noise = torch.randn(
            b, 1, h, w, generator=generator, device=features.device, dtype=features.dtype
        )
        return features + self.scale * noise


class SPADE(nn.Module):
    """Instance-normalise, then scale and shift each pixel by what the control map says there."""

    def __init__(self, channels: int, control_planes: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.shared = nn.Conv2d(control_planes, hidden, 3, padding=1)
        self.to_scale_shift = nn.Conv2d(hidden, 2 * channels, 3, padding=1)

    def forward(self, features: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
        if control.shape[-2:] != features.shape[-2:]:
            # Area pooling keeps a thin crack visible as a fraction at coarse sizes.
            control = F.adaptive_avg_pool2d(control, features.shape[-2:])
        hidden = F.relu(self.shared(control))
        scale, shift = self.to_scale_shift(hidden).chunk(2, dim=1)
        return self.norm(features) * (1.0 + scale) + shift


class SPADEResBlock(nn.Module):
    def __init__(self, channels: int, config: DefectGANConfig) -> None:
        super().__init__()
        self.mod1 = SPADE(channels, config.control_planes, config.spade_hidden)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.mod2 = SPADE(channels, config.control_planes, config.spade_hidden)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.noise = NoiseInjection()

    def forward(
        self, features: torch.Tensor, control: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        hidden = self.conv1(F.leaky_relu(self.mod1(features, control), 0.2))
        hidden = self.conv2(F.leaky_relu(self.mod2(hidden, control), 0.2))
        return self.noise(features + hidden, generator)


class SPADEUpBlock(nn.Module):
    """Double the resolution, convolve, modulate by the control map, add noise."""

    def __init__(self, in_channels: int, out_channels: int, config: DefectGANConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.mod = SPADE(out_channels, config.control_planes, config.spade_hidden)
        self.noise = NoiseInjection()

    def forward(
        self, features: torch.Tensor, control: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        features = features.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)
        features = F.leaky_relu(self.mod(self.conv(features), control), 0.2)
        return self.noise(features, generator)


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int) -> None:
        super().__init__()
        padding = (kernel - stride + 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding)
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.noise = NoiseInjection()

    def forward(self, features: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.noise(F.leaky_relu(self.norm(self.conv(features)), 0.2), generator)


class DefectGANGenerator(nn.Module):
    """``G(image [B, C, S, S], control [B, N + 1, S, S]) -> (foreground, map)`` in (0, 1)."""

    def __init__(self, config: DefectGANConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.encoder = nn.ModuleList(
            [
                EncoderBlock(config.channels, w, 7, 1),
                EncoderBlock(w, 2 * w, 4, 2),
                EncoderBlock(2 * w, 4 * w, 4, 2),
            ]
        )
        self.blocks = nn.ModuleList([SPADEResBlock(4 * w, config) for _ in range(config.blocks)])
        self.up = nn.ModuleList(
            [SPADEUpBlock(4 * w, 2 * w, config), SPADEUpBlock(2 * w, w, config)]
        )
        self.to_foreground = nn.Conv2d(w, config.channels, 3, padding=1)
        self.to_map = nn.Conv2d(w, 1, 3, padding=1)
        # A map that starts near 0 leaves the input as it is: training begins from the identity
        # and the maps grow only where a loss asks for them.
        nn.init.constant_(self.to_map.bias, -3.0)

    def forward(
        self,
        images: torch.Tensor,
        control: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = images * 2.0 - 1.0
        for block in self.encoder:
            features = block(features, generator)
        for block in self.blocks:
            features = block(features, control, generator)
        for block in self.up:
            features = block(features, control, generator)
        return torch.sigmoid(self.to_foreground(features)), torch.sigmoid(self.to_map(features))


class DefectGANDiscriminator(nn.Module):
    """PatchGAN real/fake logits ``[B, 1, s, s]`` and class logits ``[B, N + 1]`` (normal last).

    As StarGAN's: strided 4 x 4 convolutions with leaky ReLU and no normalisation, a 3 x 3
    convolution for the patch head and one covering the whole final map for the classifier.
    """

    def __init__(self, config: DefectGANConfig, width: int | None = None) -> None:
        super().__init__()
        width = width or 2 * config.width
        layers: list[nn.Module] = []
        previous, size = config.channels, config.layer_size
        while size > 4:
            layers += [nn.Conv2d(previous, width, 4, 2, 1), nn.LeakyReLU(0.01)]
            previous, width, size = width, min(2 * width, 256), size // 2
        self.trunk = nn.Sequential(*layers)
        self.source = nn.Conv2d(previous, 1, 3, padding=1)
        self.classes = nn.Conv2d(previous, config.control_planes, size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(images * 2.0 - 1.0)
        return self.source(features), self.classes(features).flatten(1)


def control_map(regions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The internal control map ``[B, N + 1, S, S]`` of regions ``[B, 1, S, S]`` of ``labels``."""
    planes = F.one_hot(labels, num_classes + 1).to(regions.dtype)[:, :, None, None]
    return planes * regions


def restoration_control(
    batch: int, num_classes: int, size: int, like: torch.Tensor
) -> torch.Tensor:
    """The "normal" control map: only the last plane, set everywhere (restore the whole image)."""
    control = torch.zeros(batch, num_classes + 1, size, size, device=like.device, dtype=like.dtype)
    control[:, -1] = 1.0
    return control


def compose(
    background: torch.Tensor, foreground: torch.Tensor, spatial_map: torch.Tensor
) -> torch.Tensor:
    """Layer-wise composition ``background * (1 - s) + foreground * s``."""
    return background * (1.0 - spatial_map) + foreground * spatial_map


def random_dihedral(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each mask of ``[B, 1, S, S]`` flipped and transposed at random (8 symmetries)."""
    draws = torch.rand(masks.shape[0], 3, generator=generator, device=generator.device) < 0.5
    draws = draws.to(masks.device)[:, :, None, None, None]
    masks = torch.where(draws[:, 0], masks.transpose(-1, -2), masks)
    masks = torch.where(draws[:, 1], masks.flip(-1), masks)
    return torch.where(draws[:, 2], masks.flip(-2), masks)


def ellipse_regions(
    n: int, size: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random filled ellipses ``[n, 1, size, size]`` (0/1) near the centre, for classes without
    stored masks."""
    draws = torch.rand(n, 5, generator=generator, device=generator.device).to(device)
    centre = 0.35 + 0.3 * draws[:, :2]
    axes = 0.1 + 0.25 * draws[:, 2:4]
    angle = draws[:, 4] * torch.pi
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    y, x = coords.view(1, -1, 1), coords.view(1, 1, -1)
    dy, dx = y - centre[:, 0, None, None], x - centre[:, 1, None, None]
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    u, v = dx * cos + dy * sin, -dx * sin + dy * cos
    inside = (u / axes[:, 0, None, None]).square() + (v / axes[:, 1, None, None]).square() <= 1
    return inside.float()[:, None]


def confine_to_control(alpha: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """``alpha`` ``[B, 1, S, S]`` kept only near the defect planes of ``planes`` (normal last).

    Why: the trained map head leaks mass along the layer's outermost rows and columns (a padding
    artefact), which composites as thin straight lines along the layer's box. At sampling the
    alpha is therefore multiplied by the requested region (any non-zero defect plane) grown by
    about S / 16 pixels, with a soft edge so no hard cut appears: 1 inside the region and on the
    first pixels around it, falling linearly to 0 a few pixels further out. On the outermost ring
    only the part of the region that itself reaches the border counts, so an edge defect keeps
    its alpha there and the unrequested border mass goes. Deterministic: no random draws.
    """
    size = alpha.shape[-1]
    grow, soften = max(1, round(size / 16)), max(1, round(size / 32))
    asked = (planes[:, :-1].amax(1, keepdim=True) > 0).to(alpha.dtype)
    ring = torch.ones_like(asked)
    ring[..., 1:-1, 1:-1] = 0.0

    def window(region: torch.Tensor) -> torch.Tensor:
        grown = F.max_pool2d(region, 2 * grow + 1, stride=1, padding=grow)
        return F.avg_pool2d(
            grown, 2 * soften + 1, stride=1, padding=soften, count_include_pad=False
        )

    return alpha * torch.where(ring > 0, window(asked * ring), window(asked))


@register_architecture
class DefectGAN(PretrainedDefectGenerator):
    """A trained Defect-GAN: defect layers painted for the surface they land on, and restoration.

    ``sample(n, defect_type, background=patches, generator=..., control=...)``: ``background``
    ``[n, C, H, W]`` (required) are the patches the layers will cover, resized to the layer size
    when they differ; the layer's content is the foreground ``f_d`` and its alpha the map ``s_d``.

    ``sample`` options:
        control: where to put the defect. ``[N, S, S]`` or ``[n, N, S, S]`` (one plane per
            defect class, non-zero where it goes), or ``[1, S, S]`` / ``[n, 1, S, S]`` (a region
            for the requested ``defect_type``); any ``S``, resized to the layer size. Without
            it, each layer's region is a stored training mask of its class, flipped and
            transposed at random (an ellipse for a class without stored masks).
        alpha_floor: alpha values up to this are set to 0 and the rest rescaled to [0, 1]
            (default 0.05): the sigmoid map never reaches exactly 0, and its faint haze would
            otherwise draw the layer's square outline when composited.

    :meth:`restore` repaints defective images as normal and returns where it repainted.
    """

    config_class: ClassVar[type[CardConfig]] = DefectGANConfig
    architecture: ClassVar[str] = "defectgan"
    needs_background: ClassVar[bool] = True
    card_defaults: ClassVar[Mapping[str, Any]] = {
        "tags": ["gan", "defect-gan", "restoration"],
        "metrics": ["kid", "fid"],
    }

    def __init__(self, config: DefectGANConfig | Mapping[str, Any]) -> None:
        super().__init__()
        config = self.adopt_config(config)
        self.generator = DefectGANGenerator(config)
        size = config.layer_size
        self.register_buffer(
            "prior_masks", torch.zeros(config.prior_total, 1, size, size, dtype=torch.uint8)
        )
        self.register_buffer("prior_labels", torch.zeros(config.prior_total, dtype=torch.int64))

    def set_prior_masks(self, masks: torch.Tensor, labels: torch.Tensor) -> None:
        """Store training masks ``[M, 1, S, S]`` (>= 0.5 is inside) of ``labels`` ``[M]`` as the
        default control regions; the counts per class must match ``config.prior_counts``."""
        counts = torch.bincount(labels.cpu(), minlength=self.config.num_classes).tolist()
        expected = [int(self.config.prior_counts.get(n, 0)) for n in self.defect_types]
        if counts != expected or masks.shape != self.prior_masks.shape:
            raise ValueError(
                f"masks: expected {expected} masks per class shaped "
                f"{tuple(self.prior_masks.shape)}, got {counts} shaped {tuple(masks.shape)}"
            )
        order = torch.argsort(labels.cpu(), stable=True)
        self.prior_masks.copy_((masks.cpu()[order] >= 0.5).to(torch.uint8))
        self.prior_labels.copy_(labels.cpu()[order])

    # ------------------------------------------------------------------ control maps
    def default_regions(
        self, labels: torch.Tensor, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """Per item a region ``[n, 1, S, S]`` (0/1) of its class: a stored mask, else an ellipse."""
        n, size = labels.shape[0], self.config.layer_size
        picks = torch.rand(n, generator=generator, device=generator.device).cpu()
        regions = ellipse_regions(n, size, generator, device)
        stored_labels = self.prior_labels.cpu()
        for index, label in enumerate(labels.cpu().tolist()):
            members = torch.nonzero(stored_labels == label).flatten()
            if len(members):
                choice = members[min(int(picks[index] * len(members)), len(members) - 1)]
                regions[index] = self.prior_masks[choice].to(device=device, dtype=torch.float32)
        return random_dihedral(regions, generator)

    def resolve_control(
        self, control: Any, labels: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """A caller's control map as the internal ``[n, N + 1, S, S]`` one, values in [0, 1]."""
        n, planes, size = labels.shape[0], self.config.num_classes, self.config.layer_size
        control = torch.as_tensor(control).to(device=device, dtype=torch.float32)
        if control.ndim == 3:
            control = control[None].expand(n, -1, -1, -1)
        if control.ndim != 4 or control.shape[0] != n or control.shape[1] not in (1, planes):
            raise ValueError(
                f"control: expected [{planes}, H, W], [n={n}, {planes}, H, W], [1, H, W] or "
                f"[n={n}, 1, H, W], got shape {tuple(control.shape)}"
            )
        if not bool(torch.isfinite(control).all()):
            raise ValueError("control: expected finite values")
        control = control.clamp(0.0, 1.0)
        if control.shape[-2:] != (size, size):
            control = F.interpolate(control, size=(size, size), mode="area")
        if control.shape[1] == 1:
            return control_map(control, labels, planes)
        return torch.cat([control, torch.zeros_like(control[:, :1])], dim=1)

    def _resized(self, images: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
        size = self.config.layer_size
        images = images.to(device=device, dtype=torch.float32)
        if images.shape[1] != self.config.channels:
            raise ValueError(
                f"{name}: expected {self.config.channels} channel(s), got {images.shape[1]}"
            )
        if images.shape[-2:] != (size, size):
            images = F.interpolate(
                images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        return images.clamp(0.0, 1.0)

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
        control: Any = None,
        alpha_floor: float = 0.05,
        **options: Any,
    ) -> DefectLayer:
        if options:
            raise TypeError(f"DefectGAN.sample: unknown options {sorted(options)}")
        if reference is not None:
            raise ValueError("reference: DefectGAN takes no reference crops (give control=)")
        if background is None:
            raise ValueError("background: DefectGAN needs the patches its layers will cover")
        self._place_on(device)
        images = self._resized(background, "background", device)
        if control is None:
            regions = self.default_regions(labels, generator, device)
            planes = control_map(regions, labels, self.config.num_classes)
        else:
            planes = self.resolve_control(control, labels, device)
        with self._inference():
            foreground, spatial_map = self.generator(images, planes, generator)
        # Confined before the floor, so the floor still zeroes every faint value of the result.
        alpha = lift_alpha_floor(confine_to_control(spatial_map, planes), alpha_floor)
        return DefectLayer(
            foreground.to(dtype), alpha.to(dtype), labels.to(torch.int64), self.defect_types
        )

    @torch.no_grad()
    def restore(
        self, images: torch.Tensor, *, generator: Any = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Repaint defective ``images`` ``[B, C, H, W]`` (float in [0, 1]) as normal ones.

        The network runs at the layer size; its repaint layer and map are resized back, so the
        pixels it does not repaint keep their full resolution. Returns ``(restored [B, C, H, W],
        defect_map [B, 1, H, W])``, the map in [0, 1] saying how much of each pixel was
        repainted. A grey model restores RGB images through their luminance (hue kept).
        ``generator``: seed or ``torch.Generator`` of the injected noise (default 0: repeatable).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"images: expected a [B, C, H, W] tensor, got {shape}")
        if images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ValueError(
                f"images: expected float images with 1 or 3 channels, got {images.dtype} "
                f"with {images.shape[1]} channels"
            )
        device = next(iter(self.parameters())).device
        height, width = images.shape[-2:]
        source = images.to(device=device, dtype=torch.float32)
        grey_model_on_rgb = self.config.channels == 1 and source.shape[1] == 3
        native = luminance(source) if grey_model_on_rgb else source
        if self.config.channels == 3 and native.shape[1] == 1:
            native = native.expand(-1, 3, -1, -1)
        small = self._resized(native, "images", device)
        control = restoration_control(
            small.shape[0], self.config.num_classes, self.config.layer_size, small
        )
        with self._inference():
            foreground, spatial_map = self.generator(
                small, control, as_generator(generator, device)
            )
        if (height, width) != tuple(small.shape[-2:]):
            foreground = F.interpolate(
                foreground, size=(height, width), mode="bilinear", align_corners=False
            )
            spatial_map = F.interpolate(
                spatial_map, size=(height, width), mode="bilinear", align_corners=False
            )
        spatial_map = spatial_map.clamp(0.0, 1.0)
        if grey_model_on_rgb:
            restored = source + spatial_map * (foreground - native)
        else:
            restored = compose(native, foreground, spatial_map)
            if restored.shape[1] != source.shape[1]:
                restored = luminance(restored)
        return restored.clamp(0.0, 1.0).to(images.device, images.dtype), spatial_map.to(
            images.device, images.dtype
        )
