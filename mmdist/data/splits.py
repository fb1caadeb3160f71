"""Seeded train/val/test splits by patient, and the labeled/unlabeled budgets of the paper.

No patient is ever in two splits: images are grouped by patient (an image without a patient id is
its own group) and whole groups are assigned. Groups are stratified by class (a patient with any
pneumonia image counts as pneumonia, an unlabeled one as its own stratum) and, where only some
images have masks, by whether the patient has one, so val and test keep the source's mix.

Within the training split, ``choose_labeled`` picks the labeled subset of a budget (the paper's
|D_l^c| = 100, 1000, full and |D_l^s| = 10, 50, full, or any integer); the rest of the training
split is the unlabeled pool (``Split.unlabeled_pool``: the labeled images themselves when
nothing is left). Labeled subsets are stratified by class and nested: with one seed,
the 100-image subset is the first 100 of the 1000-image one, so budgets differ only in labels.
Everything is a function of the data and the seed; the train/val/test split does not depend on
the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmdist.data.imageset import NO_LABEL, ImageSet
from mmdist.data.records import DatasetError

_SPLIT_STREAM, _LABELED_STREAM = 0x5EED, 0xB0D6E7


@dataclass
class Split:
    """Index arrays into one ImageSet (sorted int64, pairwise disjoint).

    val and test hold only images with the task's target (a class label, or a mask); labeled
    too; unlabeled is the rest of the training patients' images, or, with an unlabeled pool from
    its own source (data.unlabeled), that pool's training images."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.sort(np.concatenate([self.labeled, self.unlabeled]))

    @property
    def unlabeled_pool(self) -> np.ndarray:
        """What the unlabeled streams read: the unlabeled images, or, when a budget labels every
        training image (e.g. 'full'), the labeled ones with their targets hidden (FixMatch's
        convention), so that every budget of every variant trains."""
        return self.unlabeled if len(self.unlabeled) else self.labeled


def mask_flags(imageset: ImageSet) -> np.ndarray:
    """(N,) bool: which images have a lung mask (meta['has_mask'] of a partly masked cache)."""
    if imageset.masks is None:
        return np.zeros(len(imageset), dtype=bool)
    flags = imageset.meta.get("has_mask")
    return np.ones(len(imageset), dtype=bool) if flags is None else np.asarray(flags, dtype=bool)


def _closest_count(cumulative: np.ndarray, target: float) -> int:
    """Number of leading groups whose image count is closest to ``target`` (cumulative[0] = 0)."""
    return int(np.argmin(np.abs(cumulative - target)))


