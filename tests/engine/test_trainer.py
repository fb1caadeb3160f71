"""The training loop: run directory contents, TensorBoard read back, exact resume, every variant."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmdist.config import load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.trainer import Trainer
from mmdist.model import VARIANTS

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"


def tiny_config(tmp_path, *overrides):
    return load_config(TINY, [f"output_dir={tmp_path}", *overrides])


def test_run_directory_summary_and_tensorboard(tmp_path):
    with pytest.warns(UserWarning, match="12 classification validation image"):  # tiny's split
        summary = Trainer(tiny_config(tmp_path / "run", "trainer.val_every=4",
                                      "model.ema_decay=0.9")).fit()
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert load_config(run / "config.yaml").trainer.max_steps == 8
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == pytest.approx(summary)
    assert on_disk["steps"] == 8 and on_disk["status"] == "completed"
    assert on_disk["images_per_s"] > 0
    for key in ("val_acc", "val_dice", "val_ema_acc", "val_ema_dice"):
        assert 0.0 <= on_disk[key] <= 1.0, key
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [4, 8]
    best = ckpt.load_checkpoint(ckpt.best_checkpoint_path(run))
    assert on_disk["best_step"] == best["step"] in (4, 8) and on_disk["best_metric"] == "val_mean"

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/total", "train/ce", "train/fixmatch", "train/mask_ratio", "train/dice",
                "train/kl", "perf/lr", "perf/images_per_s", "val/acc", "val/dice", "val_ema/acc",
                "val_ema/dice"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("train/total")] == [2, 4, 6, 8]
    assert {e.step for e in events.Scalars("val/acc")} == {4, 8}
    assert {e.step for e in events.Scalars("val_ema/dice")} == {4, 8}
    images = set(events.Tags()["images"])
    assert {"images/seg_input", "images/saliency", "images/seg_predicted"} <= images
    saliency = events.Images("images/saliency")[0]
    assert saliency.width == 4 * 64 and saliency.height == 64  # one tile per image of the batch (4)


def test_resume_ends_with_exactly_the_uninterrupted_parameters(tmp_path):
    ema = "model.ema_decay=0.9"
    straight = tiny_config(tmp_path / "straight", "trainer.max_steps=6", "trainer.checkpoint_every=3",
                           "model.dropout=0.25", ema)
    Trainer(straight).fit()
    first = tiny_config(tmp_path / "split", "trainer.max_steps=3", "trainer.checkpoint_every=3", ema)
    Trainer(first).fit()
    second = tiny_config(tmp_path / "split", "trainer.max_steps=6", "trainer.checkpoint_every=3",
                         "trainer.resume=true", ema)
    summary = Trainer(second).fit()
    assert summary["start_step"] == 3 and summary["steps"] == 6
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "straight", 6))
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "split", 6))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert a["scheduler"] == b["scheduler"]
    for key, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][key]["exp_avg"])
    # The weight average too, bit for bit, after its 6 updates (it is not the weights themselves).
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for name, tensor in a["ema"]["model"].items():
        assert torch.equal(tensor, b["ema"]["model"][name]), name
    assert any(not torch.equal(a["ema"]["model"][k], a["model"][k]) for k in a["model"])


def test_resume_from_an_explicit_missing_path_names_it(tmp_path):
    config = tiny_config(tmp_path / "run", f"trainer.resume={tmp_path}/nope.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        Trainer(config).fit()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains(tmp_path, variant):
    config = tiny_config(tmp_path / variant, f"model.variant={variant}", "trainer.max_steps=2",
                         "trainer.checkpoint_every=0", "trainer.image_log_every=0")
    summary = Trainer(config).fit()
    spec = VARIANTS[variant]
    assert summary["steps"] == 2
    assert ("val_acc" in summary) == spec.classifier
    assert ("val_dice" in summary) == spec.decoder


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    config = tiny_config(tmp_path / precision, f"engine.precision={precision}", "trainer.max_steps=2",
                         "model.saliency=differentiable", "trainer.image_log_every=0")
    summary = Trainer(config).fit()
    assert summary["steps"] == 2 and summary["skipped_steps"] <= 2


def test_differentiable_saliency_trains(tmp_path):
    config = tiny_config(tmp_path / "diff", "model.saliency=differentiable", "trainer.max_steps=3")
    assert Trainer(config).fit()["saliency"] == "differentiable"


def test_resume_skips_a_corrupt_newest_checkpoint_and_rotation_keeps_the_good_ones(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(run, "trainer.max_steps=4", "trainer.checkpoint_every=2")).fit()
    newest = ckpt.checkpoint_path(run, 4)
    newest.write_bytes(newest.read_bytes()[:200])  # a torn copy, a bad disk block
    resumed = tiny_config(run, "trainer.max_steps=3", "trainer.checkpoint_every=1",
                          "trainer.resume=true")
    with pytest.warns(UserWarning, match=r"skipping unreadable checkpoint .*step_00000004\.pt"):
        summary = Trainer(resumed).fit()
    assert summary["start_step"] == 2 and summary["steps"] == 3
    # The torn file is set aside, not counted: rotation (keep 2) kept 2 and 3, both good.
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]
    assert (run / "checkpoints" / "step_00000004.pt.corrupt").is_file()
    for step in (2, 3):
        ckpt.load_checkpoint(ckpt.checkpoint_path(run, step))


def test_resume_with_only_corrupt_checkpoints_says_so(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(run, "trainer.max_steps=2", "trainer.checkpoint_every=2")).fit()
    only = ckpt.checkpoint_path(run, 2)
    only.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no readable checkpoint"):
        Trainer(tiny_config(run, "trainer.max_steps=4", "trainer.resume=true")).fit()
