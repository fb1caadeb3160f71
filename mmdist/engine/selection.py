"""Model selection: RUN_DIR/checkpoints/best.pt holds the weights of the best validation so far.

Every validation (each ``trainer.val_every`` steps and the last one) is scored by the metric
``trainer.select_by`` resolves to (TrainerConfig.selection_metric: val_acc, val_bacc (balanced
accuracy), val_dice or val_mean, the mean of accuracy and Dice), on the EMA weights when model.ema_decay > 0, else on the raw ones. Only a strictly
better score replaces best.pt (a tie keeps the earlier step). The record of the best so far
(metric, weights, step, value) travels in every periodic checkpoint, so a resumed run compares
against it and never replaces a better best.pt with a worse one.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional

from mmdist.engine import checkpoint as ckpt

MIN_MASKS = 5
"""Fewer validation masks than this make Dice too noisy to choose a checkpoint by."""
MIN_IMAGES = 20
"""Fewer validation images than this make accuracy too coarse (steps of >= 5 %) to choose by."""


def score(metrics: dict[str, float], metric: str, weights: str) -> float:
    """The selection score of one validation's metrics (``val_acc``, ``val_ema_dice``, ...)."""
    prefix = "val_ema_" if weights == "ema" else "val_"
    if metric == "val_mean":
        return (metrics[prefix + "acc"] + metrics[prefix + "dice"]) / 2
    return metrics[prefix + metric.removeprefix("val_")]


def warn_if_too_small(metric: str, val_images: int, val_masks: int) -> None:
    """A warning naming the split's size when it is too small to select on."""
    small = []
    if metric in ("val_dice", "val_mean") and val_masks < MIN_MASKS:
        small.append(f"{val_masks} segmentation validation mask(s) (< {MIN_MASKS})")
    if metric in ("val_acc", "val_bacc", "val_mean") and val_images < MIN_IMAGES:
        small.append(f"{val_images} classification validation image(s) (< {MIN_IMAGES})")
    if small:
        warnings.warn(f"trainer.select_by={metric}: only {' and '.join(small)}; best.pt is chosen "
                      "on a noisy score (raise data.budget.val_fraction or the source's size)",
                      stacklevel=3)


def build_selection(config, spec, task_data, ema: bool) -> Optional["BestCheckpoint"]:
    """The run's BestCheckpoint (None when trainer.select_by keeps none), on the EMA weights when
    ``ema``; warns when the validation split is too small for the metric."""
    metric = config.trainer.selection_metric(spec.classifier, spec.decoder)
    if metric is None:
        return None
    warn_if_too_small(metric, len(task_data.classification.split.val) if task_data.classification
                      else 0, len(task_data.segmentation.split.val) if task_data.segmentation else 0)
    return BestCheckpoint(config.output_dir, metric, "ema" if ema else "raw")


class BestCheckpoint:
    """The best validation so far and the file that holds its weights."""

    def __init__(self, run_dir: str | Path, metric: str, weights: str):
        self.path = ckpt.best_checkpoint_path(run_dir)
        self.metric, self.weights = metric, weights
        self.step: Optional[int] = None
        self.value = -math.inf

    def record(self) -> dict:
        return {"metric": self.metric, "weights": self.weights, "step": self.step,
                "value": self.value}

    def consider(self, step: int, metrics: dict[str, float]) -> bool:
        """Score a validation; True (and the record updated) when it beats the best so far."""
        value = score(metrics, self.metric, self.weights)
        if not value > self.value:  # also refuses NaN
            return False
        self.step, self.value = step, value
        return True

    def save(self, model, ema, config) -> Path:
        """Write best.pt for the current best (rank 0 only): the bare network's weights, the
        average's entry (a ModelEMA, or None) and the config, as a checkpoint would hold them."""
        state = {"model": model.state_dict(), "config": config.to_dict(), "step": self.step,
                 "format": ckpt.FORMAT, "selection": self.record()}
        if ema is not None:
            state["ema"] = ema.state_dict()
        ckpt.atomic_torch_save(state, self.path)
        return self.path

    def restore(self, saved: Optional[dict]) -> None:
        """On resume: the better of the checkpoint's record (``saved``) and best.pt's on disk,
        which a run that went on past the checkpoint may have improved before it was stopped.
        A record chosen by another metric or on other weights is dropped, with a warning."""
        candidates = [("the checkpoint", saved)]
        if self.path.is_file():
            try:
                on_disk = ckpt.load_checkpoint(self.path).get("selection")
            except ckpt.CheckpointError as exc:
                warnings.warn(f"trainer.select_by: {exc}; the next validation replaces it")
                on_disk = None
            candidates.append((str(self.path), on_disk))
        for where, record in candidates:
            if not record or record.get("step") is None:
                continue
            if (record["metric"], record["weights"]) != (self.metric, self.weights):
                warnings.warn(f"trainer.select_by: {where} chose best.pt by {record['metric']} on "
                              f"the {record['weights']} weights; this run selects by "
                              f"{self.metric} on the {self.weights} weights, so its next "
                              "validation replaces it")
                continue
            if record["value"] > self.value:
                self.step, self.value = int(record["step"]), float(record["value"])

    def summary(self) -> dict:
        """Flat summary.json entries (best_step, best_metric, best_weights, best_value)."""
        if self.step is None:
            return {}
        return {"best_step": self.step, "best_metric": self.metric,
                "best_weights": self.weights, "best_value": self.value}
