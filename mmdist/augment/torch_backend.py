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
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from mmdist.augment.draws import AppearanceDraws, WeakDraws, draw_appearance, draw_strong, draw_weak
from mmdist.augment.policy import (BLUR_SIZE, GIN_LAYERS, GIN_SLOPE, POOL, POOL_BY_NAME,
                                   affine_arguments)

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


def apply_appearance(u: torch.Tensor, draws: AppearanceDraws) -> torch.Tensor:
    """The appearance chain (mmdist.augment.policy.APPEARANCE, in its order) on (N, 1, H, W)
    float32 intensities u in [0, 1], each image with its own draws (on u's device); returns the
    same shape clamped to [0, 1]. Geometry is untouched, so masks need nothing."""
    def per_image(name):
        return draws.value(name).to(u.device)[:, None, None, None]

    n = u.shape[0]
    u = u.clamp(min=0.0) ** per_image("gamma")
    u = u * per_image("brightness")
    mean = u.mean(dim=(1, 2, 3), keepdim=True)
    u = mean + per_image("contrast") * (u - mean)
    # One grouped convolution filters every image with its own kernel (correlation, as DALI's).
    pad = BLUR_SIZE // 2
    u = F.conv2d(F.pad(u.reshape(1, n, *u.shape[-2:]), (pad,) * 4, mode="reflect"),
                 draws.blur.to(u)[:, None], groups=n).reshape(u.shape)
    x = 2 * u - 1
    g = x
    for layer in range(GIN_LAYERS):
        g = F.conv2d(g.reshape(1, n, *g.shape[-2:]), draws.gin_weights[:, layer, None].to(u),
                     padding=1, groups=n).reshape(u.shape)
        g = g + draws.gin_bias[:, layer].to(u)[:, None, None, None]
        if layer < GIN_LAYERS - 1:
            g = F.leaky_relu(g, GIN_SLOPE)
    alpha = per_image("gin")
    mixed = alpha * g + (1 - alpha) * x
    norm = lambda t: t.square().sum(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-6  # noqa: E731
    x = mixed * (norm(x) / norm(mixed))
    u = (x + 1) / 2 + draws.noise.to(u)
    return u.clamp(0.0, 1.0)


def appearance_uint8(images: torch.Tensor, draws: AppearanceDraws) -> torch.Tensor:
    """apply_appearance on (N, 1, H, W) uint8 images, rounded (half up) back to uint8."""
    u = apply_appearance(images.float() / 255.0, draws)
    return torch.floor(u * 255.0 + 0.5).to(torch.uint8)


class TorchAugmenter:
    """Weak and strong views of uint8 batches with the shared policy (AugmentConfig)."""

    def __init__(self, augment_config):
        self.config = augment_config

    def weak(self, images: torch.Tensor, masks: Optional[torch.Tensor], generator: torch.Generator):
        """images: (N, 1, H, W) uint8; masks: same or None. Returns the same shapes."""
        draws = draw_weak(generator, images.shape[0], images.shape[-1], self.config)
        return weak_views(images, masks, draws)

    def appearance(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The appearance chain on (N, 1, H, W) uint8 views, drawn with data.augment.appearance_p."""
        draws = draw_appearance(generator, images.shape[0], images.shape[-1],
                                self.config.appearance_p)
        return appearance_uint8(images, draws)

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
