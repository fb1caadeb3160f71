"""Building blocks of the paper's U-Net-shaped backbone (Appendix A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE_CHANNELS = (16, 32, 64, 128, 256)


def scaled_channels(width: float) -> tuple[int, ...]:
    """The five encoder widths for a channel multiplier (1.0 = the paper's 16..256)."""
    return tuple(max(2, int(round(c * width))) for c in BASE_CHANNELS)


class WordDropout(nn.Module):
    """Dropout with torch's semantics (training: zero each element with probability ``p``, scale
    the kept ones by 1 / (1 - p); eval: identity), whose CPU mask costs a quarter of torch's.

    torch's CPU dropout draws one Bernoulli variate per element: profiled at 18% of a 128 px
    MultiMix training step on two cores. Here one 64-bit random word serves four elements (16
    random bits each, compared against p rounded to a multiple of 1/65536), from the same global
    generator (so per-rank seeding and checkpointed RNG states cover it). On CUDA torch's fused
    kernel is already fast and is used as it is.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = -2**15 + round(p * 2**16)
        """Keep an element when its signed 16-bit draw is >= this (uniform on [-2**15, 2**15))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        count = x.numel()
        words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-2**63, None)
        draws = words.view(torch.int16)[:count].view(x.shape)
        kept, dropped = (torch.tensor(v, dtype=x.dtype) for v in (1.0 / (1.0 - self.p), 0.0))
        return x * torch.where(draws >= self.threshold, kept, dropped)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class InstanceNorm(nn.GroupNorm):
    """InstanceNorm without affine parameters or running statistics, as GroupNorm with one group
    per channel: the same normalisation (per image and channel over H, W; eps 1e-5; no state),
    and torch's CPU group-norm kernel runs a double conv block 20-25% faster (forward and
    backward) than its instance-norm path, which goes through batch norm on a reshaped copy.

    Under bf16/fp16 the statistics are taken in fp32 and the result cast back (CUDA autocast
    does so for group norm by itself; on the CPU the half-precision backward overflowed in the
    fp16 saliency's second-order pass)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def double_conv(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """(Conv3x3 -> InstanceNorm -> LeakyReLU(0.2)) x 2 -> Dropout, as in the paper.

    InstanceNorm (no affine, no running stats) normalises each image on its own, so batching
    several streams together never changes a result.
    """
    # The activations run in place on the normalised tensor: the norm's backward needs its
    # input, not its output, so nothing autograd saved is overwritten, and a step allocates and
    # streams through one activation-sized tensor less per layer.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        InstanceNorm(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        InstanceNorm(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
        WordDropout(dropout),
    )


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (nn.Conv2d's parameters and state_dict) computed as one matrix product
    over the pixels: oneDNN's 1x1 kernel with 16 input channels and 1 output profiled at 4x the
    time of the product (forward and backward) on the CPU, for the same result."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        weight = self.weight.view(self.out_channels, self.in_channels)
        out = torch.matmul(weight, x.flatten(2)).view(n, self.out_channels, h, w)
        return out + self.bias.view(1, -1, 1, 1).to(out.dtype)  # autocast: stay in its dtype


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
        self.head = PointwiseConv(c1, 1)

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
