"""The augmentation policy (mmdist.augment.policy) on torch tensors with torchvision.transforms.v2.

Sampling and applying are separate: ``sample_weak`` / ``sample_strong`` draw the parameters from a
torch.Generator, ``apply_weak`` / ``apply_op`` apply them. Tests (and the DALI backend's parity
checks) can therefore feed the same parameters to both backends.

Images are (1, H, W) uint8 tensors; masks are (1, H, W) uint8 {0, 1} or None. Geometric ops use
nearest-neighbour interpolation (torchvision's RandAugment default) and fill with 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from mmdist.augment.policy import POOL, POOL_BY_NAME, affine_arguments, pad_pixels

NEAREST = InterpolationMode.NEAREST


@dataclass(frozen=True)
class WeakParams:
    flip: bool
    top: int
    """Crop offset into the padded image, in [0, 2 * pad]."""
    left: int
    pad: int


@dataclass(frozen=True)
class OpDraw:
    name: str
    magnitude: int
    sign: int
    applied: bool


def sample_weak(generator: torch.Generator, size: int, pad_fraction: float) -> WeakParams:
    pad = pad_pixels(size, pad_fraction)
    top, left = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    flip = bool(torch.randint(0, 2, (1,), generator=generator).item())
    return WeakParams(flip=flip, top=top, left=left, pad=pad)


def sample_strong(generator: torch.Generator, n_ops: int, max_magnitude: int, apply: str) -> list[OpDraw]:
    draws = []
    for _ in range(n_ops):
        index = int(torch.randint(0, len(POOL), (1,), generator=generator))
        magnitude = int(torch.randint(1, max_magnitude + 1, (1,), generator=generator))
        sign = 1 if int(torch.randint(0, 2, (1,), generator=generator)) else -1
        coin = float(torch.rand((1,), generator=generator))
        applied = apply == "always" or coin < 0.5
        draws.append(OpDraw(POOL[index].name, magnitude, sign, applied))
    return draws


def _reflect_index(positions: torch.Tensor, length: int) -> torch.Tensor:
    """Reflect out-of-range indices without repeating the edge (numpy 'reflect', OpenCV 101)."""
    period = 2 * (length - 1)
    positions = positions.remainder(period)
    return torch.where(positions >= length, period - positions, positions)


def reflect_crop(image: torch.Tensor, top: int, left: int, pad: int) -> torch.Tensor:
    """Crop an (C, H, W) image back to (C, H, W) from its reflect-padded version, offsets into the
    padded frame; identical to torchvision RandomCrop(size, padding=pad, padding_mode='reflect')."""
    height, width = image.shape[-2:]
    rows = _reflect_index(torch.arange(height) + top - pad, height)
    cols = _reflect_index(torch.arange(width) + left - pad, width)
    return image[..., rows[:, None], cols[None, :]]


def apply_weak(image: torch.Tensor, mask: Optional[torch.Tensor], params: WeakParams):
    if params.flip:
        image = TF.horizontal_flip(image)
        mask = TF.horizontal_flip(mask) if mask is not None else None
    image = reflect_crop(image, params.top, params.left, params.pad)
    mask = reflect_crop(mask, params.top, params.left, params.pad) if mask is not None else None
    return image, mask


def equalize(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalization of a (1, H, W) uint8 image with OpenCV's lookup table (the one DALI's
    equalize implements): the lowest occupied level maps to 0 and level k to
    round(255 * (cdf(k) - h0) / (pixels - h0)), h0 the lowest level's count; a flat image is
    returned as it is. (PIL's and torchvision's table excludes the highest level's count instead;
    the two differ most when zero fill from a geometric op dominates the histogram.)"""
    flat = image.reshape(-1).long()
    hist = torch.bincount(flat, minlength=256)
    lowest = int(torch.nonzero(hist)[0, 0])
    rest = flat.numel() - int(hist[lowest])
    if rest == 0:
        return image.clone()
    scale = torch.tensor(255.0, dtype=torch.float32) / torch.tensor(rest, dtype=torch.float32)
    lut = torch.round((hist.cumsum(0) - hist[lowest]).float() * scale).clamp_(0, 255)
    lut[: lowest + 1] = 0
    return lut.to(torch.uint8)[image.long()]


