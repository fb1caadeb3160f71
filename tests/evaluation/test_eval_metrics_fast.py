"""The fast Hausdorff and SSIM equal scikit-image's definitions (the references) within 1e-6:
random masks, degenerate masks and the real lung masks of the shared data."""

import math

import numpy as np
import pytest
import torch

from mmdist.bench.eval import load_masks, predictions_like, random_masks, shared_shenzhen
from mmdist.evaluation import mask_metrics
from mmdist.evaluation.mask_metrics import (
    hausdorff_scores, reference_average_hausdorff, reference_mask_ssim, ssim_scores)
from mmdist.evaluation.metrics import segmentation_scores

TOLERANCE = 1e-6
SHENZHEN = shared_shenzhen()
MONTGOMERY = SHENZHEN.parent / "montgomery-lungseg"


def assert_equal_to_reference(pred: np.ndarray, true: np.ndarray) -> None:
    hausdorff = [reference_average_hausdorff(p, t) for p, t in zip(pred, true)]
    ssim = [reference_mask_ssim(p, t) for p, t in zip(pred, true)]
    np.testing.assert_allclose(hausdorff_scores(pred, true), hausdorff, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ssim_scores(pred, true).numpy(), ssim, rtol=0, atol=TOLERANCE)


def noise(rng, count, shape):
    """(count, H, W) bool noise, each image with its own foreground share in (0, 1)."""
    share = rng.random((count, 1, 1))
    return rng.random((count, *shape)) < share


@pytest.mark.parametrize("shape", [(7, 7), (9, 31), (40, 23), (64, 64)])
def test_random_noise_masks(shape):
    rng = np.random.default_rng(sum(shape))
    assert_equal_to_reference(noise(rng, 12, shape), noise(rng, 12, shape))


def test_random_blobs_with_predictions_near_and_far_at_256():
    rng = np.random.default_rng(1)
    truth = random_masks(6, 256, rng)
    # Predictions a few pixels off (the tree of far pixels) and unrelated blobs (large mismatch:
    # the distance transform).
    pred = np.concatenate([predictions_like(truth[:3], rng), random_masks(3, 256, rng)])
    assert_equal_to_reference(pred, truth)


@pytest.mark.parametrize("share", [0.0, math.inf], ids=["distance_transform", "kd_tree"])
def test_each_look_up_of_far_pixels_gives_the_reference(monkeypatch, share):
    monkeypatch.setattr(mask_metrics, "KD_TREE_SHARE", share)
    rng = np.random.default_rng(2)
    truth = np.concatenate([random_masks(3, 96, rng), noise(rng, 3, (96, 96))])
    pred = np.concatenate([random_masks(3, 96, rng), noise(rng, 3, (96, 96))])
    assert_equal_to_reference(pred, truth)


def degenerate_pairs(shape=(32, 40)):
    empty = np.zeros(shape, dtype=bool)
    full = np.ones(shape, dtype=bool)
    lung = empty.copy()
    lung[5:25, 4:15] = lung[6:27, 22:36] = True
    pixel, other_pixel, corner = empty.copy(), empty.copy(), empty.copy()
    pixel[10, 12] = other_pixel[30, 1] = corner[0, 0] = True
    line = empty.copy()
    line[:, 20] = True
    return {
        "empty_prediction": (empty, lung), "empty_truth": (lung, empty),
        "both_empty": (empty, empty),
        "pixel_same": (pixel, pixel), "pixel_other": (pixel, other_pixel),
        "pixel_in_lung": (pixel, lung), "corner_full": (corner, full), "full_full": (full, full),
        "full_lung": (full, lung), "full_empty": (full, empty), "line_lung": (line, lung),
    }


def test_degenerate_masks_equal_the_reference_and_its_conventions():
    pairs = degenerate_pairs()
    pred = np.stack([p for p, _ in pairs.values()])
    true = np.stack([t for _, t in pairs.values()])
    assert_equal_to_reference(pred, true)
    hausdorff = dict(zip(pairs, hausdorff_scores(pred, true)))
    assert hausdorff["both_empty"] == 0.0 and hausdorff["pixel_same"] == 0.0
    for name in ("empty_prediction", "empty_truth", "full_empty"):
        assert hausdorff[name] == math.hypot(32, 40)  # the diagonal, where scikit-image says inf
    assert hausdorff["pixel_other"] == pytest.approx(math.hypot(20, 11))
    ssim = dict(zip(pairs, ssim_scores(pred, true).tolist()))
    assert ssim["both_empty"] == pytest.approx(1.0) and ssim["full_full"] == pytest.approx(1.0)


def test_single_image_wrappers_and_the_whole_score_dict_agree_with_the_reference():
    rng = np.random.default_rng(3)
    truth = random_masks(4, 64, rng)
    pred = predictions_like(truth, rng)
    fast = segmentation_scores(torch.from_numpy(pred), truth)
    reference = segmentation_scores(pred, truth, definition="reference")
    assert sorted(fast) == sorted(reference)
    for name in fast:
        np.testing.assert_allclose(fast[name], reference[name], rtol=0, atol=TOLERANCE)
    with pytest.raises(ValueError, match="definition"):
        segmentation_scores(pred, truth, definition="skimage")


def test_ssim_refuses_images_smaller_than_its_window_as_the_reference_does():
    small = np.zeros((1, 6, 12), dtype=bool)
    with pytest.raises(ValueError, match="7x7"):
        ssim_scores(small, small)
    with pytest.raises(ValueError):
        reference_mask_ssim(small[0], small[0])


def shared(folder):
    need = pytest.mark.skipif(not (folder / "labels.csv").is_file(),
                              reason=f"needs the shared lung masks in {folder} (MMDIST_SHARED_DATA)")
    return pytest.param(folder, marks=need, id=folder.name)


@pytest.mark.parametrize("folder", [shared(SHENZHEN), shared(MONTGOMERY)])
def test_real_lung_masks_at_256(folder):
    truth = load_masks(folder, 256, limit=24)
    rng = np.random.default_rng(4)
    # A model's kind of errors, and the mask of another patient (a much worse prediction).
    pred = np.concatenate([predictions_like(truth, rng), np.roll(truth, 1, axis=0)])
    assert_equal_to_reference(pred, np.concatenate([truth, truth]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_ssim_on_the_gpu_equals_the_reference():
    rng = np.random.default_rng(5)
    truth = random_masks(20, 128, rng)
    pred = predictions_like(truth, rng)
    out = ssim_scores(torch.from_numpy(pred).cuda(), torch.from_numpy(truth).cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float64
    reference = [reference_mask_ssim(p, t) for p, t in zip(pred, truth)]
    np.testing.assert_allclose(out.cpu().numpy(), reference, rtol=0, atol=TOLERANCE)
