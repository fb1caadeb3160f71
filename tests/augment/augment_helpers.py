"""Shared pieces of the augmentation tests: fixed images, hand-built task data, batch helpers."""

from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from mmdist.config import load_config
from mmdist.data.imageset import ImageSet
from mmdist.data.splits import Split
from mmdist.data.task_data import TaskData, TaskSplit

REPO = Path(__file__).resolve().parents[2]


def textured_image(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) uint8: smooth structure plus noise, so no two crops or flips coincide."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    image = 120 + 50 * np.sin(xx / 5.0) + 35 * np.cos(yy / 7.0) + rng.normal(0, 12, (size, size))
    return image.clip(0, 255).astype(np.uint8)


def blob_mask(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 {0, 1}: an off-centre ellipse, asymmetric under flips and rotations."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = size * rng.uniform(0.3, 0.45), size * rng.uniform(0.25, 0.4)
    return ((((yy - cy) / (size * 0.22)) ** 2 + ((xx - cx) / (size * 0.12)) ** 2) <= 1).astype(np.uint8)


def data_config(size=32, batch_size=4, **augment):
    overrides = [f"data.image_size={size}", f"data.batch_size={batch_size}",
                 "data.augment.threads=1"] + [f"data.augment.{k}={v}" for k, v in augment.items()]
    return load_config(REPO / "configs" / "tiny.yaml", overrides).data


def index_task_data(count: int, labeled: int, size: int) -> TaskData:
    """Classification data whose image i is the constant value i + 1 (its index is readable from
    any flip or crop of it), the first ``labeled`` images labeled, the rest unlabeled."""
    images = np.broadcast_to((np.arange(count, dtype=np.uint8) + 1)[:, None, None],
                             (count, size, size)).copy()
    labels = (np.arange(count) % 2).astype(np.int64)
    split = Split(labeled=np.arange(labeled), unlabeled=np.arange(labeled, count),
                  val=np.arange(0), test=np.arange(0))
    return TaskData(classification=TaskSplit(ImageSet(images, labels, source="index"), split),
                    segmentation=None)


def assert_batches_equal(a, b):
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert (x is None) == (y is None), f.name
        if x is not None:
            assert torch.equal(x, y), f.name
