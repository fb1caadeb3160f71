"""Batch workers start under fork, spawn and forkserver and build exactly the inline batches; a
memory-mapped pool travels to them as a file reference, never as a copy."""

from __future__ import annotations

import pickle
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdist.augment.step_source import build_step_source
from mmdist.config import load_config
from mmdist.data.feeding import iterate_steps
from mmdist.data.task_data import build_task_data
from mmdist.model import VARIANTS

REPO = Path(__file__).resolve().parents[2]


def memory_mapped(array: np.ndarray, path: Path) -> np.memmap:
    np.save(path, array)
    return np.load(path, mmap_mode="r")


@pytest.fixture(scope="module")
def mapped_source(tmp_path_factory):
    """multimix's five streams over pools that are np.memmap files, as a prepared cache is."""
    folder = tmp_path_factory.mktemp("pool")
    config = load_config(REPO / "configs" / "tiny.yaml", ["data.segmentation.count=40",
                                                         "data.classification.count=80"])
    data = build_task_data(config)
    for task in (data.classification, data.segmentation):
        name = task.imageset.source
        task.imageset.images = memory_mapped(task.imageset.images, folder / f"{name}-images.npy")
        task.imageset.masks = memory_mapped(task.imageset.masks, folder / f"{name}-masks.npy")
    return build_step_source(config, data, VARIANTS["multimix"].streams)


def assert_same(a, b):
    for field in fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert (x is None) == (y is None), field.name
        if x is not None:
            assert torch.equal(x, y), field.name


def test_a_pickled_source_carries_file_references_not_the_pool(mapped_source):
    images = mapped_source.task_data.classification.imageset.images
    blob = pickle.dumps(mapped_source)
    assert len(blob) < images.nbytes / 4, (len(blob), images.nbytes)
    copy = pickle.loads(blob)
    reopened = copy.task_data.classification.imageset.images
    assert isinstance(reopened, np.memmap) and np.array_equal(reopened, images)


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_workers_make_the_inline_batches_under_every_start_method(mapped_source, method):
    inline = list(iterate_steps(mapped_source, 5, 9, workers=0))
    from_workers = list(iterate_steps(mapped_source, 5, 9, workers=2, start_method=method))
    assert len(from_workers) == 4
    for a, b in zip(inline, from_workers):
        assert_same(a, b)
