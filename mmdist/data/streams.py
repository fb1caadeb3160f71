"""The five training streams, sharded by global rank, as a pure function of the step.

Stream names are defined beside the variant table in mmdist.config.variants (seg_labeled,
seg_unlabeled, cls_labeled, cls_unlabeled_weak / _strong / _weak2) and re-exported here. For each stream an epoch is a permutation of its index
pool drawn from (seed, stream, epoch); rank r of w reads positions r, r+w, r+2w, ... of it, so the
ranks' shards are disjoint and together cover the epoch (the remainder beyond a multiple of w is
dropped that epoch, as DistributedSampler(drop_last=True) does). Augmentation parameters come from a
generator seeded by (seed, rank, step, stream). A batch therefore depends only on
(seed, rank, world, step): resuming at step k reproduces exactly what an uninterrupted run sees,
and batch assembly can run ahead of the step, in a thread or in worker processes, in any order.

Batches leave the host as uint8 (a quarter of float32's bytes), pinned when the training device is
CUDA, and become model input on the device (StepBatch.as_model_input).
"""

from __future__ import annotations

import queue
import signal
import threading
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F

from mmdist.config.variants import (CLS_LABELED, CLS_STRONG, CLS_WEAK, CLS_WEAK2,  # noqa: F401
                                    SEG_LABELED, SEG_UNLABELED)
from mmdist.data.records import DatasetError

STREAM_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 4,
              CLS_WEAK2: 4}
"""The weak, strong and second weak views of the unlabeled classification stream share a sampler
id: they are views of the same images."""
VIEW_IDS = {SEG_LABELED: 1, SEG_UNLABELED: 2, CLS_LABELED: 3, CLS_WEAK: 4, CLS_STRONG: 5, CLS_WEAK2: 6}
"""Each view draws its augmentation from its own generator."""


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float32 in [-1, 1] (the reference's Normalize(0.5, 0.5))."""
    return images.float().div_(127.5).sub_(1.0)


_MODEL_INPUT_TABLES: dict[torch.device, torch.Tensor] = {}


def _model_input_on_device(images: torch.Tensor) -> torch.Tensor:
    """to_model_input's values, bit for bit, on the images' device: to_model_input itself on a
    CPU (where a table's gather is 15x slower), elsewhere a table of the 256 levels made by it on
    the CPU, because CUDA divides by a scalar as a multiplication by its reciprocal, which changes
    111 of the 256 values in the last bit."""
    if images.device.type == "cpu":
        return to_model_input(images)
    return model_input_table(images.device)[images.int()]


def model_input_table(device) -> torch.Tensor:
    """float32 (256,): to_model_input of every uint8 level, computed on the CPU, on ``device``."""
    table = _MODEL_INPUT_TABLES.get(device)
    if table is None:
        table = to_model_input(torch.arange(256, dtype=torch.uint8)).to(device)
        _MODEL_INPUT_TABLES[device] = table
    return table


@dataclass
class StepBatch:
    """What one training step consumes; a field is None when the variant does not use it.

    From the step sources, images are uint8 (N, 1, H, W) and masks uint8 (N, 1, H, W) in {0, 1};
    ``as_model_input()`` makes them float32 in [-1, 1] and float32 in {0, 1}. Targets are int64 (N,).
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

    def pin_memory(self) -> "StepBatch":
        """Every tensor in page-locked memory, so that ``to(cuda, non_blocking=True)`` copies
        asynchronously (also what DataLoader(pin_memory=True) calls on a batch it got)."""
        return StepBatch(**{f.name: None if v is None else v.pin_memory()
                            for f in fields(self) for v in [getattr(self, f.name)]})

    def as_model_input(self) -> "StepBatch":
        """uint8 images -> float32 in [-1, 1] (exactly to_model_input), uint8 masks -> float32
        {0, 1}, on the device they are on; float tensors are model input already and pass
        through, as do the targets."""
        def convert(name, value):
            if value is None or value.dtype != torch.uint8:
                return value
            return value.float() if name.endswith("_mask") else _model_input_on_device(value)
        return StepBatch(**{f.name: convert(f.name, getattr(self, f.name)) for f in fields(self)})

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


def gather_rows(array: np.ndarray, indices: np.ndarray, size: int, nearest: bool) -> torch.Tensor:
    """Read rows of an (N, H, W) uint8 array as (B, 1, S, S): an array in memory with one gather;
    a memory map (or a stack of them) in file order (sorted reads), then put in batch order."""
    if type(array) is np.ndarray:  # a second copy and allocation cost 5x the gather itself
        rows = array[indices]
    else:
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


PREFETCH_DEPTH = 2
"""Batches a prefetching thread keeps ready: one being consumed, one waiting."""


def default_prefetch(device) -> int:
    """The prefetch depth iterate_steps uses on ``device`` when none is given: PREFETCH_DEPTH on
    CUDA, where the training thread mostly waits for the device; 0 on a CPU, where the thread
    takes cores from torch's own threads (measured on 2 cores, configs/learn.yaml: 228 images/s
    inline, 180 with the thread at 2 torch threads; 146 and 150 at 1 torch thread)."""
    return PREFETCH_DEPTH if torch.device(device).type == "cuda" else 0


def iterate_steps(source, start: int, stop: int, workers: int = 0,
                  start_method: str = "default", device="cpu",
                  prefetch: Optional[int] = None) -> Iterator[StepBatch]:
    """Yield source.batch(step) for step in [start, stop), in order, made ahead of the consumer.

    With ``workers`` = 0 a background thread builds up to ``prefetch`` batches ahead (0 = inline;
    None = default_prefetch(device)); with ``workers`` > 0 that many processes started by
    ``start_method`` ('default' | 'fork' | 'spawn' | 'forkserver') do, as a DataLoader. A source
    with its own pipeline (DALI) provides ``iterate(start, stop, pin)`` instead and is used as it
    is. Batches are pinned when ``device`` is CUDA (on a CPU pinning would only cost a copy).
    Workers receive the source pickled: its memory-mapped arrays travel as file references and
    are mapped again in the worker (mmdist.data.imageset)."""
    pin = torch.device(device).type == "cuda"
    if hasattr(source, "iterate"):
        yield from source.iterate(start, stop, pin=pin)
        return
    if workers == 0:
        depth = default_prefetch(device) if prefetch is None else prefetch
        batches = (source.batch(step) for step in range(start, stop))
        batches = (batch.pin_memory() for batch in batches) if pin else batches
        yield from _prefetched(batches, depth) if depth else batches
        return
    context = None if start_method == "default" else start_method
    loader = torch.utils.data.DataLoader(_StepDataset(source, start, stop), batch_size=None,
                                         num_workers=workers, persistent_workers=False,
                                         prefetch_factor=2, collate_fn=_as_is, pin_memory=pin,
                                         worker_init_fn=_ignore_stop_signals,
                                         multiprocessing_context=context)
    yield from loader


_END = object()


def _prefetched(batches: Iterator[StepBatch], depth: int) -> Iterator[StepBatch]:
    """``batches``, consumed by a background thread that keeps up to ``depth`` of them ready.

    An exception in the thread is raised here, with the thread's traceback. When the consumer
    stops early (a stop signal ends the training loop, or the generator is closed), the thread is
    told to stop and joined before this returns: no thread outlives the iteration."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, who raises it
            put(exc)

    thread = threading.Thread(target=produce, name="mmdist-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