def _affine(image, mask, angle=0.0, translate=(0, 0), shear=(0.0, 0.0)):
    kwargs = dict(angle=angle, translate=list(translate), scale=1.0, shear=list(shear),
                  interpolation=NEAREST, fill=0)
    image = TF.affine(image, **kwargs)
    mask = TF.affine(mask, **kwargs) if mask is not None else None
    return image, mask


def apply_op(image: torch.Tensor, mask: Optional[torch.Tensor], name: str, magnitude: int,
             sign: int = 1):
    """Apply one pool op at integer magnitude 1..10 (sign +-1 for the signed ops)."""
    spec = POOL_BY_NAME[name]
    value = spec.strength(magnitude, sign)
    size = image.shape[-1]
    if name == "identity":
        return image, mask
    if name == "autocontrast":
        return TF.autocontrast(image), mask
    if name == "brightness":
        return TF.adjust_brightness(image, value), mask
    if name == "contrast":
        return TF.adjust_contrast(image, value), mask
    if name == "equalize":
        return equalize(image), mask
    if name == "posterize":
        return TF.posterize(image, int(value)), mask
    if name == "sharpness":
        return TF.adjust_sharpness(image, value), mask
    if name == "solarize":
        return TF.solarize(image, 256 - value) if value > 0 else image, mask
    if spec.geometric:
        angle, translate, shear = affine_arguments(name, value, size)
        return _affine(image, mask, angle=angle, translate=translate, shear=shear)
    raise KeyError(f"unknown augmentation op {name!r}")


class TorchAugmenter:
    """Weak and strong views of uint8 batches with the shared policy (AugmentConfig)."""

    def __init__(self, augment_config):
        self.config = augment_config

    # The order of the draws is part of the contract: the DALI backend replays these two methods
    # to apply the very parameters this backend would.
    def draw_weak(self, generator: torch.Generator, count: int, size: int) -> list[WeakParams]:
        """Weak-view parameters for ``count`` images of ``size`` pixels, in batch order."""
        return [sample_weak(generator, size, self.config.pad_fraction) for _ in range(count)]

    def draw_strong(self, generator: torch.Generator, count: int, size: int):
        """Strong-view parameters: the weak parameters of the whole batch first, then each
        image's RandAugment draws. Returns (list[WeakParams], list[list[OpDraw]])."""
        weak = self.draw_weak(generator, count, size)
        ops = [sample_strong(generator, self.config.strong_ops, self.config.strong_magnitude,
                             self.config.strong_apply) for _ in range(count)]
        return weak, ops

    def weak(self, images: torch.Tensor, masks: Optional[torch.Tensor], generator: torch.Generator):
        """images: (N, 1, H, W) uint8; masks: same or None. Returns the same shapes."""
        out_images, out_masks = [], []
        for i, params in enumerate(self.draw_weak(generator, images.shape[0], images.shape[-1])):
            image, mask = apply_weak(images[i], masks[i] if masks is not None else None, params)
            out_images.append(image)
            out_masks.append(mask)
        return torch.stack(out_images), (torch.stack(out_masks) if masks is not None else None)

    def strong(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Weak view, then RandAugment(n, m) per image. (N, 1, H, W) uint8 in and out."""
        weak_params, op_draws = self.draw_strong(generator, images.shape[0], images.shape[-1])
        out = []
        for image, params, draws in zip(images, weak_params, op_draws):
            image, _ = apply_weak(image, None, params)
            for draw in draws:
                if draw.applied:
                    image, _ = apply_op(image, None, draw.name, draw.magnitude, draw.sign)
            out.append(image)
        return torch.stack(out)
