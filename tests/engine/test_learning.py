"""Learning: a small MultiMix learns the built-in data on the CPU in about two minutes.

The U-Net baseline is trained beside it on the same 10 masks and the same schedule (one epoch is
the classification training split over the batch for every variant) and must learn too; both
Dice scores are written in the test output (``-s`` or the JSON file).
"""

import json
from pathlib import Path

import pytest

from mmdist.config import load_config
from mmdist.engine.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
LEARN = REPO / "configs" / "learn.yaml"


@pytest.mark.slow
def test_small_multimix_reaches_dice_and_accuracy(tmp_path):
    overrides = ["trainer.progress=false", "trainer.image_log_every=0", "trainer.checkpoint_every=0",
                 "engine.device=cpu"]
    multimix = Trainer(load_config(LEARN, [f"output_dir={tmp_path}/multimix", *overrides])).fit()
    unet = Trainer(load_config(LEARN, [f"output_dir={tmp_path}/unet", "model.variant=unet",
                                       *overrides])).fit()
    report = {"multimix": {k: multimix[k] for k in ("val_acc", "val_dice", "images_per_s")},
              "unet": {k: unet[k] for k in ("val_dice", "images_per_s", "steps_per_epoch")}}
    (tmp_path / "learning.json").write_text(json.dumps(report, indent=2))
    print("learning check:", json.dumps(report))
    assert multimix["val_dice"] >= 0.85, report
    assert multimix["val_acc"] >= 0.85, report
    assert unet["val_dice"] >= 0.85, report
    assert unet["steps_per_epoch"] == multimix["steps_per_epoch"]
