"""StepBatches made by a DALI pipeline (data.augment.backend: dali).

Same contract as TorchStepSource, which it extends: the same ShardedStream samplers give each
global rank its disjoint, per-epoch reshuffled shard, and the same generators, seeded by
(seed, rank, step, view), draw the augmentation parameters in the same order. DALI applies them
(on the GPU with data.augment.device: gpu, with CPU operators and no device otherwise), so a batch
is a pure function of (seed, rank, world, step): an epoch reproduces bit for bit, a resumed run
sees what an uninterrupted one would, and the two backends agree within interpolation tolerance.

Each image is read once per step; the unlabeled classification images feed their weak, strong
(and second weak) views from that one read. The views are uint8, as the torch backend's: in pinned
memory when the training device is CUDA (CPU operators), or on the GPU (data.augment.device: gpu),
copied there on torch's stream without waiting for the copy.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from nvidia.dali.backend import TensorListGPU
from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

from mmdist.augment.draws import draw_appearance, draw_strong, draw_weak
from mmdist.augment.dali_ops import appearance_arguments, strong_arguments, weak_arguments
from mmdist.augment.dali_pipeline import Read, step_pipeline
from mmdist.augment.torch_source import TorchStepSource
from mmdist.config.errors import ConfigError
from mmdist.config.variants import (CLS_LABELED, CLS_STRONG, CLS_WEAK, CLS_WEAK2, SEG_LABELED,
                                    SEG_UNLABELED)
from mmdist.data.row_reads import gather_rows
from mmdist.data.sampler import VIEW_IDS, step_seed
from mmdist.data.step_batch import StepBatch

_VIEW_KIND = {SEG_LABELED: "weak", SEG_UNLABELED: "weak", CLS_LABELED: "weak", CLS_WEAK: "weak",
              CLS_STRONG: "strong", CLS_WEAK2: "weak"}
_UNLABELED_VIEWS = (CLS_WEAK, CLS_STRONG, CLS_WEAK2)


def plan_reads(streams: tuple[str, ...], appearance: bool = False) -> tuple[Read, ...]:
    """Group the streams by the images they read: the unlabeled classification views share one.
    ``appearance``: the segmentation views are 'appearance' views (weak, then the chain)."""
    reads = []
    for name in (SEG_LABELED, SEG_UNLABELED, CLS_LABELED):
        if name in streams:
            kind = "appearance" if appearance and name != CLS_LABELED else "weak"
            reads.append(Read(name, ((name, kind),), with_mask=name == SEG_LABELED))
    views = tuple((name, _VIEW_KIND[name]) for name in _UNLABELED_VIEWS if name in streams)
    if views:
        reads.append(Read("cls_unlabeled", views))
    unknown = set(streams) - set(_VIEW_KIND)
    if unknown:
        raise ValueError(f"DALI backend: unknown stream(s) {sorted(unknown)}")
    return tuple(reads)


class DaliStepSource(TorchStepSource):
    """Builds StepBatches with a DALI pipeline; ``iterate(start, stop)`` streams them with DALI's
    prefetching, ``batch(step)`` builds one (for tests and random access)."""

    def __init__(self, task_data, streams: tuple[str, ...], data_config, seed: int, rank: int = 0,
                 world_size: int = 1):
        super().__init__(task_data, streams, data_config, seed, rank, world_size)
        self.augment = data_config.augment
        self.device = self.augment.device
        if self.device == "gpu" and not torch.cuda.is_available():
            raise ConfigError("data.augment.device: 'gpu' needs a CUDA device; use 'cpu' here")
        self.reads = plan_reads(streams, self.augment.seg_appearance)
        self.batch_size = data_config.batch_size

    # ---- host side ----------------------------------------------------------------------------
    def _task(self, stream: str):
        data = self.task_data
        return data.segmentation if stream.startswith("seg") else data.classification

    def read_inputs(self, read: Read, step: int) -> list[np.ndarray]:
        """The host inputs of ``read`` at ``step``, in the order step_pipeline pops them."""
        first = read.views[0][0]
        indices = self.samplers[first].indices(step)
        task = self._task(first)
        images = gather_rows(task.imageset.images, indices, self.size, nearest=False)
        inputs = [images.numpy().transpose(0, 2, 3, 1)]  # (B, S, S, 1) HWC
        if read.with_mask:
            masks = gather_rows(task.imageset.masks, indices, self.size, nearest=True)
            inputs.append(masks.numpy().transpose(0, 2, 3, 1))
        generator = torch.Generator()
        count = len(indices)
        for stream, kind in read.views:
            generator.manual_seed(step_seed(self.seed, self.rank, step, VIEW_IDS[stream]))
            if kind == "strong":
                draws = draw_strong(generator, count, self.size, self.augment)
                inputs += weak_arguments(draws.weak)
                for slot in range(self.augment.strong_ops):
                    inputs += strong_arguments(draws, slot, self.size)
            else:
                inputs += weak_arguments(draw_weak(generator, count, self.size, self.augment))
                if kind == "appearance":  # same generator, after the weak draws (torch's order)
                    inputs += appearance_arguments(draw_appearance(
                        generator, count, self.size, self.augment.appearance_p))
        return inputs

    def _callback(self, read: Read, step_of: Callable[[int], int]):
        def feed(info):
            return self.read_inputs(read, step_of(info.iteration))

        return feed

    def build_pipeline(self, step_of: Callable[[int], int], prefetch: int = 2):
        """A built DALI pipeline whose iteration i makes step ``step_of(i)`` (raise StopIteration
        to end it)."""
        gpu = self.device == "gpu"
        pipe = step_pipeline(self.reads, [self._callback(r, step_of) for r in self.reads],
                             self.size, self.augment.strong_ops, self.device,
                             batch_size=self.batch_size, num_threads=self.augment.threads,
                             device_id=torch.cuda.current_device() if gpu else None,
                             seed=step_seed(self.seed, self.rank) % (2 ** 31),
                             prefetch_queue_depth=prefetch)
        pipe.build()
        return pipe

    # ---- outputs ------------------------------------------------------------------------------
    def _to_batch(self, outputs, step: int, pin: bool) -> StepBatch:
        names = [name for read in self.reads for name in read.output_names()]
        batch = StepBatch()
        stream = torch.cuda.current_stream() if self.device == "gpu" else None
        for name, tensor_list in zip(names, outputs):
            views = _to_torch(tensor_list, pin, stream)  # (B, S, S, 1) uint8
            # One channel: HWC and CHW share a memory layout, so a view gives (B, 1, S, S).
            setattr(batch, name, views.view(views.shape[0], 1, views.shape[1], views.shape[2]))
        if CLS_LABELED in self.streams:
            indices = self.samplers[CLS_LABELED].indices(step)
            labels = np.asarray(self.task_data.classification.imageset.labels)[indices]
            batch.cls_labeled_target = torch.from_numpy(labels).long()
        return batch

    def iterate(self, start: int, stop: int, pin: bool = False) -> Iterator[StepBatch]:
        """StepBatches for steps [start, stop), made ahead by DALI's prefetch queue; CPU outputs
        in pinned memory when ``pin``."""
        if stop <= start:
            return

        def step_of(iteration: int) -> int:
            if start + iteration >= stop:
                raise StopIteration
            return start + iteration

        pipe = self.build_pipeline(step_of)
        # GPU outputs: pipe.run() returns them finished (host-synchronous with DALI's own work),
        # and feed_ndarray copies them on torch's current stream without waiting, behind what
        # torch has queued there. DALI must not reuse (its older executor, at the next run) or
        # free (its default one, once the outputs are dropped) a buffer before its copy ran, so
        # the step's outputs are kept with an event recorded after their copies, and the host
        # waits on that event before it asks DALI for the next step: one wait per step, not one
        # per view, and the copies have usually finished by then.
        pending = None
        try:
            for step in range(start, stop):
                if pending is not None:
                    pending[1].synchronize()
                outputs = pipe.run()
                batch = self._to_batch(outputs, step, pin)
                if self.device == "gpu":
                    copied = torch.cuda.Event()
                    copied.record(torch.cuda.current_stream())
                    pending = (outputs, copied)
                yield batch
        finally:
            if pending is not None:
                pending[1].synchronize()
            del pending, pipe

    def batch(self, step: int) -> StepBatch:
        return next(self.iterate(step, step + 1))


def _to_torch(tensor_list, pin: bool, stream) -> torch.Tensor:
    """A dense DALI TensorList as a torch tensor on the same device, copied (DALI reuses its
    buffers): a GPU one on ``stream`` without waiting for it, a CPU one into pinned memory when
    ``pin``."""
    dense = tensor_list.as_tensor()
    dtype = to_torch_type[dense.dtype]
    if isinstance(tensor_list, TensorListGPU):
        out = torch.empty(dense.shape(), dtype=dtype, device=torch.cuda.current_device())
        return feed_ndarray(dense, out, cuda_stream=stream)
    return feed_ndarray(dense, torch.empty(dense.shape(), dtype=dtype, pin_memory=pin))
