"""Leak guards: the split a run writes (split.json) and a test set's overlap with training."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from chest_layouts import shared_data
from mmdist.data.adapters import index_dataset
from mmdist.data.audit import overlap_warning, split_record, training_overlap, write_split
from mmdist.data.imageset import ImageSet
from mmdist.data.splits import Split, make_split
from mmdist.data.task_data import TaskSplit

KERMANY = shared_data() / "kermany-pneumonia-224"


def _imageset(n=12, source="xrays", patients=None, seed=0):
    rng = np.random.default_rng(seed)
    return ImageSet(images=rng.integers(0, 255, (n, 8, 8), dtype=np.uint8),
                    labels=np.arange(n) % 2, source=source,
                    patients=np.array(patients or [f"p{i // 2}" for i in range(n)], dtype=object),
                    names=np.array([f"img{i}.png" for i in range(n)], dtype=object))


def _tasks(imageset, split):
    return SimpleNamespace(classification=TaskSplit(imageset, split), segmentation=None)


def test_split_record_lists_every_part_with_names_and_patients(tmp_path):
    data = _imageset()
    split = Split(labeled=np.array([0, 1]), unlabeled=np.array([2, 3, 4, 5]),
                  val=np.array([6, 7, 8, 9]), test=np.array([10, 11]))
    path = write_split(_tasks(data, split), tmp_path)
    record = json.loads(path.read_text())
    entry = record["classification"]
    assert record["format"] == "mmdist-split/1" and "segmentation" not in record
    assert entry["counts"] == {"labeled": 2, "unlabeled": 4, "val": 4, "test": 2}
    assert entry["test"] == [["img10.png", "p5"], ["img11.png", "p5"]]
    assert entry["labeled"] == [["img0.png", "p0"], ["img1.png", "p0"]]
    assert entry["patient_disjoint"] is True
    # a split that puts one patient's two images in train and val is reported as such
    leaky = Split(labeled=np.array([0, 1]), unlabeled=np.array([2, 3, 4]),
                  val=np.array([5, 6, 7, 8, 9]), test=np.array([10, 11]))
    assert split_record(_tasks(data, leaky))["classification"]["patient_disjoint"] is False


@pytest.mark.skipif(not (KERMANY / "labels.csv").is_file(), reason=f"Kermany sample not found at {KERMANY}")
def test_the_kermany_split_file_is_patient_disjoint():
    """On the shared Kermany labels (normal patients named too): no patient of the written
    test or validation part appears among the training (labelled + unlabelled) images."""
    records = index_dataset("csv", KERMANY).records
    data = ImageSet(images=np.zeros((len(records), 1, 1), np.uint8),
                    labels=np.array([r.label for r in records]),
                    patients=np.array([r.patient for r in records], dtype=object),
                    names=np.array([r.name for r in records], dtype=object), source="kermany")
    split = make_split(data, 100, 0.1, 0.2, seed=0, need="label")
    entry = split_record(_tasks(data, split))["classification"]
    patients = {part: {p for _, p in entry[part] if p} for part in ("labeled", "unlabeled", "val",
                                                                     "test")}
    train = patients["labeled"] | patients["unlabeled"]
    assert entry["patient_disjoint"] and not train & patients["test"] and not train & patients["val"]
    assert sum(entry["counts"].values()) == len(records)
    assert len(patients["test"]) > 100  # the normal images carry patients now


def test_overlap_by_content_across_sources_and_by_patient_within_one():
    data = _imageset()
    split = Split(labeled=np.array([0, 1]), unlabeled=np.array([2, 3, 4, 5]),
                  val=np.array([6, 7]), test=np.array([8, 9, 10, 11]))
    tasks = _tasks(data, split)
    # another source holding two training images (renamed) and two unseen ones
    other = _imageset(4, source="elsewhere", patients=["p0", "p1", "q", "r"], seed=5)
    other.images[0], other.images[1] = data.images[3], data.images[0]
    other.names = np.array(["a.png", "b.png", "c.png", "d.png"], dtype=object)
    found = training_overlap(tasks, other, np.arange(4))
    # patient ids of another source are not compared (p0 there is not p0 here)
    assert found == {"shared_images": 2, "shared_patients": 0, "examples": ["a.png", "b.png"]}
    assert "shares 2 image(s) and 0 patient(s)" in overlap_warning("x", found)
    # the run's own test split is clean; a set from the same source with a training patient not
    clean = training_overlap(tasks, data, split.test)
    assert clean == {"shared_images": 0, "shared_patients": 0, "examples": []}
    assert overlap_warning("test", clean) is None
    assert training_overlap(tasks, data, np.array([5, 6]))["shared_patients"] == 1  # p2
