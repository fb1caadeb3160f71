"""HD95 and ASSD on mask boundaries: MONAI's values, checked against a brute-force reading of
their definitions (boundary = mask minus its 4-connected erosion; every boundary-to-boundary
distance), on hand-made, random and real masks, with MONAI's handling of empty masks."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from mmdist.bench.eval import load_masks, predictions_like, random_masks
from mmdist.evaluation.metrics import segmentation_metrics, segmentation_scores
from mmdist.evaluation.surface import surface_metrics, surface_scores
from test_eval_metrics_fast import MONTGOMERY, SHENZHEN, shared


def _boundary_points(mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask)
    return np.argwhere(edge).astype(np.float64)


def brute_force(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """(hd95, assd) of two non-empty (H, W) masks from every pair of boundary pixels."""
    a, b = _boundary_points(pred), _boundary_points(true)
    distances = cdist(a, b)
    a_to_b, b_to_a = distances.min(axis=1), distances.min(axis=0)
    hd95 = max(np.quantile(a_to_b, 0.95), np.quantile(b_to_a, 0.95))
    return float(hd95), float(np.concatenate([a_to_b, b_to_a]).mean())


def _square(size, top, left, side):
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_a_square_moved_by_three_pixels():
    """Two 10x10 squares, one 3 px to the right: HD95 is 3 (most boundary pixels are 3 px from
    the other boundary), the boundary distances average below 3 (the rows overlap)."""
    pred, true = _square(32, 8, 8, 10)[None], _square(32, 8, 11, 10)[None]
    scores = surface_scores(pred, true)
    hd95, assd = brute_force(pred[0], true[0])
    assert scores["hd95"][0] == pytest.approx(hd95, abs=1e-5) and hd95 == pytest.approx(3.0)
    assert scores["assd"][0] == pytest.approx(assd, abs=1e-5) and 0 < assd < 3
    same = surface_scores(pred, pred)
    assert same["hd95"][0] == 0 and same["assd"][0] == 0


def test_random_masks_equal_the_definitions():
    rng = np.random.default_rng(11)
    truth = random_masks(12, 64, rng)
    pred = predictions_like(truth, rng)
    scores = surface_scores(pred, truth)
    for i in range(len(truth)):
        hd95, assd = brute_force(pred[i], truth[i])
        assert scores["hd95"][i] == pytest.approx(hd95, abs=1e-4), i
        assert scores["assd"][i] == pytest.approx(assd, abs=1e-4), i


def test_empty_masks_as_monai_handles_them():
    """hd95: NaN when either mask is empty; assd: NaN for two empty masks, +inf for one. The set
    mean skips them and counts the images it kept."""
    full, empty = _square(32, 4, 4, 12), np.zeros((32, 32), bool)
    pred = np.stack([full, full, empty, empty])
    true = np.stack([full, empty, full, empty])
    scores = surface_scores(pred, true)
    assert scores["hd95"][0] == 0 and all(math.isnan(v) for v in scores["hd95"][1:])
    assert list(scores["assd"][:3]) == [0.0, math.inf, math.inf] and math.isnan(scores["assd"][3])
    assert surface_metrics(scores) == {"hd95": 0.0, "assd": 0.0, "surface_images": 1}
    none = surface_metrics({k: v[1:] for k, v in scores.items()})
    assert math.isnan(none["hd95"]) and none["surface_images"] == 0


def test_the_set_values_sit_beside_the_paper_metrics():
    rng = np.random.default_rng(3)
    truth = random_masks(6, 48, rng)
    pred = predictions_like(truth, rng)
    scores = {**segmentation_scores(pred, truth), **surface_scores(pred, truth)}
    out = segmentation_metrics(scores)
    assert out["hd95"] == pytest.approx(np.mean([brute_force(p, t)[0] for p, t in zip(pred, truth)]))
    assert out["surface_images"] == 6 and out["dice"] == pytest.approx(scores["dice"].mean())


@pytest.mark.parametrize("folder", [shared(SHENZHEN), shared(MONTGOMERY)])
def test_real_lung_masks_equal_the_definitions_and_monai_metric_classes(folder):
    """On real masks at 256 px: per image the brute-force values; per set what MONAI's own
    cumulative metrics (HausdorffDistanceMetric, SurfaceDistanceMetric, mean reduction) give."""
    import torch
    from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric

    truth = load_masks(folder, 256, limit=12)
    pred = predictions_like(truth, np.random.default_rng(4))
    scores = surface_scores(pred, truth)
    for i in range(len(truth)):
        hd95, assd = brute_force(pred[i], truth[i])
        assert scores["hd95"][i] == pytest.approx(hd95, abs=1e-4), i
        assert scores["assd"][i] == pytest.approx(assd, abs=1e-4), i
    one_hot = lambda m: torch.stack([~torch.from_numpy(m), torch.from_numpy(m)], 1).float()  # noqa: E731
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean")
    sd = SurfaceDistanceMetric(include_background=False, symmetric=True, reduction="mean")
    hd(one_hot(pred), one_hot(truth))
    sd(one_hot(pred), one_hot(truth))
    out = surface_metrics(scores)
    assert out["hd95"] == pytest.approx(hd.aggregate().item(), rel=1e-6)
    assert out["assd"] == pytest.approx(sd.aggregate().item(), rel=1e-6)
