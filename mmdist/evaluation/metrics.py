"""The paper's metrics, per image and per test set, and their merge across ranks.

Classification (over a whole test set): ``acc``, ``f1_normal``, ``f1_pneumonia``, ``auc``
(scikit-learn), and what a clinician reads: ``balanced_acc`` (the mean of sensitivity and
specificity, so a model that calls every image pneumonia scores 0.5 whatever the class mix),
``sensitivity`` (pneumonia found), ``specificity`` (normal called normal) and the confusion matrix
as counts ``tn``, ``fp``, ``fn``, ``tp`` (pneumonia positive), all scikit-learn's. Segmentation (per image, then the mean over images): ``dice``, ``jaccard``,
``precision``, ``recall`` (from per-image pixel counts), ``ssim`` (scikit-image's definition, on
the binary masks) and ``hausdorff``: the average (modified, Dubuisson & Jain) Hausdorff distance
between the foreground pixel sets, in pixels of the evaluated image size (scikit-image's
definition). Both are computed by the fast equivalents of mmdist.evaluation.mask_metrics;
``definition="reference"`` calls scikit-image itself. Beside them, the field's surface distances
on the mask boundaries, ``hd95`` and ``assd`` (MONAI's, mmdist.evaluation.surface).

Conventions for degenerate images, chosen so a test set always has finite numbers:
- dice/jaccard are 1 when prediction and truth are both empty; precision is 0 for an empty
  prediction, recall 0 for an empty truth.
- hausdorff is 0 when both are empty and the image diagonal hypot(H, W) (just above the largest
  pixel distance an image can hold) when exactly one is empty, where scikit-image would return
  infinity.
- auc is NaN when the test set holds a single class (it is undefined); JSON writes it as null.

Distributed evaluation: every rank scores its own shard and keeps per-image rows keyed by the
global image index (``PerImageRecords``); one ``all_gather_object`` merges them, rows with an index
already seen (a padding sampler's duplicates) are dropped and the rows are sorted by index, so any
sharding gives exactly the one-process result.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import (
    accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, recall_score,
    roc_auc_score)

from mmdist.evaluation.mask_metrics import (
    count_pixels, hausdorff_scores, reference_average_hausdorff, reference_mask_ssim, ssim_scores)
from mmdist.evaluation.surface import SURFACE_METRICS, surface_metrics

CLASSIFICATION_METRICS = ("acc", "f1_normal", "f1_pneumonia", "auc", "balanced_acc",
                          "sensitivity", "specificity", "tn", "fp", "fn", "tp")
SEGMENTATION_METRICS = ("dice", "jaccard", "ssim", "hausdorff", "precision", "recall")
"""The paper's six, per image from ``segmentation_scores`` (fast and reference definitions)."""
METRICS = CLASSIFICATION_METRICS + SEGMENTATION_METRICS + SURFACE_METRICS


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------

