"""Each metric against a value computed by hand on small hand-made inputs."""

import math

import numpy as np
import pytest

from mmdist.evaluation.metrics import (
    PerImageRecords, average_hausdorff, classification_metrics, mask_ssim, segmentation_metrics,
    segmentation_scores)


def _square(size=32, top=10, left=10, side=10):
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_classification_from_a_written_down_confusion_matrix():
    # truth normal: 5 predicted normal, 3 predicted pneumonia; truth pneumonia: 2 normal, 10 pneumonia
    labels = np.array([0] * 8 + [1] * 12)
    predicted = np.array([0] * 5 + [1] * 3 + [0] * 2 + [1] * 10)
    probs = np.stack([1 - predicted * 0.8 - 0.1, predicted * 0.8 + 0.1], axis=1)
    out = classification_metrics(probs, labels)
    assert out["acc"] == pytest.approx(15 / 20)
    # pneumonia positive: tp 10, fp 3, fn 2 -> 2*10 / (20 + 3 + 2)
    assert out["f1_pneumonia"] == pytest.approx(20 / 25)
    # normal positive: tp 5, fp 2, fn 3 -> 2*5 / (10 + 2 + 3)
    assert out["f1_normal"] == pytest.approx(10 / 15)


def test_auc_by_counting_ranked_pairs():
    labels = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # positive/negative pairs ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4)
    out = classification_metrics(np.stack([1 - p, p], axis=1), labels)
    assert out["auc"] == pytest.approx(3 / 4)
    single = classification_metrics(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
    assert math.isnan(single["auc"]) and single["acc"] == pytest.approx(0.5)


def test_classification_rejects_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(np.array([[0.5, 0.5]]), np.array([2]))


def test_square_against_shifted_square():
    true = _square()
    pred = _square(left=12)  # shifted 2 px right: overlap 10 x 8 = 80 pixels
    s = segmentation_scores(pred[None], true[None])
    assert s["dice"][0] == pytest.approx(2 * 80 / (100 + 100))
    assert s["jaccard"][0] == pytest.approx(80 / 120)
    assert s["precision"][0] == pytest.approx(80 / 100)
    assert s["recall"][0] == pytest.approx(80 / 100)
    assert s["pred_area"][0] == 100 and s["true_area"][0] == 100
    # per row, the 8 shared pixels are 0 away and the 2 unshared ones 1 and 2 away: 3/10 each way
    assert s["hausdorff"][0] == pytest.approx(0.3)
    means = segmentation_metrics(s)
    assert set(means) == {"dice", "jaccard", "ssim", "hausdorff", "precision", "recall"}


def test_average_hausdorff_on_point_sets_takes_the_larger_directed_mean():
    a = np.zeros((8, 8), dtype=bool)
    b = np.zeros((8, 8), dtype=bool)
    a[0, 0] = True
    b[0, 0] = b[0, 6] = True
    # a -> b: 0; b -> a: (0 + 6) / 2 = 3
    assert average_hausdorff(a, b) == pytest.approx(3.0)
    a[:] = False
    a[3, 4] = True
    b[:] = False
    b[0, 0] = b[7, 4] = True
    # a -> b: min(5, 4) = 4; b -> a: (5 + 4) / 2 = 4.5
    assert average_hausdorff(a, b) == pytest.approx(4.5)


def test_empty_masks_have_finite_documented_values():
    empty = np.zeros((1, 9, 12), dtype=bool)
    full = np.ones((1, 9, 12), dtype=bool)
    both = segmentation_scores(empty, empty)
    assert both["dice"][0] == 1 and both["jaccard"][0] == 1 and both["hausdorff"][0] == 0
    one = segmentation_scores(empty, full)
    assert one["dice"][0] == 0 and one["precision"][0] == 0 and one["recall"][0] == 0
    assert one["hausdorff"][0] == pytest.approx(15.0)  # diagonal of 9 x 12


def _naive_ssim(x, y, win=7, c1=1e-4, c2=9e-4):
    """Wang et al. SSIM with a uniform win x win window and sample (co)variances, averaged over
    every full window: the definition, written as loops."""
    values = []
    n = win * win
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            a = x[i:i + win, j:j + win].ravel()
            b = y[i:i + win, j:j + win].ravel()
            ma, mb = a.mean(), b.mean()
            va = ((a - ma) ** 2).sum() / (n - 1)
            vb = ((b - mb) ** 2).sum() / (n - 1)
            cov = ((a - ma) * (b - mb)).sum() / (n - 1)
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_definition_and_the_constant_case():
    true = _square(size=20, top=5, left=5, side=8)
    pred = _square(size=20, top=6, left=4, side=9)
    assert mask_ssim(pred, true) == pytest.approx(_naive_ssim(pred.astype(float), true.astype(float)))
    assert mask_ssim(true, true) == pytest.approx(1.0)
    # all-foreground vs all-background: only the luminance term is left, C1 / (1 + C1)
    ones, zeros = np.ones((12, 12), bool), np.zeros((12, 12), bool)
    assert mask_ssim(ones, zeros) == pytest.approx(1e-4 / (1 + 1e-4))


def test_records_drop_duplicates_and_sort_by_index():
    records = PerImageRecords()
    records.add([3, 1], prob=np.array([[0.3, 0.7], [0.1, 0.9]]), label=[1, 0])
    records.add([0, 3], prob=np.array([[0.5, 0.5], [0.3, 0.7]]), label=[0, 1])
    cols = records.columns()
    assert cols["index"].tolist() == [0, 1, 3]
    assert cols["label"].tolist() == [0, 0, 1]
    assert cols["prob"].shape == (3, 2)
    assert records.gather() is records  # no process group: nothing to merge
    with pytest.raises(ValueError, match="rows"):
        records.add([5], prob=np.zeros((2, 2)), label=[0, 0])


def test_clinical_metrics_equal_scikit_learn_and_expose_a_one_class_classifier():
    """Balanced accuracy, sensitivity, specificity and the confusion matrix are scikit-learn's;
    a model that calls everything pneumonia has the pneumonia share as accuracy but 0.5 balanced
    accuracy and specificity 0."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score

    rng = np.random.default_rng(7)
    for _ in range(5):
        labels = rng.integers(0, 2, 40)
        p = np.clip(labels * 0.3 + rng.uniform(size=40) * 0.7, 0, 1)
        out = classification_metrics(np.stack([1 - p, p], axis=1), labels)
        predicted = (p > 0.5).astype(int)
        assert out["balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, predicted))
        assert out["sensitivity"] == pytest.approx(recall_score(labels, predicted, pos_label=1))
        assert out["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
        assert [[out["tn"], out["fp"]], [out["fn"], out["tp"]]] == \
            confusion_matrix(labels, predicted).tolist()
    labels = np.array([0] * 26 + [1] * 74)
    always = classification_metrics(np.tile([[0.1, 0.9]], (100, 1)), labels)
    assert always["acc"] == pytest.approx(0.74) and always["balanced_acc"] == pytest.approx(0.5)
    assert (always["sensitivity"], always["specificity"]) == (1.0, 0.0)
    assert (always["tn"], always["fp"], always["fn"], always["tp"]) == (0, 26, 0, 74)
