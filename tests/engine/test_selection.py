"""Model selection: best.pt is the validation the configured metric scores best (on the EMA
weights), a later worse validation does not replace it, and neither does a resumed run."""

import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmdist.config import ConfigError, load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.selection import BestCheckpoint, score, warn_if_too_small
from mmdist.engine.single import SingleProcessStrategy
from mmdist.engine.trainer import Trainer
from mmdist.engine.validation import validate
from mmdist.evaluation.trained_model import load_model
from mmdist.model import VARIANTS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
# A small U-Net at a high learning rate: it learns within a few steps on the CPU ('auto' selects
# by val_dice for a decoder-only variant).
RUN = ["model.variant=unet", "model.width=0.125", "optim.lr=0.02", "model.ema_decay=0.5",
       "trainer.val_every=2", "trainer.checkpoint_every=3", "trainer.image_log_every=0"]


def _train(run_dir: Path, *overrides: str) -> dict:
    return Trainer(load_config(TINY, [f"output_dir={run_dir}", *RUN, *overrides])).fit()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    return run_dir, _train(run_dir, "trainer.max_steps=8")


def _ema_dice_by_step(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("val_ema/dice")}


def test_metric_per_variant_and_refusals():
    trainer = load_config(TINY, ["trainer.val_every=2"]).trainer
    resolved = {v: trainer.selection_metric(s.classifier, s.decoder) for v, s in VARIANTS.items()}
    assert resolved["multimix"] == resolved["umtl"] == "val_mean"
    assert resolved["unet"] == "val_dice" and resolved["enc"] == resolved["enc_ssl"] == "val_acc"
    assert load_config(TINY, ["trainer.val_every=0"]).trainer.selection_metric(True, True) is None
    assert load_config(TINY, ["trainer.select_by=none"]).trainer.selection_metric(True, True) is None
    with pytest.raises(ConfigError, match="trainer.select_by.*classifier"):
        load_config(TINY, ["model.variant=unet", "trainer.val_every=2", "trainer.select_by=val_acc"])
    with pytest.raises(ConfigError, match="trainer.select_by.*decoder"):
        load_config(TINY, ["model.variant=enc", "trainer.val_every=2", "trainer.select_by=val_mean"])


def test_only_a_strictly_better_score_replaces_the_best(tmp_path):
    best = BestCheckpoint(tmp_path, "val_mean", "ema")
    history = [(2, 0.6, 0.8), (4, 0.7, 0.9), (6, 0.9, 0.7), (8, 0.1, 0.2), (10, math.nan, 1.0)]
    taken = [best.consider(step, {"val_acc": 1.0, "val_dice": 1.0, "val_ema_acc": acc,
                                  "val_ema_dice": dice}) for step, acc, dice in history]
    # 0.7, 0.8, 0.8 (a tie keeps step 4), 0.15, NaN: only the raw weights were perfect.
    assert taken == [True, True, False, False, False]
    assert best.record() == {"metric": "val_mean", "weights": "ema", "step": 4, "value": 0.8}
    assert score({"val_acc": 0.5, "val_dice": 0.25}, "val_dice", "raw") == 0.25


def test_resume_takes_the_better_of_the_checkpoint_and_best_pt(tmp_path):
    earlier = {"metric": "val_dice", "weights": "ema", "step": 4, "value": 0.5}
    later = dict(earlier, step=6, value=0.75)
    ckpt.atomic_torch_save({"format": ckpt.FORMAT, "selection": later},
                           ckpt.best_checkpoint_path(tmp_path))
    best = BestCheckpoint(tmp_path, "val_dice", "ema")
    best.restore(earlier)
    assert (best.step, best.value) == (6, 0.75)
    other = BestCheckpoint(tmp_path, "val_dice", "raw")
    with pytest.warns(UserWarning, match="by val_dice on the ema weights; this run selects by "
                                         "val_dice on the raw weights"):
        other.restore(dict(earlier, weights="raw"))
    assert (other.step, other.value) == (4, 0.5)


