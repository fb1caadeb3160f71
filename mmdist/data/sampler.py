"""Which images each training stream reads at a step, for one rank, and the seeds of their views.

The stream names are defined beside the variant table (mmdist.config.variants: seg_labeled,
seg_unlabeled, cls_labeled, cls_unlabeled_weak / _strong / _weak2). For each stream an epoch is a
permutation of its index pool drawn from (seed, stream, epoch); rank r of w reads positions r,
r+w, r+2w, ... of it, so the ranks' shards are disjoint and together cover the epoch (the
remainder beyond a multiple of w is dropped that epoch, as DistributedSampler(drop_last=True)
does). Augmentation parameters come from a generator seeded by (seed, rank, step, view)
(step_seed, VIEW_IDS). A batch therefore depends only on (seed, rank, world, step): resuming at
step k reproduces exactly what an uninterrupted run sees, and batch assembly can run ahead of the
step in any order (mmdist.data.feeding).
"""

from __future__ import annotations

import numpy as np

from mmdist.config.variants import (CLS_LABELED, CLS_STRONG, CLS_WEAK, CLS_WEAK2, SEG_LABELED,
                                    SEG_UNLABELED)
from mmdist.data.records import DatasetError

STREAM_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 4,
              CLS_WEAK2: 4}
"""The weak, strong and second weak views of the unlabeled classification stream share a sampler
id: they are views of the same images."""
VIEW_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 5,
            CLS_WEAK2: 6}
"""Each view draws its augmentation from its own generator."""


def step_seed(*parts: int) -> int:
    """A seed in [0, 2**63) drawn from the integers ``parts`` (numpy's SeedSequence), for a torch
    or numpy generator: different parts give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class ShardedStream:
    """Index batches of one stream for one rank, as a pure function of the step."""

    def __init__(self, pool: np.ndarray, batch_size: int, seed: int, stream_id: int, rank: int,
                 world_size: int, name: str = "stream"):
        pool = np.asarray(pool, dtype=np.int64)
        if len(pool) < world_size:
            raise DatasetError(f"{name}: {len(pool)} images cannot be shared by {world_size} ranks")
        self.pool, self.batch_size = pool, batch_size
        self.seed, self.stream_id, self.rank, self.world_size = seed, stream_id, rank, world_size
        self.per_rank = len(pool) // world_size
        self._shards: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict:
        # Workers recompute the shards they need; the pickle stays small.
        return {**self.__dict__, "_shards": {}}

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.stream_id, epoch]).permutation(len(self.pool))

    def epoch_shard(self, epoch: int) -> np.ndarray:
        """This rank's indices for one epoch (disjoint from the other ranks'). The permutation
        of the pool (milliseconds at 100k images) is computed once per epoch: the two newest
        epochs are kept, as a step's batch may span an epoch's end."""
        shard = self._shards.get(epoch)
        if shard is None:
            shard = self.pool[self._permutation(epoch)[self.rank::self.world_size][: self.per_rank]]
            newest = {e: s for e, s in self._shards.items() if e == epoch - 1}
            # A new dict, not an update: a prefetching thread may read the old one meanwhile.
            self._shards = {**newest, epoch: shard}
        return shard

    def indices(self, step: int) -> np.ndarray:
        start = step * self.batch_size
        out, epoch, offset = [], start // self.per_rank, start % self.per_rank
        needed = self.batch_size
        while needed:
            shard = self.epoch_shard(epoch)[offset: offset + needed]
            out.append(shard)
            needed -= len(shard)
            epoch, offset = epoch + 1, 0
        return np.concatenate(out)

    @property
    def steps_per_pass(self) -> int:
        """Steps in which this rank reads its whole shard once (the stream's own epoch; the
        schedule's epoch is the same for all streams, mmdist.engine.schedule)."""
        return max(1, self.per_rank // self.batch_size)

    def epoch_of(self, step: int) -> int:
        return (step * self.batch_size) // self.per_rank
