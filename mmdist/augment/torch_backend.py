"""The augmentation policy (mmdist.augment.policy) on torch tensors with torchvision.transforms.v2.

Drawing and applying are separate: mmdist.augment.draws draws a batch's parameters (the DALI
backend reads the same draws), ``weak_views`` / ``apply_op`` apply them. Tests can therefore feed
the same parameters to both backends.

Images are uint8 tensors, masks uint8 {0, 1} or None: (N, 1, H, W) for ``weak_views``, (1, H, W)
for ``apply_op``. Geometric ops use nearest-neighbour interpolation (torchvision's RandAugment
default) and fill with 0.
"""

from __future__ import annotations

from typing import Optional

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from mmdist.augment.draws import WeakDraws, draw_strong, draw_weak
from mmdist.augment.policy import POOL, POOL_BY_NAME, affine_arguments

NEAREST = InterpolationMode.NEAREST


def _reflect_index(positions: torch.Tensor, length: int) -> torch.Tensor:
    """Reflect out-of-range indices without repeating the edge (numpy 'reflect', OpenCV 101)."""
    period = 2 * (length - 1)
    positions = positions.remainder(period)
    return torch.where(positions >= length, period - positions, positions)


def weak_views(images: torch.Tensor, masks: Optional[torch.Tensor], draws: WeakDraws):
    """Flip, then crop back to (H, W) from the reflect-padded image, each image with its own
    draws; identical to torchvision's horizontal_flip followed by RandomCrop(size, padding=pad,
    padding_mode='reflect'). (N, C, H, W) in and out."""
    height, width = images.shape[-2:]
    rows = _reflect_index(torch.arange(height) + (draws.top - draws.pad)[:, None], height)
    cols = _reflect_index(torch.arange(width) + (draws.left - draws.pad)[:, None], width)
    cols = torch.where(draws.flip[:, None], width - 1 - cols, cols)  # the flip, folded in

    def pick(x):  # two 1-D selections per image: 2.5x faster than one gather over the batch
        return torch.stack([x[i].index_select(-2, rows[i]).index_select(-1, cols[i])
                            for i in range(x.shape[0])])

    return pick(images), (pick(masks) if masks is not None else None)


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

    def weak(self, images: torch.Tensor, masks: Optional[torch.Tensor], generator: torch.Generator):
        """images: (N, 1, H, W) uint8; masks: same or None. Returns the same shapes."""
        draws = draw_weak(generator, images.shape[0], images.shape[-1], self.config)
        return weak_views(images, masks, draws)

    def strong(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Weak view, then RandAugment(n, m) per image. (N, 1, H, W) uint8 in and out."""
        draws = draw_strong(generator, images.shape[0], images.shape[-1], self.config)
        views, _ = weak_views(images, None, draws.weak)
        out = []
        # The ops differ per image, so they are applied one image at a time.
        for view, ops, magnitudes, signs, applied in zip(
                views, draws.op.tolist(), draws.magnitude.tolist(), draws.sign.tolist(),
                draws.applied.tolist()):
            for op, magnitude, sign, on in zip(ops, magnitudes, signs, applied):
                if on:
                    view, _ = apply_op(view, None, POOL[op].name, magnitude, sign)
            out.append(view)
        return torch.stack(out)
