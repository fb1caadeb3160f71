"""The random parameters of a batch's views, drawn in one place for both backends.

Each view of a step draws from its own generator, seeded by (seed, rank, step, view); the torch
backend applies the draws with torchvision, the DALI backend feeds them to its graph, so the two
make the same views and a view is a pure function of the step. A batch costs a few tensor calls,
whatever its size (not a Python loop per image).

The distributions (mmdist.augment.policy): horizontal flip with p = 1/2; crop offsets into the
reflect-padded frame uniform in [0, 2 * pad], rows and columns independently; per RandAugment slot
an op uniform over POOL, a magnitude uniform in 1..m, a sign +-1 with p = 1/2 (read by the signed
ops only) and, with ``strong_apply: half``, a coin with p = 1/2 that decides whether it applies.
The order of the calls below is part of that contract: changing it changes every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmdist.augment.policy import (APPEARANCE, APPEARANCE_INDEX, GIN_LAYERS, POOL, gaussian_kernels,
                                  pad_pixels)


@dataclass(frozen=True)
class WeakDraws:
    """Weak-view parameters of N images: flip (N,) bool; top, left (N,) int64 crop offsets into
    the frame padded by ``pad`` pixels on each side, in [0, 2 * pad]."""

    flip: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    pad: int


@dataclass(frozen=True)
class StrongDraws:
    """Strong-view parameters of N images with n RandAugment slots: the weak view's draws, then
    op (N, n) int64 indices into POOL, magnitude (N, n) int64 in 1..m, sign (N, n) int64 +-1 and
    applied (N, n) bool."""

    weak: WeakDraws
    op: torch.Tensor
    magnitude: torch.Tensor
    sign: torch.Tensor
    applied: torch.Tensor


def draw_weak(generator: torch.Generator, count: int, size: int, augment_config) -> WeakDraws:
    """Weak-view parameters for ``count`` images of ``size`` pixels (AugmentConfig)."""
    pad = pad_pixels(size, augment_config.pad_fraction)
    top, left = torch.randint(0, 2 * pad + 1, (2, count), generator=generator)
    flip = torch.randint(0, 2, (count,), generator=generator).bool()
    return WeakDraws(flip=flip, top=top, left=left, pad=pad)


def draw_strong(generator: torch.Generator, count: int, size: int, augment_config) -> StrongDraws:
    """Strong-view parameters: the weak draws of the batch, then its RandAugment draws."""
    weak = draw_weak(generator, count, size, augment_config)
    shape = (count, augment_config.strong_ops)
    op = torch.randint(0, len(POOL), shape, generator=generator)
    magnitude = torch.randint(1, augment_config.strong_magnitude + 1, shape, generator=generator)
    sign = torch.randint(0, 2, shape, generator=generator) * 2 - 1
    # The coin is drawn under 'always' too, so that both settings draw the same ops.
    coin = torch.rand(shape, generator=generator)
    applied = coin < 0.5 if augment_config.strong_apply == "half" else torch.ones(shape, dtype=torch.bool)
    return StrongDraws(weak=weak, op=op, magnitude=magnitude, sign=sign, applied=applied)


@dataclass(frozen=True)
class AppearanceDraws:
    """Appearance parameters of N images (mmdist.augment.policy.APPEARANCE), identity values
    where an op was drawn off: ``values`` (N, len(APPEARANCE)) float32 in the table's order;
    blur (N, 5, 5) float32 kernels; gin_weights (N, GIN_LAYERS, 3, 3) and gin_bias
    (N, GIN_LAYERS) float32; noise (N, 1, S, S) float32 (std already applied)."""

    values: torch.Tensor
    blur: torch.Tensor
    gin_weights: torch.Tensor
    gin_bias: torch.Tensor
    noise: torch.Tensor

    def value(self, name: str) -> torch.Tensor:
        return self.values[:, APPEARANCE_INDEX[name]]


def draw_appearance(generator: torch.Generator, count: int, size: int, p: float) -> AppearanceDraws:
    """Appearance parameters for ``count`` images of ``size`` pixels, each op on with probability
    ``p``. Everything is drawn whatever p is, in a fixed order, so p changes no other draw."""
    n_ops = len(APPEARANCE)
    on = torch.rand((count, n_ops), generator=generator) < p
    uniform = torch.rand((count, n_ops), generator=generator, dtype=torch.float64)
    low = torch.tensor([s.low for s in APPEARANCE], dtype=torch.float64)
    high = torch.tensor([s.high for s in APPEARANCE], dtype=torch.float64)
    log = torch.tensor([s.log for s in APPEARANCE])
    linear = low + uniform * (high - low)
    logged = torch.exp(low.log() + uniform * (high.log() - low.log())) if log.any() else linear
    values = torch.where(log, logged, linear)
    identity = torch.tensor([s.identity for s in APPEARANCE], dtype=torch.float64)
    values = torch.where(on, values, identity).float()
    weights = torch.randn((count, GIN_LAYERS, 3, 3), generator=generator)
    one_by_one = torch.rand((count, GIN_LAYERS), generator=generator) < 0.5
    ring = torch.ones(3, 3)
    ring[1, 1] = 0
    weights = torch.where(one_by_one[..., None, None] & ring.bool(), 0.0, weights)
    bias = torch.randn((count, GIN_LAYERS), generator=generator)
    noise = torch.randn((count, 1, size, size), generator=generator)
    noise = noise * values[:, APPEARANCE_INDEX["noise"], None, None, None]
    blur = torch.from_numpy(gaussian_kernels(values[:, APPEARANCE_INDEX["blur"]].numpy()))
    return AppearanceDraws(values=values, blur=blur, gin_weights=weights, gin_bias=bias,
                           noise=noise)
