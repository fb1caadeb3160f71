"""Every variant trains at every label budget of the paper's grid (|D_l^c| 100 / 1000 / full x
|D_l^s| 10 / 50 / full, scaled to the built-in data): a budget that labels the whole training
split leaves no unlabeled image, and the unlabeled streams then read the labeled images with their
labels hidden instead of failing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmdist.config import load_config
from mmdist.config.variants import CLS_WEAK, SEG_UNLABELED, VARIANTS
from mmdist.data.imageset import ImageSet
from mmdist.data.splits import make_split
from mmdist.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
# 40 classification images (28 for training) and 30 segmentation images (21 for training) at
# 32 px: the paper's 100 / 1000 / full and 10 / 50 / full, scaled to what they hold.
SMALL = ["data.image_size=32", "data.classification.count=40", "data.segmentation.count=30",
         "data.batch_size=2", "trainer.max_steps=2", "trainer.checkpoint_every=0",
         "trainer.image_log_every=0", "trainer.log_every=0", "trainer.val_every=0"]
CLASSIFICATION_BUDGETS, SEGMENTATION_BUDGETS = (4, 12, "full"), (2, 8, "full")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_budget_pair_trains(variant, tmp_path):
    for cls_budget in CLASSIFICATION_BUDGETS:
        for seg_budget in SEGMENTATION_BUDGETS:
            run = tmp_path / f"c{cls_budget}_s{seg_budget}"
            config = load_config(TINY, [*SMALL, f"model.variant={variant}", f"output_dir={run}",
                                        f"data.budget.classification_labeled={cls_budget}",
                                        f"data.budget.segmentation_labeled={seg_budget}"])
            trainer = Trainer(config)
            assert trainer.fit()["steps"] == 2, (variant, cls_budget, seg_budget)
            for stream, task, budget in ((CLS_WEAK, "classification", cls_budget),
                                         (SEG_UNLABELED, "segmentation", seg_budget)):
                if stream not in trainer.source.samplers:
                    continue
                split = getattr(trainer.task_data, task).split
                read = trainer.source.samplers[stream].pool
                # A full budget reads the labeled images; a partial one never does.
                expected = split.labeled if budget == "full" else split.unlabeled
                np.testing.assert_array_equal(read, expected)
                assert len(split.unlabeled) == 0 if budget == "full" else len(split.unlabeled) > 0


def test_unlabeled_pool_is_the_rest_of_the_split_until_the_budget_takes_it_all():
    labels = np.array([0, 1] * 10)
    data = ImageSet(images=np.zeros((20, 1, 1), np.uint8), labels=labels)
    partial = make_split(data, 6, 0.1, 0.2, seed=0, need="label")
    assert np.array_equal(partial.unlabeled_pool, partial.unlabeled)
    assert not set(partial.unlabeled_pool) & set(partial.labeled)
    full = make_split(data, "full", 0.1, 0.2, seed=0, need="label")
    assert len(full.unlabeled) == 0
    assert np.array_equal(full.unlabeled_pool, full.labeled)
    assert np.array_equal(full.labeled, partial.train)  # the same training split, all labeled