def test_a_split_too_small_to_select_on_is_named():
    with pytest.warns(UserWarning, match=r"only 3 segmentation validation mask\(s\) \(< 5\)"):
        warn_if_too_small("val_dice", 0, 3)
    with pytest.warns(UserWarning, match=r"12 classification validation image\(s\) \(< 20\)"):
        Trainer(load_config(TINY, ["trainer.val_every=2"]))._build()  # tiny: 12 val images


def test_best_pt_is_the_best_validation_of_the_run(straight):
    run_dir, summary = straight
    history = _ema_dice_by_step(run_dir)
    assert sorted(history) == [2, 4, 6, 8]
    best_step = max(history, key=lambda s: (history[s], -s))  # a tie keeps the earlier step
    assert (summary["best_step"], summary["best_metric"], summary["best_weights"]) == (
        best_step, "val_dice", "ema")
    assert json.loads((run_dir / "summary.json").read_text())["best_step"] == best_step
    best = ckpt.load_checkpoint(ckpt.best_checkpoint_path(run_dir))
    assert best["step"] == best_step and best["ema"]["updates"] == best_step
    assert best["selection"] == {"metric": "val_dice", "weights": "ema", "step": best_step,
                                 "value": pytest.approx(history[best_step], rel=1e-6)}
    # The file holds that step's EMA weights: validated again, they score what was logged.
    model, config, _ = load_model(ckpt.best_checkpoint_path(run_dir))
    trainer = Trainer(config)
    trainer._build()
    again = validate(model, trainer.task_data, trainer.spec, SingleProcessStrategy(config.engine),
                     config.data.eval_batch_size, config.data.image_size)
    assert again["val_dice"] == best["selection"]["value"]
    assert [s for s, _ in ckpt.list_checkpoints(run_dir)] == [6, 8]  # rotated; best.pt kept


def test_a_resumed_run_ends_with_the_uninterrupted_best_pt(straight, tmp_path):
    straight_dir, _ = straight
    split = tmp_path / "split"
    _train(split, "trainer.max_steps=6")
    summary = _train(split, "trainer.max_steps=8", "trainer.resume=true")
    assert summary["start_step"] == 6
    a = ckpt.load_checkpoint(ckpt.best_checkpoint_path(straight_dir))
    b = ckpt.load_checkpoint(ckpt.best_checkpoint_path(split))
    assert b["step"] == a["step"] and b["selection"] == a["selection"]
    for name, tensor in a["ema"]["model"].items():
        assert torch.equal(tensor, b["ema"]["model"][name]), name


def test_worse_validations_after_a_resume_keep_the_earlier_best(tmp_path):
    """The run resumes from weights made useless (the mask head's bias at -1e4: every pixel
    background, Dice 0), so both later validations are worse: best.pt stays the one from before
    the interruption, because the checkpoint carried the best score so far."""
    run_dir = tmp_path / "run"
    _train(run_dir, "trainer.max_steps=4", "trainer.checkpoint_every=4")
    before = ckpt.load_checkpoint(ckpt.best_checkpoint_path(run_dir))
    assert before["step"] in (2, 4) and before["selection"]["value"] > 0.1
    path = ckpt.checkpoint_path(run_dir, 4)
    state = ckpt.load_checkpoint(path)
    for weights in (state["model"], state["ema"]["model"]):
        weights["decoder.head.bias"].fill_(-1e4)
    ckpt.atomic_torch_save(state, path)

    summary = _train(run_dir, "trainer.max_steps=8", "trainer.checkpoint_every=4",
                     "trainer.resume=true")
    history = _ema_dice_by_step(run_dir)
    assert history[6] < before["selection"]["value"] and history[8] < before["selection"]["value"]
    after = ckpt.load_checkpoint(ckpt.best_checkpoint_path(run_dir))
    assert after["step"] == before["step"] == summary["best_step"]
    assert after["selection"] == before["selection"]
    assert torch.equal(after["ema"]["model"]["decoder.head.bias"],
                       before["ema"]["model"]["decoder.head.bias"])
