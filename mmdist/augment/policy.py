"""The augmentation policy, declared once; every backend (torch, DALI) reads this table.

Weak view (WAug): random horizontal flip + random crop of the full size from a reflect-padded
image (padding = pad_fraction * size). Strong view (GAug): the weak view, then RandAugment with
``n`` ops drawn uniformly from POOL, each with an integer magnitude v drawn uniformly in [1, m]
(applied always, as in FixMatch, or each with p=0.5, as in the authors' code).

An op's strength at magnitude v is ``bias + max_value * v / 10`` (the reference's scaling);
``signed`` ops flip the sign with p=0.5. Geometric ops move the mask too (nearest), intensity ops
touch the image only. No colour op is in the pool: DALI's colour ops kill the process on 1-channel
images.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_MAGNITUDE = 10


@dataclass(frozen=True)
class OpSpec:
    name: str
    geometric: bool
    max_value: float = 0.0
    bias: float = 0.0
    signed: bool = False
    integer: bool = False

    def strength(self, magnitude: int, sign: int = 1) -> float:
        """The op's parameter at integer magnitude 1..10 (sign +-1 for signed ops)."""
        value = magnitude * self.max_value / MAX_MAGNITUDE
        if self.integer:
            value = int(value)
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


def pad_pixels(size: int, pad_fraction: float) -> int:
    """Reflect padding of the weak crop in pixels (the reference: int(256 * 0.125) = 32)."""
    return int(size * pad_fraction)
