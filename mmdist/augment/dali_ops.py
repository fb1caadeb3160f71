"""The augmentation policy (mmdist.augment.policy) as DALI graph pieces, plus the host-side
arguments that drive them.

The random parameters are drawn on the host by mmdist.augment.draws, the draws the torch backend
applies, from the same per-(seed, rank, step, view) generators, and fed to DALI as per-sample
argument inputs computed for the whole batch at once. The DALI graph only applies them, so both
backends apply identical parameters and a view is a pure function of the step.

Every graph piece takes 1-channel uint8 HWC images and reproduces the torchvision.transforms.v2
kernel the torch backend calls, rounding included (uint8 results are truncated, as torchvision's
``.to(uint8)`` does). No colour operator appears anywhere: DALI's colour ops (hue, saturation,
color_twist, hsv) kill the process on 1-channel input.

The pieces that branch per sample (``apply_pool_op``) use DALI conditionals, so the pipeline that
calls them must be declared with ``@pipeline_def(enable_conditionals=True)`` in a .py file.
"""

from __future__ import annotations

import functools

import numpy as np
from nvidia.dali import fn, types
import nvidia.dali.math as dmath

from mmdist.augment.policy import (APPEARANCE_INDEX, GIN_LAYERS, GIN_SLOPE, MAX_MAGNITUDE, POOL,
                                   POOL_BY_NAME, affine_arguments, inverse_affine_matrix)

KINDS: tuple[str, ...] = ("identity", "warp", "autocontrast", "brightness", "contrast", "equalize",
                          "posterize", "sharpness", "solarize")
"""What the DALI graph can do to a sample; every geometric op of the pool is a 'warp' whose
matrix is computed on the host."""
KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
IDENTITY_MATRIX = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)


def kind_of(name: str) -> str:
    """The DALI kind that implements pool op ``name``."""
    return "warp" if POOL_BY_NAME[name].geometric else name


# ---- host side: the drawn parameters as DALI argument inputs, a batch at a time -----------------
def weak_arguments(draws) -> tuple[np.ndarray, np.ndarray]:
    """WeakDraws of N images -> (flip int32 (N,), slice anchor int32 (N, 2) [top, left] in the
    unpadded frame)."""
    anchor = np.empty((len(draws.flip), 2), dtype=np.int32)
    anchor[:, 0], anchor[:, 1] = draws.top.numpy(), draws.left.numpy()
    anchor -= draws.pad
    return draws.flip.numpy().astype(np.int32), anchor


