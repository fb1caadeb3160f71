"""The augmentation policy, declared once; every backend (torch, DALI) reads this table.

Weak view (WAug): random horizontal flip + random crop of the full size from a reflect-padded
image (padding = pad_fraction * size). Strong view (GAug): the weak view, then RandAugment with
``n`` ops drawn uniformly from POOL, each with an integer magnitude v drawn uniformly in [1, m]
(applied always, as in FixMatch, or each with p=0.5, as in the authors' code).

An op's strength at magnitude v is ``bias + max_value * v / 10`` (the reference's scaling);
``signed`` ops flip the sign with p=0.5. Geometric ops move the mask too (nearest), intensity ops
touch the image only. Equalize uses OpenCV's lookup table in both backends (the one DALI
implements), not PIL's. No colour op is in the pool: DALI's colour ops kill the process on 1-channel
images. The functions below take numbers or numpy arrays (an entry per image) alike, so that a
batch's arguments take a few array operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_MAGNITUDE = 10


@dataclass(frozen=True)
class OpSpec:
    name: str
    geometric: bool
    max_value: float = 0.0
    bias: float = 0.0
    signed: bool = False
    integer: bool = False

    def strength(self, magnitude, sign=1):
        """The op's parameter at integer magnitude 1..10 (sign +-1 for signed ops); numbers or
        arrays of them."""
        value = magnitude * self.max_value / MAX_MAGNITUDE
        if self.integer:
            value = _whole(value)
        value = value + self.bias
        return value * sign if self.signed else value


POOL: tuple[OpSpec, ...] = (
    OpSpec("autocontrast", geometric=False),
    OpSpec("brightness", geometric=False, max_value=0.9, bias=0.05),
    OpSpec("contrast", geometric=False, max_value=0.9, bias=0.05),
    OpSpec("equalize", geometric=False),
    OpSpec("identity", geometric=False),
    OpSpec("posterize", geometric=False, max_value=4, bias=4, integer=True),  # bits kept: 4..8
    OpSpec("rotate", geometric=True, max_value=30, signed=True, integer=True),  # degrees
    OpSpec("sharpness", geometric=False, max_value=0.9, bias=0.05),
    OpSpec("shear_x", geometric=True, max_value=0.3, signed=True),  # shear factor
    OpSpec("shear_y", geometric=True, max_value=0.3, signed=True),
    OpSpec("solarize", geometric=False, max_value=256, integer=True),  # threshold = 256 - value
    OpSpec("translate_x", geometric=True, max_value=0.3, signed=True),  # fraction of the size
    OpSpec("translate_y", geometric=True, max_value=0.3, signed=True),
)
POOL_BY_NAME = {op.name: op for op in POOL}


def _whole(value):
    """int(value), toward zero, for a number or an array."""
    return value.astype(np.int64) if isinstance(value, np.ndarray) else int(value)


def pad_pixels(size: int, pad_fraction: float) -> int:
    """Reflect padding of the weak crop in pixels (the reference: int(256 * 0.125) = 32)."""
    return int(size * pad_fraction)


def affine_arguments(name: str, value, size: int):
    """A geometric op as torchvision affine arguments: (angle in degrees, integer translation in
    pixels (x, y), shear angles in degrees (x, y)), all about the image centre.

    ``value`` is the op's strength (OpSpec.strength): degrees for rotate, a shear factor for
    shear_x/y (shear angle = atan(factor)), a fraction of ``size`` for translate_x/y.
    """
    if name == "rotate":
        return value * 1.0, (0, 0), (0.0, 0.0)
    if name == "shear_x":
        return 0.0, (0, 0), (np.degrees(np.arctan(value)), 0.0)
    if name == "shear_y":
        return 0.0, (0, 0), (0.0, np.degrees(np.arctan(value)))
    if name == "translate_x":
        return 0.0, (_whole(value * size), 0), (0.0, 0.0)
    if name == "translate_y":
        return 0.0, (0, _whole(value * size)), (0.0, 0.0)
    raise KeyError(f"{name!r} is not a geometric op of the pool")


def inverse_affine_matrix(angle, translate, shear, size: int) -> np.ndarray:
    """The 2x3 matrix mapping an output pixel position to its source position, in absolute pixel
    coordinates with (0, 0) at the corner of the first pixel (pixel centres at i + 0.5); float64
    (..., 2, 3), one matrix per entry of the (broadcast) arguments.

    Same transform as torchvision's affine with scale 1 about the image centre
    (M = T * C * R * SHy * SHx * C^-1, inverted), written out so that backends that take a matrix
    (DALI warp_affine) apply exactly what torchvision applies.
    """
    rot, sx, sy = np.radians(angle), np.radians(shear[0]), np.radians(shear[1])
    a = np.cos(rot - sy) / np.cos(sy)
    b = -np.cos(rot - sy) * np.tan(sx) / np.cos(sy) - np.sin(rot)
    c = np.sin(rot - sy) / np.cos(sy)
    d = -np.sin(rot - sy) * np.tan(sx) / np.cos(sy) + np.cos(rot)
    # The forward linear part [[a, b], [c, d]] has determinant 1, so its inverse is the adjugate.
    inv = [[d, -b], [-c, a]]
    centre = size / 2.0
    tx, ty = translate
    # source = inv @ (dst - centre - t) + centre
    entries = np.broadcast_arrays(*[value for r0, r1 in inv
                                    for value in (r0, r1, centre - r0 * (centre + tx) - r1 * (centre + ty))])
    return np.stack(entries, -1).reshape(entries[0].shape + (2, 3))


# ---- appearance (intensity) augmentation of the segmentation streams ------------------------
@dataclass(frozen=True)
class AppearanceSpec:
    """One appearance op: drawn on with probability p (AugmentConfig.appearance_p or
    LossConfig.w2s_appearance_p), its parameter uniform in [low, high] (log-uniform when
    ``log``); ``identity`` is the parameter that leaves an image as it is."""

    name: str
    low: float
    high: float
    identity: float
    log: bool = False


APPEARANCE: tuple[AppearanceSpec, ...] = (
    AppearanceSpec("gamma", 0.7, 1.5, 1.0, log=True),  # u -> u ** gamma, u in [0, 1]
    AppearanceSpec("brightness", 0.75, 1.25, 1.0),  # u -> u * factor
    AppearanceSpec("contrast", 0.75, 1.25, 1.0),  # u -> mean + factor * (u - mean)
    AppearanceSpec("blur", 0.25, 1.5, 0.0),  # Gaussian sigma in pixels, BLUR_SIZE kernel, reflect-101
    AppearanceSpec("gin", 0.0, 1.0, 0.0),  # GIN mixing weight alpha (random shallow convolution)
    AppearanceSpec("noise", 0.0, 0.05, 0.0),  # std of additive Gaussian noise, on [0, 1]
)
"""Applied in this order after the weak view, on u = image / 255 in float32; the result is
clamped to [0, 1] and rounded to uint8 once, at the end (the data streams), or kept as float (the
weak-to-strong strong view). Intensity only: masks are never touched."""
APPEARANCE_INDEX = {spec.name: i for i, spec in enumerate(APPEARANCE)}
BLUR_SIZE = 5
GIN_LAYERS = 4
"""GIN (Ouyang et al., IEEE TMI 2022): GIN_LAYERS convolutions with N(0, 1) weights and biases,
each 1x1 or 3x3 (drawn; a 1x1 is a 3x3 with zeros around its centre), zero padding, LeakyReLU(0.2)
between them; alpha * GIN(x) + (1 - alpha) * x on x = 2u - 1, rescaled to x's Frobenius norm.
One channel throughout (X-rays are grayscale; the published network mixes 2 intermediate
channels)."""
GIN_SLOPE = 0.2


def gaussian_kernels(sigma: np.ndarray) -> np.ndarray:
    """(N,) sigmas -> (N, BLUR_SIZE, BLUR_SIZE) float32 normalised Gaussian kernels; sigma 0 gives
    the identity (a 1 at the centre)."""
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1, 1)
    offsets = np.arange(BLUR_SIZE) - BLUR_SIZE // 2
    one_d = np.exp(-0.5 * (offsets[None] / np.maximum(sigma, 1e-6)) ** 2)
    one_d /= one_d.sum(1, keepdims=True)
    return (one_d[:, :, None] * one_d[:, None, :]).astype(np.float32)
