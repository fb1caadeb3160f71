"""Random streams per rank: seeding at start, and each rank's states in checkpoints.

The model is initialised from ``seed`` alone, so every rank builds the same weights (DDP and
DeepSpeed broadcast rank 0's anyway) and one process builds the weights of a many-rank run.
Then each rank reseeds torch (CPU and its GPU), numpy and random from (seed, rank): dropout and
the other draws of the step differ between ranks, as they would between the images of one big
batch. (Data order and augmentation have generators of their own, seeded by (seed, rank, step),
mmdist.data.sampler.)

A checkpoint holds every rank's states (``gather`` on all ranks, rank 0 writes them), and a
resumed rank restores its own, so a resumed run draws exactly what the uninterrupted one would.
"""

from __future__ import annotations

import random
import warnings

import numpy as np
import torch

from mmdist.data.sampler import step_seed

RANK_STREAM = 0x52414E4B
"""Mixed into the per-rank seed so it never equals a data or augmentation seed."""


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also every CUDA device


def seed_rank(seed: int, rank: int) -> None:
    """This rank's own streams, after the model is built."""
    seed_all(step_seed(seed, RANK_STREAM, rank))


def capture(device: torch.device) -> dict:
    """This process's RNG states: torch CPU, numpy, random, and its own CUDA device's."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    cuda = state.get("cuda")
    if cuda is not None and device.type == "cuda":
        if isinstance(cuda, (list, tuple)):  # an older checkpoint: every device of rank 0
            cuda = cuda[device.index % len(cuda)]
        torch.cuda.set_rng_state(cuda, device)


def restore_for_rank(checkpoint: dict, rank: int, world_size: int, seed: int, step: int,
                     device: torch.device) -> None:
    """Restore this rank's states from a checkpoint written at any world size.

    The same world size restores each rank's own states (exact resume). A checkpoint from
    another world size (or one without per-rank states) cannot be continued exactly anyway,
    since the data shards change with the ranks: the ranks reseed from (seed, rank, step).
    """
    states = checkpoint.get("rng_per_rank")
    if states is not None and len(states) == world_size:
        restore(states[rank], device)
        return
    if states is None and "rng" in checkpoint and world_size == 1:
        restore(checkpoint["rng"], device)  # written before per-rank states existed
        return
    saved = len(states) if states is not None else "unknown"
    warnings.warn(f"the checkpoint's random states are for {saved} rank(s), this run has "
                  f"{world_size}: each rank reseeds from (seed, rank, step); the run continues "
                  "but is not the exact continuation of the one that wrote the checkpoint")
    seed_all(step_seed(seed, RANK_STREAM, rank, step))