def op_arguments(op: np.ndarray, magnitude: np.ndarray, sign: np.ndarray, applied: np.ndarray,
                 size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N drawn pool ops (indices into POOL, magnitudes, signs, applied flags; (N,) arrays) ->
    (kind code int32 (N,), value float32 (N,), matrix float32 (N, 2, 3)).

    ``value`` is what the kind needs: the blend factor of brightness/contrast/sharpness, the bit
    mask of posterize, the threshold of solarize; geometric ops carry their source-from-output
    matrix instead. One pass per pool op present, not per image.
    """
    op, magnitude, sign, applied = (np.asarray(a).reshape(-1) for a in (op, magnitude, sign, applied))
    kind = np.full(op.shape, KIND_CODE["identity"], dtype=np.int32)
    value = np.zeros(op.shape, dtype=np.float32)
    matrix = np.repeat(IDENTITY_MATRIX[None], len(op), axis=0)
    for index in np.unique(op[applied]):
        spec = POOL[index]
        rows = np.flatnonzero(applied & (op == index))
        strength = spec.strength(magnitude[rows], sign[rows])
        name = kind_of(spec.name)
        if name == "warp":
            matrix[rows] = inverse_affine_matrix(*affine_arguments(spec.name, strength, size), size)
        elif name == "posterize":
            bits = strength.astype(np.int64)
            value[rows] = ((1 << bits) - 1) << (8 - bits)
        elif name == "solarize":
            value[rows] = 256 - strength
            rows = rows[strength > 0]  # the torch backend leaves the image alone at threshold 256
        elif name in ("brightness", "contrast", "sharpness"):
            value[rows] = strength
        kind[rows] = KIND_CODE[name]
    return kind, value, matrix


@functools.lru_cache(maxsize=8)
def op_table(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """op_arguments of every drawable pool op at ``size``, as flat tables: entry
    ``(op * MAX_MAGNITUDE + magnitude - 1) * 2 + (sign > 0)`` holds the applied op's
    (kind, value, matrix), the last entry (NOT_APPLIED) the identity of an op drawn off.

    A drawn op is one of these 261 cases, so a batch's arguments are a lookup, made once per size
    and process, not an op_arguments pass per batch (which cost more than the draws themselves).
    """
    op, magnitude, sign = (a.reshape(-1) for a in np.meshgrid(
        np.arange(len(POOL)), np.arange(1, MAX_MAGNITUDE + 1), np.array([-1, 1]), indexing="ij"))
    applied = np.append(np.ones(op.shape, dtype=bool), False)
    kind, value, matrix = op_arguments(np.append(op, 0), np.append(magnitude, 1),
                                       np.append(sign, 1), applied, size)
    for table in (kind, value, matrix):
        table.setflags(write=False)  # shared by every batch
    return kind, value, matrix


NOT_APPLIED = 2 * MAX_MAGNITUDE * len(POOL)
"""The op_table entry of an op drawn off (strong_apply: half)."""


def strong_arguments(draws, slot: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """op_arguments of RandAugment slot ``slot`` of a batch's StrongDraws, looked up in op_table:
    (kind int32 (N,), value float32 (N,), matrix float32 (N, 2, 3)), fresh arrays."""
    op, magnitude, sign, applied = (t[:, slot].numpy() for t in
                                    (draws.op, draws.magnitude, draws.sign, draws.applied))
    entry = np.where(applied, (op * MAX_MAGNITUDE + magnitude - 1) * 2 + (sign > 0), NOT_APPLIED)
    kind, value, matrix = op_table(size)
    return kind[entry], value[entry], matrix[entry]


def appearance_arguments(draws) -> list[np.ndarray]:
    """AppearanceDraws of N images -> the host inputs ``appearance`` pops, in its order: gamma,
    brightness, contrast (N,) float32; blur kernels (N, 5, 5); per GIN layer its (N, 3, 3) kernels
    and (N,) biases; GIN alpha (N,); noise (N, S, S, 1) float32 HWC."""
    values = draws.values.numpy()
    out = [np.ascontiguousarray(values[:, APPEARANCE_INDEX[name]])
           for name in ("gamma", "brightness", "contrast")]
    out.append(draws.blur.numpy())
    for layer in range(GIN_LAYERS):
        out += [np.ascontiguousarray(draws.gin_weights[:, layer].numpy()),
                np.ascontiguousarray(draws.gin_bias[:, layer].numpy())]
    out.append(np.ascontiguousarray(values[:, APPEARANCE_INDEX["gin"]]))
    out.append(np.ascontiguousarray(draws.noise.numpy().transpose(0, 2, 3, 1)))
    return out


APPEARANCE_INPUTS = 6 + 2 * GIN_LAYERS
"""Host inputs per appearance view (len(appearance_arguments(...)))."""


# ---- graph side ---------------------------------------------------------------------------------
def weak_view(image, flip, anchor, size: int):
    """Horizontal flip (per-sample flag) then a reflect-101 crop of ``size`` at ``anchor``:
    identical, pixel for pixel, to the torch backend's apply_weak (torchvision RandomCrop with
    reflect padding)."""
    image = fn.flip(image, horizontal=flip)
    return fn.slice(image, start=anchor, shape=[size, size], axis_names="HW",
                    out_of_bounds_policy="reflect_101")


def _truncate_to_uint8(values):
    """float -> uint8 as torchvision's ``.clamp(0, 255).to(uint8)``: drop the fraction, then
    DALI's saturating cast (floor first: the cast rounds to nearest). floor(clamp(v)) and
    saturate(floor(v)) are equal for every float, so no clamp pass."""
    return fn.cast(dmath.floor(values), dtype=types.UINT8)


# Each DALI arithmetic operator is a pass over the whole image (they are not fused), so the ops
# below keep the passes few: uint8 images enter arithmetic directly (promoted to float32, the
# same values a cast would give), clamps the saturating cast makes redundant are left out, and
# solarize stays in uint8.
def warp(image, matrix):
    """Nearest-neighbour affine warp, zero fill (torchvision affine with NEAREST, fill=0)."""
    return fn.warp_affine(image, matrix=matrix, interp_type=types.INTERP_NN, fill_value=0)


def autocontrast(image):
    low = fn.cast(fn.reductions.min(image), dtype=types.FLOAT)  # per-sample scalars: cheap
    high = fn.cast(fn.reductions.max(image), dtype=types.FLOAT)
    flat = fn.cast(high == low, dtype=types.FLOAT)  # flat images pass unchanged
    inv_scale = (high - low) * np.float32(1.0 / 255.0) + flat
    return _truncate_to_uint8((image - (low - low * flat)) / inv_scale)


def brightness(image, factor):
    return _truncate_to_uint8(image * factor)


def contrast(image, factor):
    mean = fn.reductions.mean(image, dtype=types.FLOAT)
    return _truncate_to_uint8(image * factor + mean * (1.0 - factor))


def equalize(image):
    return fn.equalize(image)


def posterize(image, bit_mask):
    return image & fn.cast(bit_mask, dtype=types.UINT8)


def solarize(image, threshold):
    """255 - x is x ^ 255 in uint8: the inverted pixels get that mask, the others 0."""
    return image ^ ((image >= threshold) * np.uint8(255))


_SMOOTH = (np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / np.float32(13.0))


def sharpness(image, factor, size: int, device: str):
    """Blend with the rounded 3x3 smoothing (torchvision / PIL); the border keeps the original."""
    kernel = types.Constant(_SMOOTH, device=device)
    # torchvision rounds the smoothed image; DALI's cast rounds to nearest too, into int16 so
    # that smooth - image keeps its sign.
    smooth = fn.cast(fn.filter(image, kernel, border="clamp", dtype=types.FLOAT), dtype=types.INT16)
    interior = np.zeros((size, size, 1), dtype=np.float32)
    interior[1:-1, 1:-1] = 1.0
    interior = types.Constant(interior, device=device)
    return _truncate_to_uint8(image + interior * (1.0 - factor) * (smooth - image))


def appearance(image, inputs: list, device: str):
    """The appearance chain (mmdist.augment.policy.APPEARANCE) on a uint8 HWC view, popping its
    APPEARANCE_INPUTS host inputs from ``inputs``; the same float32 arithmetic as the torch
    backend's apply_appearance, rounded half up to uint8 once at the end."""
    def arg():
        value = inputs.pop(0)
        return value.gpu() if device == "gpu" else value

    gamma, brightness, contrast, blur = arg(), arg(), arg(), arg()
    u = image / np.float32(255.0)  # uint8 / float32 is float32 division
    u = dmath.pow(u, gamma) * brightness
    mean = fn.reductions.mean(u)
    u = mean + contrast * (u - mean)
    u = fn.filter(u, blur, border="reflect_101")
    x = u * np.float32(2.0) - np.float32(1.0)
    g = x
    zero = types.Constant(np.float32(0.0), device=device)
    for layer in range(GIN_LAYERS):
        kernel, bias = arg(), arg()
        g = fn.filter(g, kernel, zero, border="constant") + bias
        if layer < GIN_LAYERS - 1:
            g = dmath.max(g, g * np.float32(GIN_SLOPE))
    alpha = arg()
    mixed = alpha * g + (np.float32(1.0) - alpha) * x

    def norm(t):
        return dmath.sqrt(fn.reductions.sum(t * t)) + np.float32(1e-6)

    x = mixed * (norm(x) / norm(mixed))
    u = (x + np.float32(1.0)) / np.float32(2.0) + arg()
    u = dmath.clamp(u, 0.0, 1.0)
    return fn.cast(dmath.floor(u * np.float32(255.0) + np.float32(0.5)), dtype=types.UINT8)


