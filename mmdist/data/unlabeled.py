"""The unlabeled classification pool from its own source (data.unlabeled), e.g. NIH ChestX-ray14's
112k images beside Kermany's labeled ones.

The variants that read unlabeled classification images (the FixMatch and MixMatch streams of
VariantSpec.streams) then see one classification ImageSet: the classification source's images
followed by the pool's (a RowStack: nothing is copied, both stay memory-mapped), the pool's labels
hidden (NO_LABEL). The split's labeled, val and test parts come from the classification source as
before; its unlabeled part is the pool's training images (so the rest of the classification
training split is not read). Other variants never load the pool.

The pool holds out ``data.unlabeled.holdout_fraction`` of its images as whole patients (seeded,
stratified by the source's labels). A cross-domain test set from the pool's own dataset is scored
on those only (``exclude: unlabeled``); any other cross-domain set that shares a patient with the
pool is refused, so no test image is one the run could have trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmdist.config.variants import CLS_STRONG, CLS_WEAK, CLS_WEAK2
from mmdist.data.imageset import NO_LABEL, ImageSet, RowStack
from mmdist.data.records import DatasetError
from mmdist.data.source_imageset import load_catalog, load_imageset
from mmdist.data.splits import Split, split_by_patient

POOL_STREAMS = (CLS_WEAK, CLS_STRONG, CLS_WEAK2)
"""The streams that read the unlabeled classification pool."""


@dataclass
class UnlabeledPool:
    imageset: ImageSet
    """The pool's source, its own indices."""
    train: np.ndarray
    """(M,) int64 sorted: the images the unlabeled streams read."""
    holdout: np.ndarray
    """(K,) int64 sorted: the held-out patients' images, never read in training."""


def reads_pool(config) -> bool:
    """The config's variant reads unlabeled classification images."""
    return any(stream in POOL_STREAMS for stream in config.model.streams)


def load_pool(config, pixels: bool = True) -> UnlabeledPool:
    """data.unlabeled split into the pool and its held-out patients. ``pixels=False`` gives the
    built-in data without their pixels (for counting); caches are memory-mapped either way."""
    source = config.data.unlabeled
    load = load_imageset if pixels else load_catalog
    imageset = load(source, config.data.image_size, "unlabeled")
    train, _, holdout = split_by_patient(imageset, 0.0, source.holdout_fraction, config.seed)
    if not len(train):
        raise DatasetError(f"data.unlabeled: no image of {imageset.source} is left in the pool "
                           f"after holdout_fraction={source.holdout_fraction}")
    return UnlabeledPool(imageset, train, holdout)


def join_pool(imageset: ImageSet, split: Split, pool: UnlabeledPool) -> tuple[ImageSet, Split]:
    """The classification ImageSet and Split with the pool appended (see the module docstring)."""
    images = pool.imageset.images
    if images.shape[1:] != imageset.images.shape[1:]:
        raise DatasetError(f"data.unlabeled: {pool.imageset.source} images are "
                           f"{images.shape[-1]} px, data.classification's ({imageset.source}) "
                           f"{imageset.images.shape[-1]} px; prepare both at data.image_size")
    offset = len(imageset)
    names = None
    if imageset.names is not None and pool.imageset.names is not None:
        names = np.concatenate([np.asarray(imageset.names, dtype=object),
                                np.asarray(pool.imageset.names, dtype=object)])
    joined = ImageSet(
        images=RowStack([imageset.images, images]),
        labels=np.concatenate([np.asarray(imageset.labels, dtype=np.int64),
                               np.full(len(images), NO_LABEL, dtype=np.int64)]),
        patients=np.concatenate([np.asarray(imageset.patients, dtype=object),
                                 np.asarray(pool.imageset.patients, dtype=object)]),
        source=imageset.source, names=names,
        meta={"pool_source": pool.imageset.source, "pool_offset": offset})
    return joined, Split(labeled=split.labeled, unlabeled=pool.train + offset, val=split.val,
                         test=split.test)


def _identities(imageset: ImageSet, indices: np.ndarray) -> list[list[str]]:
    """Per identity kind, one string per image ('' unknown): the patient within its source, and
    the hash of the source file (the same image prepared twice, e.g. with other options)."""
    patients = np.asarray(imageset.patients, dtype=object)[indices]
    kinds = [[f"{imageset.source}/{p}" if p else "" for p in patients]]
    sha1 = imageset.meta.get("sha1")
    if sha1 is not None:
        kinds.append([h.decode() if isinstance(h, bytes) else str(h)
                      for h in np.asarray(sha1)[indices]])
    return kinds


def exclude_pool_patients(config, entry, imageset: ImageSet, indices: np.ndarray) -> np.ndarray:
    """The indices of a cross-domain test set (``entry`` of evaluation.cross_domain, its
    ``imageset``, its scorable ``indices``) without any image of a patient in the run's
    unlabeled pool. With ``exclude: none`` a shared patient is an error instead; without
    data.unlabeled the indices come back unchanged. Every variant gets the same set, whether it
    reads the pool or not, so their cross-domain scores compare."""
    indices = np.asarray(indices, dtype=np.int64)
    if config.data.unlabeled is None:
        return indices
    pool = load_pool(config, pixels=False)
    seen = {key for kind in _identities(pool.imageset, pool.train) for key in kind if key}
    shared = np.zeros(len(indices), dtype=bool)
    for kind in _identities(imageset, indices):
        shared |= np.array([key in seen for key in kind], dtype=bool)
    where = f"evaluation.cross_domain {entry.name!r}"
    if not shared.any():
        return indices
    if entry.exclude != "unlabeled":
        raise DatasetError(f"{where}: {int(shared.sum())} of its {len(indices)} images belong to "
                           f"patients of the unlabeled pool (data.unlabeled, "
                           f"{pool.imageset.source}); set exclude: unlabeled to score the others")
    if shared.all():
        raise DatasetError(f"{where}: every image belongs to a patient of the unlabeled pool; "
                           f"hold patients out with data.unlabeled.holdout_fraction")
    return indices[~shared]
