"""The field's surface distances between mask boundaries, by MONAI: HD95 and ASSD.

Segmentation results are compared in this field as the 95th-percentile Hausdorff distance
(``hd95``) and the average symmetric surface distance (``assd``) of the two masks' boundaries,
beside the paper's average Hausdorff over all foreground pixels (mmdist.evaluation.mask_metrics).
Both are MONAI's own (``monai.metrics.compute_hausdorff_distance`` with percentile=95 and
``compute_average_surface_distance`` with symmetric=True), on the foreground class, in pixels of
the evaluated image size (spacing 1):

- boundary: the mask's pixels that a 3x3 erosion removes (MONAI's ``get_mask_edges``);
- hd95: max over the two directions of the 95th percentile of the distances from one boundary's
  pixels to the nearest pixel of the other boundary;
- assd: the mean of all those distances, both directions pooled.

Empty masks, as MONAI handles them: hd95 is NaN when either mask is empty; assd is NaN when both
are and +inf when exactly one is. Per image these values are kept as MONAI gives them (the
per-image CSV writes nan / inf); a test set's value is the mean over the images where both masks
are non-empty (MONAI's mean reduction skips NaN; the +inf of a missed lung is left out the same
way, so the mean stays a distance), and ``surface_images`` counts those images. A set where no
image qualifies reports NaN (null in metrics.json).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

SURFACE_METRICS = ("hd95", "assd")
HD_PERCENTILE = 95


def _one_hot(masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) bool -> (N, 2, H, W) float: background, foreground (MONAI's layout)."""
    foreground = torch.as_tensor(np.asarray(masks, dtype=bool))
    return torch.stack([~foreground, foreground], dim=1).float()


def surface_scores(pred, true) -> dict[str, np.ndarray]:
    """Per-image HD95 and ASSD of binary masks, MONAI's values.

    pred, true: (N, H, W) bool or {0, 1} masks (numpy or tensors). Returns {'hd95', 'assd'}:
    (N,) float64 in pixels, NaN / +inf for empty masks as described in the module docstring.
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred = np.asarray(pred.cpu() if torch.is_tensor(pred) else pred).astype(bool)
    true = np.asarray(true.cpu() if torch.is_tensor(true) else true).astype(bool)
    if pred.ndim != 3 or pred.shape != true.shape:
        raise ValueError(f"masks must both be (N, H, W), got {pred.shape} and {true.shape}")
    if not len(pred):
        return {name: np.zeros(0) for name in SURFACE_METRICS}
    y_pred, y = _one_hot(pred), _one_hot(true)
    with warnings.catch_warnings():
        # MONAI warns for every empty mask ("may result in nan/inf distance") and about a
        # deprecated argument it passes itself; the empty-mask convention is documented above.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=False,
                                          percentile=HD_PERCENTILE)
        assd = compute_average_surface_distance(y_pred, y, include_background=False,
                                                symmetric=True)
    return {"hd95": hd95[:, 0].double().numpy(), "assd": assd[:, 0].double().numpy()}


def surface_metrics(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """A test set's hd95 and assd (means over images with both masks non-empty, i.e. finite)
    and ``surface_images``, how many images those are."""
    finite = np.isfinite(scores["hd95"]) & np.isfinite(scores["assd"])
    out = {name: float(np.mean(scores[name][finite])) if finite.any() else float("nan")
           for name in SURFACE_METRICS}
    out["surface_images"] = int(finite.sum())
    return out