def apply_pool_op(image, mask, kind, value, matrix, size: int, device: str):
    """Apply one sampled op per sample (DALI conditionals on ``kind``); the mask, when given,
    follows the geometric ops with the same matrix (nearest) and ignores the intensity ops.

    image: uint8 HWC (1 channel); kind: int32 scalar (KIND_CODE); value: float32 scalar;
    matrix: float32 (2, 3) on the CPU.
    """
    if device == "gpu":
        value = value.gpu()
    if kind == KIND_CODE["warp"]:
        image = warp(image, matrix)
        if mask is not None:
            mask = warp(mask, matrix)
    elif kind == KIND_CODE["autocontrast"]:
        image = autocontrast(image)
    elif kind == KIND_CODE["brightness"]:
        image = brightness(image, value)
    elif kind == KIND_CODE["contrast"]:
        image = contrast(image, value)
    elif kind == KIND_CODE["equalize"]:
        image = equalize(image)
    elif kind == KIND_CODE["posterize"]:
        image = posterize(image, value)
    elif kind == KIND_CODE["sharpness"]:
        image = sharpness(image, value, size, device)
    elif kind == KIND_CODE["solarize"]:
        image = solarize(image, value)
    return image, mask


assert {kind_of(op.name) for op in POOL} <= set(KINDS), "a pool op has no DALI implementation"
