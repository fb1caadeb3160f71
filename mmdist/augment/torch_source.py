"""StepBatches made on the CPU with the torch augmentation backend (data.augment.backend: torch).

Each stream's indices come from a ShardedStream (this rank's disjoint, per-epoch reshuffled
shard); each view's augmentation from a generator seeded by (seed, rank, step, view). The DALI
source (mmdist.augment.dali_backend) extends this class and keeps both. With
data.augment.seg_appearance the segmentation streams also get the appearance chain after their
weak view (intensity only; the mask keeps the weak view's geometry). Views stay uint8: they
become model input on the training device (StepBatch.as_model_input).
"""

from __future__ import annotations

import numpy as np
import torch

from mmdist.augment.torch_backend import TorchAugmenter
from mmdist.config.variants import CLS_LABELED, CLS_STRONG, SEG_LABELED, SEG_UNLABELED
from mmdist.data.row_reads import gather_rows
from mmdist.data.sampler import STREAM_IDS, VIEW_IDS, ShardedStream, step_seed
from mmdist.data.step_batch import StepBatch


class TorchStepSource:
    """Builds uint8 StepBatches on the CPU with the torch augmentation backend."""

    def __init__(self, task_data, streams: tuple[str, ...], data_config, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.streams, self.seed, self.rank = streams, seed, rank
        self.size = data_config.image_size
        self.augmenter = TorchAugmenter(data_config.augment)
        self.appearance = data_config.augment.seg_appearance
        """Appearance ops on the segmentation streams, after their weak view."""
        self.samplers: dict[str, ShardedStream] = {}
        self.task_data = task_data
        for name in streams:
            task = task_data.segmentation if name.startswith("seg") else task_data.classification
            pool = task.split.labeled if name in (SEG_LABELED, CLS_LABELED) else task.split.unlabeled_pool
            self.samplers[name] = ShardedStream(pool, data_config.batch_size, seed, STREAM_IDS[name],
                                                rank, world_size, name=f"{task.imageset.source}:{name}")

    def batch(self, step: int) -> StepBatch:
        out = StepBatch()
        generator = torch.Generator()
        read: dict[int, torch.Tensor] = {}  # views of one sampler share a single read
        for name in self.streams:
            generator.manual_seed(step_seed(self.seed, self.rank, step, VIEW_IDS[name]))
            sampler = self.samplers[name]
            indices = sampler.indices(step)
            task = self.task_data.segmentation if name.startswith("seg") else self.task_data.classification
            if STREAM_IDS[name] not in read:
                read[STREAM_IDS[name]] = gather_rows(task.imageset.images, indices, self.size,
                                                     nearest=False)
            images = read[STREAM_IDS[name]]
            if name == SEG_LABELED:
                masks = gather_rows(task.imageset.masks, indices, self.size, nearest=True)
                images, masks = self.augmenter.weak(images, masks, generator)
                out.seg_labeled_mask = masks
                if self.appearance:  # drawn after the weak view: its draws stay as they were
                    images = self.augmenter.appearance(images, generator)
            elif name == CLS_STRONG:
                images = self.augmenter.strong(images, generator)
            else:
                images, _ = self.augmenter.weak(images, None, generator)
                if self.appearance and name == SEG_UNLABELED:
                    images = self.augmenter.appearance(images, generator)
            setattr(out, name, images)
            if name == CLS_LABELED:
                out.cls_labeled_target = torch.from_numpy(np.asarray(task.imageset.labels)[indices])
        return out

