"""Periodic validation: classification accuracy and segmentation Dice on the val splits.

Each rank evaluates its own slice of the split (``indices[rank::world]``, uneven lengths allowed)
and the sums are all-reduced once per metric, so no rank waits on a collective another rank never
reaches and no image is counted twice.
"""

from __future__ import annotations

import numpy as np
import torch

from mmdist.data.streams import gather_rows, to_model_input


def _batches(indices: np.ndarray, batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


@torch.no_grad()
def validate(model, task_data, spec, strategy, eval_batch_size: int, image_size: int,
             split: str = "val", on_chunk=None) -> dict[str, float]:
    """Return {'val_acc', 'val_dice'} (only those the variant has) over the named split.
    ``on_chunk()`` is called after each batch (the trainer tells its watchdog it is alive)."""
    on_chunk = on_chunk or (lambda: None)
    device = strategy.device
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)  # correct, count, dice sum, dice count
    if spec.classifier and task_data.classification is not None:
        task = task_data.classification
        mine = getattr(task.split, split)[strategy.rank::strategy.world_size]
        for chunk in _batches(mine, eval_batch_size):
            images = to_model_input(gather_rows(task.imageset.images, chunk, image_size, False))
            logits = model(cls_images=images.to(device)).cls_logits
            targets = torch.from_numpy(np.asarray(task.imageset.labels)[chunk])
            sums[0] += (logits.argmax(1).cpu() == targets).sum().item()
            sums[1] += len(chunk)
            on_chunk()
    if spec.decoder and task_data.segmentation is not None:
        task = task_data.segmentation
        mine = getattr(task.split, split)[strategy.rank::strategy.world_size]
        for chunk in _batches(mine, eval_batch_size):
            images = to_model_input(gather_rows(task.imageset.images, chunk, image_size, False))
            masks = gather_rows(task.imageset.masks, chunk, image_size, True).float()
            predicted = (model(seg_images=images.to(device)).seg_logits.float().cpu() > 0).float()
            intersection = (predicted * masks).flatten(1).sum(1)
            total = predicted.flatten(1).sum(1) + masks.flatten(1).sum(1)
            # Both empty counts as a perfect match.
            dice = torch.where(total > 0, 2 * intersection / total.clamp_min(1), torch.ones_like(total))
            sums[2] += dice.sum().item()
            sums[3] += len(chunk)
            on_chunk()
    sums = strategy.all_reduce_sum(sums.to(device)).cpu()
    model.train(was_training)
    out = {}
    if sums[1] > 0:
        out[f"{split}_acc"] = float(sums[0] / sums[1])
    if sums[3] > 0:
        out[f"{split}_dice"] = float(sums[2] / sums[3])
    return out
