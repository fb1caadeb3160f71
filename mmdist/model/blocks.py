"""Building blocks of the paper's U-Net-shaped backbone (Appendix A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE_CHANNELS = (16, 32, 64, 128, 256)


def scaled_channels(width: float) -> tuple[int, ...]:
    """The five encoder widths for a channel multiplier (1.0 = the paper's 16..256)."""
    return tuple(max(2, int(round(c * width))) for c in BASE_CHANNELS)


def double_conv(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """(Conv3x3 -> InstanceNorm -> LeakyReLU(0.2)) x 2 -> Dropout, as in the paper.

    InstanceNorm (no affine, no running stats) normalises each image on its own, so batching
    several streams together never changes a result.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.InstanceNorm2d(out_channels),
        nn.LeakyReLU(0.2),
        nn.Dropout(dropout),
    )


class Encoder(nn.Module):
    """Five double-conv blocks with 2x max-pooling between them.

    Input (N, 1, H, W) float; returns the five block outputs, finest first:
    shapes (N, C_k, H / 2**k, W / 2**k) for k = 0..4.
    """

    def __init__(self, channels: tuple[int, ...], dropout: float, in_channels: int = 1):
        super().__init__()
        ins = (in_channels,) + channels[:-1]
        self.blocks = nn.ModuleList(double_conv(i, o, dropout) for i, o in zip(ins, channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, block in enumerate(self.blocks):
            if index:
                x = F.max_pool2d(x, 2)
            x = block(x)
            features.append(x)
        return features


class ClassifierHead(nn.Module):
    """MaxPool -> global AvgPool -> Linear(C_5, classes), on the deepest encoder features."""

    def __init__(self, in_channels: int, classes: int = 2):
        super().__init__()
        self.fc = nn.Linear(in_channels, classes)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        pooled = F.max_pool2d(deepest, 2).mean(dim=(2, 3))
        return self.fc(pooled)


class Decoder(nn.Module):
    """Four up blocks (bilinear x2 upsample, concat skip, double conv) and a 1x1 conv to 1 channel.

    ``bridge_channels`` extra channels (the saliency bridge [X, S]) are concatenated at the first
    block, at 1/8 of the input size.
    """

    def __init__(self, channels: tuple[int, ...], dropout: float, bridge_channels: int = 0):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.bridge_channels = bridge_channels
        self.blocks = nn.ModuleList([
            double_conv(c5 + c4 + bridge_channels, c4, dropout),
            double_conv(c4 + c3, c3, dropout),
            double_conv(c3 + c2, c2, dropout),
            double_conv(c2 + c1, c1, dropout),
        ])
        self.head = nn.Conv2d(c1, 1, 1)

    def forward(self, features: list[torch.Tensor], bridge: torch.Tensor | None = None) -> torch.Tensor:
        """features: encoder outputs (finest first); bridge: (N, bridge_channels, H, W) or None.

        Returns mask logits (N, 1, H, W).
        """
        x = features[-1]
        skips = features[-2::-1]
        for index, (block, skip) in enumerate(zip(self.blocks, skips)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
            parts = [x, skip]
            if index == 0 and self.bridge_channels:
                if bridge is None:
                    raise ValueError("this decoder was built with a saliency bridge; pass bridge")
                parts.append(F.interpolate(bridge, size=skip.shape[-2:], mode="bilinear",
                                           align_corners=True))
            x = block(torch.cat(parts, dim=1))
        return self.head(x)
