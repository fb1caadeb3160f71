"""Feeding the trainer: the StepBatches of steps [start, stop), in order, made ahead of the step.

A batch is a pure function of the step (mmdist.data.sampler), so it can be built ahead in a
background thread or in worker processes, in any order; the consumer sees them in step order.
"""

from __future__ import annotations

import queue
import signal
import threading
from typing import Iterator, Optional

import torch

from mmdist.data.step_batch import StepBatch


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
