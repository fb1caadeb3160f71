"""The DALI backend's host inputs, made cheaply, are what they were: RandAugment arguments looked
up in a per-size table equal op_arguments of each drawn op, and rows gathered from an array in
memory equal the rows read from a memory map in file order."""

import numpy as np
import pytest
import torch

from augment_helpers import data_config
from mmdist.augment import dali_ops
from mmdist.augment.draws import draw_strong
from mmdist.augment.policy import MAX_MAGNITUDE, POOL
from mmdist.data.row_reads import gather_rows


@pytest.mark.parametrize("size", [32, 256])
def test_the_op_table_holds_op_arguments_of_every_drawable_op(size):
    kind, value, matrix = dali_ops.op_table(size)
    assert len(kind) == len(value) == len(matrix) == dali_ops.NOT_APPLIED + 1
    for op in range(len(POOL)):
        for magnitude in range(1, MAX_MAGNITUDE + 1):
            for sign in (-1, 1):
                entry = (op * MAX_MAGNITUDE + magnitude - 1) * 2 + (sign > 0)
                alone = dali_ops.op_arguments(np.array([op]), np.array([magnitude]),
                                              np.array([sign]), np.array([True]), size)
                assert (kind[entry], value[entry]) == (alone[0][0], alone[1][0]), POOL[op].name
                assert np.array_equal(matrix[entry], alone[2][0]), (POOL[op].name, magnitude, sign)
    off = dali_ops.NOT_APPLIED
    assert kind[off] == dali_ops.KIND_CODE["identity"] and value[off] == 0
    assert np.array_equal(matrix[off], dali_ops.IDENTITY_MATRIX)


@pytest.mark.parametrize("apply", ["always", "half"])
@pytest.mark.parametrize("size,magnitude", [(32, 10), (64, 3), (256, 10)])
def test_strong_arguments_are_op_arguments_of_the_draws(size, magnitude, apply):
    """What the DALI graph receives per slot: the same kinds, values and matrices (dtype, shape
    and bits) as op_arguments computes from the batch's draws, and fresh contiguous arrays."""
    config = data_config(size=size, strong_ops=3, strong_magnitude=magnitude,
                         strong_apply=apply).augment
    draws = draw_strong(torch.Generator().manual_seed(size + magnitude), 2000, size, config)
    for slot in range(3):
        looked_up = dali_ops.strong_arguments(draws, slot, size)
        computed = dali_ops.op_arguments(*(t[:, slot].numpy() for t in (
            draws.op, draws.magnitude, draws.sign, draws.applied)), size)
        for got, want in zip(looked_up, computed):
            assert got.dtype == want.dtype and got.shape == want.shape
            assert np.array_equal(got, want)
            assert got.flags.c_contiguous and got.flags.writeable
        if apply == "half":
            assert (looked_up[0][~draws.applied[:, slot].numpy()] == dali_ops.KIND_CODE["identity"]).all()


def test_rows_in_memory_and_in_a_memory_map_are_gathered_alike(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (30, 16, 16), dtype=np.uint8)
    path = tmp_path / "images.npy"
    np.save(path, images)
    mapped = np.load(path, mmap_mode="r")
    indices = np.array([17, 3, 29, 3, 0, 11])  # unsorted, one row twice
    for size, nearest in ((16, False), (8, False), (8, True)):
        in_memory = gather_rows(images, indices, size, nearest)
        assert torch.equal(in_memory, gather_rows(mapped, indices, size, nearest))
        assert in_memory.shape == (6, 1, size, size) and in_memory.dtype == torch.uint8
    np.testing.assert_array_equal(gather_rows(images, indices, 16, False)[:, 0].numpy(),
                                  images[indices])