def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Metrics of a whole test set.

    probs: (N, 2) float class probabilities (normal, pneumonia); labels: (N,) int in {0, 1}.
    Returns the CLASSIFICATION_METRICS (floats; tn, fp, fn, tp are counts with pneumonia the
    positive class); the predicted class is the argmax. Sensitivity (specificity) is 0 when the
    set has no pneumonia (normal) image, as scikit-learn's recall with zero_division=0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if probs.ndim != 2 or probs.shape[1] != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be (N, 2) and labels (N,), got {probs.shape} and {labels.shape}")
    if len(labels) == 0:
        raise ValueError("classification metrics need at least one image")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (pneumonia), got {np.unique(labels)}")
    predicted = probs.argmax(axis=1)
    f1_normal, f1_pneumonia = f1_score(labels, predicted, labels=[0, 1], average=None,
                                       zero_division=0)
    if len(np.unique(labels)) == 2:
        auc = float(roc_auc_score(labels, probs[:, 1]))
    else:
        auc = math.nan  # undefined with a single class
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    sensitivity, specificity = recall_score(labels, predicted, labels=[1, 0], average=None,
                                            zero_division=0)
    with warnings.catch_warnings():
        # One class in the truth: scikit-learn warns and averages the recall of the class present.
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(labels, predicted))
    return {"acc": float(accuracy_score(labels, predicted)), "f1_normal": float(f1_normal),
            "f1_pneumonia": float(f1_pneumonia), "auc": auc, "balanced_acc": balanced,
            "sensitivity": float(sensitivity), "specificity": float(specificity),
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------

def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(numerator.shape, empty, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def average_hausdorff(pred: np.ndarray, true: np.ndarray) -> float:
    """Average Hausdorff distance between the foreground pixels of two (H, W) masks, in pixels.

    max(mean_a min_b |a - b|, mean_b min_a |a - b|) (scikit-image's 'modified' method); 0 when both
    are empty, the image diagonal when exactly one is (see the module docstring).
    """
    return float(hausdorff_scores(np.asarray(pred)[None], np.asarray(true)[None])[0])


def mask_ssim(pred: np.ndarray, true: np.ndarray) -> float:
    """SSIM of two (H, W) binary masks as {0, 1} float images (7x7 window, data range 1)."""
    return float(ssim_scores(np.asarray(pred)[None], np.asarray(true)[None])[0])


def segmentation_scores(pred: np.ndarray | torch.Tensor, true: np.ndarray | torch.Tensor,
                        definition: str = "fast") -> dict[str, np.ndarray]:
    """Per-image segmentation metrics.

    pred, true: (N, H, W) binary masks (bool or {0, 1} ints; SSIM runs on pred's device).
    definition: "fast" (mmdist.evaluation.mask_metrics) or "reference" (scikit-image per image;
    the same values, 20x or more slower). Returns a dict of (N,) float64 arrays: the six metrics
    of SEGMENTATION_METRICS plus 'pred_area' and 'true_area' (foreground pixel counts, for
    Bland-Altman plots).
    """
    if definition not in ("fast", "reference"):
        raise ValueError(f"definition must be 'fast' or 'reference', got {definition!r}")
    pred_t = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred).bool()
    true_t = torch.as_tensor(np.asarray(true) if not torch.is_tensor(true) else true).bool()
    if pred_t.ndim != 3 or pred_t.shape != true_t.shape:
        raise ValueError(f"masks must both be (N, H, W), got {tuple(pred_t.shape)} and "
                         f"{tuple(true_t.shape)}")
    n = pred_t.shape[0]
    if n == 0:
        return {name: np.zeros(0) for name in SEGMENTATION_METRICS + ("pred_area", "true_area")}
    pred_np = pred_t.cpu().numpy()
    true_np = true_t.cpu().numpy()
    # Per-image pixel counts. (torchmetrics' samplewise stat scores squeeze away the batch
    # dimension of a one-image batch, so the counts are taken directly.)
    tp = count_pixels(pred_np & true_np).astype(np.float64)
    fp = count_pixels(pred_np).astype(np.float64) - tp
    fn = count_pixels(true_np).astype(np.float64) - tp
    if definition == "fast":
        ssim = ssim_scores(pred_t, true_t).cpu().numpy()
        hausdorff = hausdorff_scores(pred_np, true_np)
    else:
        ssim = np.array([reference_mask_ssim(p, t) for p, t in zip(pred_np, true_np)])
        hausdorff = np.array([reference_average_hausdorff(p, t) for p, t in zip(pred_np, true_np)])
    return {
        "dice": _safe_ratio(2 * tp, 2 * tp + fp + fn, empty=1.0),
        "jaccard": _safe_ratio(tp, tp + fp + fn, empty=1.0),
        "ssim": ssim.astype(np.float64),
        "hausdorff": hausdorff.astype(np.float64),
        "precision": _safe_ratio(tp, tp + fp, empty=0.0),
        "recall": _safe_ratio(tp, tp + fn, empty=0.0),
        "pred_area": tp + fp,
        "true_area": tp + fn,
    }


def segmentation_metrics(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over images of each per-image segmentation metric (from ``segmentation_scores``),
    and the surface distances' set values (mmdist.evaluation.surface) when ``scores`` has them."""
    if len(scores["dice"]) == 0:
        raise ValueError("segmentation metrics need at least one image")
    out = {name: float(np.mean(scores[name])) for name in SEGMENTATION_METRICS}
    if all(name in scores for name in SURFACE_METRICS):
        out.update(surface_metrics(scores))
    return out


# --------------------------------------------------------------------------------------------
# Per-image rows and their merge across ranks
# --------------------------------------------------------------------------------------------

class PerImageRecords:
    """Per-image result rows of one test set, keyed by the global image index.

    ``add(indices, column=values, ...)`` appends a batch (every column's first dimension is the
    batch); ``gather()`` merges all ranks (call it on every rank, also ranks that saw no image);
    ``columns()`` returns the rows sorted by index with duplicate indices dropped.
    """

    def __init__(self) -> None:
        self._indices: list[np.ndarray] = []
        self._columns: dict[str, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return int(sum(len(i) for i in self._indices))

    def add(self, indices, **columns) -> None:
        indices = np.asarray(indices.cpu() if torch.is_tensor(indices) else indices,
                             dtype=np.int64).reshape(-1)
        if self._columns and set(columns) != set(self._columns):
            raise ValueError(f"columns {sorted(columns)} differ from earlier ones "
                             f"{sorted(self._columns)}")
        for name, values in columns.items():
            values = np.asarray(values.detach().cpu() if torch.is_tensor(values) else values)
            if len(values) != len(indices):
                raise ValueError(f"column {name!r} has {len(values)} rows for {len(indices)} indices")
            self._columns.setdefault(name, []).append(values)
        self._indices.append(indices)

    def _local(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not self._indices:
            return np.zeros(0, dtype=np.int64), {}
        return (np.concatenate(self._indices),
                {name: np.concatenate(parts) for name, parts in self._columns.items()})

    def gather(self, group: Optional[dist.ProcessGroup] = None) -> "PerImageRecords":
        """All ranks' rows on every rank (a no-op without an initialised process group).

        One collective per call whatever the shard sizes, so uneven shards cannot deadlock.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self
        world = dist.get_world_size(group)
        parts: list = [None] * world
        # all_gather_object pickles each rank's rows and exchanges their sizes first, so
        # ranks with different row counts (or none) need no padding.
        dist.all_gather_object(parts, self._local(), group=group)
        merged = PerImageRecords()
        for indices, columns in parts:
            if len(indices):
                merged.add(indices, **columns)
        return merged

    def columns(self) -> dict[str, np.ndarray]:
        """{'index': (M,) int64 sorted unique, name: (M, ...) rows} (first row per index kept)."""
        indices, columns = self._local()
        unique, first = np.unique(indices, return_index=True)
        out = {"index": unique}
        out.update({name: values[first] for name, values in columns.items()})
        return out
