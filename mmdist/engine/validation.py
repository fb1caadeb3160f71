"""Periodic validation: classification accuracy, balanced accuracy and segmentation Dice on the
val splits; a warning when the classifier gives every validation image one class.

Each rank evaluates its own slice of the split (``indices[rank::world]``, uneven lengths allowed)
and the sums are all-reduced once per metric, so no rank waits on a collective another rank never
reaches and no image is counted twice.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import torch

from mmdist.data.row_reads import gather_rows
from mmdist.data.step_batch import to_model_input


def _batches(indices: np.ndarray, batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def single_class_warning(predicted_counts, where: str) -> Optional[str]:
    """A one-line warning when every image of a set was given one class, else None.

    predicted_counts: (2,) images predicted normal and pneumonia. A classifier that calls every
    image pneumonia scores the pneumonia share as accuracy (0.74 on Kermany) and looks trained.
    """
    normal, pneumonia = (int(c) for c in predicted_counts)
    if normal + pneumonia == 0 or (normal and pneumonia):
        return None
    name = "pneumonia" if pneumonia else "normal"
    return (f"{where}: every one of the {normal + pneumonia} images was predicted {name}; the "
            "classifier has not learned to separate the classes (see balanced accuracy)")


@torch.no_grad()
def validate(model, task_data, spec, strategy, eval_batch_size: int, image_size: int,
             split: str = "val", on_chunk=None) -> dict[str, float]:
    """Return {'val_acc', 'val_bacc', 'val_dice'} (only those the variant has) over the named
    split; val_bacc is the balanced accuracy (the mean recall of the classes present, scikit-
    learn's balanced_accuracy_score). ``on_chunk()`` is called after each batch (the trainer
    tells its watchdog it is alive). When every image is predicted one class, rank 0 warns
    (single_class_warning) and the result carries 'val_one_class': 1.0."""
    on_chunk = on_chunk or (lambda: None)
    device = strategy.device
    was_training = model.training
    model.eval()
    # correct, count, dice sum, dice count, then per class c: correct, count, predicted
    sums = torch.zeros(4 + 3 * 2, dtype=torch.float64)
    if spec.classifier and task_data.classification is not None:
        task = task_data.classification
        mine = getattr(task.split, split)[strategy.rank::strategy.world_size]
        for chunk in _batches(mine, eval_batch_size):
            images = to_model_input(gather_rows(task.imageset.images, chunk, image_size, False))
            logits = model(cls_images=images.to(device)).cls_logits
            targets = torch.from_numpy(np.asarray(task.imageset.labels)[chunk])
            predicted = logits.argmax(1).cpu()
            sums[0] += (predicted == targets).sum().item()
            sums[1] += len(chunk)
            for c in (0, 1):
                sums[4 + 3 * c] += ((predicted == c) & (targets == c)).sum().item()
                sums[5 + 3 * c] += (targets == c).sum().item()
                sums[6 + 3 * c] += (predicted == c).sum().item()
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
        recalls = [float(sums[4 + 3 * c] / sums[5 + 3 * c]) for c in (0, 1) if sums[5 + 3 * c] > 0]
        out[f"{split}_bacc"] = sum(recalls) / len(recalls)
        line = single_class_warning((sums[6], sums[9]), f"{split} split")
        if line:
            out[f"{split}_one_class"] = 1.0
            if strategy.is_main:
                warnings.warn(line, stacklevel=3)  # the trainer's call, past no_grad
    if sums[3] > 0:
        out[f"{split}_dice"] = float(sums[2] / sums[3])
    return out
