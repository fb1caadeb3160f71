"""Balanced accuracy in validation, the one-class warning, and trainer.select_by=val_bacc."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score

from mmdist.config import ConfigError, load_config
from mmdist.data.row_reads import gather_rows
from mmdist.data.step_batch import to_model_input
from mmdist.engine.selection import build_selection, score
from mmdist.engine.single import SingleProcessStrategy
from mmdist.engine.trainer import Trainer
from mmdist.engine.validation import validate

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
SMALL = ["model.variant=enc", "model.width=0.125", "data.classification.count=60",
         "trainer.select_by=val_bacc", "trainer.val_every=5"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    config = load_config(TINY, SMALL + [f"output_dir={tmp_path_factory.mktemp('run')}"])
    trainer = Trainer(config)
    trainer._build()
    return trainer


def _validate(trainer, model):
    return validate(model, trainer.task_data, trainer.spec,
                    SingleProcessStrategy(trainer.config.engine),
                    trainer.config.data.eval_batch_size, trainer.config.data.image_size)


def test_val_bacc_equals_scikit_learn(built):
    model = built.strategy.unwrap().eval()
    task = built.task_data.classification
    val = task.split.val
    with torch.no_grad():
        images = to_model_input(gather_rows(task.imageset.images, val, built.config.data.image_size,
                                            False))
        predicted = model(cls_images=images).cls_logits.argmax(1).numpy()
    labels = np.asarray(task.imageset.labels)[val]
    metrics = _validate(built, model)
    assert metrics["val_bacc"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert metrics["val_acc"] == pytest.approx((predicted == labels).mean())


def test_a_classifier_that_calls_everything_pneumonia_is_warned_about(built):
    model = built.strategy.unwrap().eval()
    head = [m for m in model.classifier.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # every image pneumonia, whatever it shows
        head.weight.zero_()
        head.bias.copy_(torch.tensor([0.0, 10.0]))
    labels = np.asarray(built.task_data.classification.imageset.labels)[
        built.task_data.classification.split.val]
    with pytest.warns(UserWarning, match=rf"val split: every one of the {len(labels)} images was "
                                         "predicted pneumonia"):
        metrics = _validate(built, model)
    assert metrics["val_acc"] == pytest.approx(labels.mean())  # the pneumonia share
    assert metrics["val_bacc"] == 0.5 and metrics["val_one_class"] == 1.0
    # selecting by balanced accuracy scores it 0.5, not its accuracy
    selection = build_selection(built.config, built.spec, built.task_data, ema=False)
    assert selection.metric == "val_bacc"
    assert score(metrics, selection.metric, "raw") == 0.5


def test_select_by_val_bacc_needs_a_classifier():
    assert load_config(TINY, SMALL).trainer.selection_metric(True, False) == "val_bacc"
    with pytest.raises(ConfigError, match="trainer.select_by"):
        load_config(TINY, ["model.variant=unet", "trainer.select_by=val_bacc", "trainer.val_every=5"])
