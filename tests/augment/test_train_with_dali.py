"""Training on the built-in data with the DALI backend reaches the torch backend's quality."""

import json

import pytest

from augment_helpers import REPO
from mmdist.config import load_config
from mmdist.engine.trainer import Trainer


def train(backend: str, out_dir) -> dict:
    config = load_config(REPO / "configs" / "tiny.yaml", [
        f"data.augment.backend={backend}", f"output_dir={out_dir}", "trainer.max_steps=50",
        "optim.lr=0.001", "trainer.checkpoint_every=0", "trainer.image_log_every=0",
        "data.augment.threads=1"])
    summary = Trainer(config).fit()
    assert json.loads((out_dir / "summary.json").read_text())["status"] == "completed"
    return summary


@pytest.mark.slow
def test_training_with_dali_reaches_the_torch_backend_quality(tmp_path):
    torch_run = train("torch", tmp_path / "torch")
    dali_run = train("dali", tmp_path / "dali")
    assert dali_run["steps"] == torch_run["steps"] == 50
    # Measured here: Dice 0.92 with either backend after 50 steps (after one step: 0.14).
    assert torch_run["val_dice"] > 0.75 and dali_run["val_dice"] > 0.75
    assert abs(dali_run["val_dice"] - torch_run["val_dice"]) < 0.05
    assert abs(dali_run["val_acc"] - torch_run["val_acc"]) <= 0.2
