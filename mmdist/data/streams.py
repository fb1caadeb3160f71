"""The five training streams, sharded by global rank, as a pure function of the step.

Stream names come from mmdist.model.variants (seg_labeled, seg_unlabeled, cls_labeled,
cls_unlabeled_weak / _strong / _weak2). For each stream an epoch is a permutation of its index
pool drawn from (seed, stream, epoch); rank r of w reads positions r, r+w, r+2w, ... of it, so the
ranks' shards are disjoint and together cover the epoch (the remainder beyond a multiple of w is
dropped that epoch, as DistributedSampler(drop_last=True) does). Augmentation parameters come from a
generator seeded by (seed, rank, step, stream). A batch therefore depends only on
(seed, rank, world, step): resuming at step k reproduces exactly what an uninterrupted run sees,
and batch assembly can run in worker processes in any order.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from mmdist.data.records import DatasetError

# Stream names (the variant table in mmdist.model.variants says which a model consumes).
SEG_LABELED = "seg_labeled"
SEG_UNLABELED = "seg_unlabeled"
CLS_LABELED = "cls_labeled"
CLS_WEAK = "cls_unlabeled_weak"
CLS_STRONG = "cls_unlabeled_strong"
CLS_WEAK2 = "cls_unlabeled_weak2"

STREAM_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 4,
              CLS_WEAK2: 4}
"""The weak, strong and second weak views of the unlabeled classification stream share a sampler
id: they are views of the same images."""
VIEW_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 5, CLS_WEAK2: 6}
"""Each view draws its augmentation from its own generator."""


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float32 in [-1, 1] (the reference's Normalize(0.5, 0.5))."""
    return images.float().div_(127.5).sub_(1.0)


@dataclass
class StepBatch:
    """What one training step consumes; a field is None when the variant does not use it.

    Images are float32 (N, 1, H, W) in [-1, 1]; masks float32 (N, 1, H, W) in {0, 1};
    targets int64 (N,).
    """

    seg_labeled: Optional[torch.Tensor] = None
    seg_labeled_mask: Optional[torch.Tensor] = None
    seg_unlabeled: Optional[torch.Tensor] = None
    cls_labeled: Optional[torch.Tensor] = None
    cls_labeled_target: Optional[torch.Tensor] = None
    cls_unlabeled_weak: Optional[torch.Tensor] = None
    cls_unlabeled_strong: Optional[torch.Tensor] = None
    cls_unlabeled_weak2: Optional[torch.Tensor] = None

    def to(self, device, non_blocking: bool = False, channels_last: bool = False) -> "StepBatch":
        """Move every tensor to ``device``; images and masks optionally to NHWC memory order."""
        def move(value):
            if value is None:
                return None
            if channels_last and value.dim() == 4:
                return value.to(device, non_blocking=non_blocking,
                                memory_format=torch.channels_last)
            return value.to(device, non_blocking=non_blocking)
        return StepBatch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})

    @property
    def image_count(self) -> int:
        """Images in the step (masks and targets not counted)."""
        return sum(v.shape[0] for f in fields(self) for v in [getattr(self, f.name)]
                   if v is not None and v.dim() == 4 and not f.name.endswith("_mask"))


def step_seed(*parts: int) -> int:
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

    def epoch_shard(self, epoch: int) -> np.ndarray:
        """This rank's indices for one epoch (disjoint from the other ranks')."""
        order = np.random.default_rng([self.seed, self.stream_id, epoch]).permutation(len(self.pool))
        return self.pool[order[self.rank::self.world_size][: self.per_rank]]

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


def gather_rows(array: np.ndarray, indices: np.ndarray, size: int, nearest: bool) -> torch.Tensor:
    """Read rows of an (N, H, W) uint8 array (memmap-friendly: sorted reads) as (B, 1, S, S)."""
    order = np.argsort(indices, kind="stable")
    rows = np.empty((len(indices),) + array.shape[1:], dtype=np.uint8)
    rows[order] = array[indices[order]]
    tensor = torch.from_numpy(rows).unsqueeze(1)
    if tensor.shape[-1] != size:
        mode = "nearest" if nearest else "bilinear"
        kwargs = {} if nearest else {"antialias": True, "align_corners": False}
        tensor = F.interpolate(tensor.float(), size=(size, size), mode=mode, **kwargs)
        tensor = tensor.round_().clamp_(0, 255).to(torch.uint8)
    return tensor


class _StepDataset(torch.utils.data.Dataset):
    def __init__(self, source, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> StepBatch:
        return self.source.batch(self.start + index)


def _ignore_stop_signals(_worker_id: int) -> None:
    """Batch workers leave preemption (USR2) and TERM to the training process, which checkpoints
    and then ends them; under any start method they must not die first."""
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _as_is(batch: StepBatch) -> StepBatch:
    """The DataLoader's collate: a StepBatch is already a batch. (A module-level function, not a
    lambda, so that workers started by spawn or forkserver can unpickle it.)"""
    return batch


def iterate_steps(source, start: int, stop: int, workers: int = 0,
                  start_method: str = "default") -> Iterator[StepBatch]:
    """Yield source.batch(step) for step in [start, stop), in order, assembled by ``workers``
    background processes (0 = inline) started by ``start_method`` ('default' | 'fork' | 'spawn'
    | 'forkserver'). A source with its own pipeline (DALI) provides ``iterate(start, stop)``
    instead and is used as it is. Workers receive the source pickled: its memory-mapped arrays
    travel as file references and are mapped again in the worker (mmdist.data.imageset)."""
    if hasattr(source, "iterate"):
        yield from source.iterate(start, stop)
        return
    if workers == 0:
        for step in range(start, stop):
            yield source.batch(step)
        return
    context = None if start_method == "default" else start_method
    loader = torch.utils.data.DataLoader(_StepDataset(source, start, stop), batch_size=None,
                                         num_workers=workers, persistent_workers=False,
                                         prefetch_factor=2, collate_fn=_as_is,
                                         worker_init_fn=_ignore_stop_signals,
                                         multiprocessing_context=context)
    yield from loader
