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