def split_by_patient(imageset: ImageSet, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train, val, test) sorted image indices; whole patients per split, stratified.

    Fractions are of images (patients hold different numbers of images). Raises ValueError when
    the source has too few patients to give every requested split one.
    """
    groups = imageset.patient_groups()
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.reshape(-1)
    n_groups = int(inverse.max()) + 1 if len(inverse) else 0
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if n_groups < needed:
        raise DatasetError(f"{imageset.source}: {n_groups} patient(s) cannot fill {needed} splits "
                         f"(train, val, test) without sharing a patient")
    sizes = np.bincount(inverse, minlength=n_groups)
    group_label = np.full(n_groups, NO_LABEL, dtype=np.int64)
    np.maximum.at(group_label, inverse, np.asarray(imageset.labels, dtype=np.int64))
    group_masked = np.zeros(n_groups, dtype=bool)
    np.logical_or.at(group_masked, inverse, mask_flags(imageset))
    stratum = (group_label + 1) * 2 + group_masked

    assignment = np.zeros(n_groups, dtype=np.int8)  # 0 train, 1 val, 2 test
    for value in np.unique(stratum):
        members = np.flatnonzero(stratum == value)
        rng = np.random.default_rng([seed, _SPLIT_STREAM, int(value)])
        members = members[rng.permutation(len(members))]
        cumulative = np.concatenate([[0], np.cumsum(sizes[members])])
        total = cumulative[-1]
        n_test = _closest_count(cumulative, total * test_fraction)
        n_val = _closest_count(cumulative[n_test:] - cumulative[n_test], total * val_fraction)
        assignment[members[:n_test]] = 2
        assignment[members[n_test:n_test + n_val]] = 1
    # Tiny strata can round every group to train; give an empty requested split one patient
    # from the largest stratum's training groups (drawn with the seed).
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    for split_id, fraction in ((2, test_fraction), (1, val_fraction)):
        if fraction > 0 and not (assignment == split_id).any():
            train_groups = np.flatnonzero(assignment == 0)
            counts = np.bincount(stratum[train_groups])
            pool = train_groups[stratum[train_groups] == np.argmax(counts)]
            assignment[pool[rng.integers(len(pool))]] = split_id
    by_image = assignment[inverse]
    train, val, test = (np.flatnonzero(by_image == k) for k in (0, 1, 2))
    if len(train) == 0:
        raise DatasetError(f"{imageset.source}: no patient is left for training with "
                         f"val_fraction={val_fraction} and test_fraction={test_fraction}")
    return train, val, test


def _nested_stratified_order(pool: np.ndarray, classes: np.ndarray, rng_seed: list) -> np.ndarray:
    """Order ``pool`` so that every prefix is (about) stratified by ``classes``.

    Each class is shuffled; its r-th member gets the key (r + 0.5) / class size, and the first
    member of every class goes first so that a budget of at least the class count sees each one.
    """
    keys = np.empty(len(pool), dtype=np.float64)
    for i, cls in enumerate(np.unique(classes)):
        where = np.flatnonzero(classes == cls)
        where = where[np.random.default_rng(rng_seed + [i]).permutation(len(where))]
        keys[where] = (np.arange(len(where)) + 0.5) / len(where)
        keys[where[0]] = -1.0 + i * 1e-6
    return pool[np.lexsort((classes, keys))]


def choose_labeled(imageset: ImageSet, train: np.ndarray, budget, seed: int,
                   need: str) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``budget`` labeled images from ``train`` (a positive int or 'full').

    need: 'label' (classification: images with a class, stratified by class) or 'mask'
    (segmentation: images with a mask). The rest of ``train`` is the unlabeled pool.
    Returns (labeled, unlabeled) sorted index arrays. Raises ValueError when the budget exceeds
    the eligible images.
    """
    if need not in ("label", "mask"):
        raise ValueError(f"need must be 'label' or 'mask', got {need!r}")
    train = np.asarray(train, dtype=np.int64)
    labels = np.asarray(imageset.labels)
    eligible = train[eligible_mask(imageset, need)[train]]
    classes = labels[eligible] if need == "label" else np.zeros(len(eligible), dtype=np.int64)
    if budget == "full":
        count = len(eligible)
    elif isinstance(budget, (int, np.integer)) and not isinstance(budget, bool) and budget >= 1:
        count = int(budget)
    else:
        raise ValueError(f"label budget must be a positive integer or 'full', got {budget!r}")
    if count > len(eligible):
        raise DatasetError(f"{imageset.source}: label budget {count} exceeds the {len(eligible)} "
                         f"training images with a {need} (of {len(train)} training images)")
    order = _nested_stratified_order(eligible, classes, [seed, _LABELED_STREAM])
    labeled = np.sort(order[:count])
    return labeled, np.setdiff1d(train, labeled)


def make_split(imageset: ImageSet, budget, val_fraction: float, test_fraction: float,
               seed: int, need: str) -> Split:
    """Patient-level train/val/test split, then the labeled budget within train."""
    train, val, test = split_by_patient(imageset, val_fraction, test_fraction, seed)
    labeled, unlabeled = choose_labeled(imageset, train, budget, seed, need)
    # Only images with the target can be scored. The others of val/test patients are left out
    # rather than moved to training, where they would leak those patients into the unlabeled pool.
    keep = eligible_mask(imageset, need)
    return Split(labeled=labeled, unlabeled=unlabeled, val=val[keep[val]], test=test[keep[test]])


def eligible_mask(imageset: ImageSet, need: str) -> np.ndarray:
    """(N,) bool: images that carry the target of ``need`` ('label': a class; 'mask': a mask)."""
    if need == "label":
        return np.asarray(imageset.labels) != NO_LABEL
    return mask_flags(imageset)


def shared_patients(imageset: ImageSet, first: np.ndarray, second: np.ndarray) -> set[str]:
    """Patient ids (known ones only) present in both index arrays: empty for a sound split."""
    patients = np.asarray(imageset.patients, dtype=object)
    a = {p for p in patients[np.asarray(first, dtype=np.int64)] if p}
    return a & {p for p in patients[np.asarray(second, dtype=np.int64)] if p}
