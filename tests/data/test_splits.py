"""Patient-level train/val/test splits and label budgets: no leak, stratified, seeded, nested."""

import numpy as np
import pytest

from mmdist.data.imageset import NO_LABEL, ImageSet
from mmdist.data.splits import choose_labeled, make_split, shared_patients, split_by_patient


def make_set(n_patients=150, seed=0, unlabeled_share=0.1, masked_share=None) -> ImageSet:
    """Patients with 1-5 images each; 25% pneumonia patients; some images unlabeled."""
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n_patients):
        sick = rng.random() < 0.25
        for _ in range(rng.integers(1, 6)):
            patients.append(f"pt{p}" if p % 10 else "")  # every tenth has no id
            labels.append(NO_LABEL if rng.random() < unlabeled_share else int(sick))
    n = len(labels)
    masks, meta = None, {}
    if masked_share is not None:
        masks = np.zeros((n, 2, 2), np.uint8)
        meta["has_mask"] = rng.random(n) < masked_share
    return ImageSet(images=np.zeros((n, 2, 2), np.uint8), labels=np.array(labels, np.int64),
                    masks=masks, patients=np.array(patients, dtype=object), source="toy", meta=meta)


def test_splits_partition_images_and_share_no_patient():
    data = make_set()
    train, val, test = split_by_patient(data, 0.1, 0.2, seed=3)
    everything = np.concatenate([train, val, test])
    assert len(everything) == len(data) and len(np.unique(everything)) == len(data)
    for a, b in ((train, val), (train, test), (val, test)):
        assert shared_patients(data, a, b) == set()
    # Fractions are of images, within a few patients' worth.
    assert abs(len(test) / len(data) - 0.2) < 0.03 and abs(len(val) / len(data) - 0.1) < 0.03


def test_splits_are_stratified_by_class():
    data = make_set(n_patients=400)
    train, val, test = split_by_patient(data, 0.15, 0.2, seed=0)
    def share(idx):
        lab = data.labels[idx]
        return (lab == 1).sum() / (lab != NO_LABEL).sum()
    overall = share(np.arange(len(data)))
    for part in (train, val, test):
        assert abs(share(part) - overall) < 0.03


def test_splits_are_seeded():
    data = make_set()
    first = split_by_patient(data, 0.1, 0.2, seed=5)
    again = split_by_patient(data, 0.1, 0.2, seed=5)
    other = split_by_patient(data, 0.1, 0.2, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[2], other[2])


def test_tiny_sources():
    data = ImageSet(images=np.zeros((3, 2, 2), np.uint8), labels=np.array([0, 0, 1]),
                    patients=np.array(["a", "b", "c"], dtype=object))
    train, val, test = split_by_patient(data, 0.1, 0.1, seed=0)
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    two = ImageSet(images=np.zeros((4, 2, 2), np.uint8), labels=np.zeros(4, np.int64),
                   patients=np.array(["a", "a", "b", "b"], dtype=object))
    with pytest.raises(ValueError, match="2 patient"):
        split_by_patient(two, 0.1, 0.1, seed=0)
    train, val, test = split_by_patient(two, 0.3, 0.0, seed=0)
    assert len(test) == 0 and len(train) == 2 and len(val) == 2


def test_labeled_budget_is_stratified_nested_and_exact():
    data = make_set(n_patients=400)
    split = make_split(data, 100, 0.1, 0.2, seed=1, need="label")
    assert len(split.labeled) == 100
    assert np.intersect1d(split.labeled, split.unlabeled).size == 0
    np.testing.assert_array_equal(split.train, np.sort(np.concatenate([split.labeled, split.unlabeled])))
    assert (data.labels[split.labeled] != NO_LABEL).all()
    train_labels = data.labels[split.train]
    expected = (train_labels == 1).sum() / (train_labels != NO_LABEL).sum() * 100
    assert abs((data.labels[split.labeled] == 1).sum() - expected) <= 1
    bigger = make_split(data, 300, 0.1, 0.2, seed=1, need="label")
    np.testing.assert_array_equal(bigger.val, split.val)  # the budget does not move val/test
    assert np.isin(split.labeled, bigger.labeled).all()  # nested
    full = make_split(data, "full", 0.1, 0.2, seed=1, need="label")
    assert (data.labels[full.unlabeled] == NO_LABEL).all()
    # Scored splits hold only labeled images; the unlabeled ones of val/test patients are unused.
    assert (data.labels[split.val] != NO_LABEL).all() and (data.labels[split.test] != NO_LABEL).all()
    val, test = split_by_patient(data, 0.1, 0.2, seed=1)[1:]
    np.testing.assert_array_equal(split.test, test[data.labels[test] != NO_LABEL])


def test_a_rare_class_is_in_every_budget_of_at_least_two():
    labels = np.zeros(500, np.int64)
    labels[:3] = 1
    data = ImageSet(images=np.zeros((500, 2, 2), np.uint8), labels=labels)
    for seed in range(5):
        labeled, _ = choose_labeled(data, np.arange(500), 2, seed, need="label")
        assert sorted(labels[labeled]) == [0, 1]


def test_budget_errors():
    data = make_set()
    train, _, _ = split_by_patient(data, 0.1, 0.2, seed=0)
    with pytest.raises(ValueError, match="exceeds the .* training images with a label"):
        choose_labeled(data, train, 10_000, 0, need="label")
    with pytest.raises(ValueError, match="positive integer or 'full'"):
        choose_labeled(data, train, 0, 0, need="label")
    with pytest.raises(ValueError, match="0 training images with a mask"):
        choose_labeled(data, train, 1, 0, need="mask")


def test_mask_budgets_use_only_masked_images_and_val_test_keep_masks():
    data = make_set(n_patients=300, masked_share=0.3)
    split = make_split(data, 10, 0.1, 0.2, seed=0, need="mask")
    assert len(split.labeled) == 10 and data.meta["has_mask"][split.labeled].all()
    for part in (split.val, split.test):
        assert len(part) and data.meta["has_mask"][part].all()
    full = make_split(data, "full", 0.1, 0.2, seed=0, need="mask")
    assert not data.meta["has_mask"][full.unlabeled].any()
