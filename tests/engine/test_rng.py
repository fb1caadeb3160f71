"""Random streams: the same initial weights everywhere, a stream of its own per rank, and each
rank's own states back on resume."""

import random

import numpy as np
import pytest
import torch

from mmdist.engine import rng

CPU = torch.device("cpu")


def draws():
    return torch.rand(3).tolist(), float(np.random.rand()), random.random()


def test_capture_and_restore_round_trip_every_generator():
    rng.seed_all(3)
    state = rng.capture(CPU)
    first = draws()
    rng.restore(state, CPU)
    assert draws() == first


def test_ranks_draw_different_streams_from_one_seed():
    streams = []
    for rank in range(3):
        rng.seed_rank(7, rank)
        streams.append(draws())
    assert len({str(s) for s in streams}) == 3
    rng.seed_rank(7, 1)
    assert draws() == streams[1]  # and each is reproducible


def test_each_rank_restores_its_own_state():
    states = []
    for rank in range(2):
        rng.seed_rank(0, rank)
        states.append(rng.capture(CPU))
    expected = []
    for rank in range(2):
        rng.restore(states[rank], CPU)
        expected.append(draws())
    checkpoint = {"rng_per_rank": states}
    for rank in range(2):
        rng.seed_all(99)
        rng.restore_for_rank(checkpoint, rank, 2, seed=0, step=5, device=CPU)
        assert draws() == expected[rank]


def test_another_world_size_reseeds_with_a_warning():
    rng.seed_rank(0, 0)
    checkpoint = {"rng_per_rank": [rng.capture(CPU)]}
    with pytest.warns(UserWarning, match="for 1 rank"):
        rng.restore_for_rank(checkpoint, 1, 2, seed=0, step=5, device=CPU)
    first = draws()
    with pytest.warns(UserWarning):
        rng.restore_for_rank(checkpoint, 1, 2, seed=0, step=5, device=CPU)
    assert draws() == first  # a pure function of (seed, rank, step)
