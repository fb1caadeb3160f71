"""The training loop: run directory contents, TensorBoard read back, exact resume, every variant."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mmdist.config import load_config
from mmdist.engine import checkpoint as ckpt
from mmdist.engine.trainer import Trainer
from mmdist.model import VARIANTS, build_model
from mmdist.model.blocks import scaled_channels

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


def _trained_state(run: Path, step: int) -> dict[str, dict]:
    """{parameter name: its Adam state} from a run's checkpoint at ``step``; a parameter that
    never received a gradient has no state."""
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(run, step))
    names = [n for n, _ in build_model(load_config(run / "config.yaml").model).named_parameters()]
    assert state["optimizer"]["param_groups"][0]["params"] == list(range(len(names)))
    return {names[i]: s for i, s in state["optimizer"]["state"].items()}


def _train_scalars(run: Path) -> set[str]:
    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag.removeprefix("train/") for tag in events.Tags()["scalars"] if tag.startswith("train/")}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains(tmp_path, variant):
    """What each variant's step trains: the losses its parts call for, a gradient for every
    parameter of the heads it has (and only those heads exist), the bridge's channels in the
    decoder's first convolution for the bridged variants."""
    run = tmp_path / variant
    config = tiny_config(run, f"model.variant={variant}", "trainer.max_steps=2",
                         "trainer.checkpoint_every=2", "trainer.image_log_every=0")
    summary = Trainer(config).fit()
    spec = VARIANTS[variant]
    assert summary["steps"] == 2
    assert ("val_acc" in summary) == spec.classifier
    assert ("val_dice" in summary) == spec.decoder
    expected = {"total"}
    if spec.classifier:
        expected |= {"ce"} | {"fixmatch": {"fixmatch", "mask_ratio"}, "mixmatch": {"mixmatch_u"},
                              "none": set()}[spec.ssl]
    unlabeled = spec.unlabeled_seg_loss(config.losses)
    if spec.decoder:
        expected |= {"dice"} | {"kl": {"kl"}, "w2s": {"w2s", "w2s_strong", "w2s_kept"},
                                None: set()}[unlabeled]
        if unlabeled == "w2s" and config.losses.w2s_feature_dropout:
            expected.add("w2s_fp")
    assert _train_scalars(run) == expected
    trained = _trained_state(run, 2)
    parts = {name.split(".")[0] for name in trained}
    assert parts == {"encoder"} | ({"classifier"} if spec.classifier else set()) | (
        {"decoder"} if spec.decoder else set())
    for name, state in trained.items():
        assert int(state["step"]) == 2, name  # an optimizer step each step, every parameter
        if name.endswith("weight"):
            assert 0 < float(state["exp_avg"].abs().max()) < float("inf"), name
    if spec.decoder:
        first = trained["decoder.blocks.0.0.weight"]["exp_avg"]  # (out, c5 + c4 [+ 2], 3, 3)
        channels = build_model(config.model).decoder.blocks[0][0].in_channels
        assert first.shape[1] == channels
        bridge = 2 if spec.bridge else 0
        deepest = sum(scaled_channels(config.model.width)[-2:])
        assert channels == deepest + bridge
        if spec.bridge:  # the image and saliency channels feed the segmentation loss
            assert float(first[:, -2:].abs().amin(dim=(1, 2, 3)).max()) > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_on_cpu(tmp_path, precision):
    """Autocast trains (optimizer steps are taken, weights stay finite) and computes the same
    losses as fp32 within the precision's error; only fp16 has a loss scaler to skip steps."""
    runs = {}
    for name in ("fp32", precision):
        runs[name] = tmp_path / name
        config = tiny_config(runs[name], f"engine.precision={name}", "trainer.max_steps=3",
                             "trainer.log_every=1", "trainer.checkpoint_every=3",
                             "model.saliency=differentiable", "trainer.image_log_every=0")
        summary = Trainer(config).fit()
    assert summary["steps"] == 3
    skipped = summary["skipped_steps"]
    if precision == "bf16":
        assert skipped == 0
    assert skipped < 3  # otherwise the run trained nothing
    for name, state in _trained_state(runs[precision], 3).items():
        # Adam counts the steps it took: a step the fp16 scaler skipped is not one of them.
        assert int(state["step"]) == 3 - skipped, name
        assert torch.isfinite(state["exp_avg"]).all(), name
    weights = ckpt.load_checkpoint(ckpt.checkpoint_path(runs[precision], 3))["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())
    losses = {}
    for name, run in runs.items():
        events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        events.Reload()
        losses[name] = events.Scalars("train/total")[0]  # step 1: the same weights and batch
    assert losses[precision].step == losses["fp32"].step == 1
    assert losses[precision].value == pytest.approx(losses["fp32"].value, rel=0.05)


def test_differentiable_saliency_trains(tmp_path):
    """What 'differentiable' is for: the segmentation loss reaches the encoder and the classifier
    weights through the saliency. One step from the same weights and batch in both modes: the
    decoder's gradient is the same, the encoder's and the classifier weights' differ, and the
    classifier bias (which the input gradient does not depend on) gets the same gradient."""
    grads = {}
    for mode in ("detached", "differentiable"):
        run = tmp_path / mode
        summary = Trainer(tiny_config(run, f"model.saliency={mode}", "trainer.max_steps=1",
                                      "trainer.checkpoint_every=1",
                                      "trainer.image_log_every=0")).fit()
        assert summary["saliency"] == mode
        grads[mode] = {n: s["exp_avg"] for n, s in _trained_state(run, 1).items()}

    def relative(name):
        a, b = grads["detached"][name], grads["differentiable"][name]
        return float((a - b).abs().max() / a.abs().max())

    assert sorted(grads["detached"]) == sorted(grads["differentiable"])
    # Weights only: a convolution bias before instance norm has no gradient but rounding noise.
    for name in (n for n in grads["detached"] if n.endswith("weight")):
        if name.startswith("decoder."):
            assert relative(name) < 1e-5, name
        else:  # encoder and classifier.fc
            assert relative(name) > 1e-4, name
    assert relative("classifier.fc.bias") < 1e-6


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
