"""Seeded train/val/test splits by patient, and the labeled/unlabeled budgets of the paper.

No patient is ever in two splits: images are grouped by patient (an image without a patient id is
its own group) and whole groups are assigned, stratified by class where labels exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmdist.data.imageset import NO_LABEL, ImageSet


@dataclass
class Split:
    """Index arrays into one ImageSet (sorted, disjoint)."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.sort(np.concatenate([self.labeled, self.unlabeled]))


def _group_label(labels: np.ndarray, members: np.ndarray) -> int:
    values = labels[members]
    values = values[values != NO_LABEL]
    # A patient with any pneumonia image is stratified as pneumonia.
    return int(values.max()) if len(values) else NO_LABEL


def split_by_patient(imageset: ImageSet, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train, val, test) image indices; whole patients per split, stratified by class."""
    groups = imageset.patient_groups()
    keys, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(keys))]
    labels = np.asarray(imageset.labels)
    group_labels = np.array([_group_label(labels, m) for m in members])
    rng = np.random.default_rng([seed, 0x5EED])
    assignment = np.zeros(len(keys), dtype=np.int8)  # 0 train, 1 val, 2 test
    for cls in np.unique(group_labels):
        cls_groups = np.flatnonzero(group_labels == cls)
        cls_groups = cls_groups[rng.permutation(len(cls_groups))]
        sizes = np.array([len(members[g]) for g in cls_groups])
        total = sizes.sum()
        cumulative = np.cumsum(sizes)
        # Fill test, then val, by image count (patients have different numbers of images).
        test_end = np.searchsorted(cumulative, round(total * test_fraction), side="left") + \
            (1 if test_fraction > 0 else 0)
        test_end = min(test_end, len(cls_groups)) if test_fraction > 0 else 0
        val_target = cumulative[test_end - 1] if test_end else 0
        val_end = np.searchsorted(cumulative, val_target + round(total * val_fraction), side="left") + 1
        val_end = min(max(val_end, test_end + 1), len(cls_groups))
        assignment[cls_groups[:test_end]] = 2
        assignment[cls_groups[test_end:val_end]] = 1
    by_image = assignment[inverse]
    return (np.flatnonzero(by_image == 0), np.flatnonzero(by_image == 1),
            np.flatnonzero(by_image == 2))


def choose_labeled(imageset: ImageSet, train: np.ndarray, budget, seed: int,
                   need: str) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``budget`` labeled images from ``train`` (int or 'full'); the rest is unlabeled.

    need: 'label' (classification: stratified by class) or 'mask' (segmentation).
    Returns (labeled, unlabeled) sorted index arrays.
    """
    rng = np.random.default_rng([seed, 0xB0D6E7])
    if need == "label":
        eligible = train[np.asarray(imageset.labels)[train] != NO_LABEL]
    else:
        eligible = train if imageset.masks is not None else train[:0]
    if budget == "full":
        count = len(eligible)
    else:
        if budget > len(eligible):
            raise ValueError(f"{imageset.source}: label budget {budget} exceeds the "
                             f"{len(eligible)} training images with a {need}")
        count = int(budget)
    if need == "label" and count < len(eligible):
        labels = np.asarray(imageset.labels)[eligible]
        chosen = []
        classes, counts = np.unique(labels, return_counts=True)
        # Largest-remainder allocation keeps the class ratio of the training split.
        quotas = counts * count / counts.sum()
        alloc = np.floor(quotas).astype(int)
        for i in np.argsort(-(quotas - alloc))[: count - alloc.sum()]:
            alloc[i] += 1
        for cls, k in zip(classes, alloc):
            pool = eligible[labels == cls]
            chosen.append(pool[rng.permutation(len(pool))[:k]])
        labeled = np.concatenate(chosen)
    else:
        labeled = eligible[rng.permutation(len(eligible))[:count]]
    labeled = np.sort(labeled)
    unlabeled = np.setdiff1d(train, labeled)
    return labeled, unlabeled


def make_split(imageset: ImageSet, budget, val_fraction: float, test_fraction: float,
               seed: int, need: str) -> Split:
    train, val, test = split_by_patient(imageset, val_fraction, test_fraction, seed)
    labeled, unlabeled = choose_labeled(imageset, train, budget, seed, need)
    return Split(labeled=labeled, unlabeled=unlabeled, val=val, test=test)
