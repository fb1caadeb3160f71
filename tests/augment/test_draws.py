"""A batch's view parameters, drawn in a few tensor calls for both backends: the policy's
distributions, reproducible per generator, and DALI arguments that keep each image's own draw."""

import numpy as np
import torch

from augment_helpers import data_config
from mmdist.augment import dali_ops
from mmdist.augment.draws import draw_strong, draw_weak
from mmdist.augment.policy import POOL, POOL_BY_NAME, pad_pixels

COUNT = 20000


def assert_uniform(values: torch.Tensor, low: int, high: int):
    """Every integer of [low, high] appears, each within 5 standard deviations of uniform."""
    counts = torch.bincount(values.flatten() - low, minlength=high - low + 1)
    assert len(counts) == high - low + 1, "a value outside the range"
    n, p = values.numel(), 1.0 / (high - low + 1)
    assert (counts - n * p).abs().max() < 5 * (n * p * (1 - p)) ** 0.5, counts.tolist()


def test_weak_draws_flip_half_the_images_and_offset_uniformly_over_the_padding():
    config = data_config(size=64).augment
    draws = draw_weak(torch.Generator().manual_seed(0), COUNT, 64, config)
    assert draws.pad == pad_pixels(64, config.pad_fraction) == 8
    assert draws.flip.dtype == torch.bool and abs(draws.flip.float().mean() - 0.5) < 0.02
    assert_uniform(draws.top, 0, 16)
    assert_uniform(draws.left, 0, 16)
    assert abs(np.corrcoef(draws.top.numpy(), draws.left.numpy())[0, 1]) < 0.03  # independent


def test_strong_draws_cover_the_pool_magnitudes_signs_and_coins():
    config = data_config(size=64, strong_ops=3, strong_magnitude=7, strong_apply="half").augment
    draws = draw_strong(torch.Generator().manual_seed(1), COUNT, 64, config)
    assert draws.op.shape == draws.magnitude.shape == (COUNT, 3)
    assert_uniform(draws.op, 0, len(POOL) - 1)  # each of the 13 ops, each slot alike
    assert_uniform(draws.op[:, 2], 0, len(POOL) - 1)
    assert_uniform(draws.magnitude, 1, 7)
    assert set(draws.sign.unique().tolist()) == {-1, 1} and abs(draws.sign.float().mean()) < 0.02
    assert abs(draws.applied.float().mean() - 0.5) < 0.02
    assert abs(draws.weak.flip.float().mean() - 0.5) < 0.02


def test_always_and_half_draw_the_same_ops_and_a_generator_repeats_its_draws():
    always = data_config(size=32, strong_apply="always").augment
    half = data_config(size=32, strong_apply="half").augment
    a = draw_strong(torch.Generator().manual_seed(5), 64, 32, always)
    b = draw_strong(torch.Generator().manual_seed(5), 64, 32, half)
    assert a.applied.all() and not b.applied.all() and b.applied.any()
    for name in ("op", "magnitude", "sign"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(a.weak.top, b.weak.top) and torch.equal(a.weak.flip, b.weak.flip)
    c = draw_strong(torch.Generator().manual_seed(6), 64, 32, always)
    assert not torch.equal(a.op, c.op)


def test_batched_dali_arguments_are_each_images_own():
    """The whole batch at once gives, row by row, what each image's draw alone gives, and the
    rows carry what their op needs."""
    config = data_config(size=32, strong_apply="half").augment
    draws = draw_strong(torch.Generator().manual_seed(2), 300, 32, config)
    kind, value, matrix = dali_ops.strong_arguments(draws, 0, 32)
    assert kind.shape == value.shape == (300,) and matrix.shape == (300, 2, 3)
    ops, magnitudes, signs, applied = (t[:, 0].numpy() for t in
                                       (draws.op, draws.magnitude, draws.sign, draws.applied))
    for i in range(300):
        alone = dali_ops.op_arguments(ops[i:i + 1], magnitudes[i:i + 1], signs[i:i + 1],
                                      applied[i:i + 1], 32)
        assert (alone[0][0], alone[1][0]) == (kind[i], value[i]) and np.array_equal(alone[2][0], matrix[i])
        name = POOL[ops[i]].name
        if not applied[i]:
            assert kind[i] == dali_ops.KIND_CODE["identity"]
        elif POOL_BY_NAME[name].geometric:
            assert kind[i] == dali_ops.KIND_CODE["warp"]
            if not name.startswith("translate"):  # a translation may round to 0 px at 32 px
                assert not np.array_equal(matrix[i], dali_ops.IDENTITY_MATRIX)
        elif name == "posterize":
            bits = int(POOL_BY_NAME[name].strength(magnitudes[i]))
            assert value[i] == ((1 << bits) - 1) << (8 - bits)
    assert len(set(kind.tolist())) == len(dali_ops.KINDS)  # every kind occurs in 300 draws
    flip, anchor = dali_ops.weak_arguments(draws.weak)
    assert flip.dtype == anchor.dtype == np.int32 and anchor.shape == (300, 2)
    np.testing.assert_array_equal(anchor[:, 0], draws.weak.top.numpy() - draws.weak.pad)
