"""One schedule for a whole experiment: batch per rank, epoch length, run length, learning rate.

The rule a user can rely on (README, "Ranks, batch, epochs, learning rate and seeds"):

- ``data.global_batch_size`` fixes the images per stream over all ranks; each rank takes
  global / ranks. Without it, ``data.batch_size`` is per rank and the global batch grows with
  the ranks (``optim.scale_lr`` may then scale the learning rate with them).
- An epoch is ``trainer.steps_per_epoch``, or the config's epoch pool (mmdist.data.task_data
  .epoch_pool: the training images of ``data.unlabeled`` when the unlabeled pool has its own
  source, else the classification training split, else the segmentation one) over the global
  batch. It never depends on the variant or the label budget.
- The run lasts ``trainer.max_steps`` steps or ``trainer.max_epochs`` epochs; the learning rate
  drops by ``optim.lr_gamma`` every ``optim.lr_step_epochs`` epochs.

So 1 rank x 8 images and 2 ranks x 4 images (global batch 8) have the same epochs, the same
learning rate at every step and stop at the same step; U-Net and MultiMix on one config too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mmdist.config import ConfigError


@dataclass(frozen=True)
class RunPlan:
    world_size: int
    batch_per_rank: int
    """Images per stream on each rank."""
    global_batch: int
    """Images per stream per step over all ranks."""
    steps_per_epoch: int
    epoch_description: str
    max_steps: int
    lr: float
    """The optimizer's starting learning rate (optim.lr, scaled by optim.scale_lr)."""
    lr_step_size: int
    """Steps between learning-rate drops."""

    def as_scalars(self) -> dict[str, float]:
        return {"ranks": self.world_size, "batch_per_rank": self.batch_per_rank,
                "global_batch_per_stream": self.global_batch,
                "steps_per_epoch": self.steps_per_epoch, "max_steps": self.max_steps,
                "lr_scaled": self.lr}


def batch_per_rank(data_config, world_size: int) -> int:
    """Images per stream on each rank for ``world_size`` ranks."""
    total = data_config.global_batch_size
    if total is None:
        return data_config.batch_size
    if total % world_size:
        raise ConfigError(f"data.global_batch_size: {total} images cannot be split evenly over "
                          f"{world_size} ranks; choose a multiple of {world_size}")
    return total // world_size


def plan_run(config, world_size: int, epoch_images: int, epoch_description: str) -> RunPlan:
    per_rank = batch_per_rank(config.data, world_size)
    global_batch = per_rank * world_size
    trainer = config.trainer
    if trainer.steps_per_epoch:
        steps_per_epoch = trainer.steps_per_epoch
        epoch_description = f"trainer.steps_per_epoch={steps_per_epoch}"
    else:
        steps_per_epoch = max(1, epoch_images // global_batch)
    max_steps = trainer.max_steps if trainer.max_steps is not None \
        else trainer.max_epochs * steps_per_epoch
    scale = {"none": 1.0, "linear": float(world_size),
             "sqrt": math.sqrt(world_size)}[config.optim.scale_lr]
    return RunPlan(world_size=world_size, batch_per_rank=per_rank, global_batch=global_batch,
                   steps_per_epoch=steps_per_epoch, epoch_description=epoch_description,
                   max_steps=max_steps, lr=config.optim.lr * scale,
                   lr_step_size=config.optim.lr_step_epochs * steps_per_epoch)
