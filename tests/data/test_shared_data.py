"""The csv adapter, prepare and the patient-level split on the real data in ../shared/data."""

import csv
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from chest_layouts import shared_data
from mmdist.data.adapters import index_dataset
from mmdist.data.cache import load_cache
from mmdist.data.cache_writer import prepare_dataset
from mmdist.data.imageset import ImageSet
from mmdist.data.imaging import binarize_mask, resize_mask
from mmdist.data.splits import make_split, shared_patients

KERMANY = shared_data() / "kermany-pneumonia-224"
SHENZHEN = shared_data() / "shenzhen-lungseg"
need_kermany = pytest.mark.skipif(not (KERMANY / "labels.csv").is_file(),
                                  reason=f"Kermany sample not found at {KERMANY}")
need_shenzhen = pytest.mark.skipif(not (SHENZHEN / "labels.csv").is_file(),
                                   reason=f"Shenzhen sample not found at {SHENZHEN}")


@need_kermany
def test_kermany_source_split_leaks_patients_and_ours_does_not():
    index = index_dataset("csv", KERMANY)
    assert len(index.records) == 5216
    labels = np.array([r.label for r in index.records])
    assert (labels == 0).sum() == 1341 and (labels == 1).sum() == 3875
    splits_of = defaultdict(set)
    with (KERMANY / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["patient"]:
                splits_of[row["patient"]].add(row["split_in_source"])
    # The source's per-image split: 601 pneumonia and 42 normal patients straddle it.
    assert sum(len(s) > 1 for s in splits_of.values()) == 643
    data = ImageSet(images=np.zeros((len(labels), 1, 1), np.uint8), labels=labels,
                    patients=np.array([r.patient for r in index.records], dtype=object))
    split = make_split(data, 100, 0.15, 0.15, seed=0, need="label")
    for a, b in ((split.train, split.val), (split.train, split.test), (split.val, split.test)):
        assert shared_patients(data, a, b) == set()
    assert len(split.labeled) == 100


@need_kermany
@pytest.mark.slow
def test_prepare_kermany_with_two_workers(tmp_path):
    summary = prepare_dataset("csv", KERMANY, tmp_path / "cache", size=224, workers=2,
                              progress=False)
    assert summary["records"] == 5216 and summary["rejects"] == []
    assert summary["labels"] == {"normal": 1341, "pneumonia": 3875, "unlabeled": 0}
    data = load_cache(tmp_path / "cache")
    assert isinstance(data.images, np.memmap) and data.images.shape == (5216, 224, 224)
    for i in (0, 2500, 5215):  # 224-px RGB with equal channels: the cache holds channel 0 exactly
        source = np.asarray(Image.open(KERMANY / data.names[i]))[..., 0]
        np.testing.assert_array_equal(data.images[i], source)


@need_shenzhen
def test_prepare_shenzhen_masks(tmp_path):
    summary = prepare_dataset("csv", SHENZHEN, tmp_path / "cache", size=128, progress=False)
    assert summary["records"] == 59 and summary["with_mask"] == 59
    data = load_cache(tmp_path / "cache")
    assert data.masks.shape == (59, 128, 128) and set(np.unique(data.masks[0])) == {0, 1}
    assert 0.15 < data.masks.mean() < 0.4
    mask_file = SHENZHEN / "masks" / "CHNCXR_0601_1.png"
    expected = resize_mask(binarize_mask(np.asarray(Image.open(mask_file))), 128)
    np.testing.assert_array_equal(data.masks[0], expected)
    assert tuple(data.meta["original_size"][0]) == (1000, 1000)
